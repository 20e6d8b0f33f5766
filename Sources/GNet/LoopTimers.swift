import HeapModule
import Poller

/// A timer on a loop, ordered by deadline (then by scheduling order).
struct LoopTimer: Comparable {
    enum Kind {
        /// `onTick`.
        case tick
        /// Watch a paused listener again.
        case resumeAccept(Int32)
        /// A draining connection's `closeTimeout` (measured from its last progress).
        case drainDeadline(Int32, UInt32)
        /// A lingering connection's `lingerTimeout`.
        case lingerDeadline(Int32, UInt32)
        /// The engine's `shutdownTimeout`.
        case stopDeadline
        /// A connection's idle timer (`EventLoop+Idle.swift`).
        case idle(Int32, UInt32)
        /// A dial's connect timeout.
        case dialDeadline(Int32, UInt32)
        /// A connection layer's ready deadline (a TLS handshake).
        case layerDeadline(Int32, UInt32)
        /// A closure scheduled through `EventLoopHandle.schedule(after:_:)`.
        case user(ScheduledTask)
    }
    var deadline: ContinuousClock.Instant
    var sequence: Int
    var kind: Kind

    static func < (a: Self, b: Self) -> Bool { (a.deadline, a.sequence) < (b.deadline, b.sequence) }
    static func == (a: Self, b: Self) -> Bool { a.deadline == b.deadline && a.sequence == b.sequence }
}

/// A loop's timers: a min-heap by deadline. A timer whose connection is gone (or has moved on
/// to another state) is dropped when it fires, so nothing needs cancelling.
struct LoopTimers {
    private var heap = Heap<LoopTimer>()
    private var sequence = 0

    mutating func insert(at deadline: ContinuousClock.Instant, _ kind: LoopTimer.Kind) {
        sequence += 1
        heap.insert(LoopTimer(deadline: deadline, sequence: sequence, kind: kind))
    }

    var next: ContinuousClock.Instant? { heap.min?.deadline }

    /// Marks every scheduled closure still pending as dropped: the loop is ending.
    mutating func dropUserTasks() {
        for t in heap.unordered { if case .user(let task) = t.kind { task.finish(.dropped) } }
        heap = Heap()
    }

    /// Removes and returns the earliest timer due by `now`.
    mutating func popDue(_ now: ContinuousClock.Instant) -> LoopTimer? {
        guard let t = heap.min, t.deadline <= now else { return nil }
        return heap.removeMin()
    }
}

extension EventLoop {
    final func schedule(after delay: Duration, _ kind: LoopTimer.Kind) {
        timers.insert(at: .now + delay, kind)
    }

    final func schedule(at deadline: ContinuousClock.Instant, _ kind: LoopTimer.Kind) {
        timers.insert(at: deadline, kind)
    }

    /// The wait timeout: `.now` when work is queued, else until the next timer. While idle
    /// timeouts are watched, the loop's clock (read when the last wait returned, or when tasks
    /// ran) stands for now: one clock read per iteration, at the cost of a wait longer by the
    /// time the iteration took to process its events (the timers could not have run meanwhile
    /// anyway).
    final func nextTimeout() -> PollTimeout {
        if inbox.hasPending || !edgeRetry.isEmpty { return .now }
        guard let next = timers.next else { return .block }
        let d = next - (idleWatch ? now : .now)
        return d <= .zero ? .now : .after(d)
    }

    /// Runs the timers that are due. One clock read: the loop's own when it has just been
    /// read for idle timeouts.
    final func runTimers() {
        guard let first = timers.next else { return }
        let now = idleWatch ? self.now : ContinuousClock.now
        guard first <= now else { return }
        while let t = timers.popDue(now) {
            switch t.kind {
            case .tick:
                guard !stopping else { continue }
                let (delay, action) = handler.onTick()
                if action == .shutdown { engine.stop() }
                schedule(after: max(delay, .zero), .tick)
            case .resumeAccept(let fd):
                resumeAccepting(fd)
            case .drainDeadline(let fd, let generation):
                if let c = liveConnection(fd, generation) { drainDeadlinePassed(c) }
            case .lingerDeadline(let fd, let generation):
                if let c = liveConnection(fd, generation) { lingerDeadlinePassed(c) }
            case .stopDeadline:
                stopDeadlinePassed()
            case .idle(let fd, let generation):
                if let c = liveConnection(fd, generation) { idleTimerFired(c, t.deadline) }
            case .dialDeadline(let fd, let generation):
                dialDeadlinePassed(fd, generation)
            case .layerDeadline(let fd, let generation):
                if let c = liveConnection(fd, generation) { layerDeadlinePassed(c) }
            case .user(let task):
                task.fire()
            }
        }
    }
}
