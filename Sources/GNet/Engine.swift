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
/// `init` checks the options and addresses; `start()` binds, starts the loop threads and calls
/// `onBoot`; `wait()` blocks until the engine has stopped and then calls `onShutdown`;
/// `run()` is `start()` then `wait()`. An engine runs once.
///
/// Stopping (`stop()` from any thread, or `Action.shutdown` from a handler): listeners close,
/// idle connections close at once, connections with queued output close when it is sent or
/// when `Options.shutdownTimeout` passes; every connection gets its `onClose`; then every loop
/// thread ends and `onShutdown` is called.
///
/// ## Threads
/// Every method may be called from any thread.
public final class Engine: Sendable {
    let handler: any EventHandler
    let options: Options
    /// The addresses as parsed (before binding; see `addresses` for the bound ones).
    public let listenAddresses: [ListenAddress]
    /// The backend this engine runs on (after `GNET_POLLER` and `Options.poller`).
    public let poller: PollerKind

    private enum Phase { case created, starting, running, stopping, stopped }
    private struct State {
        var phase = Phase.created
        var threads: [LoopThread] = []
        var inboxes: [LoopInbox] = []
        var bound: [SocketAddress] = []
        var shutdownCalled = false
    }
    private let state = Locked(State())

    /// Checks `options` and parses `addresses`. Throws `GNetError` saying what to fix:
    /// an unparsable address, an invalid option, an unknown poller.
    public init(handler: any EventHandler, addresses: [String], options: Options = Options()) throws {
        try options.validate()
        guard !addresses.isEmpty else {
            throw GNetError.invalidAddress("", reason: "no address given")
        }
        self.listenAddresses = try addresses.map { try ListenAddress(parsing: $0) }
        self.poller = try PollerKind.resolve(options.poller)
        self.handler = handler
        self.options = options
    }

    /// Creates an engine serving `handler` on `addresses`, runs it until it stops, and returns.
    public static func run(_ handler: any EventHandler, _ addresses: String..., options: Options = Options()) throws {
        try Engine(handler: handler, addresses: addresses, options: options).run()
    }

    /// `start()`, then `wait()`.
    public func run() throws {
        try start()
        wait()
    }

    /// Runs the engine without blocking a thread of the caller's; cancelling the task stops it.
    public func run() async throws {
        try start()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
                let waiter = LoopThread()
                do {
                    try waiter.start(name: "gnet-wait") { self.wait(); k.resume() }
                } catch {
                    self.stop()
                    self.wait()
                    k.resume()
                }
            }
        } onCancel: {
            self.stop()
        }
    }

    /// Binds every address, starts the loops and calls `onBoot`. Returns once the engine
    /// accepts connections. Throws (leaving nothing open) when an address is in use or a
    /// poller cannot be made.
    public func start() throws {
        try state.withLock { s in
            switch s.phase {
            case .created: s.phase = .starting
            case .stopped where s.threads.isEmpty && s.inboxes.isEmpty:
                throw GNetError.engineState("the engine was stopped before it started; create a new Engine")
            default:
                throw GNetError.engineState("the engine has already been started; create a new Engine to run again")
            }
        }
        var runners: [LoopRunner] = []
        do {
            for i in 0..<options.loops { runners.append(try poller.makeLoop(index: i, engine: self)) }
            let bound = try bindListeners(runners)
            let inboxes = runners.map(\.base.inbox)
            for r in runners {
                r.base.peers = inboxes
                try r.registerListeners()
            }
            var threads: [LoopThread] = []
            for r in runners {
                let t = LoopThread()
                let run = r.run
                try t.start(name: "gnet-loop-\(r.base.index)", run)
                threads.append(t)
            }
            state.withLock { s in
                s.threads = threads
                s.inboxes = inboxes
                s.bound = bound
                if s.phase == .starting { s.phase = .running }
            }
        } catch {
            for r in runners { r.base.closeListeners() }
            state.withLock { $0.phase = .created }
            throw error
        }
        options.logger.info("gnet engine started", metadata: [
            "poller": "\(poller.name)", "loops": "\(options.loops)",
            "addresses": "\(addresses.map(\.description).joined(separator: " "))",
        ])
        if handler.onBoot(self) == .shutdown { stop() }
    }

    /// Opens the listeners: one per loop with `SO_REUSEPORT`, or one on the first loop
    /// (which accepts for all). Returns the bound address of each `listenAddresses` entry.
    private func bindListeners(_ runners: [LoopRunner]) throws -> [SocketAddress] {
        var bound: [SocketAddress] = []
        for address in listenAddresses {
            let perLoop = runners.count > 1 && options.reusePort && address.network != .unix
            let fd = try Socket.listen(address, reusePort: perLoop, backlog: options.backlog)
            let actual = Socket.localAddress(fd) ?? address.address
            runners[0].base.listeners.append(Listener(fd: fd, address: address, bound: actual))
            bound.append(actual)
            guard perLoop else { continue }
            var same = address
            same.address = address.address.withPort(actual.port ?? 0)
            for r in runners.dropFirst() {
                let fd = try Socket.listen(same, reusePort: true, backlog: options.backlog)
                r.base.listeners.append(Listener(fd: fd, address: same, bound: actual))
            }
        }
        return bound
    }

    /// Stops the engine gracefully (see the type's notes). Returns at once; `wait()` tells when
    /// it is done. Calling it again, or before `start()`, is harmless.
    public func stop() {
        let inboxes = state.withLock { s -> [LoopInbox] in
            switch s.phase {
            case .created:
                s.phase = .stopped
                return []
            case .starting, .running:
                s.phase = .stopping
                return s.inboxes
            case .stopping, .stopped:
                return []
            }
        }
        for inbox in inboxes { inbox.enqueue(.stop) }
    }

    /// Blocks until every loop thread has ended, then calls `onShutdown` (once). Returns at
    /// once if the engine was never started. Do not call it from a handler (a loop thread).
    public func wait() {
        let threads = state.withLock { s -> [LoopThread] in
            defer { s.threads = [] }
            return s.threads
        }
        for t in threads { t.join() }
        let callShutdown = state.withLock { s -> Bool in
            guard !threads.isEmpty, !s.shutdownCalled else { return false }
            s.shutdownCalled = true
            s.phase = .stopped
            return true
        }
        if callShutdown {
            handler.onShutdown(self)
            options.logger.info("gnet engine stopped")
        }
    }

    /// The bound address of each listen address, in order (with the real port where port 0
    /// was asked for). Empty before `start()`.
    public var addresses: [SocketAddress] { state.withLock { $0.bound } }

    /// Open connections across all loops.
    public var connectionCount: Int {
        state.withLock { $0.inboxes }.reduce(0) { $0 + $1.connectionCount.load(ordering: .relaxed) }
    }

    /// Whether the engine is running (started and not yet stopping).
    public var isRunning: Bool { state.withLock { $0.phase == .running } }

    /// The number of event loops.
    public var loopCount: Int { options.loops }
}
