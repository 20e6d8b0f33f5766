import RedisCore
import Testing

@Suite("Request processing")
struct ProcessorTests {
    let processor = RedisProcessor(store: KeyValueStore(shardCount: 2))

    static let pipeline = resp("SET", "counter", "10") + "INCR counter\r\n" + resp("GET", "counter")
        + "*0\r\n" + resp("MGET", "counter", "none") + "ping\r\n"
    static let expected = "+OK\r\n:11\r\n$2\r\n11\r\n*2\r\n$2\r\n11\r\n$-1\r\n+PONG\r\n"

    @Test("pipelined requests, arrays and inline mixed, are answered in order")
    func pipelined() {
        let result = exchange(processor, Self.pipeline)
        #expect(result.replies == Self.expected)
        #expect(result.consumed == Self.pipeline.utf8.count)
        #expect(!result.close)
    }

    @Test("input split at every byte gives the same replies, and a partial request stays unconsumed")
    func splitAtEveryByte() {
        let bytes = Array(Self.pipeline.utf8)
        for cut in 0...bytes.count {
            let store = KeyValueStore(shardCount: 2)
            let p = RedisProcessor(store: store)
            var session = RedisSession()
            // First part: whatever it completes is consumed; the rest waits in the buffer.
            let first = exchange(p, Array(bytes[..<cut]), session: &session)
            let kept = Array(bytes[first.consumed...])
            let second = exchange(p, kept, session: &session)
            #expect(first.replies + second.replies == Self.expected, "cut at \(cut)")
            #expect(first.consumed + second.consumed == bytes.count, "cut at \(cut)")
        }
    }

    @Test("a large value arriving in pieces is parsed once it is all there")
    func largeValueInPieces() {
        let value = String(repeating: "v", count: 100_000)
        let bytes = Array((resp("SET", "big", value) + resp("STRLEN?")).utf8)
        var session = RedisSession()
        var buffered: [UInt8] = []
        var replies = ""
        var start = 0
        while start < bytes.count {
            let end = min(start + 1000, bytes.count)
            buffered += bytes[start..<end]
            start = end
            let r = exchange(processor, buffered, session: &session)
            replies += r.replies
            buffered.removeFirst(r.consumed)
            if start < 100_000 { #expect(session.needed > buffered.count) }
        }
        #expect(replies.hasPrefix("+OK\r\n-ERR unknown command 'STRLEN?'"))
        #expect(reply(processor, "GET", "big") == "$100000\r\n\(value)\r\n")
    }

    @Test("a protocol error answers the good requests before it, then closes")
    func protocolError() {
        let result = exchange(processor, resp("PING") + "*1\r\n$x\r\n" + resp("PING"))
        #expect(result.replies == "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n")
        #expect(result.close)
    }

    @Test("a request over a cap is refused with an error and a close")
    func capExceeded() {
        var limits = RequestLimits()
        limits.maxBulkLength = 8
        let p = RedisProcessor(store: KeyValueStore(), limits: limits)
        let result = exchange(p, resp("SET", "k", "123456789"))
        #expect(result.replies == "-ERR Protocol error: invalid bulk length\r\n")
        #expect(result.close)
        let inline = exchange(p, String(repeating: "x", count: 70_000))
        #expect(inline.replies == "-ERR Protocol error: too big inline request\r\n")
        #expect(inline.close)
    }

    @Test("replies are handed over in chunks once they pass the flush threshold")
    func flushThreshold() {
        var p = processor
        p.replyFlushThreshold = 100
        let input = Array(String(repeating: resp("ECHO", String(repeating: "e", count: 40)), count: 10).utf8)
        var session = RedisSession()
        let outcome = input.withUnsafeBytes { p.process($0, session: &session) }
        // 40-byte values make 47-byte replies: the third pushes past 100 and processing stops.
        #expect(session.replies.count == 3 * 47)
        #expect(outcome.consumed == 3 * input.count / 10)
        #expect(!outcome.close)
    }
}

@Suite("Store")
struct StoreTests {
    @Test("keys of every length round-trip and compare by bytes")
    func keys() {
        for n in [0, 1, 7, 8, 23, 24, 25, 100] {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37) }
            let key = Key(bytes)
            #expect(key.bytes == bytes)
            #expect(key.count == n)
            #expect(key == Key(bytes))
            #expect(key.hashValue == Key(bytes).hashValue)
            if n > 0 {
                var other = bytes
                other[n - 1] ^= 1
                #expect(key != Key(other))
                #expect(key != Key(Array(bytes.dropLast())))
            }
        }
        // Zero padding does not make a short key equal a longer one ending in NULs.
        #expect(Key([0x61]) != Key([0x61, 0]))
    }

    @Test("sweep removes due keys only, and skips deadlines that were replaced")
    func sweep() {
        let clock = ManualClock()
        let store = KeyValueStore(shardCount: 4, clock: clock.clock)
        let now = clock.reading
        for i in 0..<100 { store.set(Key("t\(i)"), [1], expiry: .at(now + 10)) }
        for i in 0..<100 { store.set(Key("p\(i)"), [2]) }
        store.set(Key("t0"), [3], expiry: .at(now + 1000)) // replaces a deadline
        store.set(Key("t1"), [3]) // clears one
        #expect(store.sweep() == 0)
        clock.advance(milliseconds: 10)
        #expect(store.sweep(budget: 10) <= 40) // at most 10 per shard
        store.sweep()
        #expect(store.count == 102)
        #expect(store.get(Key("t0")) == [3])
        #expect(store.get(Key("t1")) == [3])
        clock.advance(milliseconds: 990)
        #expect(store.sweep() == 1)
        #expect(store.count == 101)
    }

    @Test("rewriting one key's deadline many times keeps the heap bounded")
    func deadlineChurn() {
        let clock = ManualClock()
        let store = KeyValueStore(shardCount: 1, clock: clock.clock)
        for i in 0..<10_000 { store.set(Key("k"), [1], expiry: .at(clock.reading + 1_000_000 + Int64(i))) }
        clock.advance(milliseconds: 2_000_000)
        // Only the live deadline and those since the last rebuild remain to pop.
        #expect(store.sweep(budget: 2000) == 1)
        #expect(store.count == 0)
    }

    @Test("concurrent increments from many threads lose nothing")
    func concurrentIncrements() async {
        let store = KeyValueStore()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for i in 0..<1000 {
                        _ = store.increment(Key("shared"), by: 1)
                        _ = store.increment(Key("k\(i % 50)"), by: 1)
                    }
                }
            }
        }
        #expect(store.get(Key("shared")) == Array("8000".utf8))
        #expect(store.get(Key("k7")) == Array("160".utf8))
    }
}
