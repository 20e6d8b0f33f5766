import GNet
import GNetCodec
import Glibc
import Poller
import TestSupport

/// Codec-framed servers on every backend: byte-exact echo of random frames sent in random
/// pieces, over-long frames closing the connection with the typed error, and discarding
/// over-long frames without holding reading back.
public enum CodecScenarios {
    static let all: [Scenario] = [
        Scenario("codec.length-field-echo-random-splits", .engine, run: lengthFieldEcho),
        Scenario("codec.line-echo-random-splits", .engine, run: lineEcho),
        Scenario("codec.over-long-length-closes-with-error", .engine, run: overLongLengthCloses),
        Scenario("codec.over-long-line-closes-with-error", .engine, run: overLongLineCloses),
        Scenario("codec.discard-over-long-keeps-reading", .engine, run: discardKeepsReading),
    ]

    /// One decoder per connection, kept in `Connection.context`.
    final class DecoderBox<D: FrameDecoder> {
        var decoder: D
        init(_ decoder: D) { self.decoder = decoder }
    }

    /// Echoes each frame decoded with `codec`, re-encoded with the same codec. A framing error
    /// aborts the connection with that error, so `onClose` gets it.
    public static func framedEcho<C: FrameDecoder & FrameEncoder & Sendable>(_ codec: C) -> ScriptedHandler {
        ScriptedHandler(
            onOpen: { c, _ in
                c.context = DecoderBox(codec)
                return (nil, .none)
            },
            onTraffic: { c, _ in
                guard let box = c.context as? DecoderBox<C> else { return .close }
                do {
                    try c.forEachFrame(using: &box.decoder) { frame in try c.writeFrame(frame, using: codec) }
                } catch {
                    c.abort(error)
                    return .close
                }
                return .none
            })
    }

    /// Sends `stream` in random pieces (1 byte to 4 KiB) with short random pauses, from one
    /// thread, while another reads the reply, and checks it is byte-exactly `expected`
    /// (`stream` itself when nil).
    static func echoInPieces(
        _ address: SocketAddress, _ stream: [UInt8], expecting expected: [UInt8]? = nil, seed: UInt64
    ) async throws {
        let expected = expected ?? stream
        try await onThread(timeout: .seconds(60), "framed echo") {
            let client = try TestClient(address, timeout: .seconds(20))
            let sender = ResultBox<Void>()
            TestThread.detach {
                sender.set(Result {
                    var rng = Xorshift(seed: seed)
                    var at = 0
                    while at < stream.count {
                        let n = min(stream.count - at, rng.next(upTo: 8) == 0 ? 1 + rng.next(upTo: 4096) : 1 + rng.next(upTo: 64))
                        try client.send(Array(stream[at ..< at + n]))
                        at += n
                        if rng.next(upTo: 4) == 0 { usleep(UInt32(rng.next(upTo: 500))) }
                    }
                })
            }
            let got = try client.receive(exactly: expected.count)
            while sender.get() == nil { usleep(1000) }
            try sender.get()!.get()
            try expect(got == expected, "reply differs from what was expected (\(expected.count) bytes)")
        }
    }

    /// Length-prefixed frames of random sizes (0 to 20 KiB, some straddling reads), echoed
    /// byte-exactly whatever the split points.
    static func lengthFieldEcho(_ kind: PollerKind) async throws -> Trace? {
        let codec = LengthFieldBasedFrameCodec(maxFrameLength: 64 << 10)
        var rng = Xorshift(seed: 0xC0DEC)
        var stream: [UInt8] = []
        for i in 0 ..< 120 {
            let size = rng.next(upTo: 4) == 0 ? rng.next(upTo: 20 << 10) : rng.next(upTo: 300)
            stream += [UInt8(size >> 24 & 0xFF), UInt8(size >> 16 & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size & 0xFF)]
            stream += patternBytes(size, seed: UInt64(i) + 1)
        }
        let handler = framedEcho(codec)
        try await withEngine(kind, handler) { _, address in
            try await echoInPieces(address, stream, seed: 0x5EED)
            try expect(handler.closeErrors.isEmpty, "onClose got \(handler.closeErrors)")
        }
        return nil
    }

    /// Lines (`\n` and `\r\n`, some empty, some long) echoed with `\n` endings.
    static func lineEcho(_ kind: PollerKind) async throws -> Trace? {
        let codec = LineBasedFrameCodec(maxFrameLength: 16 << 10)
        var rng = Xorshift(seed: 0x11E)
        var sent: [UInt8] = []
        var expected: [UInt8] = []
        for _ in 0 ..< 400 {
            let size = rng.next(upTo: 10) == 0 ? rng.next(upTo: 16 << 10) : rng.next(upTo: 80)
            let line = (0 ..< size).map { _ in UInt8(32 + rng.next(upTo: 95)) }
            sent += line + (rng.next(upTo: 2) == 0 ? [13, 10] : [10])
            expected += line + [10]
        }
        let handler = framedEcho(codec)
        try await withEngine(kind, handler) { _, address in
            try await echoInPieces(address, sent, expecting: expected, seed: 0xABC)
            try expect(handler.closeErrors.isEmpty, "onClose got \(handler.closeErrors)")
        }
        return nil
    }

    /// A length field announcing 1 GiB against a 64 KiB maximum: refused from the header, the
    /// connection closed, `onClose` getting `CodecError.frameTooLong` with the announced length.
    static func overLongLengthCloses(_ kind: PollerKind) async throws -> Trace? {
        let handler = framedEcho(LengthFieldBasedFrameCodec(maxFrameLength: 64 << 10))
        try await withEngine(kind, handler) { _, address in
            try await onThread("over-long length") {
                let client = try TestClient(address)
                try client.send([0, 0, 0, 3, 1, 2, 3])  // a good frame first: echoed
                try expect(try client.receive(exactly: 7) == [0, 0, 0, 3, 1, 2, 3], "first frame not echoed")
                try client.send([0x40, 0, 0, 0] + patternBytes(100, seed: 9))
                try expect(client.isClosedByPeer(), "connection still open after a 1 GiB length field")
            }
            try await eventually("onClose") { handler.closes == 1 }
            let expected = CodecError.frameTooLong(length: (1 << 30) + 4, maxFrameLength: 64 << 10)
            try expect(handler.closeErrors[0] == "\(expected)", "onClose got \(handler.closeErrors), expected \(expected)")
        }
        return nil
    }

    /// 100 KiB without a newline against a 1 KiB maximum: the connection closes with
    /// `CodecError.frameTooLong(length: nil, …)` long before the line would end.
    static func overLongLineCloses(_ kind: PollerKind) async throws -> Trace? {
        let handler = framedEcho(LineBasedFrameCodec(maxFrameLength: 1024))
        try await withEngine(kind, handler) { _, address in
            try await onThread("over-long line") {
                let client = try TestClient(address)
                try client.send("hi\r\n")
                try expect(try client.receive(exactly: 3) == Array("hi\n".utf8), "first line not echoed")
                // The server resets the connection part-way: the send may fail, which is fine.
                _ = try? client.send([UInt8](repeating: UInt8(ascii: "x"), count: 100 << 10))
                try expect(client.isClosedByPeer(), "connection still open after an over-long line")
            }
            try await eventually("onClose") { handler.closes == 1 }
            let expected = CodecError.frameTooLong(length: nil, maxFrameLength: 1024)
            try expect(handler.closeErrors[0] == "\(expected)", "onClose got \(handler.closeErrors), expected \(expected)")
        }
        return nil
    }

    /// In discard mode an over-long frame (2 MiB, with `inboundLimit` at 4 KiB) is consumed as
    /// it arrives, so reading never stalls on it, and the frames after it are echoed.
    static func discardKeepsReading(_ kind: PollerKind) async throws -> Trace? {
        let lines = LineBasedFrameCodec(maxFrameLength: 1024, tooLongFrame: .discard)
        let handler = framedEcho(lines)
        try await withEngine(kind, handler, configure: { $0.inboundLimit = 4096 }) { _, address in
            try await onThread(timeout: .seconds(30), "discarding") {
                let client = try TestClient(address, timeout: .seconds(20))
                try client.send("a\n" + String(repeating: "x", count: 2 << 20) + "\nb\n")
                try expect(try client.receive(exactly: 4) == Array("a\nb\n".utf8), "frames around the over-long one not echoed")
            }
        }
        try expect(handler.closeErrors.isEmpty, "onClose got \(handler.closeErrors)")
        return nil
    }
}

/// A reproducible generator for sizes, split points and pauses.
struct Xorshift {
    var x: UInt64
    init(seed: UInt64) { x = seed | 1 }
    /// A number in 0 ..< bound.
    mutating func next(upTo bound: Int) -> Int {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        return Int(x % UInt64(max(bound, 1)))
    }
}
