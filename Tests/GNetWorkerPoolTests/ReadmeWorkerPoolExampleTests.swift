import GNet
import GNetConformance
import GNetWorkerPool
import Glibc
import Testing

// The handler from README.md's "Worker pool", verbatim: a doc sample is code, so it is built
// and run.
func blockingLookup(_ key: [UInt8]) throws -> [UInt8] {
    usleep(1_000)  // a blocking call: a file, DNS, a database driver
    return Array("value of ".utf8) + key
}

final class LookupServer: EventHandler {
    let pool = WorkerPool(threads: 8, queueCapacity: 1024)  // gnet-worker-0 … gnet-worker-7

    func onBoot(_ engine: Engine) -> Action {
        pool.protect(engine.loops)  // a .wait-mode submit from a loop fails instead of blocking
        return .none
    }

    func onTraffic(_ c: Connection) -> Action {
        guard let key = c.next() else { return .none }
        do {
            try pool.submit(for: c, {
                try blockingLookup(key)  // on a worker thread: block at will
            }, then: { c, result in  // back on c's loop thread
                switch result {
                case .success(let value): try? c.write(value)
                case .failure(GNetError.connectionClosed): break  // the client left meanwhile
                case .failure: c.close()
                }
            })
        } catch {
            try? c.write("busy\n")  // WorkerPoolError.queueFull: shed the request, never block
        }
        return .none
    }

    func onShutdown(_ engine: Engine) {
        pool.shutdown(.cancelQueued)  // the loops have ended: join the workers
    }
}

@Suite(.serialized)
struct ReadmeWorkerPoolExampleTests {
    @Test func answersFromThePoolAndJoinsItsThreadsAtShutdown() throws {
        let server = LookupServer()
        #expect(threadsNamed("gnet-worker") == 8)
        try serving(server) { address in
            let client = try TestClient(address)
            try client.send("k1\n")
            let expected = Array("value of k1\n".utf8)
            #expect(try client.receive(exactly: expected.count) == expected)
        }
        #expect(server.pool.isShutDown)
        #expect(threadsNamed("gnet-worker") == 0)
    }
}
