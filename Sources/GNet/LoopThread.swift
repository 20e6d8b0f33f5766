import CGNetLinux
import Glibc

/// A loop with its concrete type erased behind the two things the engine does with it:
/// register its listeners before start, and run it.
struct LoopRunner {
    let base: EventLoop
    let run: () -> Void

    /// A loop on `poller`, whose concrete type `run` keeps for the hot path.
    init<P: Poller>(index: Int, engine: Engine, poller: P) throws {
        let loop = try EventLoop(index: index, engine: engine, poller: poller)
        base = loop
        run = { loop.run(poller) }
    }

    func registerListeners() throws { try base.registerListeners() }
}

import Poller

/// A joinable POSIX thread, named for `top` and debuggers.
final class LoopThread: @unchecked Sendable {
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

    /// Waits for the thread to end. Call once, from one thread.
    func join() {
        guard started else { return }
        pthread_join(thread, nil)
        started = false
    }
}
