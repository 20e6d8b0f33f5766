/// A connection's queued output with its writability: the bytes the socket has not taken yet,
/// and whether the connection is above its high watermark.
///
/// ```
///   queued bytes ─────────────────────────────────────────────▶
///   0          low watermark          high watermark
///   |──────────────|──────────────────────|─────────────────────
///   writable again ◀── at or below low    above high ──▶ unwritable
/// ```
///
/// Between the two watermarks writability keeps its last value (hysteresis), so a connection
/// hovering around one threshold does not flip on every write. The loop's `settle` turns
/// `isWritable` into `onWritabilityChanged` and read interest.
///
/// Storage is the connection's `ByteQueue`: allocated on the first queued byte and released
/// when the queue drains, so a connection that keeps up holds no output memory.
///
/// Loop-confined, like its connection.
struct OutboundBuffer: ~Copyable {
    private(set) var queue = ByteQueue()
    /// False from the moment queued output rises above the high watermark until it drains to
    /// the low one.
    private(set) var isWritable = true

    init() {}

    var count: Int { queue.count }
    var isEmpty: Bool { queue.isEmpty }
    var readable: UnsafeRawBufferPointer { queue.readable }

    /// Queues `bytes`.
    @inline(__always)
    mutating func append(_ bytes: UnsafeRawBufferPointer, high: Int) {
        queue.append(bytes)
        if queue.count > high { isWritable = false }
    }

    /// Queues output rendered in place by `body` (see `ByteQueue.appendInPlace`). Returns the
    /// bytes written.
    mutating func appendInPlace<E: Error>(
        reserving n: Int, high: Int, _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int
    ) throws(E) -> Int {
        let written = try queue.appendInPlace(reserving: n, body)
        if queue.count > high { isWritable = false }
        return written
    }

    /// Drops `n` sent bytes; frees the storage once the queue is empty.
    mutating func consume(_ n: Int, low: Int) {
        queue.consume(n)
        if queue.isEmpty { queue.release() }
        if queue.count <= low { isWritable = true }
    }

    /// Drops everything (the connection is closing without sending it). Returns what was dropped.
    mutating func abandon() -> Int {
        let n = queue.count
        queue.release()
        return n
    }
}
