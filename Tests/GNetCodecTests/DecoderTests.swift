import GNetCodec
import Testing

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
private func strings(_ frames: [[UInt8]]) -> [String] { frames.map { String(decoding: $0, as: UTF8.self) } }

/// Every split of `input` into pieces of the given size, for the "one byte at a time", "all at
/// once" and in-between cases.
private let pieceSizes = [[1], [2], [3], [7], [1, 5, 2], [Int.max]]

@Suite struct LineCodecTests {
    @Test(arguments: pieceSizes)
    func linesAtEverySplit(pieces: [Int]) throws {
        var f = Feeder(LineBasedFrameCodec())
        try f.feed(bytes("one\r\ntwo\n\nthree\rstill\n"), pieces: pieces)
        #expect(strings(f.frames) == ["one", "two", "", "three\rstill"])
        #expect(f.buffered.isEmpty)
    }

    @Test func keepsDelimiterWhenAsked() throws {
        var f = Feeder(LineBasedFrameCodec(stripDelimiter: false))
        try f.feed(bytes("a\r\nb\nc"))
        #expect(strings(f.frames) == ["a\r\n", "b\n"])
        #expect(f.buffered == bytes("c"))
    }

    @Test func partialLineStaysBuffered() throws {
        var f = Feeder(LineBasedFrameCodec())
        try f.feed(bytes("abc"))
        #expect(f.frames.isEmpty)
        try f.feed(bytes("d\nef"))
        #expect(strings(f.frames) == ["abcd"])
        #expect(f.buffered == bytes("ef"))
    }

    @Test func tooLongWithoutNewlineFails() throws {
        var f = Feeder(LineBasedFrameCodec(maxFrameLength: 4))
        try f.feed(bytes("abcd\r"))  // could still be a 4-byte line ending in \r\n
        #expect(throws: CodecError.frameTooLong(length: nil, maxFrameLength: 4)) { try f.feed(bytes("e")) }
    }

    @Test func tooLongCompleteLineFails() throws {
        var f = Feeder(LineBasedFrameCodec(maxFrameLength: 4))
        #expect(throws: CodecError.frameTooLong(length: 5, maxFrameLength: 4)) { try f.feed(bytes("ok\nabcde\n")) }
        #expect(strings(f.frames) == ["ok"])
        var exact = Feeder(LineBasedFrameCodec(maxFrameLength: 4))
        try exact.feed(bytes("abcd\r\nabcd\n"))
        #expect(strings(exact.frames) == ["abcd", "abcd"])
    }

    @Test(arguments: pieceSizes)
    func discardsTooLongLinesWithoutBuffering(pieces: [Int]) throws {
        var f = Feeder(LineBasedFrameCodec(maxFrameLength: 4, tooLongFrame: .discard))
        let long = [UInt8](repeating: UInt8(ascii: "x"), count: 10_000)
        try f.feed(bytes("ok\n") + long + bytes("\r\nfine\n") + long + bytes("\nend\n"), pieces: pieces)
        #expect(strings(f.frames) == ["ok", "fine", "end"])
        #expect(f.decoder.discardedFrames == 2)
        #expect(f.peakBuffered <= 5)
    }

    @Test func encodesWithNewline() throws {
        #expect(try encoded(bytes("hi"), LineBasedFrameCodec()) == bytes("hi\n"))
    }
}

@Suite struct DelimiterCodecTests {
    @Test(arguments: pieceSizes)
    func framesAtEverySplit(pieces: [Int]) throws {
        var f = Feeder(DelimiterBasedFrameCodec(delimiter: bytes("\r\n\r\n")))
        try f.feed(bytes("a\r\nb\r\n\r\n\r\n\r\nc\r\n\r"), pieces: pieces)
        #expect(strings(f.frames) == ["a\r\nb", ""])
        #expect(f.buffered == bytes("c\r\n\r"))
    }

    @Test func overlappingDelimiterPrefix() throws {
        var f = Feeder(DelimiterBasedFrameCodec(delimiter: bytes("aab")))
        try f.feed(bytes("aaab"), pieces: [1])
        #expect(strings(f.frames) == ["a"])
    }

    @Test func keepsDelimiterWhenAsked() throws {
        var f = Feeder(DelimiterBasedFrameCodec(delimiter: bytes("||"), stripDelimiter: false))
        try f.feed(bytes("x||y||"))
        #expect(strings(f.frames) == ["x||", "y||"])
    }

    @Test func tooLongFails() throws {
        var f = Feeder(DelimiterBasedFrameCodec(delimiter: bytes("||"), maxFrameLength: 3))
        try f.feed(bytes("abc|"))  // "abc" then maybe "||"
        #expect(throws: CodecError.frameTooLong(length: nil, maxFrameLength: 3)) { try f.feed(bytes("d")) }
    }

    @Test(arguments: pieceSizes)
    func discardsTooLongFrames(pieces: [Int]) throws {
        var f = Feeder(DelimiterBasedFrameCodec(delimiter: bytes("||"), maxFrameLength: 3, tooLongFrame: .discard))
        try f.feed(bytes("ab||abcdefg|h||abc||"), pieces: pieces)
        #expect(strings(f.frames) == ["ab", "abc"])
        #expect(f.decoder.discardedFrames == 1)
        #expect(f.peakBuffered <= 4)
    }

    @Test func randomFramesAndSplits() throws {
        var r = Random(seed: 7)
        let codec = DelimiterBasedFrameCodec(delimiter: bytes("\0\u{1}"), maxFrameLength: 300)
        var payloads: [[UInt8]] = []
        var stream: [UInt8] = []
        for i in 0 ..< 200 {
            let p = patternFree(r.next(0 ... 300), seed: UInt64(i))
            payloads.append(p)
            stream += try encoded(p, codec)
        }
        var f = Feeder(codec)
        try f.feed(stream, pieces: (0 ..< 50).map { _ in r.next(1 ... 700) })
        #expect(f.frames == payloads)
    }

    /// Bytes without 0 (so no delimiter inside a payload).
    private func patternFree(_ n: Int, seed: UInt64) -> [UInt8] {
        var r = Random(seed: seed)
        return (0 ..< n).map { _ in UInt8(r.next(1 ... 255)) }
    }
}

@Suite struct FixedLengthCodecTests {
    @Test(arguments: pieceSizes)
    func framesAtEverySplit(pieces: [Int]) throws {
        var f = Feeder(FixedLengthFrameCodec(frameLength: 3))
        try f.feed(bytes("abcdefgh"), pieces: pieces)
        #expect(strings(f.frames) == ["abc", "def"])
        #expect(f.buffered == bytes("gh"))
    }

    @Test func encoderRefusesOtherLengths() throws {
        let codec = FixedLengthFrameCodec(frameLength: 3)
        #expect(try encoded(bytes("abc"), codec) == bytes("abc"))
        #expect(throws: CodecError.self) { try codec.encodedLength(payloadCount: 4) }
    }
}

@Suite struct LengthFieldCodecTests {
    typealias Codec = LengthFieldBasedFrameCodec

    static let widths = [1, 2, 3, 4, 8]
    static let orders: [Codec.ByteOrder] = [.bigEndian, .littleEndian]

    @Test(arguments: widths, orders)
    func roundTripsRandomFramesAtRandomSplits(width: Int, order: Codec.ByteOrder) throws {
        let codec = Codec(maxFrameLength: 8 + 255, lengthFieldLength: width, byteOrder: order)
        var r = Random(seed: UInt64(width) * 31 + (order == .bigEndian ? 1 : 2))
        var payloads: [[UInt8]] = []
        var stream: [UInt8] = []
        for i in 0 ..< 300 {
            let p = patternBytes(r.next(0 ... 255), seed: UInt64(i))
            payloads.append(p)
            stream += try encoded(p, codec)
        }
        for pieces in [[1], [2, 3], (0 ..< 64).map { _ in r.next(1 ... 600) }, [Int.max]] {
            var f = Feeder(codec)
            try f.feed(stream, pieces: pieces)
            #expect(f.frames == payloads, "width \(width) \(order) pieces \(pieces.prefix(4))")
            #expect(f.buffered.isEmpty)
        }
    }

    @Test(arguments: widths, orders)
    func headerBytesInFieldOrder(width: Int, order: Codec.ByteOrder) throws {
        let codec = Codec(lengthFieldLength: width, byteOrder: order)
        let out = try encoded([UInt8](repeating: 7, count: 0x0102 & ((1 << (8 * width)) - 1)), codec)
        let header = Array(out.prefix(width))
        var expected = [UInt8](repeating: 0, count: width)
        if width == 1 { expected = [0x02] } else { expected[width - 1] = 0x02; expected[width - 2] = 0x01 }
        #expect(header == (order == .bigEndian ? expected : expected.reversed()))
    }

    /// The examples of Netty's `LengthFieldBasedFrameDecoder` documentation.
    @Test func nettyExamples() throws {
        let hello = bytes("HELLO, WORLD")  // 12 bytes
        // 1: 2-byte length, nothing stripped.
        var f = Feeder(Codec(lengthFieldLength: 2, initialBytesToStrip: 0))
        try f.feed([0x00, 0x0C] + hello)
        #expect(f.frames == [[0x00, 0x0C] + hello])
        // 2: header stripped.
        f = Feeder(Codec(lengthFieldLength: 2, initialBytesToStrip: 2))
        try f.feed([0x00, 0x0C] + hello)
        #expect(f.frames == [hello])
        // 3: the length counts the header (adjustment -2).
        f = Feeder(Codec(lengthFieldLength: 2, lengthAdjustment: -2, initialBytesToStrip: 0))
        try f.feed([0x00, 0x0E] + hello)
        #expect(f.frames == [[0x00, 0x0E] + hello])
        // 4: a 2-byte header before a 3-byte length.
        f = Feeder(Codec(lengthFieldOffset: 2, lengthFieldLength: 3, initialBytesToStrip: 0))
        try f.feed([0xCA, 0xFE, 0x00, 0x00, 0x0C] + hello)
        #expect(f.frames == [[0xCA, 0xFE, 0x00, 0x00, 0x0C] + hello])
        // 5: a 2-byte header after a 3-byte length (adjustment 2).
        f = Feeder(Codec(lengthFieldLength: 3, lengthAdjustment: 2, initialBytesToStrip: 0))
        try f.feed([0x00, 0x00, 0x0C, 0xCA, 0xFE] + hello)
        #expect(f.frames == [[0x00, 0x00, 0x0C, 0xCA, 0xFE] + hello])
        // 6: HDR1 LEN HDR2 payload, stripping HDR1 and LEN.
        f = Feeder(Codec(lengthFieldOffset: 1, lengthFieldLength: 2, lengthAdjustment: 1, initialBytesToStrip: 3))
        try f.feed([0xCA, 0x00, 0x0C, 0xFE] + hello)
        #expect(f.frames == [[0xFE] + hello])
        // 7: as 6, with the length counting the whole frame.
        f = Feeder(Codec(lengthFieldOffset: 1, lengthFieldLength: 2, lengthAdjustment: -3, initialBytesToStrip: 3))
        try f.feed([0xCA, 0x00, 0x10, 0xFE] + hello)
        #expect(f.frames == [[0xFE] + hello])
    }

    @Test func lengthFieldSplitAcrossReads() throws {
        var f = Feeder(Codec(lengthFieldOffset: 1, lengthFieldLength: 4, byteOrder: .littleEndian))
        let frame: [UInt8] = [0xAA, 0x03, 0x00, 0x00, 0x00, 1, 2, 3]
        for b in frame.prefix(4) {
            try f.feed([b])
            #expect(f.frames.isEmpty)
        }
        try f.feed(frame[4...] + frame.prefix(2))
        #expect(f.frames == [[1, 2, 3]])
        #expect(f.buffered == [0xAA, 0x03])
    }

    @Test func refusesLengthsOverTheMaximumFromTheHeaderAlone() throws {
        var f = Feeder(Codec(maxFrameLength: 1024))
        #expect(throws: CodecError.frameTooLong(length: 4 + 0xFFFF_FFFF, maxFrameLength: 1024)) {
            try f.feed([0xFF, 0xFF, 0xFF, 0xFF])
        }
        var exact = Feeder(Codec(maxFrameLength: 1024))
        try exact.feed(try encoded(patternBytes(1020, seed: 1), Codec(maxFrameLength: 1024)))
        #expect(exact.frames.count == 1)
        #expect(throws: CodecError.frameTooLong(length: 1025, maxFrameLength: 1024)) {
            try exact.feed([0, 0, 0x03, 0xFD])
        }
    }

    @Test func refusesOverflowingAndNegativeLengths() throws {
        var f = Feeder(Codec(lengthFieldLength: 8))
        #expect(throws: CodecError.lengthOverflow(fieldValue: .max)) { try f.feed([UInt8](repeating: 0xFF, count: 8)) }
        f = Feeder(Codec(lengthFieldLength: 8, lengthAdjustment: 16))
        let nearMax = UInt64(Int.max) - 4
        #expect(throws: CodecError.lengthOverflow(fieldValue: nearMax)) {
            try f.feed((0 ..< 8).map { UInt8(truncatingIfNeeded: nearMax >> UInt64(56 - 8 * $0)) })
        }
        f = Feeder(Codec(lengthFieldLength: 2, lengthAdjustment: -4, tooLongFrame: .discard))
        #expect(throws: CodecError.invalidLength(fieldValue: 1, length: -1, minimum: 2)) { try f.feed([0, 1]) }
        f = Feeder(Codec(lengthFieldLength: 2, lengthAdjustment: -2, initialBytesToStrip: 4))
        #expect(throws: CodecError.invalidLength(fieldValue: 3, length: 3, minimum: 4)) { try f.feed([0, 3, 9]) }
    }

    @Test(arguments: pieceSizes)
    func discardsTooLongFramesAsTheyArrive(pieces: [Int]) throws {
        let big = Codec(maxFrameLength: 1 << 20, lengthFieldLength: 2)
        var f = Feeder(Codec(maxFrameLength: 64, lengthFieldLength: 2, tooLongFrame: .discard))
        let stream = try encoded(bytes("ok"), big) + encoded(patternBytes(50_000, seed: 3), big)
            + encoded(bytes("fine"), big) + encoded(patternBytes(63, seed: 4), big) + encoded(bytes("end"), big)
        try f.feed(stream, pieces: pieces)
        #expect(strings(f.frames) == ["ok", "fine", "end"])
        #expect(f.decoder.discardedFrames == 2)
        #expect(f.peakBuffered <= 64)
    }

    @Test func encoderBounds() throws {
        #expect(throws: CodecError.self) { try Codec(lengthFieldLength: 1).encodedLength(payloadCount: 256) }
        #expect(try Codec(lengthFieldLength: 1).encodedLength(payloadCount: 255) == 256)
        #expect(throws: CodecError.self) { try Codec(lengthAdjustment: 5).encodedLength(payloadCount: 4) }
        // The encoder undoes the adjustment, so a codec decodes its own frames.
        let counted = Codec(lengthFieldLength: 2, lengthAdjustment: -2)
        #expect(try encoded(bytes("abc"), counted) == [0, 5] + bytes("abc"))
        var f = Feeder(counted)
        try f.feed(try encoded(bytes("abc"), counted))
        #expect(strings(f.frames) == ["abc"])
    }
}

/// Random bytes into every decoder: frames or a `CodecError`, never a crash, and never more
/// buffered than the decoder's bound.
@Suite struct GarbageTests {
    @Test(arguments: 0 ..< 20)
    func garbageIsBoundedOrRefused(seed: Int) throws {
        let garbage = patternBytes(20_000, seed: UInt64(seed) + 100)
        var r = Random(seed: UInt64(seed))
        let pieces = (0 ..< 32).map { _ in r.next(1 ... 900) }
        func run<D: FrameDecoder>(_ d: D, bound: Int) throws {
            var f = Feeder(d)
            do { try f.feed(garbage, pieces: pieces) } catch is CodecError {}
            #expect(f.peakBuffered <= bound, "\(D.self) buffered \(f.peakBuffered)")
        }
        try run(LineBasedFrameCodec(maxFrameLength: 100), bound: 101)
        try run(LineBasedFrameCodec(maxFrameLength: 100, tooLongFrame: .discard), bound: 101)
        try run(DelimiterBasedFrameCodec(delimiter: [1, 2, 3], maxFrameLength: 100, tooLongFrame: .discard), bound: 102)
        try run(FixedLengthFrameCodec(frameLength: 33), bound: 32)
        for width in LengthFieldCodecTests.widths {
            for order in LengthFieldCodecTests.orders {
                try run(LengthFieldBasedFrameCodec(maxFrameLength: 300, lengthFieldLength: width, byteOrder: order), bound: 300)
                try run(LengthFieldBasedFrameCodec(
                    maxFrameLength: 300, lengthFieldOffset: 1, lengthFieldLength: width, byteOrder: order,
                    lengthAdjustment: -3, tooLongFrame: .discard), bound: 300)
            }
        }
    }
}

/// Reproducible pseudo-random bytes.
func patternBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var r = Random(seed: seed)
    return (0 ..< n).map { _ in UInt8(truncatingIfNeeded: r.next(0 ... 255)) }
}
