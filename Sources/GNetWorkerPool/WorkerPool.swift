import CGNetLinux
import DequeModule
import GNet
import GNetLocks
import Glibc

/// A bounded pool of POSIX threads for blocking work (file I/O, DNS, a database driver, a
/// slow computation), so that event loops never block: gnet's ants pool, SwiftNIO's
/// `NIOThreadPool`.
///
/// ```
///   loop thread ──submit──▶ ┌──────── queue (FIFO, ≤ queueCapacity) ────────┐ ──▶ gnet-worker-0
///   any thread  ──submit──▶ │ job job job job …                             │ ──▶ gnet-worker-1
///                           └───────────────────────────────────────────────┘ ──▶ …
///   result ◀── connection.loop.execute ◀──────────────────────────────────────── (submit(for:))
/// ```
///
/// ## Bounds
/// `threads` workers run jobs; at most `queueCapacity` more wait in a FIFO queue. When the queue
/// is full, `submit` fails at once with `WorkerPoolError.queueFull(capacity:)` (ants'
/// non-blocking mode), or, with `whenFull: .wait`, a caller that is not an event loop sleeps
/// until there is room. A loop never sleeps here: `submit(for:)` is always called on a loop
/// (a `Connection` is loop-confined) and never waits, and a plain `submit` from a loop thread
/// the pool was told of (`protect(_:)`) fails with `WorkerPoolError.wouldBlockEventLoop`.
///
/// ## Order
/// Jobs start in the order they were queued; jobs queued by one thread therefore start in that
/// thread's order (FIFO per submitter). With more than one worker, they may finish in any
/// order; results of `submit(for:)` return to the loop in the order they finish. Use
/// `threads: 1`, or sequence per connection, where the answer order matters (the conformance
/// scenario queues a connection's next request when the previous answer is back).
///
/// ## Lifetime
/// The pool lives apart from any engine: create it before `Engine.run()`, and shut it down
/// after the engine stopped, in `onShutdown` (or after `run()` returns). Call `shutdown` before
/// the last reference goes: the workers keep the pool alive until then.
///
/// Every method may be called from any thread, except that `shutdown` must not be called by
/// a job of this pool (it would wait for itself).
public final class WorkerPool: Sendable {
    /// How many threads, how much queue, and what a full queue does.
    public struct Configuration: Sendable {
        /// Worker threads, started by `init` (at least 1).
        public var threads: Int
        /// Jobs that may wait for a worker (at least 1); more fail or wait (`whenFull`).
        public var queueCapacity: Int
        /// What `submit` does when `queueCapacity` jobs are waiting.
        public var whenFull: WhenFull
        /// Thread name prefix: workers are `<name>-0`, `<name>-1`, … (names are cut to 15
        /// bytes by Linux).
        public var name: String

        public init(threads: Int = 4, queueCapacity: Int = 1024, whenFull: WhenFull = .fail, name: String = "gnet-worker") {
            self.threads = threads
            self.queueCapacity = queueCapacity
            self.whenFull = whenFull
            self.name = name
        }
    }

    /// What a submit does when the queue is full.
    public enum WhenFull: Sendable, Hashable {
        /// Fail at once with `WorkerPoolError.queueFull(capacity:)`.
        case fail
        /// Wait for room (or for shutdown, then fail with `.shutDown`) — except on an event
        /// loop, which fails with `.wouldBlockEventLoop` rather than block. A job that submits
        /// to its own pool in this mode can deadlock once every worker does; jobs should not.
        case wait
    }

    /// What `shutdown` does with jobs still queued.
    public enum ShutdownMode: Sendable, Hashable {
        /// Run every queued job, then end the threads.
        case finishQueued
        /// Complete every queued job with `WorkerPoolError.shutDown` without running it (jobs
        /// already running finish), then end the threads.
        case cancelQueued
    }

    /// One queued piece of work: `run` on a worker, or `cancel` (with `.shutDown`) on the
    /// thread that shuts the pool down.
    struct Job {
        let run: @Sendable () -> Void
        let cancel: @Sendable () -> Void
    }

    struct State {
        var queue = Deque<Job>()
        var stopping = false
        /// Loops that must never wait here (`protect`).
        var loops: [EventLoopHandle] = []
        /// The worker threads, until the first `shutdown` takes them to join.
        var threads: [pthread_t] = []
        /// Workers that have named themselves and are taking jobs (`init` waits for all).
        var started = 0
    }

    /// Condition numbers of `state`.
    private static let workAvailable = 0
    private static let roomAvailable = 1
    private static let workerStarted = 2

    public let configuration: Configuration
    private let state: ConditionLocked<State>

    /// Starts `configuration.threads` named worker threads, and returns once they all run.
    public init(_ configuration: Configuration = Configuration()) {
        precondition(configuration.threads >= 1, "WorkerPool needs at least one thread")
        precondition(configuration.queueCapacity >= 1, "WorkerPool needs a queue capacity of at least 1")
        self.configuration = configuration
        state = ConditionLocked(State(), conditions: 3)
        var threads: [pthread_t] = []
        for i in 0 ..< configuration.threads {
            threads.append(startThread(name: "\(configuration.name)-\(i)"))
        }
        // Return with every worker named and running, so that a thread count taken now is
        // exact.
        state.withLock(waitingOn: Self.workerStarted, until: { $0.started == configuration.threads }) { $0.threads = threads }
    }

    /// Convenience: `init(Configuration(threads:queueCapacity:whenFull:name:))`.
    public convenience init(threads: Int, queueCapacity: Int = 1024, whenFull: WhenFull = .fail, name: String = "gnet-worker") {
        self.init(Configuration(threads: threads, queueCapacity: queueCapacity, whenFull: whenFull, name: name))
    }

    /// Tells the pool which threads are event loops, so that a waiting submit from one of them
    /// fails with `.wouldBlockEventLoop` instead of blocking the loop. Call it from `onBoot`
    /// with `engine.loops`. Only matters with `whenFull: .wait`.
    public func protect(_ loops: [EventLoopHandle]) {
        state.withLock { $0.loops.append(contentsOf: loops) }
    }

    /// Jobs waiting for a worker (not counting running ones). A snapshot.
    public var queuedCount: Int { state.withLock { $0.queue.count } }

    /// Whether `shutdown` has been called.
    public var isShutDown: Bool { state.withLock { $0.stopping } }

    /// Queues `work` to run on a worker thread. Throws `.queueFull` (or waits, see
    /// `Configuration.whenFull`), `.wouldBlockEventLoop`, or `.shutDown` (the work never runs).
    /// Any thread.
    public func submit(_ work: @escaping @Sendable () -> Void) throws(WorkerPoolError) {
        try enqueue(Job(run: work, cancel: {}), mayWait: true)
    }

    /// Queues `job`. Waits for room only if `mayWait`, the policy is `.wait`, and the caller is
    /// not a protected loop.
    func enqueue(_ job: Job, mayWait: Bool) throws(WorkerPoolError) {
        let capacity = configuration.queueCapacity
        enum Admission { case queued, waitForRoom, refused(WorkerPoolError) }
        let admission: Admission = state.withLock { s in
            if s.stopping { return .refused(.shutDown) }
            if s.queue.count < capacity {
                s.queue.append(job)
                return .queued
            }
            if configuration.whenFull == .fail { return .refused(.queueFull(capacity: capacity)) }
            if !mayWait || s.loops.contains(where: { $0.inEventLoop }) { return .refused(.wouldBlockEventLoop) }
            return .waitForRoom
        }
        switch admission {
        case .queued:
            break
        case .refused(let error):
            throw error
        case .waitForRoom:
            let queued: Bool = state.withLock(waitingOn: Self.roomAvailable, until: { $0.stopping || $0.queue.count < capacity }) { s in
                if s.stopping { return false }
                s.queue.append(job)
                return true
            }
            guard queued else { throw .shutDown }
        }
        state.signal(Self.workAvailable)
    }

    /// Stops the pool: refuses new work at once, then, by `mode`, runs or cancels the queued
    /// jobs (cancelled ones complete with `.shutDown` on this thread), and returns when every
    /// worker thread has ended (joined). Submitters waiting for room fail with `.shutDown`.
    ///
    /// Blocks the caller while running jobs finish, so call it off the event loops: in
    /// `onShutdown`, or after `Engine.run()` returned. A second call returns at once (the
    /// first joins). Never from one of this pool's jobs.
    public func shutdown(_ mode: ShutdownMode = .finishQueued) {
        let (threads, cancelled) = state.withLock { s -> ([pthread_t], Deque<Job>) in
            assert(!s.loops.contains { $0.inEventLoop }, "WorkerPool.shutdown blocks: call it off the event loops")
            let first = !s.stopping
            s.stopping = true
            let cancelled = mode == .cancelQueued ? s.queue : []
            if mode == .cancelQueued { s.queue.removeAll() }
            let threads = first ? s.threads : []
            if first { s.threads = [] }
            return (threads, cancelled)
        }
        state.broadcast(Self.workAvailable)
        state.broadcast(Self.roomAvailable)
        for job in cancelled { job.cancel() }
        let me = pthread_self()
        precondition(!threads.contains { pthread_equal($0, me) != 0 }, "WorkerPool.shutdown called from one of its own jobs")
        for t in threads { pthread_join(t, nil) }
    }

    // MARK: Worker threads

    /// Worker body: take the oldest job and run it, until the pool stops and (for
    /// `.finishQueued`) the queue is empty.
    private func work() {
        while true {
            let job: Job? = state.withLock(waitingOn: Self.workAvailable, until: { $0.stopping || !$0.queue.isEmpty }) { s in
                s.queue.popFirst()
            }
            guard let job else { return } // stopping, nothing left
            state.signal(Self.roomAvailable)
            job.run()
        }
    }

    private final class Start {
        let name: String
        let pool: WorkerPool
        init(name: String, pool: WorkerPool) { self.name = name; self.pool = pool }
    }

    private func startThread(name: String) -> pthread_t {
        let start = Unmanaged.passRetained(Start(name: name, pool: self)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let start = Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue()
            _ = cgnet_set_thread_name(String(start.name.prefix(15)))
            start.pool.state.withLock { $0.started += 1 }
            start.pool.state.broadcast(WorkerPool.workerStarted)
            start.pool.work()
            return nil
        }, start)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return thread
    }
}
