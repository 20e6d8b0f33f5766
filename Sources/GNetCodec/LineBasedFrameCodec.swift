/// Lines ending with `\n`; a `\r` before it counts as part of the line ending, so `\r\n`
/// lines work too. gnet's `LineBasedFrameCodec`, Netty's `LineBasedFrameDecoder`. A line is at
/// most `maxFrameLength` bytes without its line ending; see `DelimiterBasedFrameCodec` for the
/// bounds. Encoding appends `\n`.
///
/// Thread: the connection's loop, like `Connection`, when decoding; encoding from any.
public struct LineBasedFrameCodec: FrameDecoder, FrameEncoder, Sendable {
    var lines: DelimiterBasedFrameCodec

    /// Lines of at most `maxFrameLength` bytes (line ending excluded), lent without their
    /// line ending when `stripDelimiter` is true.
    public init(maxFrameLength: Int = 8192, stripDelimiter: Bool = true, tooLongFrame: TooLongFramePolicy = .fail) {
        lines = DelimiterBasedFrameCodec(line: maxFrameLength, stripDelimiter: stripDelimiter, tooLongFrame: tooLongFrame)
    }

    /// The longest line accepted, line ending excluded.
    public var maxFrameLength: Int { lines.maxFrameLength }
    /// Whether lines are lent without their `\n` or `\r\n`.
    public var stripDelimiter: Bool { lines.stripDelimiter }
    /// What an over-long line does.
    public var tooLongFrame: TooLongFramePolicy { lines.tooLongFrame }
    /// How many over-long lines were skipped (`.discard` policy).
    public var discardedFrames: Int { lines.discardedFrames }

    /// A line once its `\n` is buffered; throws `CodecError.frameTooLong` (`.fail` policy)
    /// once more than `maxFrameLength` bytes came without one.
    public mutating func decode(_ input: RawSpan) throws -> DecodeStep { try lines.decode(input) }
    /// Forgets how far it searched and any line being discarded.
    public mutating func reset() { lines.reset() }
    /// The payload plus `\n`; never throws.
    public func encodedLength(payloadCount: Int) throws -> Int { payloadCount + 1 }
    /// Writes the payload then `\n` (not checked for newlines: one inside makes two lines).
    public func encode(_ payload: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try lines.encode(payload, into: output)
    }
}
