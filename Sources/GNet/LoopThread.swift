import CGNetLinux
import Glibc
import GNetLocks
import Poller

/// A loop with its concrete type erased behind the three things the engine does with it:
/// register its listeners before start, run it, or — when the start failed and it never ran —
/// discard it.
struct LoopRunner {
    let base: EventLoop
    let run: () -> Void
    /// Closes what the loop opened (listeners, poller, waker) without running it. Only for a
    /// loop whose thread never ran it, on the thread that made it.
    let discard: () -> Void

    /// A loop on `poller`, whose concrete type `run` keeps for the hot path.
    init<P: Poller>(index: Int, engine: Engine, poller: P) throws {
        let loop = try EventLoop(index: index, engine: engine, poller: poller)
        base = loop
        run = { loop.run(poller) }
        discard = {
            loop.tearDown()
            try? loop.poller.close() // nothing ran on it; a failure leaves nothing to clean
        }
    }

    func registerListeners() throws { try base.registerListeners() }
}

/// A joinable POSIX thread, named for `top` and debuggers.
final class LoopThread: @unchecked Sendable {
    // Written by `start` before the thread is shared (the engine publishes it under a lock).
    private var thread = pthread_t()
    private var started = false

    private final class Box {
        let body: () -> Void
        let name: String
        init(_ name: String, _ body: @escaping () -> Void) { self.name = name; self.body = body }
    }

    /// Starts `body` on a new thread. The closure moves to that thread; nothing else touches it.
    func start(name: String, _ body: @escaping () -> Void) throws {
        let box = Unmanaged.passRetained(Box(name, body)).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            _ = cgnet_set_thread_name(String(box.name.prefix(15)))
            box.body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw SystemError("pthread_create", errno: rc)
        }
        started = true
    }

    /// Whether the caller is this thread. (Reads only `thread`, which `join` leaves alone, so
    /// any thread may ask while another joins.)
    var isCurrent: Bool { pthread_equal(thread, pthread_self()) != 0 }

    /// Waits for the thread to end. Call once, from one thread.
    func join() {
        guard started else { return }
        pthread_join(thread, nil)
        started = false
    }
}

/// A value guarded by a pthread mutex, with a condition to wait until the value is as wanted
/// (`ConditionLocked` with one condition, which ThreadSanitizer sees). For the engine's
/// lifecycle (start, stop, wait) and nothing on the hot path: every `withLock` wakes every
/// waiter, which then re-checks its condition.
final class Monitor<Value>: Sendable {
    private let locked: ConditionLocked<Value>
    private static var changed: Int { 0 }

    init(_ value: Value) { locked = ConditionLocked(value, conditions: 1) }

    /// Runs `body` with exclusive access to the value, then wakes the waiters.
    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        defer { locked.broadcast(Self.changed) }
        return try locked.withLock(body)
    }

    /// Blocks until `ready` holds for the value, then runs `body` as `withLock` does.
    func withLock<R>(when ready: (Value) -> Bool, _ body: (inout Value) -> R) -> R {
        defer { locked.broadcast(Self.changed) }
        return locked.withLock(waitingOn: Self.changed, until: { ready(copy $0) }, body)
    }
}
