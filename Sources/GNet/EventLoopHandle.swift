import Glibc
import GNetLocks
import Synchronization

/// One event loop, as other code may reach it: run work on the loop's thread, now or later.
/// `Sendable`; copy it freely. Get it as `connection.loop` or `engine.loops[i]`.
///
/// ## Order
/// Closures passed to `execute` run on the loop thread one at a time, in the order they were
/// submitted from any one thread (FIFO per submitting thread), between the loop's handling of
/// readiness events. A closure scheduled with `schedule(after:_:)` runs with the loop's own
/// timers, ordered by deadline (then by submission).
///
/// ## After the engine stops
/// Work accepted by a loop always runs, on the loop thread, even if the engine is stopping:
/// closures queued when the loop ends run during its tear-down, after every connection has
/// closed. Once the loop has ended, `execute` returns false and drops the closure without
/// running it, `submit` throws `GNetError.engineStopped`, and `schedule` returns a task whose
/// `outcome` is `.dropped`. A scheduled task still pending when its loop ends is dropped too
/// (its `outcome` says so) — a deadline past the loop's life is never met.
///
/// Every method may be called from any thread, the loop's own included (where `execute`
/// queues the closure behind the current callback rather than running it inline).
public struct EventLoopHandle: Sendable, Hashable, CustomStringConvertible {
    let inbox: LoopInbox

    /// The loop's index, 0 ..< `Options.loops` (the same as `Connection.loopIndex`).
    public var index: Int { inbox.index }

    /// The connections this loop owns now (counted from the moment a connection is handed to
    /// it: an accepted socket on its way, a dial in progress). Any thread; a snapshot.
    public var connectionCount: Int { inbox.connectionCount.load(ordering: .relaxed) }

    /// The loop's counters, read on its thread (`LoopStatistics`), passed to `body` there.
    /// Returns false, without calling `body`, when the loop has ended.
    @discardableResult
    public func statistics(_ body: @escaping @Sendable (LoopStatistics) -> Void) -> Bool {
        inbox.enqueue(.statistics(body))
    }

    /// The loop's counters. Throws `GNetError.engineStopped` when the loop has ended.
    public func statistics() async throws -> LoopStatistics {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<LoopStatistics, any Error>) in
            if !statistics({ k.resume(returning: $0) }) { k.resume(throwing: GNetError.engineStopped) }
        }
    }

    /// Whether the calling thread is this loop's thread. Costs one atomic load.
    public var inEventLoop: Bool { inbox.isLoopThread }

    /// Queues `body` to run on the loop's thread. Returns false, without running it, when the
    /// loop has ended (the engine stopped); `body` then is released on the calling thread.
    @discardableResult
    public func execute(_ body: @escaping @Sendable () -> Void) -> Bool {
        inbox.enqueue(.run(body))
    }

    /// Runs `body` on the loop's thread and returns its result (SwiftNIO's `submit`). Throws
    /// `GNetError.engineStopped` when the loop has ended, or what `body` throws.
    public func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<T, any Error>) in
            let accepted = execute { k.resume(with: Result { try body() }) }
            if !accepted { k.resume(throwing: GNetError.engineStopped) }
        }
    }

    /// Runs `body` on the loop's thread once `delay` has passed (measured from this call),
    /// ordered with the loop's timers. Cancel it with the returned task's `cancel()`. A loop
    /// that has ended returns a task already `.dropped`.
    @discardableResult
    public func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void) -> ScheduledTask {
        let task = ScheduledTask(deadline: .now + max(delay, .zero), body)
        inbox.enqueue(.schedule(task))
        return task
    }

    public static func == (a: Self, b: Self) -> Bool { a.inbox === b.inbox }
    public func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(inbox)) }
    public var description: String { "EventLoop(\(index))" }
}

/// A closure scheduled on a loop (`EventLoopHandle.schedule(after:_:)`). `Sendable`: cancel it
/// from any thread.
public final class ScheduledTask: Sendable {
    /// How a scheduled task ended.
    public enum Outcome: Sendable, Hashable {
        /// The closure ran.
        case ran
        /// `cancel()` came first; the closure never runs.
        case cancelled
        /// The loop ended (the engine stopped) before the deadline; the closure never runs.
        case dropped
    }

    private enum State {
        case pending(@Sendable () -> Void)
        case running
        case done(Outcome)
    }

    /// When the task is due.
    public let deadline: ContinuousClock.Instant
    /// `Locked` (a pthread mutex), not `Synchronization.Mutex`: ThreadSanitizer sees it.
    private let state: Locked<State>

    init(deadline: ContinuousClock.Instant, _ body: @escaping @Sendable () -> Void) {
        self.deadline = deadline
        self.state = Locked(.pending(body))
    }

    /// Cancels the task: returns true if it had not started, and then it never runs (its
    /// closure is released at once). False if it has run, is running, or was cancelled or
    /// dropped before: harmless. Any thread.
    @discardableResult
    public func cancel() -> Bool { finish(.cancelled) }

    /// nil while the task is pending or running; then how it ended.
    public var outcome: Outcome? {
        state.withLock { s in
            if case .done(let o) = s { return o }
            return nil
        }
    }

    /// Loop thread: runs the closure unless the task was cancelled.
    func fire() {
        let body = state.withLock { s -> (@Sendable () -> Void)? in
            guard case .pending(let body) = s else { return nil }
            s = .running
            return body
        }
        guard let body else { return }
        body()
        state.withLock { $0 = .done(.ran) }
    }

    /// Ends a pending task without running it. Returns whether it was pending.
    @discardableResult
    func finish(_ outcome: Outcome) -> Bool {
        let body = state.withLock { s -> (@Sendable () -> Void)? in
            guard case .pending(let body) = s else { return nil }
            s = .done(outcome)
            return body
        }
        return body != nil // the closure is released here, outside the lock
    }
}
