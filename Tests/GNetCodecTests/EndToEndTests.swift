import GNet
import GNetCodec
import GNetConformance
import Glibc
import Testing

/// A decoder kept per connection in `Connection.context`.
final class Box<D: FrameDecoder> {
    var decoder: D
    init(_ decoder: D) { self.decoder = decoder }
}

/// Calls `traffic` with the connection's decoder; a framing error closes the connection.
struct Framed<D: FrameDecoder & Sendable>: EventHandler {
    let codec: D
    let traffic: @Sendable (Connection, inout D) throws -> Void

    func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        c.context = Box(codec)
        return (nil, .none)
    }

    func onTraffic(_ c: Connection) -> Action {
        guard let box = c.context as? Box<D> else { return .close }
        do { try traffic(c, &box.decoder) } catch { return .close }
        return .none
    }
}

/// The codecs through a real engine (the default backend; the conformance scenarios
/// `codec.*` run every backend).
@Suite(.serialized)
struct EndToEndTests {
    @Test func copyingNextFrameLoop() throws {
        let codec = LineBasedFrameCodec()
        try serving(Framed(codec: codec) { c, decoder in
            while let line = try c.nextFrame(using: &decoder) {
                try c.writeFrame(Array(line.reversed()), using: codec)
            }
        }) { address in
            let client = try TestClient(address)
            try client.send("abc\r\ndef\ngh")
            #expect(try client.receive(exactly: 8) == Array("cba\nfed\n".utf8))
            try client.send("i\n")
            #expect(try client.receive(exactly: 4) == Array("ihg\n".utf8))
        }
    }

    /// Frames arriving one byte per read (a pause after each byte), the length field split
    /// across reads, for each width: echoed whole.
    @Test(arguments: [1, 2, 3, 4, 8])
    func oneByteAtATime(width: Int) throws {
        let codec = LengthFieldBasedFrameCodec(lengthFieldLength: width, byteOrder: width % 2 == 0 ? .bigEndian : .littleEndian)
        try serving(Framed(codec: codec) { c, decoder in
            try c.forEachFrame(using: &decoder) { frame in try c.writeFrame(frame, using: codec) }
        }) { address in
            let client = try TestClient(address)
            var stream: [UInt8] = []
            for payload in [Array("abc".utf8), [], Array("defgh".utf8)] { stream += try encoded(payload, codec) }
            for byte in stream {
                try client.send([byte])
                usleep(300)
            }
            #expect(try client.receive(exactly: stream.count) == stream)
        }
    }

    /// One frame per `onTraffic`: the engine offers what is left at once, so no complete
    /// frame waits for the next read.
    @Test func oneFramePerCallbackStrandsNothing() throws {
        let codec = LengthFieldBasedFrameCodec(lengthFieldLength: 2)
        try serving(Framed(codec: codec) { c, decoder in
            _ = try c.nextFrame(using: &decoder) { (frame: RawSpan) in
                try c.writeFrame([UInt8(frame.byteCount)], using: codec)
            }
        }) { address in
            let client = try TestClient(address)
            try client.send([0, 1, 9, 0, 0, 0, 3, 1, 2, 3, 0])  // 1 byte, empty, 3 bytes, partial
            #expect(try client.receive(exactly: 9) == [0, 1, 1, 0, 1, 0, 0, 1, 3])
            try client.send([2, 7, 7])
            #expect(try client.receive(exactly: 3) == [0, 1, 2])
        }
    }

    /// The payload rendered in place behind room for the header, then the header written.
    @Test func inPlaceFrameWrite() throws {
        let codec = LengthFieldBasedFrameCodec(lengthFieldLength: 2, byteOrder: .littleEndian)
        try serving(Framed(codec: codec) { c, decoder in
            try c.forEachFrame(using: &decoder) { frame in
                let n = frame.byteCount
                try c.writeFrame(using: codec, reservingCapacity: 64) { out in
                    for i in 0 ..< n { out[i] = UInt8(i) }
                    return n
                }
            }
        }) { address in
            let client = try TestClient(address)
            try client.send([3, 0, 9, 9, 9, 0, 0])
            #expect(try client.receive(exactly: 7) == [3, 0, 0, 1, 2, 0, 0])
        }
    }

    /// A frame whose body closes the connection ends the loop: the frames after it are not
    /// handled.
    @Test func closingInsideForEachFrameStops() throws {
        let codec = LineBasedFrameCodec()
        try serving(Framed(codec: codec) { c, decoder in
            try c.forEachFrame(using: &decoder) { frame in
                if frame.withUnsafeBytes({ Array($0) }) == Array("quit".utf8) { c.close() } else { try c.writeFrame(frame, using: codec) }
            }
        }) { address in
            let client = try TestClient(address)
            try client.send("a\nquit\nb\n")
            #expect(try client.receiveUntilEOF() == Array("a\n".utf8))
        }
    }

    /// An over-long frame throws `CodecError` out of `forEachFrame`; the handler closes.
    @Test func overLongFrameThrowsToTheHandler() throws {
        let codec = DelimiterBasedFrameCodec(delimiter: Array("##".utf8), maxFrameLength: 8)
        try serving(Framed(codec: codec) { c, decoder in
            do {
                try c.forEachFrame(using: &decoder) { frame in try c.writeFrame(frame, using: codec) }
            } catch let error as CodecError {
                try c.write("error: \(error)\n")
                throw error
            }
        }) { address in
            let client = try TestClient(address)
            try client.send("ok##0123456789")
            let reply = String(decoding: try client.receiveUntilEOF(), as: UTF8.self)
            #expect(reply.hasPrefix("ok##error: no frame end within maxFrameLength 8 bytes"))
        }
    }
}
