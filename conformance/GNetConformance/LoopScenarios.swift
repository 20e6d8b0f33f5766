import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// The loop as an API (`EventLoopHandle`): work submitted from many threads runs in order on
/// the loop's thread, scheduled work fires on time or not at all once cancelled, work after a
/// stop fails cleanly, and `onTick` stays on the first loop.
enum LoopScenarios {
    static let all: [Scenario] = [
        Scenario("loop.execute-16-threads-in-order", .engine, run: executeInOrder),
        Scenario("loop.connection-loop-is-its-owner", .engine, run: connectionLoop),
        Scenario("loop.schedule-fires-on-time", .engine, run: scheduleFires),
        Scenario("loop.schedule-cancel", .engine, run: scheduleCancel),
        Scenario("loop.work-after-stop-fails-cleanly", .engine, run: workAfterStop),
        Scenario("loop.tick-only-on-loop-0", .engine, run: tickOnLoopZero),
    ]

    /// 16 threads × 10,000 `execute` calls on loop 0 of two: every closure runs, on loop 0's
    /// thread (and not loop 1's), and each thread's closures run in the order it submitted them.
    static func executeInOrder(_ kind: PollerKind) async throws -> Trace? {
        let threads = 16, perThread = 10_000
        struct Seen { var next = [Int](repeating: 0, count: 16); var outOfOrder = 0; var offLoop = 0; var ran = 0 }
        let seen = Locked(Seen())
        try await withEngine(kind, ScriptedHandler(), configure: { $0.loops = 2 }) { engine, _ in
            let loops = engine.loops
            try expect(loops.count == 2, "engine.loops has \(loops.count) handles for 2 loops")
            try expect(!loops[0].inEventLoop, "inEventLoop is true on a thread that is not the loop's")
            let (loop, other) = (loops[0], loops[1])
            try await onThread(timeout: .seconds(60), "16 submitting threads") {
                let workers = (0..<threads).map { t in
                    TestThread.start {
                        for i in 0..<perThread {
                            loop.execute {
                                let onLoop = loop.inEventLoop && !other.inEventLoop
                                seen.withLock { s in
                                    if s.next[t] != i { s.outOfOrder += 1 }
                                    s.next[t] = i + 1
                                    if !onLoop { s.offLoop += 1 }
                                    s.ran += 1
                                }
                            }
                        }
                    }
                }
                for w in workers { w.join() }
            }
            try await eventually("\(threads * perThread) closures to run", timeout: .seconds(30)) {
                seen.withLock { $0.ran } == threads * perThread
            }
        }
        let s = seen.withLock { $0 }
        try expect(s.outOfOrder == 0, "\(s.outOfOrder) closures ran out of their thread's submission order")
        try expect(s.offLoop == 0, "\(s.offLoop) closures ran off the loop's thread")
        return nil
    }

    /// `connection.loop` is the connection's own loop: the same handle as
    /// `engine.loops[connection.loopIndex]`, current inside its callbacks, and work executed on
    /// it from `onOpen` runs after `onOpen` returns, on that thread.
    static func connectionLoop(_ kind: PollerKind) async throws -> Trace? {
        let problems = Locked<[String]>([])
        let handles = Locked<[EventLoopHandle]>([])
        let ranAfterOpen = Locked(0)
        let handler = ScriptedHandler(onOpen: { c, _ in
            let loop = c.loop
            if !loop.inEventLoop { problems.withLock { $0.append("connection.loop is not current in onOpen") } }
            if loop.index != c.loopIndex { problems.withLock { $0.append("loop.index \(loop.index) != loopIndex \(c.loopIndex)") } }
            handles.withLock { $0.append(loop) }
            let openReturned = Locked(false)
            loop.execute {
                if !loop.inEventLoop || !openReturned.withLock({ $0 }) {
                    problems.withLock { $0.append("work executed from onOpen ran off the loop or before onOpen returned") }
                }
                ranAfterOpen.withLock { $0 += 1 }
            }
            openReturned.withLock { $0 = true }
            return (nil, .none)
        })
        try await withEngine(kind, handler, configure: { $0.loops = 2 }) { engine, address in
            let clients = try (0..<4).map { _ in try TestClient(address) }
            try await eventually("4 connections and their executed work") { ranAfterOpen.withLock { $0 } == 4 }
            let loops = engine.loops
            for h in handles.withLock({ $0 }) {
                try expect(h == loops[h.index], "connection.loop \(h) is not engine.loops[\(h.index)]")
            }
            try expect(Set(handles.withLock { $0 }).count == 2, "4 round-robin connections did not reach both loops")
            _ = clients
        }
        let p = problems.withLock { $0 }
        try expect(p.isEmpty, p.joined(separator: "; "))
        return nil
    }

    /// A closure scheduled 80 ms ahead runs on the loop's thread no earlier than that and
    /// within 250 ms of it; closures scheduled out of deadline order run in deadline order.
    static func scheduleFires(_ kind: PollerKind) async throws -> Trace? {
        try await withEngine(kind, ScriptedHandler()) { engine, _ in
            let loop = engine.loops[0]
            let ranAt = Locked<ContinuousClock.Instant?>(nil)
            let onLoop = Locked(false)
            let start = ContinuousClock.now
            let task = loop.schedule(after: .milliseconds(80)) {
                ranAt.withLock { $0 = .now }
                onLoop.withLock { $0 = loop.inEventLoop }
            }
            try await eventually("the scheduled closure to run") { ranAt.withLock { $0 } != nil }
            let late = ranAt.withLock { $0! } - start
            try expect(late >= .milliseconds(80), "scheduled for 80 ms, ran after \(late)")
            try expect(late < .milliseconds(330), "scheduled for 80 ms, ran only after \(late)")
            try expect(onLoop.withLock { $0 }, "the scheduled closure ran off the loop's thread")
            try await eventually("the task's outcome") { task.outcome == .ran }

            let order = Locked<[Int]>([])
            for (label, ms) in [(3, 60), (1, 20), (2, 40)] {
                loop.schedule(after: .milliseconds(ms)) { order.withLock { $0.append(label) } }
            }
            try await eventually("three scheduled closures") { order.withLock { $0.count } == 3 }
            try expect(order.withLock { $0 } == [1, 2, 3], "scheduled 60, 20, 40 ms: ran as \(order.withLock { $0 })")
        }
        return nil
    }

    /// `cancel()` before the deadline prevents the run (and says so); `cancel()` after the run
    /// is harmless and says it was too late; a second `cancel()` is harmless too.
    static func scheduleCancel(_ kind: PollerKind) async throws -> Trace? {
        try await withEngine(kind, ScriptedHandler()) { engine, _ in
            let loop = engine.loops[0]
            let ran = Locked(0)
            let cancelled = loop.schedule(after: .milliseconds(40)) { ran.withLock { $0 += 1 } }
            try expect(cancelled.cancel(), "cancel() before the deadline returned false")
            try expect(!cancelled.cancel(), "a second cancel() returned true")
            let witness = loop.schedule(after: .milliseconds(120)) { ran.withLock { $0 += 10 } }
            try await eventually("the later task to run") { witness.outcome == .ran }
            try expect(ran.withLock { $0 } == 10, "a cancelled task ran (count \(ran.withLock { $0 }))")
            try expect(cancelled.outcome == .cancelled, "cancelled task's outcome is \(String(describing: cancelled.outcome))")
            try expect(!witness.cancel(), "cancel() after the run returned true")
            try expect(witness.outcome == .ran, "cancel() after the run changed the outcome to \(String(describing: witness.outcome))")

            // Cancelled from another loop's thread, racing its deadline: it either ran or not,
            // and cancel() says which.
            let raced = Locked(0)
            let t = loop.schedule(after: .milliseconds(5)) { raced.withLock { $0 += 1 } }
            try await Task.sleep(for: .milliseconds(5))
            let prevented = t.cancel()
            try await Task.sleep(for: .milliseconds(50))
            try expect(raced.withLock { $0 } == (prevented ? 0 : 1), "cancel() returned \(prevented) but the closure ran \(raced.withLock { $0 }) times")
        }
        return nil
    }

    /// After the engine stops: `execute` returns false without running the closure, `submit`
    /// throws `GNetError.engineStopped`, `schedule` gives a task already dropped, and a task
    /// still pending when the loop ended was dropped, never run. Before: `submit` returns the
    /// closure's result from the loop's thread.
    static func workAfterStop(_ kind: PollerKind) async throws -> Trace? {
        let kept = Locked<(EventLoopHandle, ScheduledTask)?>(nil)
        let ranLate = Locked(0)
        try await withEngine(kind, ScriptedHandler()) { engine, _ in
            let loop = engine.loops[0]
            let onLoop = try await loop.submit { loop.inEventLoop }
            try expect(onLoop, "submit ran its closure off the loop's thread")
            let pending = loop.schedule(after: .seconds(3600)) { ranLate.withLock { $0 += 1 } }
            kept.withLock { $0 = (loop, pending) }
        } afterStop: {
            guard let (loop, pending) = kept.withLock({ $0 }) else { throw ConformanceFailure("no loop kept") }
            try expect(pending.outcome == .dropped, "a task pending at stop has outcome \(String(describing: pending.outcome))")
            try expect(!loop.execute { ranLate.withLock { $0 += 1 } }, "execute on a stopped engine returned true")
            let late = loop.schedule(after: .zero) { ranLate.withLock { $0 += 1 } }
            try expect(late.outcome == .dropped, "schedule on a stopped engine gave outcome \(String(describing: late.outcome))")
            do {
                _ = try await loop.submit { 1 }
                throw ConformanceFailure("submit on a stopped engine returned")
            } catch GNetError.engineStopped {}
            try await Task.sleep(for: .milliseconds(20))
            try expect(ranLate.withLock { $0 } == 0, "work given to a stopped engine ran")
        }
        return nil
    }

    /// With three loops and a fast ticker, every `onTick` runs on loop 0's thread.
    static func tickOnLoopZero(_ kind: PollerKind) async throws -> Trace? {
        let handler = TickHandler()
        var options = Options()
        options.poller = kind
        options.loops = 3
        options.ticker = true
        options.logger.logLevel = .warning
        let engine = try Engine(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: options)
        try engine.start()
        try await stopping(engine) {
            try await eventually("20 ticks") { handler.ticks.withLock { $0.count } >= 20 }
        }
        let ticks = handler.ticks.withLock { $0 }
        let wrong = ticks.filter { $0 != 0 }
        try expect(wrong.isEmpty, "\(wrong.count) of \(ticks.count) ticks ran off loop 0 (on loops \(Set(wrong).sorted()))")
        return nil
    }
}

/// Records, for each `onTick`, which loop's thread it ran on (-1: none of them).
private final class TickHandler: EventHandler {
    let loops = Locked<[EventLoopHandle]>([])
    let ticks = Locked<[Int]>([])

    func onBoot(_ engine: Engine) -> Action {
        let l = engine.loops
        loops.withLock { $0 = l }
        return .none
    }

    func onTick() -> (delay: Duration, action: Action) {
        let l = loops.withLock { $0 }
        let on = l.firstIndex { $0.inEventLoop } ?? -1
        ticks.withLock { $0.append(on) }
        return (.milliseconds(2), .none)
    }
}
