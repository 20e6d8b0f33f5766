import GNet
import GNetCodec
import GNetConformance
import Testing

// The handler from README.md's "Codecs", verbatim: a doc sample is code, so it is built and run.
final class Session { var decoder = LengthFieldBasedFrameCodec(maxFrameLength: 64 << 10) }

struct FramedEcho: EventHandler {
    let codec = LengthFieldBasedFrameCodec(maxFrameLength: 64 << 10)  // 4-byte big-endian length

    func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        c.context = Session()  // decoders keep a little state: one per connection
        return (nil, .none)
    }

    func onTraffic(_ c: Connection) -> Action {
        guard let session = c.context as? Session else { return .close }
        do {
            // Every complete frame, each consumed after the closure; a partial one stays buffered.
            try c.forEachFrame(using: &session.decoder) { frame in try c.writeFrame(frame, using: codec) }
        } catch {
            c.abort(error)  // a CodecError: onClose gets it, the peer a reset
        }
        return .none
    }
}

@Suite(.serialized)
struct ReadmeCodecExampleTests {
    @Test func echoesFramesAndRefusesOverLongOnes() throws {
        try serving(FramedEcho()) { address in
            let client = try TestClient(address)
            let frame: [UInt8] = [0, 0, 0, 5] + Array("hello".utf8)
            try client.send(frame + frame.prefix(6))
            try client.send(Array(frame.dropFirst(6)))
            #expect(try client.receive(exactly: 2 * frame.count) == frame + frame)
            try client.send([0, 1, 0, 0])  // 64 KiB of payload plus the header: over the maximum
            #expect(client.isClosedByPeer())
        }
    }
}
