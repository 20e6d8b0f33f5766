@testable import GNet
import Testing

@Suite("ByteQueue")
struct ByteQueueTests {
    func bytes(_ q: borrowing ByteQueue) -> [UInt8] { Array(q.readable) }

    @Test func emptyOwnsNoMemory() {
        var q = ByteQueue()
        let fresh = q.isEmpty && q.capacity == 0 // (#expect cannot take a noncopyable operand)
        #expect(fresh)
        ([1, 2, 3] as [UInt8]).withUnsafeBytes { q.append($0) }
        #expect(q.capacity > 0)
        q.consume(3)
        let empty = q.isEmpty
        #expect(empty)
        q.release()
        let released = q.capacity
        #expect(released == 0)
    }

    @Test func fifoAcrossGrowthAndCompaction() {
        var q = ByteQueue()
        var model: [UInt8] = []
        var next: UInt8 = 0
        // Random appends and consumes; the queue must always equal the model.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 0..<3000, using: &rng)
            let chunk = (0..<n).map { _ -> UInt8 in next &+= 1; return next }
            chunk.withUnsafeBytes { q.append($0) }
            model += chunk
            let k = Int.random(in: 0...model.count, using: &rng)
            q.consume(k)
            model.removeFirst(k)
            let count = q.count
            #expect(count == model.count)
        }
        #expect(bytes(q) == model)
    }

    @Test func compactsInsteadOfGrowing() {
        var q = ByteQueue()
        let chunk = [UInt8](repeating: 7, count: 3000)
        chunk.withUnsafeBytes { q.append($0) }
        let cap = q.capacity
        // Drain and refill many times: a queue drained as fast as it fills keeps its size.
        for _ in 0..<100 {
            q.consume(2900)
            chunk.withUnsafeBytes { q.append($0) }
            q.consume(3100)
            chunk.withUnsafeBytes { q.append($0) }
        }
        let final = q.capacity
        #expect(final <= cap * 2)
    }

    @Test func resetKeepsOrFrees() {
        var q = ByteQueue()
        [UInt8](repeating: 1, count: 100).withUnsafeBytes { q.append($0) }
        q.reset(keepingCapacityUpTo: 1 << 20)
        let kept = q.isEmpty && q.capacity > 0
        #expect(kept)
        [UInt8](repeating: 1, count: 100).withUnsafeBytes { q.append($0) }
        q.reset(keepingCapacityUpTo: 0)
        let freed = q.capacity
        #expect(freed == 0)
    }
}

@Suite("ByteQueue in place")
struct ByteQueueInPlaceTests {
    @Test func appendInPlaceCommitsWhatWasWritten() {
        var q = ByteQueue()
        ([9, 9] as [UInt8]).withUnsafeBytes { q.append($0) }
        let n = q.appendInPlace(reserving: 100) { buf in
            for i in 0..<5 { buf[i] = UInt8(i) }
            return 5
        }
        #expect(n == 5)
        let bytes = Array(q.readable)
        #expect(bytes == [9, 9, 0, 1, 2, 3, 4])
    }
}
