/// Frames of exactly `frameLength` bytes, back to back. gnet's `FixedLengthFrameCodec`, Netty's
/// `FixedLengthFrameDecoder`. Its frames cannot be too long, so it needs no maximum beyond
/// `frameLength` itself (keep `Options.inboundLimit` at least that).
///
/// Thread: the connection's loop, like `Connection`, when decoding; encoding from any.
public struct FixedLengthFrameCodec: FrameDecoder, FrameEncoder, Sendable {
    /// The length of every frame.
    public let frameLength: Int

    /// Frames of `frameLength` bytes (more than 0).
    public init(frameLength: Int) {
        precondition(frameLength > 0, "FixedLengthFrameCodec needs a positive frameLength, got \(frameLength)")
        self.frameLength = frameLength
    }

    /// A frame when `frameLength` bytes are buffered; never throws.
    public mutating func decode(_ input: RawSpan) throws -> DecodeStep {
        input.byteCount >= frameLength ? .frame(0 ..< frameLength, consume: frameLength) : .needMore(atLeast: frameLength)
    }

    /// Nothing to forget: this decoder keeps no state.
    public mutating func reset() {}

    /// `frameLength`; throws `CodecError.cannotEncode` for a payload of any other length
    /// (gnet's encoder refuses those too rather than padding).
    public func encodedLength(payloadCount: Int) throws -> Int {
        guard payloadCount == frameLength else {
            throw CodecError.cannotEncode(payloadCount: payloadCount, reason: "frames are exactly \(frameLength) bytes")
        }
        return frameLength
    }

    /// Copies the payload (exactly `frameLength` bytes) into `output`.
    public func encode(_ payload: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        _ = try encodedLength(payloadCount: payload.count)
        output.copyMemory(from: payload)
        return payload.count
    }
}
