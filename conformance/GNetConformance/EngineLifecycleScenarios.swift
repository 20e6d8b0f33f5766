import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// Checks of the engine's own lifecycle on each backend: `onBoot` comes before any other
/// callback, a stop asked for at any moment (during `start()` too) ends the engine, every
/// `wait()` blocks until the end, `run() async` runs no thread besides the loops, a failed
/// `start()` leaves nothing behind, and a taken port is reported as taken.
///
/// Unlike `withEngine`, these scenarios never rescue an engine with a stop of their own unless
/// it has already failed: an engine that should stop by itself must do so.
enum EngineLifecycleScenarios {
    static let all: [Scenario] = [
        Scenario("engine.lifecycle.shutdown-from-first-onTick", .engine, run: shutdownFromFirstTick),
        Scenario("engine.lifecycle.shutdown-from-first-onOpen", .engine, run: shutdownFromFirstOpen),
        Scenario("engine.lifecycle.stop-at-any-moment-of-start", .engine, run: stopAtAnyMomentOfStart),
        Scenario("engine.lifecycle.boot-comes-first", .engine, run: bootComesFirst),
        Scenario("engine.lifecycle.shutdown-from-onBoot", .engine, run: shutdownFromBoot),
        Scenario("engine.lifecycle.every-wait-blocks-until-stopped", .engine, run: everyWaitBlocks),
        Scenario("engine.lifecycle.async-run-only-loop-threads", .engine, run: asyncRun),
        Scenario("engine.lifecycle.failed-start-leaves-nothing", .engine, run: failedStart),
        Scenario("engine.lifecycle.second-server-on-same-port-fails", .engine, run: secondServerSamePort),
    ]

    // MARK: Stop during start

    static func shutdownFromFirstTick(_ kind: PollerKind) async throws -> Trace? {
        // The first loop's first tick asks for shutdown while the other loops may still be
        // starting. Several rounds, since how far start() has got is up to the scheduler.
        for round in 0..<5 {
            let handler = LifecycleHandler(tick: { (.milliseconds(1), .shutdown) })
            try await expectStopsByItself(kind, handler, "round \(round)") {
                $0.loops = 4
                $0.ticker = true
            }
            try expect(handler.counts.ticks >= 1, "round \(round): onTick never ran")
        }
        return nil
    }

    static func shutdownFromFirstOpen(_ kind: PollerKind) async throws -> Trace? {
        // A client connects as soon as the socket listens; its onOpen asks for shutdown while
        // the other loops may still be starting.
        for round in 0..<10 {
            let path = "/tmp/gnet-lifecycle-\(getpid())-\(round).sock"
            unlink(path)
            let handler = LifecycleHandler(open: { _ in .shutdown })
            let connector = EagerConnector(path: path)
            try await expectStopsByItself(kind, handler, "round \(round)", addresses: ["unix://" + path], beforeStart: {
                connector.start()
            }, afterStop: {
                try connector.finish()
            }) {
                $0.loops = 8
            }
            try expect(handler.counts.opens >= 1, "round \(round): onOpen never ran")
        }
        return nil
    }

    static func stopAtAnyMomentOfStart(_ kind: PollerKind) async throws -> Trace? {
        try await warmUpRuntime()
        let baseline = Baseline()

        // Before: start() refuses, wait() returns at once, nothing is opened.
        do {
            let handler = LifecycleHandler()
            let engine = try makeEngine(kind, handler) { $0.loops = 2 }
            engine.stop()
            do {
                try engine.start()
                throw ConformanceFailure("start() after stop() succeeded")
            } catch GNetError.engineState {}
            try await expectWaitReturns(engine, "stop before start")
            let c = handler.counts
            try expect(c.boots == 0 && c.shutdowns == 0, "stop before start: \(c.boots) onBoot, \(c.shutdowns) onShutdown")
            try baseline.check("stop before start")
        }

        // During, from another thread, at moments spread over start().
        for round in 0..<24 {
            let handler = LifecycleHandler()
            let engine = try makeEngine(kind, handler) { $0.loops = 4 }
            let go = Locked(false)
            let done = Locked(false)
            let delay = Duration.microseconds(round * 40)
            TestThread.detach {
                while !go.withLock({ $0 }) {}
                let until = ContinuousClock.now + delay
                while ContinuousClock.now < until {}
                engine.stop()
                done.withLock { $0 = true }
            }
            go.withLock { $0 = true }
            var started = true
            do {
                try engine.start()
            } catch GNetError.engineState {
                started = false
            }
            try await eventually("round \(round): the stopping thread") { done.withLock { $0 } }
            try await expectWaitReturns(engine, "round \(round) (stop \(delay) into start)")
            let c = handler.counts
            try expect(c.shutdowns == (started ? 1 : 0) && c.boots == c.shutdowns,
                       "round \(round): \(c.boots) onBoot and \(c.shutdowns) onShutdown (started: \(started))")
            try expect(c.violations.isEmpty, "round \(round): \(c.violations.joined(separator: "; "))")
            try baseline.check("round \(round)")
        }

        // From onBoot, twice, and .shutdown as well.
        do {
            let handler = LifecycleHandler(boot: { e in
                e.stop()
                e.stop()
                return .shutdown
            })
            try await expectStopsByItself(kind, handler, "stop from onBoot") { $0.loops = 4 }
        }

        // After start, twice, from two threads at once.
        do {
            let handler = LifecycleHandler()
            let engine = try makeEngine(kind, handler) { $0.loops = 4 }
            try engine.start()
            TestThread.detach { engine.stop() }
            engine.stop()
            try await expectWaitReturns(engine, "stop twice after start")
            try expect(handler.counts.shutdowns == 1, "stop twice after start: \(handler.counts.shutdowns) onShutdown")
            try baseline.check("stop twice after start")
        }
        return nil
    }

    // MARK: Boot first

    static func bootComesFirst(_ kind: PollerKind) async throws -> Trace? {
        // onBoot connects a client and dawdles; neither that connection's onOpen nor a tick
        // may run before it returns, and the bound address must be known inside it.
        try await warmUpRuntime()
        let baseline = Baseline()
        let client = Locked<TestClient?>(nil)
        let handler = LifecycleHandler(boot: { engine in
            if let address = engine.addresses.first { client.withLock { $0 = try? TestClient(address) } }
            usleep(150_000)
            return .none
        }, tick: { (.milliseconds(5), .none) })
        let engine = try makeEngine(kind, handler) {
            $0.loops = 2
            $0.ticker = true
        }
        try engine.start()
        do {
            try await eventually("the client's onOpen and a tick") { handler.counts.opens == 1 && handler.counts.ticks >= 1 }
        } catch {
            engine.stop()
            try? await expectWaitReturns(engine, "stop")
            client.withLock { $0 = nil }
            throw error
        }
        let bound = engine.addresses
        engine.stop()
        try await expectWaitReturns(engine, "stop")
        client.withLock { $0 = nil }
        let c = handler.counts
        try expect(c.violations.isEmpty, c.violations.joined(separator: "; "))
        try expect(!c.addressesAtBoot.isEmpty, "engine.addresses was empty during onBoot")
        try expect(c.addressesAtBoot == bound, "engine.addresses was \(c.addressesAtBoot) during onBoot, \(bound) after")
        try expect(c.shutdowns == 1 && c.opens == c.closes, "\(c.shutdowns) onShutdown, \(c.opens) onOpen, \(c.closes) onClose")
        try baseline.check("boot first")
        return nil
    }

    static func shutdownFromBoot(_ kind: PollerKind) async throws -> Trace? {
        // onBoot waits a little (time for a running loop to tick), connects a client, then
        // returns .shutdown: the engine stops before any loop calls anything (no onOpen, no
        // tick), and wait() still calls onShutdown once.
        let client = Locked<TestClient?>(nil)
        let handler = LifecycleHandler(boot: { engine in
            usleep(20_000)
            if let address = engine.addresses.first { client.withLock { $0 = try? TestClient(address) } }
            return .shutdown
        }, tick: { (.milliseconds(1), .none) })
        try await expectStopsByItself(kind, handler, "shutdown from onBoot", afterStop: {
            client.withLock { $0 = nil }
        }) {
            $0.loops = 2
            $0.ticker = true
        }
        let c = handler.counts
        try expect(c.opens == 0 && c.ticks == 0, "after onBoot returned .shutdown: \(c.opens) onOpen, \(c.ticks) onTick")
        return Trace(events: [.boot, .shutdown])
    }

    // MARK: Waiting

    static func everyWaitBlocks(_ kind: PollerKind) async throws -> Trace? {
        // Three threads wait at once. None may return while the engine runs; each returns
        // after onShutdown, which runs once.
        try await warmUpRuntime()
        let baseline = Baseline()
        let handler = LifecycleHandler()
        let engine = try makeEngine(kind, handler) { $0.loops = 2 }
        try engine.start()
        let returns = Locked<[Int]>([]) // onShutdown calls seen by each waiter as it returned
        for _ in 0..<3 {
            TestThread.detach {
                engine.wait()
                let seen = handler.counts.shutdowns
                returns.withLock { $0.append(seen) }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        let early = returns.withLock { $0.count }
        engine.stop()
        try await eventually("every waiter to return after stop()", timeout: .seconds(10)) { returns.withLock { $0.count } == 3 }
        try expect(early == 0, "\(early) of 3 concurrent wait() calls returned while the engine was running")
        let seen = returns.withLock { $0 }
        try expect(seen.allSatisfy { $0 == 1 }, "onShutdown calls seen by the waiters as they returned: \(seen) (1 each expected)")
        try await expectWaitReturns(engine, "a wait() after the end")
        try expect(handler.counts.shutdowns == 1, "onShutdown ran \(handler.counts.shutdowns) times")
        try baseline.check("concurrent waiters")
        return nil
    }

    static func asyncRun(_ kind: PollerKind) async throws -> Trace? {
        try await warmUpRuntime()
        let baseline = Baseline()
        for cancelAtOnce in [false, true] {
            let what = cancelAtOnce ? "run() async cancelled at once" : "run() async"
            let handler = LifecycleHandler()
            let engine = try makeEngine(kind, handler) { $0.loops = 2 }
            let outcome = Locked<Result<Void, any Error>?>(nil)
            let task = Task {
                let r: Result<Void, any Error>
                do { try await engine.run(); r = .success(()) } catch { r = .failure(error) }
                outcome.withLock { $0 = r }
            }
            if cancelAtOnce {
                task.cancel()
            } else {
                try await eventually("\(what): onBoot") { handler.counts.bootReturned }
                try await Task.sleep(for: .milliseconds(50))
                let threads = engineThreads()
                if threads != 2 {
                    task.cancel()
                    _ = try? await eventually("\(what) to end", timeout: .seconds(10)) { outcome.withLock { $0 } != nil }
                    throw ConformanceFailure("\(what): \(threads) threads named gnet-* with 2 loops (only the loops expected)")
                }
                task.cancel()
            }
            try await eventually("\(what) to return after cancellation", timeout: .seconds(10)) { outcome.withLock { $0 } != nil }
            try outcome.withLock { $0 }!.get()
            try expect(engineThreads() == 0, "\(what): \(engineThreads()) gnet-* threads left after it returned")
            let c = handler.counts
            try expect(c.boots == 1 && c.shutdowns == 1, "\(what): \(c.boots) onBoot, \(c.shutdowns) onShutdown")
            try baseline.check(what)
        }
        return nil
    }

    // MARK: Failed start

    static func failedStart(_ kind: PollerKind) async throws -> Trace? {
        try await warmUpRuntime()
        let baseline = Baseline()

        // The second address is taken: the first one's listeners (one per loop with reuseport)
        // and every poller must be closed again.
        let blocker = try BlockingListener()
        let blocked = Baseline()
        let handler = LifecycleHandler()
        for reusePort in [false, true] {
            let engine = try makeEngine(kind, handler, addresses: ["tcp://127.0.0.1:0", "tcp://127.0.0.1:\(blocker.port)"]) {
                $0.loops = 2
                $0.reusePort = reusePort
            }
            for attempt in 0..<2 {
                let what = "reusePort \(reusePort), attempt \(attempt)"
                do {
                    try engine.start()
                    engine.stop()
                    try await expectWaitReturns(engine, what)
                    throw ConformanceFailure("\(what): start() succeeded on an address in use")
                } catch GNetError.addressInUse {}
                try blocked.check(what)
                try expect(!engine.isRunning && engine.addresses.isEmpty, "\(what): engine looks running after a failed start")
            }
        }
        blocker.close()
        try expect(handler.counts.boots == 0, "onBoot ran in a failed start")

        // The third loop's thread cannot be created: the first two must not be left running,
        // and the engine may be started again.
        let engine = try makeEngine(kind, handler) { $0.loops = 3 }
        engine.injectThreadStartFailure(loop: 2)
        do {
            try engine.start()
            engine.stop()
            try await expectWaitReturns(engine, "start with a failing thread")
            throw ConformanceFailure("start() succeeded though a loop thread could not be created")
        } catch let e as SystemError where e.errno == EAGAIN {}
        do {
            try baseline.check("after a loop thread failed to start")
        } catch {
            engine.stop()
            try? await expectWaitReturns(engine, "cleanup")
            throw error
        }
        try expect(handler.counts.boots == 0, "onBoot ran in a failed start")

        try engine.start()
        guard let address = engine.addresses.first else { throw ConformanceFailure("no bound address after restart") }
        var client: TestClient? = try TestClient(address)
        try await eventually("onOpen after the restart") { handler.counts.opens == 1 }
        engine.stop()
        try await expectWaitReturns(engine, "stop after restart")
        client = nil
        _ = client
        let c = handler.counts
        try expect(c.boots == 1 && c.shutdowns == 1 && c.closes == 1, "after the restart: \(c.boots) onBoot, \(c.shutdowns) onShutdown, \(c.closes) onClose")
        try baseline.check("after the restarted engine stopped")
        return nil
    }

    static func secondServerSamePort(_ kind: PollerKind) async throws -> Trace? {
        // Default options, two loops each: the second server must not share the first's port.
        try await warmUpRuntime()
        let baseline = Baseline()
        let first = LifecycleHandler()
        let engine = try makeEngine(kind, first) { $0.loops = 2 }
        try engine.start()
        do {
            guard let port = engine.addresses.first?.port else { throw ConformanceFailure("no bound port") }
            // A new thread bears its name once it has run a little.
            try await eventually("the first server's loop threads") { threadsNamed("gnet-loop") == 2 }
            let running = Baseline()
            let second = LifecycleHandler()
            let other = try makeEngine(kind, second, addresses: ["tcp://127.0.0.1:\(port)"]) { $0.loops = 2 }
            do {
                try other.start()
                other.stop()
                try await expectWaitReturns(other, "second server")
                throw ConformanceFailure("a second server with default options started on port \(port), which the first one serves")
            } catch GNetError.addressInUse {}
            try running.check("after the second server failed")
            try expect(second.counts.boots == 0, "the second server's onBoot ran")
            // The first still serves.
            let client = try TestClient(engine.addresses[0])
            try await eventually("the first server's onOpen") { first.counts.opens == 1 }
            _ = client
        } catch {
            engine.stop()
            try? await expectWaitReturns(engine, "cleanup")
            throw error
        }
        engine.stop()
        try await expectWaitReturns(engine, "first server")
        try baseline.check("after both servers")

        // Sharing a port is opt-in: with reusePort on both, the second one starts.
        let sharing = [LifecycleHandler(), LifecycleHandler()]
        let first2 = try makeEngine(kind, sharing[0]) {
            $0.loops = 2
            $0.reusePort = true
        }
        try first2.start()
        let port = first2.addresses.first?.port ?? 0
        let second2 = try makeEngine(kind, sharing[1], addresses: ["tcp://127.0.0.1:\(port)"]) {
            $0.loops = 2
            $0.reusePort = true
        }
        var failure: (any Error)? = nil
        do { try second2.start() } catch { failure = error }
        for e in [first2, second2] {
            e.stop()
            try await expectWaitReturns(e, "servers sharing a port")
        }
        if let failure { throw ConformanceFailure("with reusePort on both, the second server failed: \(failure)") }
        try baseline.check("after two servers sharing a port")
        return nil
    }

    // MARK: Helpers

    static func makeEngine(
        _ kind: PollerKind, _ handler: LifecycleHandler, addresses: [String] = ["tcp://127.0.0.1:0"],
        configure: (inout Options) -> Void
    ) throws -> Engine {
        var options = Options()
        options.poller = kind
        options.logger.logLevel = .critical
        // Clients here do not close: keep each stop's lingering close short.
        options.lingerTimeout = .milliseconds(50)
        configure(&options)
        return try Engine(handler: handler, addresses: addresses, options: options)
    }

    /// Starts an engine that must stop by itself (nothing here calls `stop()` unless it has
    /// already failed), waits for it, and checks it left nothing and called onShutdown once.
    static func expectStopsByItself(
        _ kind: PollerKind, _ handler: LifecycleHandler, _ what: String,
        addresses: [String] = ["tcp://127.0.0.1:0"],
        beforeStart: () -> Void = {}, afterStop: () throws -> Void = {},
        configure: (inout Options) -> Void
    ) async throws {
        try await warmUpRuntime()
        let baseline = Baseline()
        let engine = try makeEngine(kind, handler, addresses: addresses, configure: configure)
        beforeStart()
        try engine.start()
        do {
            try await expectWaitReturns(engine, "\(what): an engine asked to stop by its handler")
        } catch {
            try? afterStop()
            throw error
        }
        try afterStop()
        let c = handler.counts
        try expect(c.violations.isEmpty, "\(what): \(c.violations.joined(separator: "; "))")
        try expect(c.boots == 1 && c.shutdowns == 1, "\(what): \(c.boots) onBoot, \(c.shutdowns) onShutdown")
        try expect(c.opens == c.closes, "\(what): \(c.opens) onOpen but \(c.closes) onClose")
        try baseline.check(what)
    }

    /// `engine.wait()` must return within 10 s. If it does not, the engine is stopped from here
    /// (so the run can go on) and the scenario fails.
    static func expectWaitReturns(_ engine: Engine, _ what: String) async throws {
        do {
            try await onThread(timeout: .seconds(10), "wait()") { engine.wait() }
        } catch {
            engine.stop()
            _ = try? await onThread(timeout: .seconds(10), "wait() after a rescuing stop()") { engine.wait() }
            throw ConformanceFailure("\(what): wait() did not return within 10 s (the stop was lost)")
        }
    }
}
