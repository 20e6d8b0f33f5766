import GNet
import GNetConformance
import GNetMetrics
import Glibc
import MetricsTestKit
import Testing

/// The loops' statistics, through swift-metrics, after a scripted run whose every count is known.
@Suite(.serialized)
struct EngineMetricsTests {
    struct Echo: EventHandler {
        func onTraffic(_ c: Connection) -> Action {
            c.withInbound { try? c.write($0) }
            c.discard(c.inboundBuffered)
            return .none
        }
    }

    func engine(_ configure: (inout Options) -> Void = { _ in }) throws -> Engine {
        var options = Options()
        options.loops = 2
        options.measureLoopTime = true
        options.logger.logLevel = .critical
        configure(&options)
        let engine = try Engine(handler: Echo(), addresses: ["tcp://127.0.0.1:0"], options: options)
        try engine.start()
        return engine
    }

    /// Polls until `condition` holds, up to 5 s.
    func eventually(_ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while !(await condition()) {
            if ContinuousClock.now > deadline { Issue.record("timed out"); return }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test("a scripted run: opens, bytes, closes by reason, open gauge, iterations, busy time")
    func scriptedRun() async throws {
        let metrics = TestMetrics()
        let engine = try engine {
            $0.idleTimeout = .milliseconds(300)
            $0.lingerTimeout = .milliseconds(50)
        }
        defer { engine.stop(); engine.wait() }
        let address = try #require(engine.addresses.first)
        let published = EngineMetrics(engine: engine, factory: metrics)

        // Three clients echo 1,000 bytes each; then one closes, one resets, one stays.
        var clients: [TestClient?] = try (0..<3).map { _ in try TestClient(address) }
        for c in clients {
            try c!.send(patternBytes(1000, seed: 1))
            _ = try c!.receive(exactly: 1000)
        }
        clients[0]!.shutdownWrite()
        #expect(clients[0]!.isClosedByPeer())
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(clients[1]!.fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        clients[1] = nil // closed with SO_LINGER 0: a reset
        try await eventually { engine.connectionCount == 1 }

        await published.publish()
        #expect(metrics.counterTotal(label: "gnet_connections_accepted_total") == 3)
        #expect(metrics.counterTotal(label: "gnet_connections_dialled_total") == 0)
        #expect(metrics.counterTotal(label: "gnet_bytes_read_total") == 3000)
        #expect(metrics.counterTotal(label: "gnet_bytes_written_total") == 3000)
        #expect(metrics.counterTotal(label: "gnet_connections_closed_total", dimensions: [("reason", "orderly")]) == 1)
        #expect(metrics.counterTotal(label: "gnet_connections_closed_total", dimensions: [("reason", "error")]) == 1)
        let open = try (0..<2).map { try metrics.expectGauge("gnet_connections_open", [("loop", "\($0)")]).lastValue ?? -1 }
        #expect(open.reduce(0, +) == 1)
        #expect(metrics.counterTotal(label: "gnet_loop_iterations_total") > 0)
        #expect(metrics.counterTotal(label: "gnet_loop_busy_nanoseconds_total") > 0)
        for loop in 0..<2 {
            let u = try metrics.expectGauge("gnet_loop_utilization", [("loop", "\(loop)")]).lastValue ?? -1
            #expect(u >= 0 && u <= 1, "utilisation \(u) of loop \(loop)")
        }

        // The last client goes idle: closed by its timeout, counted so at the next publication.
        try await eventually { engine.connectionCount == 0 }
        _ = clients
        await published.publish()
        #expect(metrics.counterTotal(label: "gnet_connections_closed_total", dimensions: [("reason", "timeout")]) == 1)
        // Published growth, not totals: a second publication adds nothing new.
        await published.publish()
        #expect(metrics.counterTotal(label: "gnet_bytes_read_total") == 3000)
    }

    @Test("published every interval by the loops themselves, until stop()")
    func periodic() async throws {
        let metrics = TestMetrics()
        let engine = try engine()
        defer { engine.stop(); engine.wait() }
        let address = try #require(engine.addresses.first)
        let published = EngineMetrics(engine: engine, interval: .milliseconds(20), factory: metrics)
        published.start()
        published.start() // harmless
        let client = try TestClient(address)
        try client.send("12345")
        _ = try client.receive(exactly: 5)
        try await eventually { metrics.counterTotal(label: "gnet_bytes_read_total") == 5 }
        published.stop()
        try client.send("678")
        _ = try client.receive(exactly: 3)
        try await Task.sleep(for: .milliseconds(100))
        #expect(metrics.counterTotal(label: "gnet_bytes_read_total") == 5, "published after stop()")
    }

    @Test("datagrams: received, sent, their bytes, and a truncated one dropped")
    func datagrams() async throws {
        let metrics = TestMetrics()
        var options = Options()
        options.loops = 2
        options.readBufferCapacity = 1024
        options.logger.logLevel = .critical
        let engine = try Engine(handler: Echo(), addresses: ["udp://127.0.0.1:0"], options: options)
        try engine.start()
        defer { engine.stop(); engine.wait() }
        let published = EngineMetrics(engine: engine, factory: metrics)
        let client = try UDPClient()
        for i in 0..<5 {
            try client.send(patternBytes(100, seed: UInt64(i)), to: engine.addresses[0])
            #expect(try client.receive().bytes.count == 100)
        }
        try client.send(patternBytes(2000, seed: 9), to: engine.addresses[0])
        try await eventually { engine.truncatedDatagrams == 1 }
        await published.publish()
        #expect(metrics.counterTotal(label: "gnet_datagrams_received_total") == 5)
        #expect(metrics.counterTotal(label: "gnet_datagrams_sent_total") == 5)
        #expect(metrics.counterTotal(label: "gnet_bytes_read_total") == 500)
        #expect(metrics.counterTotal(label: "gnet_bytes_written_total") == 500)
        #expect(metrics.counterTotal(label: "gnet_datagrams_dropped_total", dimensions: [("reason", "truncated")]) == 1)
        #expect(metrics.counterTotal(label: "gnet_datagrams_dropped_total", dimensions: [("reason", "unsent")]) == 0)
    }

    @Test("statistics of a stopped loop: a typed error, and publish() returns")
    func afterStop() async throws {
        let engine = try engine()
        let loop = engine.loops[0]
        engine.stop()
        engine.wait()
        await #expect(throws: GNetError.engineStopped) { _ = try await loop.statistics() }
        await EngineMetrics(engine: engine, factory: TestMetrics()).publish()
    }
}
