/// A growable FIFO of bytes in one contiguous allocation, used for a connection's unconsumed
/// input, its unsent output, and each loop's write cork. Loop-confined, never copied.
///
/// ```
///  base                                                       base + capacity
///   |  consumed (free)  |    readable bytes     |    writable space    |
///   +-------------------+-----------------------+----------------------+
///   0        <=        head        <=          tail        <=      capacity
/// ```
///
/// Storage is allocated on the first append and freed by `release()`; an empty queue owns no
/// memory, so an idle connection costs no buffer space. Appending moves the readable bytes
/// back to the front before growing, so a queue that is drained as fast as it fills stays at
/// its size.
struct ByteQueue: ~Copyable {
    private(set) var base: UnsafeMutableRawPointer? = nil
    private(set) var capacity = 0
    private var head = 0
    private var tail = 0

    init() {}

    deinit { base?.deallocate() }

    var count: Int { tail - head }
    var isEmpty: Bool { tail == head }

    /// The readable bytes. Valid until the next mutation.
    var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base.map { UnsafeRawPointer($0 + head) }, count: tail - head)
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        reserveWritable(bytes.count)
        (base! + tail).copyMemory(from: src, byteCount: bytes.count)
        tail += bytes.count
    }

    /// Makes room for `n` more bytes at the tail.
    mutating func reserveWritable(_ n: Int) {
        if capacity - tail >= n { return }
        let live = tail - head
        if head > 0 && capacity - live >= n && live <= capacity / 2 {
            // Compact: cheaper than growing while the live part is small.
            base!.copyMemory(from: base! + head, byteCount: live)
            head = 0
            tail = live
            return
        }
        var newCapacity = Swift.max(capacity * 2, 4096)
        while newCapacity - live < n { newCapacity *= 2 }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        if let old = base {
            fresh.copyMemory(from: old + head, byteCount: live)
            old.deallocate()
        }
        base = fresh
        capacity = newCapacity
        head = 0
        tail = live
    }

    /// Lends `n` bytes of writable space at the tail; `body` fills a prefix of it and returns
    /// how many bytes it wrote, which become readable.
    mutating func appendInPlace<E: Error>(
        reserving n: Int, _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int
    ) throws(E) -> Int {
        reserveWritable(n)
        let written = try body(UnsafeMutableRawBufferPointer(start: base! + tail, count: n))
        precondition(written >= 0 && written <= n, "wrote \(written) bytes into a \(n)-byte reservation")
        tail += written
        return written
    }

    /// Drops the first `n` readable bytes (at most `count`). An emptied queue rewinds to the
    /// front but keeps its storage; call `release()` to free it.
    mutating func consume(_ n: Int) {
        head += Swift.min(n, tail - head)
        if head == tail { head = 0; tail = 0 }
    }

    /// Empties the queue and frees its storage.
    mutating func release() {
        base?.deallocate()
        base = nil
        capacity = 0
        head = 0
        tail = 0
    }

    /// Empties the queue, keeping storage up to `keep` bytes (freeing a larger one).
    mutating func reset(keepingCapacityUpTo keep: Int) {
        if capacity > keep { release() } else { head = 0; tail = 0 }
    }
}
