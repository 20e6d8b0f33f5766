import CGNetLinux
import DequeModule
import Glibc
import Logging
import Poller

/// One event loop: a thread, a poller, the connections it owns.
///
/// The loop's work is split by concern, one file each:
/// - here: its state, the dispatch of readiness, tasks from other threads, stopping, and the
///   loop itself (`run`, generic over the concrete poller so the hot path is specialised for
///   the backend; the type is erased once, in `LoopRunner`);
/// - `EventLoop+Read.swift`: reading, handler callbacks, and the one place deciding interest;
/// - `EventLoop+Write.swift`: the cork, sends, the queue and its watermarks;
/// - `EventLoop+Close.swift`: the closing state machine;
/// - `Acceptor.swift`: accepting, balancing, adopting sockets;
/// - `EventLoop+Datagram.swift`: datagram sockets, received in batches and sent to;
/// - `EventLoop+ConnectedDatagram.swift`: dialled datagram sockets, connected to one peer;
/// - `LoopTimers.swift`: timers.
///
/// Loop thread only, except `inbox`.
final class EventLoop {
    // MARK: Any thread
    let inbox: LoopInbox

    // MARK: Loop thread only
    let index: Int
    let engine: Engine
    let handler: any EventHandler
    /// `Options.logger` with this loop's `loop` metadata (its index). Never used on the read
    /// and write paths.
    let logger: Logger
    let options: Options
    /// This loop's poller, for interest changes. The wait runs on the concrete type (`run`).
    let poller: any Poller

    /// Connections by descriptor.
    @exclusivity(unchecked) var connections: [Connection?] = []
    var connectionCount = 0
    /// Dials whose connect is in progress, by descriptor (`Dialer.swift`).
    var dialing: [Int32: PendingDial] = [:]
    var listeners: [Listener] = []
    /// Every loop's inbox, for handing accepted sockets to other loops.
    var peers: [LoopInbox] = []
    var roundRobinNext = 0
    var nextGeneration: UInt32 = 0
    /// Socket options refused by the kernel, logged rate-limited.
    var socketOptionTrouble = RateLimitedLog()

    /// The shared read buffer: each read lands here and is lent to `onTraffic`.
    let readBuffer: UnsafeMutableRawBufferPointer
    /// Writes made during a callback for `corkOwner` gather here and go out in one send.
    @exclusivity(unchecked) var cork = ByteQueue()
    /// In-place renders of connections with a layer land here before the layer encodes them.
    var layerScratch = ByteQueue()
    /// What a layer decodes for a connection that keeps no input, lent to `onTraffic` from here
    /// (`receiveThroughLayer`).
    @exclusivity(unchecked) var layerInput = ByteQueue()
    var corkOwner: Connection? = nil
    let corkFlushThreshold = 64 * 1024
    /// A callback's write at least this large, made first, is sent without the cork.
    let corkBypassSize = 16 * 1024
    let iovecs: UnsafeMutablePointer<iovec>
    let iovecCapacity = Int(cgnet_iov_max())
    /// The receive arrays of this loop's datagram sockets (made with the first one).
    var datagramBatch: DatagramBatch? = nil
    /// Writes made during a receive batch, sent together when it is done.
    var datagramSendQueue: DatagramSendQueue? = nil
    /// The datagram connection whose receive batch is being handed to the handler.
    var batchOwner: Connection? = nil
    /// Errors and truncations of this loop's dialled datagram sockets, logged rate-limited.
    var connectedDatagramTrouble = RateLimitedLog()
    /// Where `write(reservingCapacity:)` renders a datagram sent outside a batch.
    var datagramScratch = ByteQueue()

    private(set) var stopping = false
    var timers = LoopTimers()
    /// The loop's clock, read once per iteration while `idleWatch` is on (some connection here
    /// has had an idle timeout); stale otherwise, and then unused: `now`, and the same as a
    /// `Duration` since `epoch` in `clock`, which the read and send paths store as activity
    /// stamps. A `Duration` because it is a frozen type: copying a `ContinuousClock.Instant`
    /// goes through the Concurrency library's value witnesses. Loop thread only and never
    /// accessed overlapping, so exempt from the runtime's dynamic exclusivity checks.
    let epoch = ContinuousClock.Instant.now
    @exclusivity(unchecked) var now = ContinuousClock.Instant.now
    @exclusivity(unchecked) var clock = Duration.zero
    @exclusivity(unchecked) var idleWatch = false
    /// `Options.idleTimeout` and its read and write variants.
    let defaultIdleTimeouts: IdleTimeouts
    /// `Options.edgeTriggered`: how connections are registered, and whether a readable one is
    /// read until the kernel has no more (up to `edgeReadBudget` bytes a turn).
    let trigger: PollTrigger
    let edgeReadBudget: Int
    /// Edge-triggered connections that spent their read budget with input possibly left:
    /// no new edge will report it, so the loop reads them again next turn.
    var edgeRetry: [Connection] = []
    /// The loop's counters (`LoopStatistics`), and whether it times its turns.
    @exclusivity(unchecked) var stats = LoopStatistics()
    let measureLoopTime: Bool
    private var taskBatch = Deque<LoopTask>()

    init(index: Int, engine: Engine, poller: any Poller) throws {
        self.index = index
        self.engine = engine
        self.handler = engine.handler
        self.options = engine.options
        var logger = engine.options.logger
        logger[metadataKey: "loop"] = "\(index)"
        self.logger = logger
        self.poller = poller
        self.defaultIdleTimeouts = IdleTimeouts(engine.options)
        self.idleWatch = !defaultIdleTimeouts.isOff
        self.trigger = engine.options.edgeTriggered ? .edge : .level
        self.edgeReadBudget = engine.options.edgeTriggeredReadBudget
        self.measureLoopTime = engine.options.measureLoopTime
        self.inbox = LoopInbox(index: index, waker: try poller.makeWaker(), asyncWriteLimit: engine.options.asyncWriteLimit)
        readBuffer = .allocate(byteCount: engine.options.readBufferCapacity, alignment: 16)
        iovecs = .allocate(capacity: iovecCapacity)
        if index == 0 && options.ticker { schedule(after: .zero, .tick) }
    }

    deinit {
        readBuffer.deallocate()
        iovecs.deallocate()
    }

    // MARK: Dispatch

    /// Listener registrations use generation 0; connections never do.
    static let listenerGeneration: UInt32 = 0

    /// Handles one readiness report. One order for every backend:
    /// reset/error → write (flush pending output) → read → EOF.
    @inline(__always)
    final func dispatch(_ token: PollToken, _ events: IOEvents) {
        let fd = Int(token.fd)
        if token.generation == Self.listenerGeneration {
            guard let l = listeners.first(where: { $0.fd == token.fd }) else { return }
            if let c = l.datagram { handleDatagramSocket(l, c, events) } else { acceptAll(l) }
            return
        }
        guard fd < connections.count, let c = connections[fd], c.generation == token.generation else {
            // A dial in progress, or an event of an earlier registration of this descriptor.
            if !dialing.isEmpty { dialReady(token, events) }
            return
        }
        if c.connectedDatagram {
            handleConnectedDatagram(c, events)
            return
        }
        if !events.isDisjoint(with: [.reset, .error]) {
            socketFailed(c, events)
            return
        }
        if events.contains(.write) { handleWritable(c) }
        if events.contains(.read) || events.contains(.readEOF) {
            switch c.state {
            case .open: if c.interest.contains(.read) { handleReadable(c) }
            case .lingering: discardLingering(c)
            case .draining, .closed: break
            }
        }
    }

    /// The poller reported a hang-up or an error: deliver what arrived before it, then close
    /// with the socket's error.
    private final func socketFailed(_ c: Connection, _ events: IOEvents) {
        if events.contains(.read) && c.state == .open { drainReads(c) }
        guard c.state != .closed else { return }
        let soError = Socket.getOption(c.fd, SOL_SOCKET, SO_ERROR) ?? 0
        if soError != 0 {
            closeNow(c, error: SystemError("connection", errno: soError))
        } else if events.contains(.error) || !c.outbound.isEmpty {
            // Output still queued cannot reach a peer that has gone.
            closeNow(c, error: SystemError("connection", errno: ECONNRESET))
        } else {
            closeNow(c, error: nil) // both sides shut down, nothing lost
        }
    }

    // MARK: Tasks

    final func runTasks() {
        guard inbox.hasPending else { return }
        if idleWatch { readClock() }
        inbox.drain(into: &taskBatch)
        while let task = taskBatch.popFirst() { run(task) }
    }

    final func liveConnection(_ fd: Int32, _ generation: UInt32) -> Connection? {
        let i = Int(fd)
        guard i >= 0, i < connections.count, let c = connections[i], c.generation == generation else { return nil }
        return c
    }

    private final func run(_ task: LoopTask) {
        switch task {
        case .write(let fd, let gen, let buffers, let bytes, let completion):
            inbox.tookAsyncWrite(bytes)
            guard let c = liveConnection(fd, gen), c.state == .open else {
                completion?(.failure(GNetError.connectionClosed))
                return
            }
            let result = takeAsyncWrite(c, buffers, bytes: bytes)
            completion?(result)
        case .wake(let fd, let gen, let completion):
            guard let c = liveConnection(fd, gen), c.state == .open else {
                completion?(.failure(GNetError.connectionClosed))
                return
            }
            runTraffic(c)
            completion?(.success(()))
        case .close(let fd, let gen, let completion):
            guard let c = liveConnection(fd, gen) else {
                completion?(.failure(GNetError.connectionClosed))
                return
            }
            if let completion { c.closeWaiters.append(completion) }
            requestClose(c, .orderly)
        case .abort(let fd, let gen, let error):
            if let c = liveConnection(fd, gen) { abort(c, error) }
        case .adopt(let fd, let remote, let listener, let network):
            adopt(fd, remote: remote, listener: listener, network: network)
        case .sendDatagram(let fd, let gen, let peer, let buffers, let bytes, let completion):
            inbox.tookAsyncWrite(bytes)
            let result = sendHandleDatagram(fd, gen, peer, buffers)
            completion?(result)
        case .dial(let request):
            startDial(request)
        case .stop(let mode):
            beginStop(mode)
        case .run(let body):
            body()
        case .schedule(let task):
            schedule(at: task.deadline, .user(task)) // dropped by `tearDown` if the loop ends first
        case .statistics(let body):
            var s = stats
            s.open = connectionCount
            body(s)
        }
    }

    // MARK: Stopping

    /// Stops the loop's share of the engine. `.gracefully`: stop accepting; ask each open
    /// connection's handler to quiesce (`onQuiesce`: `.close`, the default, closes it the
    /// orderly way — send what is queued, shut down, linger — and `.none` leaves it to finish
    /// what it is doing and close itself); bounded by `Options.shutdownTimeout` as a whole.
    /// `.immediately` (also after a graceful stop began): abort every connection now.
    final func beginStop(_ mode: Engine.StopMode) {
        if mode == .immediately {
            if !stopping { closeListeners() }
            stopping = true
            cancelDials(GNetError.engineStopped)
            let open = connectionCount
            for case let c? in connections { abort(c, GNetError.stoppedImmediately) }
            logger.debug("loop stopping immediately", metadata: ["connections": "\(open)"])
            return
        }
        guard !stopping else { return }
        stopping = true
        closeListeners()
        cancelDials(GNetError.engineStopped)
        logger.debug("loop stopping gracefully", metadata: ["connections": "\(connectionCount)"])
        for case let c? in connections where c.state == .open {
            beginCallback(c)
            let action = handler.onQuiesce(c)
            endCallback(c, action)
        }
        if connectionCount > 0 { schedule(after: options.shutdownTimeout, .stopDeadline) }
    }

    /// The shutdown deadline: what is still closing is closed now; output still queued, and
    /// a connection whose handler has not closed it since quiescing, are abandoned with a reset.
    final func stopDeadlinePassed() {
        var aborted = 0
        for case let c? in connections {
            switch c.state {
            case .lingering:
                lingerDeadlinePassed(c)
            case .open, .draining:
                logger.debug("connection aborted at the shutdown deadline", metadata: connectionMetadata(c))
                abort(c, GNetError.shutdownTimeout)
                aborted += 1
            case .closed: break
            }
        }
        if aborted > 0 {
            logger.info("shutdown deadline passed; connections aborted", metadata: [
                "aborted": "\(aborted)", "shutdownTimeout": "\(options.shutdownTimeout)"])
        }
    }

    /// `fd` and `remote` of `c`, for a log line about it.
    final func connectionMetadata(_ c: Connection) -> Logger.Metadata {
        var m: Logger.Metadata = ["fd": "\(c.fd)"]
        if let remote = c.remoteAddress { m["remote"] = "\(remote)" }
        return m
    }

    final func closeListeners() {
        for l in listeners {
            do {
                try poller.deregister(l.fd, interest: l.paused ? [] : .read)
            } catch {
                logger.debug("deregistering a listener failed", metadata: ["listener": "\(l.bound)", "error": "\(error)"])
            }
            _ = closeDescriptor(l.fd)
            if let c = l.datagram {
                c.state = .closed
                c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
            }
            if l.address.network.isUnix { unlink(l.address.address.host) }
        }
        listeners = []
    }

    /// True once a stop has closed every connection.
    final var finished: Bool { stopping && connectionCount == 0 }

    /// Final cleanup on the loop thread: close what is left, run the closures already accepted
    /// (`EventLoopHandle.execute` promises that accepted work runs), fail every other queued
    /// task, and drop scheduled closures still pending.
    final func tearDown() {
        closeListeners()
        cancelDials(GNetError.engineStopped)
        for case let c? in connections { abort(c, GNetError.shutdownTimeout) }
        for task in inbox.close() {
            switch task {
            case .run(let body): body()
            case .statistics(let body): body(stats) // the final counts
            default: task.abandon()
            }
        }
        timers.dropUserTasks()
    }

    // MARK: The loop

    /// Registers this loop's listeners. Called before the thread starts.
    final func registerListeners() throws {
        prepareDatagramListeners()
        for l in listeners {
            try poller.register(l.fd, interest: .read, token: PollToken(fd: l.fd, generation: Self.listenerGeneration))
        }
    }

    /// The loop: tasks, wait, events, timers — until a stop has closed every connection.
    /// `poller` is `self.poller` with its concrete type, so waits and dispatch are specialised.
    final func run<P: Poller>(_ poller: P) {
        inbox.setLoopThread(true)
        defer { inbox.setLoopThread(false) }
        if idleWatch { readClock() }
        var turnStarted = measureLoopTime ? ContinuousClock.now : epoch
        while true {
            runTasks()
            if finished { break }
            stats.iterations &+= 1
            do {
                if measureLoopTime {
                    stats.busyTime += ContinuousClock.now - turnStarted
                    var waiting = true
                    _ = try poller.wait(nextTimeout()) { token, events in
                        if waiting { // the first event ends the wait: one clock read a turn
                            waiting = false
                            turnStarted = .now
                        }
                        self.dispatch(token, events)
                    }
                    if waiting { turnStarted = .now }
                } else {
                    _ = try poller.wait(nextTimeout()) { token, events in
                        self.dispatch(token, events)
                    }
                }
            } catch {
                logger.critical("poller failed; stopping the engine", metadata: ["error": "\(error)"])
                engine.stop()
                beginStop(.gracefully)
                break
            }
            if !edgeRetry.isEmpty { retryEdgeReads() }
            if idleWatch { readClock() }
            runTimers()
        }
        tearDown()
        do {
            try poller.close()
        } catch {
            logger.debug("closing the poller failed", metadata: ["error": "\(error)"])
        }
    }
}

@available(*, unavailable)
extension EventLoop: Sendable {}
