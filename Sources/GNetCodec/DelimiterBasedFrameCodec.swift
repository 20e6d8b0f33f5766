#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Frames that end with a delimiter, any non-empty byte sequence: gnet's
/// `DelimiterBasedFrameCodec`, Netty's `DelimiterBasedFrameDecoder` (with one delimiter).
/// `LineBasedFrameCodec` is built on it.
///
/// Decoding searches each buffered byte once (it remembers how far it has looked), so a peer
/// sending a byte at a time costs linear, not quadratic, work. A frame is at most
/// `maxFrameLength` bytes, not counting its delimiter; once more than that arrives without a
/// delimiter the frame is too long (`TooLongFramePolicy`), so at most `maxFrameLength` plus the
/// delimiter is ever buffered. Keep `Options.inboundLimit` above that.
///
/// Thread: the connection's loop, like `Connection`, when decoding; encoding from any.
public struct DelimiterBasedFrameCodec: FrameDecoder, FrameEncoder, Sendable {
    /// The bytes that end a frame (never empty).
    public let delimiter: [UInt8]
    /// The longest frame accepted, delimiter excluded.
    public let maxFrameLength: Int
    /// Whether frames are lent without their delimiter.
    public let stripDelimiter: Bool
    /// What an over-long frame does.
    public let tooLongFrame: TooLongFramePolicy
    /// Lines only: a `\r` before the `\n` counts as part of the delimiter.
    let acceptsCRLF: Bool

    // MARK: Decoding state (per connection)

    /// Where the next search for the delimiter starts (earlier positions cannot start one).
    var searched = 0
    /// Skipping an over-long frame until its delimiter.
    var discarding = false
    /// How many over-long frames were skipped (`.discard` policy).
    public private(set) var discardedFrames = 0

    /// Frames ending with `delimiter` (any non-empty byte sequence).
    public init(
        delimiter: some Sequence<UInt8>, maxFrameLength: Int = 8192, stripDelimiter: Bool = true,
        tooLongFrame: TooLongFramePolicy = .fail
    ) {
        let d = Array(delimiter)
        precondition(!d.isEmpty, "DelimiterBasedFrameCodec needs a non-empty delimiter")
        precondition(maxFrameLength > 0, "maxFrameLength must be positive, got \(maxFrameLength)")
        self.delimiter = d
        self.maxFrameLength = maxFrameLength
        self.stripDelimiter = stripDelimiter
        self.tooLongFrame = tooLongFrame
        self.acceptsCRLF = false
    }

    init(line maxFrameLength: Int, stripDelimiter: Bool, tooLongFrame: TooLongFramePolicy) {
        precondition(maxFrameLength > 0, "maxFrameLength must be positive, got \(maxFrameLength)")
        self.delimiter = [UInt8(ascii: "\n")]
        self.maxFrameLength = maxFrameLength
        self.stripDelimiter = stripDelimiter
        self.tooLongFrame = tooLongFrame
        self.acceptsCRLF = true
    }

    /// Forgets how far it searched and any frame being discarded.
    public mutating func reset() {
        searched = 0
        discarding = false
    }

    /// A frame once its delimiter is buffered; throws `CodecError.frameTooLong` (`.fail`
    /// policy) once more than `maxFrameLength` bytes came without one.
    public mutating func decode(_ input: RawSpan) throws -> DecodeStep {
        try input.withUnsafeBytes { try decode(raw: $0) }
    }

    mutating func decode(raw input: UnsafeRawBufferPointer) throws -> DecodeStep {
        let count = input.count
        let dlen = delimiter.count
        guard let end = find(in: input) else {
            // No delimiter starts before `count - dlen + 1`; keep the last dlen-1 bytes, which
            // may begin one.
            let keep = dlen - 1
            searched = max(0, count - keep)
            if discarding {
                guard count > keep else { return .needMore(atLeast: count + 1) }
                searched = 0
                return .skip(count - keep)
            }
            // The shortest frame still possible is `count - keep` bytes long (a `\r` just before
            // a coming `\n` is part of a line's delimiter).
            var shortest = count - keep
            if acceptsCRLF, count > 0, input[count - 1] == UInt8(ascii: "\r") { shortest -= 1 }
            if shortest > maxFrameLength {
                switch tooLongFrame {
                case .fail:
                    throw CodecError.frameTooLong(length: nil, maxFrameLength: maxFrameLength)
                case .discard:
                    discarding = true
                    discardedFrames += 1
                    searched = 0
                    return .skip(count - keep)
                }
            }
            return .needMore(atLeast: count + 1)
        }
        searched = 0
        let consume = end + dlen
        if discarding {
            discarding = false
            return .skip(consume)
        }
        var frameEnd = end
        if acceptsCRLF, end > 0, input[end - 1] == UInt8(ascii: "\r") { frameEnd -= 1 }
        if frameEnd > maxFrameLength {
            switch tooLongFrame {
            case .fail:
                throw CodecError.frameTooLong(length: frameEnd, maxFrameLength: maxFrameLength)
            case .discard:
                discardedFrames += 1
                return .skip(consume)
            }
        }
        return .frame(0 ..< (stripDelimiter ? frameEnd : consume), consume: consume)
    }

    /// The offset of the first delimiter at or after `searched`, or nil.
    func find(in input: UnsafeRawBufferPointer) -> Int? {
        let count = input.count
        let dlen = delimiter.count
        guard let base = input.baseAddress, count >= dlen else { return nil }
        let first = Int32(delimiter[0])
        var from = min(searched, count)
        while from <= count - dlen {
            guard let hit = memchr(base + from, first, count - dlen + 1 - from) else { return nil }
            let at = base.distance(to: UnsafeRawPointer(hit))
            if dlen == 1 { return at }
            let matches = delimiter.withUnsafeBytes { memcmp(base + at, $0.baseAddress!, dlen) == 0 }
            if matches { return at }
            from = at + 1
        }
        return nil
    }

    // MARK: Encoding

    /// The payload plus the delimiter; never throws.
    public func encodedLength(payloadCount: Int) throws -> Int {
        payloadCount + delimiter.count
    }

    /// Writes the payload followed by the delimiter. The payload is not checked for the
    /// delimiter: a payload containing it arrives as two frames.
    public func encode(_ payload: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        output.copyMemory(from: payload)
        delimiter.withUnsafeBytes {
            UnsafeMutableRawBufferPointer(rebasing: output[payload.count...]).copyMemory(from: $0)
        }
        return payload.count + delimiter.count
    }
}
