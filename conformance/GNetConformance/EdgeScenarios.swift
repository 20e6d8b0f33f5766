import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// Edge-triggered I/O (`Options.edgeTriggered`): the same behaviour as level-triggered — every
/// byte delivered, flow control, EOF — with the per-turn read budget keeping a fire-hose
/// connection from starving its loop. Backends without edge triggering refuse it at start with
/// `GNetError.unsupported`; their cells read "unsupported".
enum EdgeScenarios {
    static let all: [Scenario] = [
        Scenario("edge.unsupported-backend-refuses-at-start", .engine, run: refusedWhereUnsupported),
        Scenario("edge.echo-64MiB-beside-100-small-clients", .engine, run: fireHose),
        Scenario("edge.small-budget-reads-on", .engine, run: smallBudget),
        Scenario("edge.stalled-peer-resumes", .engine, run: stalledPeer),
        Scenario("edge.peer-eof-after-data", .engine, run: eofAfterData),
    ]

    static func canEdge(_ kind: PollerKind) throws -> Bool {
        let p = try kind.makePoller()
        defer { try? p.close() }
        return p.capabilities.edgeTriggered
    }

    /// `withEngine` with `edgeTriggered` on; on a backend that cannot, "unsupported".
    static func withEdgeEngine(
        _ kind: PollerKind, _ handler: ScriptedHandler, configure: (inout Options) -> Void = { _ in },
        _ body: (Engine, SocketAddress) async throws -> Void
    ) async throws {
        guard try canEdge(kind) else { throw ScenarioUnsupported("\(kind.name) has no edge-triggered mode") }
        try await withEngine(kind, handler, configure: { o in
            o.edgeTriggered = true
            configure(&o)
        }, body)
    }

    static func echo() -> ScriptedHandler { ClientScenarios.echoServer() }

    /// Where the backend cannot trigger on edges, `start()` throws `GNetError.unsupported`
    /// naming the poller and leaves nothing open; where it can, the engine starts and serves.
    static func refusedWhereUnsupported(_ kind: PollerKind) async throws -> Trace? {
        var options = Options()
        options.poller = kind
        options.edgeTriggered = true
        options.logger.logLevel = .critical
        try await warmUpRuntime()
        let before = openDescriptorCount()
        let engine = try Engine(handler: echo(), addresses: ["tcp://127.0.0.1:0"], options: options)
        if try canEdge(kind) {
            try engine.start()
            let client = try TestClient(engine.addresses[0])
            try client.send("edge")
            try expect(try client.receive(exactly: 4) == Array("edge".utf8), "the edge-triggered echo differs")
            client.shutdownWrite()
            try expect(client.isClosedByPeer(), "the server did not close after the client's EOF")
            engine.stop()
            try await onThread(timeout: .seconds(10), "engine stop") { engine.wait() }
            return nil
        }
        do {
            try engine.start()
            engine.stop()
            engine.wait()
            throw ConformanceFailure("an engine with edgeTriggered started on \(kind.name), which has no edge-triggered mode")
        } catch GNetError.unsupported(let poller, _) {
            try expect(poller == kind.name, "the unsupported error names poller \(poller), not \(kind.name)")
        }
        try expect(openDescriptorCount() == before, "a refused start left \(openDescriptorCount() - before) descriptors open")
        return nil
    }

    /// One connection echoes 64 MiB through a loop while 100 small clients on the same loop
    /// keep asking: each gets every answer, promptly, while the transfer runs.
    static func fireHose(_ kind: PollerKind) async throws -> Trace? {
        try await withEdgeEngine(kind, echo()) { _, address in
            let chunk = patternBytes(1 << 20, seed: 64)
            let chunks = 64
            let big = try TestClient(address, timeout: .seconds(60))
            let small = try (0..<100).map { _ in try TestClient(address) }
            let done = Locked(false)
            let writer = TestThread.start {
                for _ in 0..<chunks { try? big.send(chunk) }
            }
            defer { writer.join() }
            let reader = TestThread.start {
                defer { done.withLock { $0 = true } }
                for _ in 0..<chunks {
                    guard let back = try? big.receive(exactly: chunk.count), back == chunk else { return }
                }
            }
            defer { reader.join() }
            // Small clients ask in rounds until the transfer ends; each answer must come.
            var rounds = 0
            var slowest = Duration.zero
            let start = ContinuousClock.now
            while !done.withLock({ $0 }) && ContinuousClock.now - start < .seconds(60) {
                for (i, c) in small.enumerated() {
                    let ask = Array("ping \(i) \(rounds)\n".utf8)
                    let t0 = ContinuousClock.now
                    try c.send(ask)
                    let answer = try c.receive(exactly: ask.count)
                    slowest = max(slowest, ContinuousClock.now - t0)
                    try expect(answer == ask, "small client \(i) got a wrong answer in round \(rounds)")
                }
                rounds += 1
                try await Task.sleep(for: .milliseconds(1))
            }
            reader.join()
            try expect(done.withLock { $0 }, "the 64 MiB echo did not finish within 60 s")
            try expect(rounds >= 2, "the small clients got only \(rounds) rounds of answers during the transfer")
            try expect(slowest < .seconds(2), "a small client waited \(slowest) for its answer beside the fire hose")
        }
        return nil
    }

    /// With a read budget of one 4 KiB read a turn, 1 MiB sent at once still all comes back:
    /// the loop reads on after spending the budget although no new edge comes.
    static func smallBudget(_ kind: PollerKind) async throws -> Trace? {
        try await withEdgeEngine(kind, echo(), configure: {
            $0.readBufferCapacity = 4096
            $0.edgeTriggeredReadBudget = 4096
        }) { _, address in
            let payload = patternBytes(1 << 20, seed: 5)
            let client = try TestClient(address)
            let writer = TestThread.start { try? client.send(payload) }
            defer { writer.join() }
            let back = try await onThread(timeout: .seconds(20), "1 MiB echo") { try client.receive(exactly: payload.count) }
            try expect(back == payload, "the echo of 1 MiB differs")
        }
        return nil
    }

    /// A peer sends 8 MiB without reading, so the server stops reading (flow control), then
    /// reads it all: reading resumes (the interest change re-arms the edge) and every byte comes.
    static func stalledPeer(_ kind: PollerKind) async throws -> Trace? {
        try await withEdgeEngine(kind, echo()) { _, address in
            let payload = patternBytes(8 << 20, seed: 8)
            let client = try TestClient(address, timeout: .seconds(30))
            let writer = TestThread.start { try? client.send(payload) }
            defer { writer.join() }
            try await Task.sleep(for: .milliseconds(300))
            let back = try await onThread(timeout: .seconds(30), "8 MiB echo") { try client.receive(exactly: payload.count) }
            try expect(back == payload, "the echo of 8 MiB differs")
        }
        return nil
    }

    /// Data then the peer's EOF in one burst: every byte is echoed before the close.
    static func eofAfterData(_ kind: PollerKind) async throws -> Trace? {
        try await withEdgeEngine(kind, echo()) { _, address in
            let payload = patternBytes(300 << 10, seed: 3)
            let client = try TestClient(address)
            try client.send(payload)
            client.shutdownWrite()
            let back = try await onThread(timeout: .seconds(20), "echo until EOF") { try client.receiveUntilEOF() }
            try expect(back == payload, "got \(back.count) of \(payload.count) bytes before EOF, or different ones")
        }
        return nil
    }
}
