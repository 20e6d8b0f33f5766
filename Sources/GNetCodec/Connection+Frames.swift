import GNet

// Decoding and encoding frames on a connection. Every method here runs on the connection's
// loop thread, like `Connection` itself.

extension Connection {
    /// Lends every complete buffered frame to `body`, in order, consuming each after `body`
    /// returns; a partial frame stays buffered (the engine offers it again when more arrives).
    /// Returns how many frames were handled. Nothing is copied: each frame is a view of the
    /// connection's input.
    ///
    /// Stops early when the connection stops being open (say `body` called `close()`). If
    /// `body` throws, its frame is not consumed and the error propagates; if the decoder
    /// throws (for instance `CodecError.frameTooLong`), nothing more is consumed: close the
    /// connection (`return .close`, or `abort(error)` so that `onClose` gets the error).
    ///
    /// ```swift
    /// try c.forEachFrame(using: &session.decoder) { frame in try c.writeFrame(frame, using: encoder) }
    /// ```
    ///
    /// `body` must not consume input itself (`discard`, `next`): the frames of one batch are
    /// lent from one view of the input, which is consumed once, after the batch.
    @inlinable @discardableResult
    public func forEachFrame<D: FrameDecoder>(
        using decoder: inout D, _ body: (RawSpan) throws -> Void
    ) throws -> Int {
        var frames = 0
        var offset = 0
        // Whatever happens (a frame handled, `body` or the decoder throwing), what was
        // handled is consumed, and nothing more.
        defer { if offset > 0 { discard(offset) } }
        try withUnsafeInboundBytes { input in
            while offset < input.count && isOpen {
                let rest = UnsafeRawBufferPointer(rebasing: input[offset...])
                let step = try decoder.decode(rest.bytes)
                switch step {
                case .needMore:
                    return
                case .skip(let n):
                    precondition(n > 0 && n <= rest.count, "FrameDecoder returned \(step) for \(rest.count) buffered bytes")
                    offset += n
                case .frame(let range, let consume):
                    precondition(
                        range.lowerBound >= 0 && consume > 0 && range.upperBound <= consume && consume <= rest.count,
                        "FrameDecoder returned \(step) for \(rest.count) buffered bytes")
                    try body(UnsafeRawBufferPointer(rebasing: rest[range]).bytes)
                    offset += consume
                    frames += 1
                }
            }
        }
        return frames
    }

    /// Lends the first complete buffered frame to `body`, consumes it once `body` returns, and
    /// returns what `body` returned; nil (nothing lent, a partial frame left buffered) when no
    /// complete frame is buffered. Bytes the decoder discards are consumed either way.
    /// Errors as for `forEachFrame(using:_:)`.
    @inlinable
    public func nextFrame<D: FrameDecoder, R>(
        using decoder: inout D, _ body: (RawSpan) throws -> R
    ) throws -> R? {
        while isOpen, let (consumed, result) = try decodeStep(using: &decoder, body) {
            discard(consumed)
            if let result { return result }
        }
        return nil
    }

    /// One step of `decoder` over the buffered input: nil when it needs more; otherwise the
    /// bytes to consume, with `body`'s result when the step was a frame (nil for bytes the
    /// decoder skips). Checks the step against the input, so a faulty custom decoder traps
    /// rather than lending or consuming what is not there.
    @inlinable
    func decodeStep<D: FrameDecoder, R>(
        using decoder: inout D, _ body: (RawSpan) throws -> R
    ) throws -> (consumed: Int, result: R?)? {
        try withUnsafeInboundBytes { input in
            let step = try decoder.decode(input.bytes)
            switch step {
            case .needMore:
                return nil
            case .skip(let n):
                precondition(n > 0 && n <= input.count, "FrameDecoder returned \(step) for \(input.count) buffered bytes")
                return (n, nil)
            case .frame(let range, let consume):
                precondition(
                    range.lowerBound >= 0 && consume > 0 && range.upperBound <= consume && consume <= input.count,
                    "FrameDecoder returned \(step) for \(input.count) buffered bytes")
                return (consume, try body(UnsafeRawBufferPointer(rebasing: input[range]).bytes))
            }
        }
    }

    /// Copies out and consumes the first complete buffered frame; nil when none is complete.
    /// For handlers that want to keep frames (`while let frame = try c.nextFrame(using: &d) { … }`);
    /// it allocates an array per frame, which the lending forms do not.
    @inlinable
    public func nextFrame<D: FrameDecoder>(using decoder: inout D) throws -> [UInt8]? {
        try nextFrame(using: &decoder) { (frame: RawSpan) in
            frame.withUnsafeBytes { Array($0) }
        }
    }

    /// Writes `payload` as one frame, header (or delimiter) and payload rendered into one
    /// reservation of the output buffer: one copy, one write. Throws the encoder's
    /// `CodecError` before anything is written, or the connection's write errors.
    @inlinable
    public func writeFrame<E: FrameEncoder>(_ payload: UnsafeRawBufferPointer, using encoder: E) throws {
        let length = try encoder.encodedLength(payloadCount: payload.count)
        try write(reservingCapacity: length) { try encoder.encode(payload, into: $0) }
    }

    /// Writes the bytes of a span (a frame lent by `forEachFrame`, say) as one frame.
    @inlinable
    public func writeFrame<E: FrameEncoder>(_ payload: RawSpan, using encoder: E) throws {
        try payload.withUnsafeBytes { try writeFrame($0, using: encoder) }
    }

    /// Writes an array's (or any contiguous collection's) bytes as one frame.
    @inlinable
    public func writeFrame<E: FrameEncoder, C: Collection>(_ payload: C, using encoder: E) throws
    where C.Element == UInt8 {
        if let done: Void = try payload.withContiguousStorageIfAvailable({
            try writeFrame(UnsafeRawBufferPointer($0), using: encoder)
        }) {
            return done
        }
        try writeFrame(Array(payload), using: encoder)
    }

    /// Writes a string's UTF-8 bytes as one frame.
    @inlinable
    public func writeFrame<E: FrameEncoder>(_ string: String, using encoder: E) throws {
        var s = string
        try s.withUTF8 { try writeFrame(UnsafeRawBufferPointer($0), using: encoder) }
    }
}
