import Glibc
import GNetLocks
import Logging
import Poller
import Synchronization

/// A server: event loops serving listeners with one `EventHandler`.
///
/// ```swift
/// struct Echo: EventHandler {
///     func onTraffic(_ c: Connection) -> Action {
///         c.withInbound { try? c.write($0) }
///         c.discard(c.inboundBuffered)
///         return .none
///     }
/// }
/// try Engine.run(Echo(), "tcp://127.0.0.1:9000")
/// ```
///
/// ## Lifecycle
/// An engine runs once:
///
/// ```
///  init ──▶ start() ──────────────────────────────────▶ running ──▶ stop() ──▶ wait() ──▶ stopped
///           binds, registers, makes the loop threads     loops      graceful     joins the
///           (parked), then onBoot, then lets them run     serve                   threads, then
///           │                                                                     onShutdown
///           └─ throws: everything it opened is closed again; start() may be retried
/// ```
///
/// - `init` checks the options and parses the addresses.
/// - `start()` binds every address, makes the pollers and the loop threads, calls `onBoot`
///   (with `addresses` known), and only then lets the loops run: no `onOpen`, `onTraffic` or
///   `onTick` is called before `onBoot` has returned (connections that arrive meanwhile wait in
///   the listen backlog). If it throws, it has closed every descriptor and ended every thread
///   it made, and the engine is as before: `start()` may be called again (unless a `stop()`
///   came meanwhile).
/// - `stop()` (any thread, any moment) or `Action.shutdown` (a handler, `onBoot` included)
///   stops gracefully: listeners close; every open connection is asked by `onQuiesce` whether
///   it may close now (the default says yes; a handler with a request in flight finishes it
///   first and closes then); each connection closes as `close()` would (its queued output
///   sent, its write side shut down, its peer's EOF awaited — see README "Closing"), all
///   within `Options.shutdownTimeout`, after which what is left is aborted with a reset and
///   `GNetError.shutdownTimeout`; every connection gets its `onClose`; then every loop thread
///   ends. Connections accepted meanwhile are closed unserved.
/// - `stop(.immediately)` (also after a graceful stop, to cut it short) aborts every
///   connection at once with a reset (`onClose` gets `GNetError.stoppedImmediately`), and the
///   loops end. A stop asked for while
///   `start()` runs takes effect as soon as the loops exist; one asked for before `start()`
///   makes `start()` throw `GNetError.engineState`.
/// - `wait()` blocks until every loop thread has ended and `onShutdown` has returned.
///   `onShutdown` is called once, by one of the waiters; every other `wait()` returns after it.
/// - `run()` is `start()` then `wait()`; `run() async` awaits the end instead of blocking.
///
/// ## Threads
/// Every method may be called from any thread, except that `wait()` and `run()` must not be
/// called from a handler (a loop thread, or `onBoot`): the engine cannot end while one of its
/// own callbacks waits for it, so that is a precondition failure. The engine's threads are
/// its loops, one each, named `gnet-loop-N`; it starts no other.
public final class Engine: Sendable {
    let handler: any EventHandler
    let options: Options
    /// The addresses as parsed (before binding; see `addresses` for the bound ones).
    public let listenAddresses: [ListenAddress]
    /// The backend this engine runs on (after `GNET_POLLER` and `Options.poller`).
    public let poller: PollerKind

    private enum Phase {
        /// Not started, or a start failed (and may be tried again).
        case created
        /// `start()` is opening sockets, pollers and threads; nothing is published yet.
        case starting
        /// The loops exist, from `onBoot` on, until `onShutdown` has returned.
        case started
        /// `onShutdown` has returned, or a stop came before any start.
        case stopped
    }

    /// How `stop(_:)` ends the engine's connections.
    public enum StopMode: Sendable, Hashable, Comparable {
        /// Stop accepting, let handlers quiesce (`onQuiesce`), close every connection the
        /// orderly way, abort what is left at `Options.shutdownTimeout`.
        case gracefully
        /// Stop accepting and abort every connection now with a reset
        /// (`GNetError.stoppedImmediately`).
        case immediately
    }

    private struct State {
        var phase = Phase.created
        /// The hardest stop asked for so far, nil until one is.
        var stopMode: StopMode? = nil
        var stopRequested: Bool { stopMode != nil }
        var threads: [LoopThread] = []
        var inboxes: [LoopInbox] = []
        var bound: [SocketAddress] = []
        /// The (first) listening descriptor of each address, for `duplicateListener`.
        var listenerFDs: [Int32] = []
        /// Loop threads that have not finished their loop yet.
        var loopsRunning = 0
        /// The waiter that has taken the threads to join and will call `onShutdown`.
        var finisher: pthread_t? = nil
        /// `run() async` callers waiting for the loops to end, and for `onShutdown`.
        var loopsEndedWaiters: [CheckedContinuation<Void, Never>] = []
        var stoppedWaiters: [CheckedContinuation<Void, Never>] = []
        /// The thread calling `onBoot`, while it does.
        var bootThread: pthread_t? = nil
        /// Test hook (see `injectThreadStartFailure`).
        var injectedThreadFailure: Int? = nil
    }
    private let state = Monitor(State())
    /// The round-robin turn of dials without a chosen loop.
    let dialTurn = Atomic<Int>(0)

    /// Checks `options` and parses `addresses`. Throws `GNetError` saying what to fix:
    /// an unparsable address, an invalid option, an unknown poller.
    public convenience init(handler: any EventHandler, addresses: [String], options: Options = Options()) throws {
        guard !addresses.isEmpty else {
            throw GNetError.invalidAddress("", reason: "no address given (a Client dials without listening)")
        }
        try self.init(handler: handler, listening: addresses, options: options)
    }

    /// An engine listening on `addresses`, none for a `Client`.
    init(handler: any EventHandler, listening addresses: [String], options: Options) throws {
        try options.validate()
        self.listenAddresses = try addresses.map { try ListenAddress(parsing: $0) }
        if options.acceptedLayer != nil, let datagram = listenAddresses.first(where: \.network.isDatagram) {
            // Datagrams would bypass the layer: refuse rather than serve them in plaintext.
            throw GNetError.invalidOption(
                name: "tls",
                reason: "TLS applies to stream connections, and \(datagram.original) would carry plaintext datagrams (DTLS is not supported); serve datagram addresses from an engine without TLS")
        }
        self.poller = try PollerKind.resolve(options.poller)
        self.handler = handler
        self.options = options
    }

    /// Creates an engine serving `handler` on `addresses`, runs it until it stops, and returns.
    /// Blocks the calling thread (see `run()`).
    public static func run(_ handler: any EventHandler, _ addresses: String..., options: Options = Options()) throws {
        try Engine(handler: handler, addresses: addresses, options: options).run()
    }

    /// `start()`, then `wait()`: blocks the calling thread until the engine has stopped and
    /// `onShutdown` has returned. Not from a handler.
    public func run() throws {
        try start()
        wait()
    }

    /// `start()`, then suspends (without blocking a thread) until the engine has stopped and
    /// `onShutdown` has returned. Cancelling the task stops the engine gracefully; `run` then
    /// returns normally once it has stopped. Throws only what `start()` throws.
    public func run() async throws {
        try start()
        await stopped(onCancel: .gracefully)
    }

    /// Suspends (without blocking a thread) until the engine has stopped and `onShutdown` has
    /// returned; at once if it was never started. Cancelling the task stops the engine with
    /// `mode`, and this still returns only once it has stopped. Not from a handler.
    package func stopped(onCancel mode: StopMode) async {
        await withTaskCancellationHandler {
            await waitUntilStopped()
        } onCancel: {
            self.stop(mode)
        }
    }

    /// Suspends (without blocking a thread) until the engine has stopped and `onShutdown` has
    /// returned: `wait()` for async code, which must not block a thread. Returns at once if the engine never started.
    /// Cancelling the task does not stop the engine (`run() async` does); not from a handler.
    public func waitUntilStopped() async {
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            let ended = state.withLock { s -> Bool in
                if s.loopsRunning == 0 { return true }
                s.loopsEndedWaiters.append(k)
                return false
            }
            if ended { k.resume() }
        }
        // Every loop has ended, so joining their threads takes no longer than their return.
        switch claimFinish() {
        case .nothing:
            return
        case .finish(let threads):
            finish(joining: threads)
        case .follow:
            await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
                let stopped = state.withLock { s -> Bool in
                    if s.phase == .stopped { return true }
                    s.stoppedWaiters.append(k)
                    return false
                }
                if stopped { k.resume() }
            }
        }
    }

    /// Binds every address, makes the pollers and loop threads, calls `onBoot` on the calling
    /// thread, then lets the loops run. Returns once the engine accepts connections (or, if
    /// `onBoot` returned `.shutdown`, once it is stopping).
    ///
    /// Throws `GNetError.addressInUse` (or another `GNetError`, `PollerError`, `SystemError`)
    /// when an address cannot be bound or a poller or thread cannot be made; everything opened
    /// so far is closed again and `start()` may be retried. Throws `GNetError.engineState`
    /// when the engine was started or stopped before.
    public func start() throws {
        try state.withLock { s throws(GNetError) in
            switch s.phase {
            case .created:
                s.phase = .starting
            case .stopped where s.inboxes.isEmpty:
                throw GNetError.engineState("the engine was stopped before it started; create a new Engine")
            case .starting, .started, .stopped:
                throw GNetError.engineState("the engine has already been started; create a new Engine to run again")
            }
        }
        // The loop threads wait at this gate until onBoot has returned: true runs the loops,
        // false (a failed start) ends them without running.
        let gate = Monitor<Bool?>(nil)
        var runners: [LoopRunner] = []
        var threads: [LoopThread] = []
        let bound: [SocketAddress]
        let listenerFDs: [Int32]
        do {
            for i in 0..<options.loops { runners.append(try poller.makeLoop(index: i, engine: self)) }
            if options.edgeTriggered && !runners[0].base.poller.capabilities.edgeTriggered {
                throw GNetError.unsupported(poller: poller.name, feature: "edge-triggered I/O (Options.edgeTriggered)")
            }
            (bound, listenerFDs) = try bindListeners(runners)
            let inboxes = runners.map(\.base.inbox)
            for r in runners {
                r.base.peers = inboxes
                try r.registerListeners()
            }
            let failAt = state.withLock { s in
                defer { s.injectedThreadFailure = nil }
                return s.injectedThreadFailure
            }
            for r in runners {
                if r.base.index == failAt { throw SystemError("pthread_create", errno: EAGAIN) }
                let t = LoopThread()
                let run = r.run
                try t.start(name: "gnet-loop-\(r.base.index)") { [self] in
                    guard gate.withLock(when: { $0 != nil }, { $0! }) else { return }
                    run()
                    loopEnded()
                }
                threads.append(t)
            }
        } catch {
            gate.withLock { $0 = false }
            for t in threads { t.join() }
            for r in runners { r.discard() }
            state.withLock { s in s.phase = s.stopRequested ? .stopped : .created }
            throw error
        }

        // Nothing can fail from here on. Publish the loops; a stop() asked for while starting
        // found none to tell, so tell them now (they read it before anything else).
        let inboxes = runners.map(\.base.inbox)
        let stopNow = state.withLock { s -> StopMode? in
            s.phase = .started
            s.threads = threads
            s.inboxes = inboxes
            s.bound = bound
            s.listenerFDs = listenerFDs
            s.loopsRunning = threads.count
            s.bootThread = pthread_self()
            return s.stopMode
        }
        if let stopNow { for inbox in inboxes { inbox.enqueue(.stop(stopNow)) } }
        options.logger.info("gnet engine started", metadata: [
            "poller": "\(poller.name)", "loops": "\(options.loops)",
            "addresses": "\(boundAddresses.map(\.description).joined(separator: " "))",
        ])
        let action = handler.onBoot(self)
        state.withLock { $0.bootThread = nil }
        if action == .shutdown { stop() }
        gate.withLock { $0 = true }
    }

    /// Opens the listeners: one per loop with `SO_REUSEPORT`, or one on the first loop
    /// (which accepts for all). A `udp` address always gets one socket per loop (with more
    /// than one loop, `SO_REUSEPORT`): there is nothing to accept and hand over, and so every
    /// loop serves datagrams. A `unixgram` socket is on the first loop only. Returns the bound address of each `listenAddresses` entry.
    private func bindListeners(_ runners: [LoopRunner]) throws -> (bound: [SocketAddress], fds: [Int32]) {
        var bound: [SocketAddress] = []
        var listenerFDs: [Int32] = []
        let interface = try options.multicastInterface.map { name throws(GNetError) in try Socket.interfaceIndex(name) } ?? 0
        func open(_ address: ListenAddress, reusePort: Bool) throws -> Int32 {
            guard address.network.isDatagram else {
                return try Socket.listen(address, reusePort: reusePort, backlog: options.backlog,
                                         reuseAddress: options.reuseAddress, device: options.bindToDevice)
            }
            return try Socket.bindDatagram(
                address, reusePort: reusePort, interfaceIndex: interface, device: options.bindToDevice,
                receiveBuffer: options.socketReceiveBuffer, sendBuffer: options.socketSendBuffer)
        }
        for address in listenAddresses {
            // A Unix path binds once: its socket lives on the first loop.
            let perLoop = runners.count > 1 && !address.network.isUnix && (address.network.isDatagram || options.reusePort)
            let fd = try open(address, reusePort: perLoop)
            let actual = Socket.localAddress(fd) ?? address.address
            runners[0].base.listeners.append(Listener(fd: fd, address: address, bound: actual))
            bound.append(actual)
            listenerFDs.append(fd)
            guard perLoop else { continue }
            var same = address
            same.address = address.address.withPort(actual.port ?? 0)
            for r in runners.dropFirst() {
                let fd = try open(same, reusePort: true)
                r.base.listeners.append(Listener(fd: fd, address: same, bound: actual))
            }
        }
        return (bound, listenerFDs)
    }

    /// Stops the engine gracefully (see the type's notes): `stop(.gracefully)`.
    public func stop() {
        stop(.gracefully)
    }

    /// Stops the engine (see the type's notes and `StopMode`). Returns at once; `wait()` tells
    /// when it is done. Any thread, any moment: during `start()` it takes effect as soon as the
    /// loops exist; before `start()` it makes `start()` throw. Asking again for the same mode
    /// or a gentler one is harmless; `.immediately` after `.gracefully` cuts the graceful stop
    /// short.
    public func stop(_ mode: StopMode) {
        let inboxes = state.withLock { s -> [LoopInbox] in
            if let asked = s.stopMode, asked >= mode { return [] }
            s.stopMode = mode
            switch s.phase {
            case .created:
                s.phase = .stopped
                return []
            case .starting, .stopped:
                return [] // start() tells the loops once they exist
            case .started:
                return s.inboxes
            }
        }
        guard !inboxes.isEmpty else { return }
        options.logger.info("gnet engine stopping", metadata: ["mode": "\(mode)"])
        for inbox in inboxes { inbox.enqueue(.stop(mode)) }
    }

    /// Blocks until the engine has stopped: every loop thread has ended and `onShutdown` has
    /// returned. Returns at once if the engine was never started (or its start failed); called
    /// while `start()` runs, it first waits for that to end.
    ///
    /// Any number of threads may wait at once; one of them calls `onShutdown` (once), and each
    /// returns only after it has. Not from a handler, `onBoot` included (precondition).
    public func wait() {
        switch claimFinish() {
        case .nothing:
            return
        case .finish(let threads):
            finish(joining: threads)
        case .follow:
            state.withLock(when: { $0.phase == .stopped }) { _ in }
        }
    }

    private enum WaitRole {
        /// Never started, or already stopped.
        case nothing
        /// Join these threads, then call `onShutdown`.
        case finish([LoopThread])
        /// Another waiter is finishing: wait for it.
        case follow
    }

    /// Decides what a waiter does, after any `start()` in progress has ended.
    private func claimFinish() -> WaitRole {
        state.withLock(when: { $0.phase != .starting }) { s -> WaitRole in
            if let boot = s.bootThread, pthread_equal(boot, pthread_self()) != 0 {
                preconditionFailure("Engine.wait() or run() called from onBoot: the engine cannot stop while onBoot waits for it")
            }
            if s.threads.contains(where: \.isCurrent) {
                preconditionFailure("Engine.wait() or run() called from a handler: the engine cannot stop while its loop waits for it")
            }
            guard s.phase == .started else { return .nothing }
            if let finisher = s.finisher {
                if pthread_equal(finisher, pthread_self()) != 0 {
                    preconditionFailure("Engine.wait() or run() called from onShutdown: it returns only after onShutdown")
                }
                return .follow
            }
            s.finisher = pthread_self()
            return .finish(s.threads)
        }
    }

    /// Joins the loop threads, calls `onShutdown`, and releases every other waiter.
    private func finish(joining threads: [LoopThread]) {
        for t in threads { t.join() }
        handler.onShutdown(self)
        options.logger.info("gnet engine stopped")
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.phase = .stopped
            s.threads = []
            defer { s.stoppedWaiters = [] }
            return s.stoppedWaiters
        }
        for k in waiters { k.resume() }
    }

    /// Called by each loop thread when its loop has ended.
    private func loopEnded() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.loopsRunning -= 1
            guard s.loopsRunning == 0 else { return [] }
            defer { s.loopsEndedWaiters = [] }
            return s.loopsEndedWaiters
        }
        for k in waiters { k.resume() }
    }

    /// A duplicate of the listening socket of `listenAddresses[index]` (gnet's `Engine.Dup`),
    /// close-on-exec, for handing the socket to another process (a graceful restart, say).
    /// The caller owns and closes it; the engine keeps accepting on the original. Throws
    /// `GNetError.engineState` unless the engine is running (listeners exist only then), and
    /// `GNetError.invalidOption` for an index out of range. Any thread.
    public func duplicateListener(_ index: Int = 0) throws -> Int32 {
        try state.withLock { s throws -> Int32 in
            // Under the lock: a stop cannot close the listener before the duplicate is made.
            guard s.phase == .started, !s.stopRequested else {
                throw GNetError.engineState("duplicateListener needs a running engine: its listeners are open only then")
            }
            guard s.listenerFDs.indices.contains(index) else {
                throw GNetError.invalidOption(name: "index", reason: "the engine has \(s.listenerFDs.count) listen addresses, got \(index)")
            }
            return try sysCall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(s.listenerFDs[index], F_DUPFD_CLOEXEC, 0) }
        }
    }

    /// The loops that take dials, or none with whether that is because the engine stopped.
    func dialTargets() -> (inboxes: [LoopInbox], stopped: Bool) {
        state.withLock { s in
            guard s.phase == .started, !s.stopRequested else { return ([], s.stopRequested) }
            return (s.inboxes, false)
        }
    }

    /// Test hook: the next `start()` fails as if the thread of loop `index` could not be created.
    package func injectThreadStartFailure(loop index: Int) {
        state.withLock { $0.injectedThreadFailure = index }
    }

    /// The bound address of each listen address, in order (with the real port where port 0
    /// was asked for). Empty before `start()`.
    public var addresses: [SocketAddress] { state.withLock { $0.bound } }

    /// The bound addresses with their networks (`udp://127.0.0.1:9001`, `tcp://…`), in the
    /// order of `listenAddresses`. Empty before `start()`.
    public var boundAddresses: [ListenAddress] {
        zip(listenAddresses, addresses).map { ListenAddress(network: $0.network, address: $1, original: $0.original) }
    }

    /// Datagrams dropped across all loops because they were larger than
    /// `Options.readBufferCapacity` (see `EventHandler.onTruncatedDatagram`).
    public var truncatedDatagrams: Int {
        state.withLock { $0.inboxes }.reduce(0) { $0 + $1.truncatedDatagrams.load(ordering: .relaxed) }
    }

    /// Datagrams written by handlers during a receive batch that the kernel then refused to
    /// send (a full send buffer, a queued ICMP error, too large), across all loops: they were
    /// dropped. Writes outside a batch throw instead.
    public var unsentDatagrams: Int {
        state.withLock { $0.inboxes }.reduce(0) { $0 + $1.unsentDatagrams.load(ordering: .relaxed) }
    }

    /// Open connections across all loops.
    public var connectionCount: Int {
        state.withLock { $0.inboxes }.reduce(0) { $0 + $1.connectionCount.load(ordering: .relaxed) }
    }

    /// Whether the engine is running: started (from `onBoot` on) and not asked to stop.
    public var isRunning: Bool { state.withLock { $0.phase == .started && !$0.stopRequested } }

    /// A handle to each event loop, by index (`Connection.loopIndex`), to run work on them
    /// (`EventLoopHandle.execute`, `schedule(after:_:)`). Empty before `start()` has made the
    /// loops (it is filled in by the time `onBoot` runs); the handles stay valid after the
    /// engine stops, refusing work.
    public var loops: [EventLoopHandle] { state.withLock { $0.inboxes }.map { EventLoopHandle(inbox: $0) } }

    /// The number of event loops.
    public var loopCount: Int { options.loops }
}
