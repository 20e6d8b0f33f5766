import GNet
import GNetConformance
import GNetLocks
import GNetWorkerPool
import Glibc
import TestSupport
import Testing

/// Answers each request line after a blocking lookup on the pool; records where each
/// continuation ran and what it got.
final class LookupHandler: EventHandler {
    let pool: WorkerPool
    let gate: Gate?
    let results = Locked<[String]>([])
    let offLoop = Counter()
    let closed = Counter()
    let refusals = Locked<[WorkerPoolError]>([])
    init(pool: WorkerPool, gate: Gate? = nil) { self.pool = pool; self.gate = gate }

    func onTraffic(_ c: Connection) -> Action {
        guard let line = c.next() else { return .none }
        let gate = self.gate, results = self.results, offLoop = self.offLoop
        do {
            try pool.submit(for: c, {
                gate?.wait()
                usleep(2_000) // the blocking lookup
                return "found " + String(decoding: line, as: UTF8.self)
            }, then: { c, result in
                if !c.loop.inEventLoop { offLoop.add() }
                switch result {
                case .success(let answer):
                    results.withLock { $0.append("ok") }
                    try? c.write(answer)
                case .failure(let error):
                    results.withLock { $0.append("\(error)") }
                }
            })
        } catch {
            refusals.withLock { $0.append(error) }
            c.abort(error)
        }
        return .none
    }

    func onClose(_ c: Connection, error: (any Error)?) -> Action {
        closed.add()
        return .none
    }
}

@Suite(.serialized)
struct WorkerPoolEngineTests {
    @Test func resultsComeBackOnTheConnectionsLoop() throws {
        let pool = WorkerPool(threads: 2, name: "wp-engine")
        let handler = LookupHandler(pool: pool)
        try serving(handler, configure: { $0.loops = 2 }) { address in
            for i in 0 ..< 5 {
                let client = try TestClient(address)
                try client.send("key\(i)\n")
                let expected = Array("found key\(i)\n".utf8)
                #expect(try client.receive(exactly: expected.count) == expected)
            }
        }
        pool.shutdown()
        #expect(handler.offLoop.count == 0)
        #expect(handler.results.withLock { $0 } == Array(repeating: "ok", count: 5))
        #expect(threadsNamed("wp-engine") == 0)
    }

    @Test func aConnectionClosedBeforeTheResultGetsConnectionClosed() throws {
        let pool = WorkerPool(threads: 1, name: "wp-closed")
        let gate = Gate()
        let handler = LookupHandler(pool: pool, gate: gate)
        try serving(handler) { address in
            do {
                let client = try TestClient(address)
                try client.send("key\n")
                #expect(waitUntil { pool.queuedCount == 0 }) // the lookup is running, held at the gate
            } // the client closes here
            #expect(waitUntil { handler.closed.count == 1 })
            gate.release()
            #expect(waitUntil { handler.results.withLock { !$0.isEmpty } })
        }
        pool.shutdown()
        #expect(handler.results.withLock { $0 } == ["\(GNetError.connectionClosed)"])
        #expect(handler.offLoop.count == 0)
    }

    @Test(arguments: [WorkerPool.WhenFull.fail, .wait])
    func submitForAConnectionNeverWaits(whenFull: WorkerPool.WhenFull) throws {
        let pool = WorkerPool(threads: 1, queueCapacity: 1, whenFull: whenFull, name: "wp-forfull")
        let gate = Gate(), started = Counter()
        try holdWorker(pool, at: gate, started: started)
        try pool.submit {}
        let handler = LookupHandler(pool: pool)
        try serving(handler) { address in
            let client = try TestClient(address)
            try client.send("key\n")
            #expect(client.isClosedByPeer()) // the handler aborts on the refusal
        }
        gate.release()
        pool.shutdown()
        let expected: WorkerPoolError = whenFull == .fail ? .queueFull(capacity: 1) : .wouldBlockEventLoop
        #expect(handler.refusals.withLock { $0 } == [expected])
    }

    @Test func aLoopNeverWaitsForRoom() async throws {
        let pool = WorkerPool(threads: 1, queueCapacity: 1, whenFull: .wait, name: "wp-loopwait")
        let gate = Gate(), started = Counter()
        try holdWorker(pool, at: gate, started: started)
        try pool.submit {}
        let engine = try Engine(handler: LookupHandler(pool: pool), addresses: ["tcp://127.0.0.1:0"])
        try engine.start()
        pool.protect(engine.loops)
        let outcome = try await engine.loops[0].submit { () -> String in
            do throws(WorkerPoolError) { try pool.submit {}; return "queued" } catch { return "\(error)" }
        }
        #expect(outcome == "\(WorkerPoolError.wouldBlockEventLoop)")
        engine.stop()
        try await onThread("engine stop") { engine.wait() }
        gate.release()
        pool.shutdown()
        #expect(threadsNamed("wp-loopwait") == 0)
    }
}
