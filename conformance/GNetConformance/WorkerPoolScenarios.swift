import GNet
import GNetLocks
import GNetWorkerPool
import Glibc
import Poller
import TestSupport

/// The worker pool under a real engine on every backend: a handler offloads each request to
/// the pool (a blocking "lookup") and answers from the connection's loop.
public enum WorkerPoolScenarios {
    static let all: [Scenario] = [
        Scenario("pool.offload-answers-in-order", .engine, run: offloadAnswersInOrder),
    ]

    /// Per-connection state (in `Connection.context`, loop thread only): the partial line, the
    /// requests waiting, and whether one is at the pool. One request per connection is at the
    /// pool at a time, so answers go out in request order.
    public final class PoolSession {
        var partial: [UInt8] = []
        var waiting: [[UInt8]] = []
        var busy = false
        public init() {}
    }

    /// The answer to one request line: "ok " and the line reversed (newline kept last).
    public static func answer(_ line: [UInt8]) -> [UInt8] {
        Array("ok ".utf8) + line.dropLast().reversed() + [10]
    }

    /// A line-request server that computes each answer on `pool` (sleeping `workMicros` there,
    /// as a blocking lookup would) and writes it from the loop. `offLoop` counts answers whose
    /// continuation did not run on the connection's loop thread (must stay 0).
    package static func offloadingHandler(pool: WorkerPool, workMicros: UInt32, offLoop: Locked<Int>) -> ScriptedHandler {
        ScriptedHandler(
            onOpen: { c, _ in
                c.context = PoolSession()
                return (nil, .none)
            },
            onTraffic: { c, _ in
                guard let s = c.context as? PoolSession else { return .close }
                s.partial += c.next() ?? []
                while let nl = s.partial.firstIndex(of: 10) {
                    s.waiting.append(Array(s.partial[...nl]))
                    s.partial.removeSubrange(...nl)
                }
                dispatch(c, pool: pool, workMicros: workMicros, offLoop: offLoop)
                return .none
            })
    }

    /// Sends the oldest waiting request of `c` to the pool unless one is there already.
    static func dispatch(_ c: Connection, pool: WorkerPool, workMicros: UInt32, offLoop: Locked<Int>) {
        guard let s = c.context as? PoolSession, !s.busy, !s.waiting.isEmpty else { return }
        let request = s.waiting.removeFirst()
        s.busy = true
        do {
            try pool.submit(for: c, {
                usleep(workMicros)
                return answer(request)
            }, then: { c, result in
                if !c.loop.inEventLoop { offLoop.withLock { $0 += 1 } }
                guard case .success(let reply) = result, let s = c.context as? PoolSession else { return }
                try? c.write(reply)
                s.busy = false
                dispatch(c, pool: pool, workMicros: workMicros, offLoop: offLoop)
            })
        } catch {
            c.abort(error)
        }
    }

    /// 50 clients × 20 pipelined requests: every answer arrives byte-exactly and in order per
    /// connection, every continuation runs on its loop, and the pool's threads end at shutdown.
    static func offloadAnswersInOrder(_ kind: PollerKind) async throws -> Trace? {
        let name = "gnet-cpool"
        let pool = WorkerPool(threads: 4, queueCapacity: 256, name: name)
        try expect(threadsNamed(name) == 4, "expected 4 worker threads, found \(threadsNamed(name))")
        let offLoop = Locked(0)
        let handler = offloadingHandler(pool: pool, workMicros: 100, offLoop: offLoop)
        let clients = 50, requests = 20
        try await withEngine(kind, handler, configure: { $0.loops = 2 }) { engine, address in
            pool.protect(engine.loops)
            try await onThread(timeout: .seconds(60), "50 clients") {
                let failures = Locked<[String]>([])
                var threads: [TestThread] = []
                for client in 0 ..< clients {
                    threads.append(TestThread.start {
                        do {
                            let lines = (0 ..< requests).map { Array("client \(client) request \($0)\n".utf8) }
                            let expected = lines.flatMap { answer($0) }
                            let connection = try TestClient(address, timeout: .seconds(30))
                            try connection.send(lines.flatMap { $0 })
                            let got = try connection.receive(exactly: expected.count)
                            if got != expected { failures.withLock { $0.append("client \(client): answers differ") } }
                        } catch {
                            failures.withLock { $0.append("client \(client): \(error)") }
                        }
                    })
                }
                for t in threads { t.join() }
                let f = failures.withLock { $0 }
                try expect(f.isEmpty, "\(f.count) clients failed: \(f.prefix(3).joined(separator: "; "))")
            }
        }
        pool.shutdown(.finishQueued)
        try expect(offLoop.withLock { $0 } == 0, "a continuation ran off its connection's loop")
        try expect(threadsNamed(name) == 0, "worker threads left after shutdown: \(threadsNamed(name))")
        return nil
    }
}
