// The contracts every codec implements, and the errors they report.

/// What a decoder found at the start of the buffered input.
///
/// ```
///   connection input (contiguous, lent by the loop)
///   +---------+----------------------+---------+-------------------
///   | header  | frame (lent to body) | trailer | next frame ...
///   +---------+----------------------+---------+-------------------
///   ^ 0       ^ range.lowerBound     ^ range.upperBound
///   |<----------------- consume ------------->|
/// ```
public enum DecodeStep: Hashable, Sendable {
    /// A complete frame: its bytes are `range` of the input (a header or delimiter may lie
    /// outside it), and the first `consume` bytes (at least `range.upperBound`, more than 0) are
    /// consumed once the frame has been handled.
    case frame(Range<Int>, consume: Int)
    /// No complete frame yet: nothing is consumed until at least `atLeast` bytes are buffered
    /// (a hint; the decoder is asked again whenever more input arrives).
    case needMore(atLeast: Int)
    /// Drop the first `n` bytes (more than 0) without a frame: a decoder discarding an
    /// over-long frame consumes it as it arrives, so it never holds the input back.
    case skip(Int)
}

/// Splits a connection's input into frames.
///
/// A decoder is a value that may keep a little state between calls (how far it has searched,
/// how much of an over-long frame is left to discard), so keep one per connection and pass it
/// `inout` (`try c.forEachFrame(using: &decoder) { … }`). Between calls nothing but the decoder
/// should consume the connection's input; after consuming some by other means, call `reset()`.
///
/// Thread: the connection's loop, like `Connection`.
public protocol FrameDecoder {
    /// Looks at the buffered input (everything not yet consumed, from its first byte) and
    /// says what comes first. It must not return a frame that needs bytes beyond `input`.
    /// Throws (typically a `CodecError`) when the input breaks the framing; the connection
    /// should then be closed, as the stream can no longer be trusted.
    mutating func decode(_ input: RawSpan) throws -> DecodeStep

    /// Forgets any state kept between calls (a search position, a frame being discarded).
    mutating func reset()
}

/// Writes frames.
///
/// Thread: any (an encoder keeps no state); the `Connection.writeFrame` helpers run on the
/// connection's loop, like `Connection`.
public protocol FrameEncoder {
    /// The size of the encoded frame for a payload of `payloadCount` bytes; throws a
    /// `CodecError` when this encoder cannot frame such a payload.
    func encodedLength(payloadCount: Int) throws -> Int

    /// Renders the frame for `payload` into `output` (at least `encodedLength(payloadCount:)`
    /// bytes) and returns how many bytes it wrote.
    func encode(_ payload: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int
}

/// What a decoder does with a frame longer than its `maxFrameLength`.
public enum TooLongFramePolicy: Hashable, Sendable {
    /// Throw `CodecError.frameTooLong` as soon as the frame is known to be too long; the
    /// handler should close the connection.
    case fail
    /// Skip the frame's bytes as they arrive (never buffering them) and carry on with the
    /// next frame; the decoder counts them in `discardedFrames`. An error that leaves no
    /// way to find the next frame (a negative or overflowing length field) still throws.
    case discard
}

/// A framing error: what was wrong with the input or the payload, and what to do about it.
public enum CodecError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A frame is longer than the decoder's `maxFrameLength`. `length` is the frame length the
    /// peer announced (a length field), or nil when no delimiter came within the maximum.
    case frameTooLong(length: Int?, maxFrameLength: Int)
    /// A length field, after `lengthAdjustment`, gives a frame shorter than its own header
    /// (`length` is the adjusted frame length) or shorter than `initialBytesToStrip`.
    case invalidLength(fieldValue: UInt64, length: Int, minimum: Int)
    /// A length field's value (plus adjustment and header) does not fit in an `Int`.
    case lengthOverflow(fieldValue: UInt64)
    /// An encoder was given a payload it cannot frame (too long for the length field, or
    /// not the fixed frame length), with the reason.
    case cannotEncode(payloadCount: Int, reason: String)

    /// What was wrong and what to do, in one sentence.
    public var description: String {
        switch self {
        case .frameTooLong(let length?, let max):
            "frame of \(length) bytes exceeds maxFrameLength \(max); close the connection, "
                + "or raise maxFrameLength (and Options.inboundLimit above it) if such frames are legitimate"
        case .frameTooLong(nil, let max):
            "no frame end within maxFrameLength \(max) bytes; close the connection, "
                + "or raise maxFrameLength (and Options.inboundLimit above it) if such frames are legitimate"
        case .invalidLength(let value, let length, let minimum):
            "length field \(value) gives a frame of \(length) bytes, shorter than the \(minimum) its header "
                + "(or initialBytesToStrip) takes; the peer speaks another protocol or the codec's "
                + "lengthAdjustment/lengthFieldOffset are wrong: close the connection"
        case .lengthOverflow(let value):
            "length field \(value) overflows; the peer speaks another protocol: close the connection"
        case .cannotEncode(let count, let reason):
            "cannot encode a payload of \(count) bytes: \(reason)"
        }
    }
}
