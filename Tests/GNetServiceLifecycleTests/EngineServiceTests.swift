import GNet
import GNetConformance
import GNetServiceLifecycle
import Glibc
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

/// A line protocol: each complete line is answered with `ok <line>\n`. On a graceful
/// shutdown an idle connection closes at once, and one with half a request buffered is kept
/// until that request is answered (its last answer), then closed.
func lineHandler() -> ScriptedHandler {
    ScriptedHandler(onTraffic: { c, _ in
        let input = c.withUnsafeInboundBytes { Array($0) }
        guard let end = input.firstIndex(of: 0x0A) else { return .none }
        _ = c.discard(end + 1)
        try? c.write(Array("ok ".utf8) + input[..<end] + [0x0A])
        return c.context != nil ? .close : .none
    }, onQuiesce: { c, _ in
        guard c.inboundBuffered > 0 else { return .close }
        c.context = true
        return .none
    })
}

func quietOptions() -> Options {
    var options = Options()
    options.logger.logLevel = .warning
    return options
}

/// Waits until `service` has started its engine and returns the bound address.
func started(_ service: EngineService) async throws -> SocketAddress {
    try await eventually("the engine to start") { service.engine.isRunning && !service.engine.addresses.isEmpty }
    return service.engine.addresses[0]
}

@Suite(.serialized)
struct EngineServiceTests {
    @Test func gracefulShutdownFinishesTheRequestInFlightAndClosesIdleConnections() async throws {
        let handler = lineHandler()
        let service = try EngineService(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: quietOptions())
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                let address = try await started(service)
                let idle = try TestClient(address)
                let busy = try TestClient(address)
                try idle.send("hello\n")
                #expect(try idle.receive(exactly: 9) == Array("ok hello\n".utf8))
                try busy.send("a request in fli")
                try await eventually("both connections, one with half a request") {
                    handler.opened == 2 && handler.trafficBytesSeen >= 6 + 16
                }

                trigger.triggerGracefulShutdown()

                let idleEnd = try await onThread("the idle client's end") { try idle.readToEnd() }
                #expect(idleEnd.bytes.isEmpty && idleEnd.end == .eof)
                idle.shutdownWrite()
                try busy.send("ght\n")
                let busyEnd = try await onThread("the busy client's end") { try busy.readToEnd() }
                #expect(String(decoding: busyEnd.bytes, as: UTF8.self) == "ok a request in flight\n")
                #expect(busyEnd.end == .eof)
                busy.shutdownWrite()
                try await group.next()  // run() returned
            }
        }
        #expect(handler.trace.events.last == .shutdown, "run() returned before onShutdown")
        #expect(handler.quiesced.count == 2)
        #expect(handler.closeErrors.isEmpty)
        #expect(handler.opened == handler.closes)
    }

    @Test func cancellationResetsEveryConnectionAtOnce() async throws {
        let handler = lineHandler()
        var options = quietOptions()
        options.shutdownTimeout = .seconds(30)
        let service = try EngineService(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: options)
        let run = Task { try await service.run() }
        let address = try await started(service)
        let idle = try TestClient(address)
        let busy = try TestClient(address)
        try busy.send("half a requ")
        try await eventually("both connections") { handler.opened == 2 && handler.trafficBytesSeen >= 11 }

        let start = ContinuousClock.now
        run.cancel()
        try await run.value
        let took = ContinuousClock.now - start
        #expect(took < .seconds(1), "cancellation took \(took)")

        for client in [idle, busy] {
            let end = try client.readToEnd()
            #expect(end.end == .reset && end.bytes.isEmpty)
        }
        #expect(handler.quiesced.isEmpty)
        #expect(handler.closeErrors.count == 2)
        #expect(handler.closeErrors.values.allSatisfy { $0 == "\(GNetError.stoppedImmediately)" })
        #expect(handler.trace.events.last == .shutdown)
    }

    @Test func cancellationCutsAGracefulShutdownShort() async throws {
        // The handler keeps its connection past quiescing; shutdownTimeout is long, so only
        // the cancellation can end the engine soon.
        let handler = ScriptedHandler(onQuiesce: { _, _ in .none })
        var options = quietOptions()
        options.shutdownTimeout = .seconds(30)
        let service = try EngineService(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: options)
        try await testGracefulShutdown { trigger in
            let run = Task { try await service.run() }
            let address = try await started(service)
            let client = try TestClient(address)
            try await eventually("the connection") { handler.opened == 1 }
            trigger.triggerGracefulShutdown()
            try await eventually("onQuiesce") { handler.quiesced == [0] }
            #expect(handler.open == 1)
            let start = ContinuousClock.now
            run.cancel()
            try await run.value
            #expect(ContinuousClock.now - start < .seconds(1))
            #expect(try client.readToEnd().end == .reset)
            #expect(handler.closeErrors[0] == "\(GNetError.stoppedImmediately)")
        }
    }

    @Test func aServiceGroupShutsTheEngineDownGracefully() async throws {
        let handler = lineHandler()
        let service = try EngineService(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: quietOptions())
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let group = ServiceGroup(configuration: .init(services: [service], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let address = try await started(service)
            let client = try TestClient(address)
            try client.send("ping\n")
            #expect(try client.receive(exactly: 8) == Array("ok ping\n".utf8))
            await group.triggerGracefulShutdown()
            let end = try await onThread("the client's end") { try client.readToEnd() }
            #expect(end.bytes.isEmpty && end.end == .eof)
            client.shutdownWrite()
            try await tasks.next()
        }
        #expect(handler.trace.events.last == .shutdown)
        #expect(service.description.contains("127.0.0.1:0"))
    }

    @Test func aServiceGroupCancelsAGracefulShutdownThatOutlastsItsMaximum() async throws {
        // The example servers' backstop: the group's maximumGracefulShutdownDuration passes
        // before the engine's shutdownTimeout, so the group cancels and the engine resets what
        // its handler kept open.
        let handler = ScriptedHandler(onQuiesce: { _, _ in .none })
        var options = quietOptions()
        options.shutdownTimeout = .seconds(30)
        let service = try EngineService(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: options)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var configuration = ServiceGroupConfiguration(services: [service], logger: logger)
        configuration.maximumGracefulShutdownDuration = .milliseconds(200)
        let group = ServiceGroup(configuration: configuration)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let address = try await started(service)
            let client = try TestClient(address)
            try await eventually("the connection") { handler.opened == 1 }
            let start = ContinuousClock.now
            await group.triggerGracefulShutdown()
            let end = try await onThread("the client's end") { try client.readToEnd() }
            let took = ContinuousClock.now - start
            #expect(end.end == .reset)
            #expect(took >= .milliseconds(150) && took < .seconds(2), "ended after \(took)")
            _ = try? await tasks.next()  // the group may report the cancellation as an error
        }
        #expect(handler.quiesced == [0])
        #expect(handler.closeErrors[0] == "\(GNetError.stoppedImmediately)")
        #expect(handler.trace.events.last == .shutdown)
    }

    @Test func aShutdownBeforeRunStillStartsAndStopsTheEngine() async throws {
        let handler = lineHandler()
        let service = try EngineService(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: quietOptions())
        try await testGracefulShutdown { trigger in
            trigger.triggerGracefulShutdown()
            try await service.run()
        }
        #expect(handler.trace.events == [.boot, .shutdown])
    }
}
