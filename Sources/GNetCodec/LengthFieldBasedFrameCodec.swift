import GNet

/// Frames announced by a length field: gnet's `LengthFieldBasedFrameCodec`, with Netty's
/// `LengthFieldBasedFrameDecoder` parameters and `LengthFieldPrepender` as the encoder.
///
/// ```
///   lengthFieldLength = 2, initialBytesToStrip = 2 (Netty's second example)
///   input (14 bytes)                 lent to the body (12 bytes)
///   +--------+----------------+      +----------------+
///   | length | payload        | ---> | payload        |
///   | 0x000C | "HELLO, WORLD" |      | "HELLO, WORLD" |
///   +--------+----------------+      +----------------+
/// ```
///
/// As in Netty: the frame is `lengthFieldOffset + lengthFieldLength + fieldValue +
/// lengthAdjustment` bytes long (so the field counts what follows it; use a negative
/// adjustment when it counts the header too), its first `initialBytesToStrip` bytes are not
/// lent, and `maxFrameLength` bounds the whole frame, header included. Nothing of a frame is
/// buffered beyond what the peer has sent, and a frame longer than `maxFrameLength` is refused
/// from its header alone (`TooLongFramePolicy`), so the peer's length never makes anything
/// allocate. Keep `Options.inboundLimit` at least `maxFrameLength`.
///
/// Thread: the connection's loop, like `Connection`, when decoding; encoding from any.
public struct LengthFieldBasedFrameCodec: FrameDecoder, FrameEncoder, Sendable {
    /// The byte order of the length field.
    public enum ByteOrder: Hashable, Sendable { case bigEndian, littleEndian }

    /// The longest frame accepted, header included.
    public let maxFrameLength: Int
    /// Where the length field starts.
    public let lengthFieldOffset: Int
    /// The width of the length field: 1, 2, 3, 4 or 8 bytes (unsigned).
    public let lengthFieldLength: Int
    /// The length field's byte order.
    public let byteOrder: ByteOrder
    /// Added to the field's value to get the number of bytes that follow the field.
    public let lengthAdjustment: Int
    /// How many bytes at the start of each frame are not lent (usually the header).
    public let initialBytesToStrip: Int

    // MARK: Decoding state (per connection)

    /// Bytes of an over-long frame still to skip (`.discard` policy).
    var toDiscard = 0
    /// What an over-long frame does.
    public let tooLongFrame: TooLongFramePolicy
    /// How many over-long frames were skipped (`.discard` policy).
    public private(set) var discardedFrames = 0

    /// A codec with Netty's parameters. By default: a 4-byte big-endian length of the payload
    /// before it, stripped, so the body sees the payload only; encoding writes the same.
    public init(
        maxFrameLength: Int = 1 << 20,
        lengthFieldOffset: Int = 0,
        lengthFieldLength: Int = 4,
        byteOrder: ByteOrder = .bigEndian,
        lengthAdjustment: Int = 0,
        initialBytesToStrip: Int? = nil,
        tooLongFrame: TooLongFramePolicy = .fail
    ) {
        precondition([1, 2, 3, 4, 8].contains(lengthFieldLength),
                     "lengthFieldLength must be 1, 2, 3, 4 or 8, got \(lengthFieldLength)")
        precondition(lengthFieldOffset >= 0, "lengthFieldOffset must not be negative, got \(lengthFieldOffset)")
        precondition(maxFrameLength >= lengthFieldOffset + lengthFieldLength,
                     "maxFrameLength \(maxFrameLength) must cover the length field's end, \(lengthFieldOffset + lengthFieldLength)")
        let strip = initialBytesToStrip ?? (lengthFieldOffset + lengthFieldLength)
        precondition(strip >= 0, "initialBytesToStrip must not be negative, got \(strip)")
        self.maxFrameLength = maxFrameLength
        self.lengthFieldOffset = lengthFieldOffset
        self.lengthFieldLength = lengthFieldLength
        self.byteOrder = byteOrder
        self.lengthAdjustment = lengthAdjustment
        self.initialBytesToStrip = strip
        self.tooLongFrame = tooLongFrame
    }

    /// Where the length field ends.
    var headerLength: Int { lengthFieldOffset + lengthFieldLength }

    /// Forgets a frame being discarded.
    public mutating func reset() { toDiscard = 0 }

    /// A frame once all its announced bytes are buffered. Throws `CodecError.frameTooLong`
    /// (`.fail` policy), `.invalidLength` or `.lengthOverflow`.
    public mutating func decode(_ input: RawSpan) throws -> DecodeStep {
        let count = input.byteCount
        if toDiscard > 0 {
            guard count > 0 else { return .needMore(atLeast: 1) }
            let n = min(toDiscard, count)
            toDiscard -= n
            return .skip(n)
        }
        let end = headerLength
        guard count >= end else { return .needMore(atLeast: end) }
        let value = readField(input)
        guard value <= UInt64(Int.max) else { throw CodecError.lengthOverflow(fieldValue: value) }
        let (withAdjustment, o1) = Int(value).addingReportingOverflow(lengthAdjustment)
        let (length, o2) = withAdjustment.addingReportingOverflow(end)
        guard !o1, !o2 else { throw CodecError.lengthOverflow(fieldValue: value) }
        guard length >= end else { throw CodecError.invalidLength(fieldValue: value, length: length, minimum: end) }
        if length > maxFrameLength {
            switch tooLongFrame {
            case .fail:
                throw CodecError.frameTooLong(length: length, maxFrameLength: maxFrameLength)
            case .discard:
                discardedFrames += 1
                let n = min(length, count)
                toDiscard = length - n
                return .skip(n)
            }
        }
        guard initialBytesToStrip <= length else {
            throw CodecError.invalidLength(fieldValue: value, length: length, minimum: initialBytesToStrip)
        }
        guard count >= length else { return .needMore(atLeast: length) }
        return .frame(initialBytesToStrip ..< length, consume: length)
    }

    /// The length field's value, unsigned.
    func readField(_ input: RawSpan) -> UInt64 {
        var value: UInt64 = 0
        for i in 0 ..< lengthFieldLength {
            let index = byteOrder == .bigEndian ? i : lengthFieldLength - 1 - i
            value = value << 8 | UInt64(input.unsafeLoad(fromByteOffset: lengthFieldOffset + index, as: UInt8.self))
        }
        return value
    }

    // MARK: Encoding (LengthFieldPrepender)

    /// The field's value for a payload of `payloadCount` bytes: the payload's length minus
    /// `lengthAdjustment` (the encoder undoes what the decoder adds), so a codec decodes what
    /// it encodes. Throws `CodecError.cannotEncode` when it is negative or does not fit.
    func fieldValue(payloadCount: Int) throws -> UInt64 {
        let value = payloadCount - lengthAdjustment
        guard value >= 0 else {
            throw CodecError.cannotEncode(payloadCount: payloadCount, reason: "lengthAdjustment \(lengthAdjustment) makes the length field negative")
        }
        if lengthFieldLength < 8, value >= 1 << (8 * lengthFieldLength) {
            throw CodecError.cannotEncode(payloadCount: payloadCount, reason: "it does not fit a \(lengthFieldLength)-byte length field")
        }
        return UInt64(value)
    }

    /// The header (the length field, with zeros in the `lengthFieldOffset` bytes before it)
    /// plus the payload. Throws `CodecError.cannotEncode` when the length does not fit the
    /// field. Frames longer than `maxFrameLength` are encoded too (the peer's limit may differ).
    public func encodedLength(payloadCount: Int) throws -> Int {
        _ = try fieldValue(payloadCount: payloadCount)
        return headerLength + payloadCount
    }

    /// Writes the header then the payload into `output`. The encoder writes what
    /// `initialBytesToStrip == headerLength` decoding expects; a codec stripping less expects
    /// the caller to include those bytes (after the header) in `payload`.
    public func encode(_ payload: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try writeHeader(payloadCount: payload.count, into: output)
        UnsafeMutableRawBufferPointer(rebasing: output[headerLength...]).copyMemory(from: payload)
        return headerLength + payload.count
    }

    /// Writes the header for a payload of `payloadCount` bytes into the start of `output`.
    public func writeHeader(payloadCount: Int, into output: UnsafeMutableRawBufferPointer) throws {
        let value = try fieldValue(payloadCount: payloadCount)
        precondition(output.count >= headerLength, "output holds \(output.count) bytes, the header needs \(headerLength)")
        for i in 0 ..< lengthFieldOffset { output[i] = 0 }
        for i in 0 ..< lengthFieldLength {
            let shift = 8 * (byteOrder == .bigEndian ? lengthFieldLength - 1 - i : i)
            output[lengthFieldOffset + i] = UInt8(truncatingIfNeeded: value >> UInt64(shift))
        }
    }
}

extension Connection {
    /// Renders a frame's payload in place, straight into the output buffer after room for the
    /// header, then writes the header in front of it: no copy at all, one write. `body` gets
    /// `maxPayload` writable bytes and returns how many it filled. Throws the codec's
    /// `CodecError` (the payload is then not sent) or the connection's write errors.
    ///
    /// Thread: the connection's loop, like `Connection`.
    @discardableResult
    public func writeFrame(
        using codec: LengthFieldBasedFrameCodec, reservingCapacity maxPayload: Int,
        _ body: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws -> Int {
        let header = codec.headerLength
        return try write(reservingCapacity: header + maxPayload) { buffer in
            let n = try body(UnsafeMutableRawBufferPointer(rebasing: buffer[header ..< header + maxPayload]))
            precondition(n >= 0 && n <= maxPayload, "writeFrame body returned \(n) for \(maxPayload) bytes of room")
            try codec.writeHeader(payloadCount: n, into: buffer)
            return header + n
        }
    }
}
