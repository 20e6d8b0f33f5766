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
    @usableFromInline var toDiscard = 0
    /// What an over-long frame does.
    public let tooLongFrame: TooLongFramePolicy
    /// How many over-long frames were skipped (`.discard` policy).
    public var discardedFrames: Int { discarded }
    @usableFromInline var discarded = 0

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
    @inlinable var headerLength: Int { lengthFieldOffset + lengthFieldLength }

    /// Forgets a frame being discarded.
    public mutating func reset() { toDiscard = 0 }

    /// A frame once all its announced bytes are buffered. Throws `CodecError.frameTooLong`
    /// (`.fail` policy), `.invalidLength` or `.lengthOverflow`.
    ///
    /// Inlinable, like the encoder below, so that a handler's frame loop compiles to a few
    /// loads and compares per frame rather than calls into this module.
    @inlinable @inline(__always)
    public mutating func decode(_ input: RawSpan) throws -> DecodeStep {
        let count = input.byteCount
        if toDiscard > 0 { return discarding(count) }
        let end = headerLength
        guard count >= end else { return .needMore(atLeast: end) }
        let value = readField(input)
        guard value <= UInt64(Int.max) else { throw CodecError.lengthOverflow(fieldValue: value) }
        let (withAdjustment, o1) = Int(value).addingReportingOverflow(lengthAdjustment)
        let (length, o2) = withAdjustment.addingReportingOverflow(end)
        guard !o1, !o2 else { throw CodecError.lengthOverflow(fieldValue: value) }
        guard length >= end else { throw CodecError.invalidLength(fieldValue: value, length: length, minimum: end) }
        if length > maxFrameLength { return try tooLong(length, count) }
        guard initialBytesToStrip <= length else {
            throw CodecError.invalidLength(fieldValue: value, length: length, minimum: initialBytesToStrip)
        }
        guard count >= length else { return .needMore(atLeast: length) }
        return .frame(initialBytesToStrip ..< length, consume: length)
    }

    /// Skips part of an over-long frame being discarded.
    @usableFromInline
    mutating func discarding(_ count: Int) -> DecodeStep {
        guard count > 0 else { return .needMore(atLeast: 1) }
        let n = min(toDiscard, count)
        toDiscard -= n
        return .skip(n)
    }

    /// A frame of `length` bytes is over `maxFrameLength`: fail, or start discarding it.
    @usableFromInline
    mutating func tooLong(_ length: Int, _ count: Int) throws -> DecodeStep {
        switch tooLongFrame {
        case .fail:
            throw CodecError.frameTooLong(length: length, maxFrameLength: maxFrameLength)
        case .discard:
            discarded += 1
            let n = min(length, count)
            toDiscard = length - n
            return .skip(n)
        }
    }

    /// The length field's value, unsigned: one load for the common widths.
    @inlinable @inline(__always)
    func readField(_ input: RawSpan) -> UInt64 {
        let at = lengthFieldOffset
        switch (lengthFieldLength, byteOrder) {
        case (4, .bigEndian): return UInt64(UInt32(bigEndian: input.unsafeLoadUnaligned(fromByteOffset: at, as: UInt32.self)))
        case (4, .littleEndian): return UInt64(UInt32(littleEndian: input.unsafeLoadUnaligned(fromByteOffset: at, as: UInt32.self)))
        case (2, .bigEndian): return UInt64(UInt16(bigEndian: input.unsafeLoadUnaligned(fromByteOffset: at, as: UInt16.self)))
        case (2, .littleEndian): return UInt64(UInt16(littleEndian: input.unsafeLoadUnaligned(fromByteOffset: at, as: UInt16.self)))
        case (8, .bigEndian): return UInt64(bigEndian: input.unsafeLoadUnaligned(fromByteOffset: at, as: UInt64.self))
        case (8, .littleEndian): return UInt64(littleEndian: input.unsafeLoadUnaligned(fromByteOffset: at, as: UInt64.self))
        default: return readFieldBytewise(input)
        }
    }

    /// The length field's value, a byte at a time (1 and 3 bytes).
    @usableFromInline
    func readFieldBytewise(_ input: RawSpan) -> UInt64 {
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
    @inlinable @inline(__always)
    func fieldValue(payloadCount: Int) throws -> UInt64 {
        let value = payloadCount - lengthAdjustment
        guard value >= 0, lengthFieldLength == 8 || UInt64(value) &>> UInt64(8 * lengthFieldLength) == 0 else {
            throw cannotEncode(payloadCount)
        }
        return UInt64(value)
    }

    @usableFromInline
    func cannotEncode(_ payloadCount: Int) -> CodecError {
        if payloadCount - lengthAdjustment < 0 {
            return .cannotEncode(payloadCount: payloadCount, reason: "lengthAdjustment \(lengthAdjustment) makes the length field negative")
        }
        return .cannotEncode(payloadCount: payloadCount, reason: "it does not fit a \(lengthFieldLength)-byte length field")
    }

    /// The header (the length field, with zeros in the `lengthFieldOffset` bytes before it)
    /// plus the payload. Throws `CodecError.cannotEncode` when the length does not fit the
    /// field. Frames longer than `maxFrameLength` are encoded too (the peer's limit may differ).
    @inlinable @inline(__always)
    public func encodedLength(payloadCount: Int) throws -> Int {
        _ = try fieldValue(payloadCount: payloadCount)
        return headerLength + payloadCount
    }

    /// Writes the header then the payload into `output`. The encoder writes what
    /// `initialBytesToStrip == headerLength` decoding expects; a codec stripping less expects
    /// the caller to include those bytes (after the header) in `payload`.
    @inlinable @inline(__always)
    public func encode(_ payload: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try writeHeader(payloadCount: payload.count, into: output)
        UnsafeMutableRawBufferPointer(rebasing: output[headerLength...]).copyMemory(from: payload)
        return headerLength + payload.count
    }

    /// Writes the header for a payload of `payloadCount` bytes into the start of `output`.
    @inlinable @inline(__always)
    public func writeHeader(payloadCount: Int, into output: UnsafeMutableRawBufferPointer) throws {
        let value = try fieldValue(payloadCount: payloadCount)
        precondition(output.count >= headerLength, "output holds \(output.count) bytes, the header needs \(headerLength)")
        if lengthFieldOffset == 0 && lengthFieldLength == 4 {
            let field = byteOrder == .bigEndian ? UInt32(truncatingIfNeeded: value).bigEndian : UInt32(truncatingIfNeeded: value).littleEndian
            output.baseAddress!.storeBytes(of: field, as: UInt32.self)
            return
        }
        writeHeaderBytewise(value, into: output)
    }

    /// The header a byte at a time (an offset, or a width other than 4).
    @usableFromInline
    func writeHeaderBytewise(_ value: UInt64, into output: UnsafeMutableRawBufferPointer) {
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
