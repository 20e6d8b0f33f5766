import CGNetLinux
import DequeModule
import Glibc
import HeapModule
import Logging
import Poller

/// A listening socket owned by one loop.
final class Listener {
    let fd: Int32
    let address: ListenAddress
    let bound: SocketAddress
    /// Paused after running out of descriptors; resumed by a timer.
    var paused = false

    init(fd: Int32, address: ListenAddress, bound: SocketAddress) {
        self.fd = fd
        self.address = address
        self.bound = bound
    }
}

/// One event loop: a thread, a poller, the connections it owns.
///
/// `LoopBase` holds everything that does not depend on the poller type: the connection table,
/// the read path, the write path, closing, timers and tasks. `EventLoop<P>` adds the poller and
/// the loop itself, so the hot path is specialised for the backend and the type is erased once,
/// where the engine picks it.
///
/// Loop thread only, except `inbox`.
class LoopBase {
    // MARK: Any thread
    let inbox: LoopInbox

    // MARK: Loop thread only
    let index: Int
    let engine: Engine
    let handler: any EventHandler
    let logger: Logger
    let options: Options

    /// Connections by descriptor.
    @exclusivity(unchecked) private(set) var connections: [Connection?] = []
    private(set) var connectionCount = 0
    var listeners: [Listener] = []
    /// Every loop's inbox, for handing accepted sockets to other loops.
    var peers: [LoopInbox] = []
    private var roundRobinNext = 0
    private var nextGeneration: UInt32 = 0

    /// The shared read buffer: each read lands here and is lent to `onTraffic`.
    let readBuffer: UnsafeMutableRawBufferPointer
    /// Writes made during a callback for `corkOwner` gather here and go out in one send.
    @exclusivity(unchecked) var cork = ByteQueue()
    var corkOwner: Connection? = nil
    private let corkFlushThreshold = 64 * 1024
    private var iovecs: UnsafeMutablePointer<iovec>
    private let iovecCapacity = Int(cgnet_iov_max())

    private(set) var stopping = false
    private var stopDeadline: ContinuousClock.Instant? = nil
    var timers = Heap<LoopTimer>()
    private var timerSequence = 0
    private var taskBatch = Deque<LoopTask>()

    init(index: Int, engine: Engine, inbox: LoopInbox) {
        self.index = index
        self.engine = engine
        self.handler = engine.handler
        self.options = engine.options
        self.logger = engine.options.logger
        self.inbox = inbox
        readBuffer = .allocate(byteCount: engine.options.readBufferCapacity, alignment: 16)
        iovecs = .allocate(capacity: Int(cgnet_iov_max()))
        if index == 0 && options.ticker { schedule(after: .zero, .tick) }
    }

    deinit {
        readBuffer.deallocate()
        iovecs.deallocate()
    }

    // MARK: Poller operations, provided by EventLoop<P>

    func pollerRegister(_ fd: Int32, _ interest: IOEvents, _ token: PollToken) throws { fatalError("abstract") }
    func pollerModify(_ fd: Int32, _ old: IOEvents, _ new: IOEvents, _ token: PollToken) throws { fatalError("abstract") }
    func pollerDeregister(_ fd: Int32, _ old: IOEvents) throws { fatalError("abstract") }

    // MARK: Dispatch

    /// Listener registrations use generation 0; connections never do.
    static let listenerGeneration: UInt32 = 0

    /// Handles one readiness report. One order for every backend:
    /// reset/error → write (flush pending output) → read → EOF.
    @inline(__always)
    final func dispatch(_ token: PollToken, _ events: IOEvents) {
        let fd = Int(token.fd)
        if token.generation == Self.listenerGeneration {
            if let l = listeners.first(where: { $0.fd == token.fd }) { acceptAll(l) }
            return
        }
        guard fd < connections.count, let c = connections[fd], c.generation == token.generation else {
            return // an event of an earlier registration of this descriptor
        }
        if !events.isDisjoint(with: [.reset, .error]) {
            // Deliver what arrived before the failure, then close with the socket's error.
            if events.contains(.read) { drainReads(c) }
            if c.state != .closed {
                let soError = Socket.getOption(c.fd, SOL_SOCKET, SO_ERROR) ?? 0
                let error: (any Error)? = soError != 0 ? SystemError("connection", errno: soError)
                    : events.contains(.error) ? SystemError("connection", errno: ECONNRESET) : nil
                closeNow(c, error: error)
            }
            return
        }
        if events.contains(.write) { handleWritable(c) }
        if events.contains(.read) || events.contains(.readEOF) {
            switch c.state {
            case .open: handleReadable(c)
            case .lingering: discardLingering(c)
            case .closing, .closed: break
            }
        }
    }

    // MARK: Reading

    /// One read, then `onTraffic`. Level-triggered pollers report again if more is waiting.
    final func handleReadable(_ c: Connection) {
        let n: Int?
        do {
            n = try Socket.read(c.fd, readBuffer.baseAddress!, readBuffer.count)
        } catch {
            closeNow(c, error: error)
            return
        }
        guard let n else { return } // spurious readiness
        if n == 0 {
            c.peerClosed = true
            requestClose(c, error: nil)
            return
        }
        deliver(c, count: n)
    }

    /// Reads until the socket is drained (or fails), delivering each chunk.
    final func drainReads(_ c: Connection) {
        while c.state == .open {
            guard let n = try? Socket.read(c.fd, readBuffer.baseAddress!, readBuffer.count), n > 0 else { return }
            deliver(c, count: n)
        }
    }

    /// Lends `count` fresh bytes (with any kept ones) to `onTraffic`.
    final func deliver(_ c: Connection, count: Int) {
        let fresh = UnsafeRawBufferPointer(start: readBuffer.baseAddress, count: count)
        if c.inbound.isEmpty {
            c.lent = fresh
        } else {
            c.inbound.append(fresh)
        }
        runTraffic(c)
    }

    /// Calls `onTraffic`, again while it makes progress and input remains, then keeps what is
    /// left, flushes what was written, and applies the action.
    final func runTraffic(_ c: Connection) {
        beginCallback(c)
        var action = Action.none
        while true {
            let before = c.inboundBuffered
            action = handler.onTraffic(c)
            if action != .none || c.state != .open || c.pendingClose != nil { break }
            let after = c.inboundBuffered
            if after == 0 || after >= before { break }
        }
        if c.lent.count > 0 {
            c.inbound.append(c.lent)
        } else if c.inbound.isEmpty && c.inbound.capacity > 0 {
            c.inbound.release()
        }
        c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
        endCallback(c, action)
    }

    @inline(__always)
    final func beginCallback(_ c: Connection) {
        c.inCallback = true
        corkOwner = c
    }

    /// Sends the cork, then carries out the callback's action and any close it asked for.
    final func endCallback(_ c: Connection, _ action: Action) {
        if corkOwner === c {
            corkOwner = nil
            flushCork(c)
        }
        c.inCallback = false
        switch action {
        case .none: break
        case .close: requestClose(c, error: nil)
        case .shutdown: engine.stop()
        }
        if let reason = c.pendingClose, c.state == .open {
            c.pendingClose = nil
            if let reason { closeNow(c, error: reason) } else { requestClose(c, error: nil) }
        }
    }

    // MARK: Writing

    /// The write path of `Connection.write`. The connection is open.
    final func write(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if !c.outbound.isEmpty {
            c.outbound.append(bytes)
            return
        }
        if corkOwner === c {
            cork.append(bytes)
            if cork.count >= corkFlushThreshold { flushCork(c) }
            return
        }
        sendOrQueue(c, bytes)
    }

    /// The write path of `Connection.write(reservingCapacity:_:)`: render into the cork (inside a
    /// callback) or the connection's queue, then send as `write` would.
    final func writeInPlace(
        _ c: Connection, _ capacity: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws -> Int {
        if c.outbound.isEmpty && corkOwner === c {
            let n = try cork.appendInPlace(reserving: capacity, body)
            if cork.count >= corkFlushThreshold { flushCork(c) }
            return n
        }
        let wasEmpty = c.outbound.isEmpty
        let n = try c.outbound.appendInPlace(reserving: capacity, body)
        if wasEmpty && n > 0 { flush(c) }
        return n
    }

    /// Sends `bytes` now; what the socket does not take is queued, with write interest on.
    /// Nothing may be queued for `c` already (that would reorder the output).
    @inline(__always)
    final func sendOrQueue(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        let sent: Int
        do {
            sent = try Socket.send(c.fd, bytes)
        } catch {
            fail(c, error)
            return
        }
        if sent < bytes.count {
            c.outbound.append(UnsafeRawBufferPointer(rebasing: bytes[sent...]))
            wantWrite(c, true)
        }
    }

    /// The write path of `Connection.writev`: one gathering send when nothing is queued.
    final func writev(_ c: Connection, _ buffers: [[UInt8]]) {
        if !c.outbound.isEmpty || corkOwner === c || buffers.count > iovecCapacity {
            for b in buffers { b.withUnsafeBytes { write(c, $0) } }
            return
        }
        var total = 0
        var n = 0
        // `buffers` is immutable and alive for this whole call, so each element's storage
        // stays where the iovecs point.
        for b in buffers where !b.isEmpty {
            b.withUnsafeBytes { raw in
                iovecs[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            }
            total += b.count
            n += 1
        }
        guard n > 0 else { return }
        var sent: Int
        do {
            sent = try Socket.sendv(c.fd, iovecs, n)
        } catch {
            fail(c, error)
            return
        }
        guard sent < total else { return }
        for b in buffers where !b.isEmpty {
            if sent >= b.count { sent -= b.count; continue }
            b.withUnsafeBytes { c.outbound.append(UnsafeRawBufferPointer(rebasing: $0[sent...])) }
            sent = 0
        }
        wantWrite(c, true)
    }

    /// Sends the cork for `c`; what the socket does not take moves to `c`'s own queue.
    final func flushCork(_ c: Connection) {
        guard !cork.isEmpty else { return }
        defer { cork.reset(keepingCapacityUpTo: 1 << 20) }
        guard c.state != .closed else { return }
        sendOrQueue(c, cork.readable)
    }

    /// Sends as much queued output as the socket takes. Returns the error if the socket failed.
    @discardableResult
    final func flush(_ c: Connection) -> (any Error)? {
        if corkOwner === c { flushCork(c) }
        while !c.outbound.isEmpty {
            let sent: Int
            do {
                sent = try Socket.send(c.fd, c.outbound.readable)
            } catch {
                fail(c, error)
                return error
            }
            if sent == 0 { break }
            c.outbound.consume(sent)
        }
        if c.outbound.isEmpty {
            c.outbound.release()
            wantWrite(c, false)
        } else {
            wantWrite(c, true)
        }
        return nil
    }

    final func handleWritable(_ c: Connection) {
        flush(c)
        if c.state == .closing && c.outbound.isEmpty { finishClose(c) }
    }

    /// Turns write interest on or off (it is on only while output is queued).
    final func wantWrite(_ c: Connection, _ on: Bool) {
        guard c.state != .closed, c.interest.contains(.write) != on else { return }
        var new = c.interest
        if on { new.insert(.write) } else { new.remove(.write) }
        setInterest(c, new)
    }

    final func setInterest(_ c: Connection, _ new: IOEvents) {
        guard new != c.interest else { return }
        do {
            try pollerModify(c.fd, c.interest, new, PollToken(fd: c.fd, generation: c.generation))
            c.interest = new
        } catch {
            fail(c, error)
        }
    }

    // MARK: Closing

    /// A failure on `c`: close it with `error`, after the current callback if one runs.
    final func fail(_ c: Connection, _ error: any Error) {
        if c.inCallback {
            if c.pendingClose == nil || c.pendingClose! == nil { c.pendingClose = .some(error) }
        } else {
            closeNow(c, error: error)
        }
    }

    /// An orderly close: flush what is queued, then close (see `finishClose`). While output
    /// cannot be sent, the connection waits in `closing` (reads off, writes on) until it drains
    /// or `Options.closeTimeout` passes.
    final func requestClose(_ c: Connection, error: (any Error)?) {
        guard c.state == .open else { return }
        if c.inCallback {
            if c.pendingClose == nil { c.pendingClose = .some(error) }
            return
        }
        if let error {
            closeNow(c, error: error)
            return
        }
        flush(c)
        guard c.state == .open else { return }
        if !c.outbound.isEmpty {
            c.state = .closing
            setInterest(c, [.write])
            schedule(after: options.closeTimeout, .closeDeadline(c.fd, c.generation))
            return
        }
        finishClose(c)
    }

    /// Output is flushed: close. A socket closed while the peer is still sending answers its
    /// next bytes (or any it holds unread) with a reset, and a reset destroys the reply still
    /// in flight to the peer. So unless the peer has already sent its EOF, shut down the write
    /// side instead (the peer sees EOF after the reply), discard input until the peer closes,
    /// and close then or at `Options.closeTimeout` — a lingering close. A stopping engine
    /// closes at once.
    final func finishClose(_ c: Connection) {
        guard !stopping, !c.peerClosed, Glibc.shutdown(c.fd, Int32(SHUT_WR)) == 0 else {
            closeNow(c, error: nil)
            return
        }
        c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
        c.inbound.release()
        if c.state == .open { schedule(after: options.closeTimeout, .closeDeadline(c.fd, c.generation)) }
        c.state = .lingering
        setInterest(c, [.read])
    }

    /// A lingering connection is readable: discard input until EOF (then close).
    final func discardLingering(_ c: Connection) {
        for _ in 0..<16 {
            let n: Int?
            do {
                n = try Socket.read(c.fd, readBuffer.baseAddress!, readBuffer.count)
            } catch {
                closeNow(c, error: nil)
                return
            }
            guard let n else { return }
            if n == 0 {
                closeNow(c, error: nil)
                return
            }
        }
    }

    /// Deregisters, calls `onClose`, then closes the descriptor. Exactly once per connection.
    final func closeNow(_ c: Connection, error: (any Error)?) {
        guard c.state != .closed else { return }
        c.state = .closed
        c.pendingClose = nil
        if corkOwner === c { corkOwner = nil; cork.reset(keepingCapacityUpTo: 1 << 20) }
        try? pollerDeregister(c.fd, c.interest)
        connections[Int(c.fd)] = nil
        connectionCount -= 1
        inbox.connectionCount.subtract(1, ordering: .relaxed)
        c.inCallback = true
        let action = handler.onClose(c, error: error)
        c.inCallback = false
        _ = closeDescriptor(c.fd)
        c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
        c.inbound.release()
        c.outbound.release()
        if action == .shutdown { engine.stop() }
    }

    // MARK: Accepting

    final func acceptAll(_ l: Listener) {
        // Bounded per turn so a connection storm cannot starve established connections.
        for _ in 0..<256 {
            switch Socket.accept(l.fd) {
            case .accepted(let fd, let remote):
                let target = pickLoop(remote)
                if target == index {
                    adopt(fd, remote: remote, listener: l.bound)
                } else {
                    peers[target].enqueue(.adopt(fd: fd, remote: remote, listener: l.bound))
                }
            case .wouldBlock:
                return
            case .skipped:
                continue
            case .exhausted(let error):
                // Out of descriptors: stop listening for a moment rather than spin on a
                // listener that stays readable.
                logger.warning("accept paused for 100 ms", metadata: ["listener": "\(l.bound)", "error": "\(error)"])
                try? pollerModify(l.fd, .read, [], PollToken(fd: l.fd, generation: Self.listenerGeneration))
                l.paused = true
                schedule(after: .milliseconds(100), .resumeAccept(l.fd))
                return
            }
        }
    }

    private final func pickLoop(_ remote: SocketAddress) -> Int {
        guard peers.count > 1 else { return index }
        switch options.loadBalancing {
        case .roundRobin:
            roundRobinNext = (roundRobinNext + 1) % peers.count
            return roundRobinNext
        case .leastConnections:
            var best = 0
            var bestCount = Int.max
            for (i, p) in peers.enumerated() {
                let n = p.connectionCount.load(ordering: .relaxed)
                if n < bestCount { best = i; bestCount = n }
            }
            return best
        case .sourceAddressHash:
            var h: UInt64 = 14_695_981_039_346_656_037
            for b in remote.host.utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
            return Int(h % UInt64(peers.count))
        }
    }

    /// Takes ownership of an accepted socket: options, registration, `onOpen`.
    final func adopt(_ fd: Int32, remote: SocketAddress?, listener: SocketAddress?) {
        if stopping {
            _ = closeDescriptor(fd)
            return
        }
        if remote?.family != .unix {
            if options.tcpNoDelay { try? Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "TCP_NODELAY") }
        }
        nextGeneration &+= 1
        if nextGeneration == Self.listenerGeneration { nextGeneration = 1 }
        let c = Connection(fd: fd, generation: nextGeneration, loop: self, remote: remote, listener: listener)
        if let k = options.tcpKeepAlive, remote?.family != .unix { try? c.setKeepAlive(k) }
        if let b = options.socketReceiveBuffer { try? c.setReceiveBuffer(b) }
        if let b = options.socketSendBuffer { try? c.setSendBuffer(b) }
        do {
            try pollerRegister(fd, .read, PollToken(fd: fd, generation: c.generation))
        } catch {
            logger.error("cannot watch accepted connection; closing it", metadata: ["fd": "\(fd)", "error": "\(error)"])
            _ = closeDescriptor(fd)
            return
        }
        let slot = Int(fd)
        if slot >= connections.count {
            connections.append(contentsOf: repeatElement(nil, count: max(slot + 1 - connections.count, connections.count)))
        }
        connections[slot] = c
        connectionCount += 1
        inbox.connectionCount.add(1, ordering: .relaxed)

        beginCallback(c)
        let (output, action) = handler.onOpen(c)
        if let output, c.state == .open { output.withUnsafeBytes { write(c, $0) } }
        endCallback(c, action)
    }

    // MARK: Tasks

    final func runTasks() {
        guard inbox.hasPending else { return }
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
        case .write(let fd, let gen, let buffers, let completion):
            guard let c = liveConnection(fd, gen), c.state == .open else {
                completion?(.failure(GNetError.connectionClosed))
                return
            }
            if buffers.count == 1 { buffers[0].withUnsafeBytes { write(c, $0) } } else { writev(c, buffers) }
            completion?(c.state == .closed ? .failure(GNetError.connectionClosed) : .success(()))
        case .wake(let fd, let gen, let completion):
            guard let c = liveConnection(fd, gen), c.state == .open else {
                completion?(.failure(GNetError.connectionClosed))
                return
            }
            runTraffic(c)
            completion?(.success(()))
        case .close(let fd, let gen, let completion):
            guard let c = liveConnection(fd, gen), c.state == .open else {
                completion?(.failure(GNetError.connectionClosed))
                return
            }
            requestClose(c, error: nil)
            completion?(.success(()))
        case .adopt(let fd, let remote, let listener):
            adopt(fd, remote: remote, listener: listener)
        case .stop:
            beginStop()
        case .run(let body):
            body()
        }
    }

    // MARK: Timers

    final func schedule(after delay: Duration, _ kind: LoopTimer.Kind) {
        timerSequence += 1
        timers.insert(LoopTimer(deadline: .now + delay, sequence: timerSequence, kind: kind))
    }

    /// The wait timeout: `.now` when work is queued, else until the next timer.
    final func nextTimeout() -> PollTimeout {
        if inbox.hasPending { return .now }
        guard let next = timers.min else { return .block }
        let d = next.deadline - .now
        return d <= .zero ? .now : .after(d)
    }

    final func runTimers() {
        guard let first = timers.min, first.deadline <= .now else { return }
        let now = ContinuousClock.now
        while let t = timers.min, t.deadline <= now {
            _ = timers.removeMin()
            switch t.kind {
            case .tick:
                guard !stopping else { continue }
                let (delay, action) = handler.onTick()
                if action == .shutdown { engine.stop() }
                schedule(after: max(delay, .zero), .tick)
            case .resumeAccept(let fd):
                if let l = listeners.first(where: { $0.fd == fd }), l.paused {
                    l.paused = false
                    try? pollerModify(l.fd, [], .read, PollToken(fd: l.fd, generation: Self.listenerGeneration))
                }
            case .closeDeadline(let fd, let generation):
                guard let c = liveConnection(fd, generation) else { continue }
                switch c.state {
                case .closing: closeNow(c, error: GNetError.closeTimeout)
                case .lingering: closeNow(c, error: nil)
                case .open, .closed: break
                }
            case .stopDeadline:
                for case let c? in connections { closeNow(c, error: GNetError.shutdownTimeout) }
            }
        }
    }

    // MARK: Stopping

    /// Stop accepting, close idle connections now and the rest once their output drains (or at
    /// the deadline).
    final func beginStop() {
        guard !stopping else { return }
        stopping = true
        closeListeners()
        for case let c? in connections where c.state == .open { requestClose(c, error: nil) }
        if connectionCount > 0 { schedule(after: options.shutdownTimeout, .stopDeadline) }
    }

    final func closeListeners() {
        for l in listeners {
            try? pollerDeregister(l.fd, l.paused ? [] : .read)
            _ = closeDescriptor(l.fd)
            if l.address.network == .unix { unlink(l.address.address.host) }
        }
        listeners = []
    }

    /// True once a stop has closed every connection.
    final var finished: Bool { stopping && connectionCount == 0 }

    /// Final cleanup on the loop thread: fail queued tasks, close what is left.
    final func tearDown() {
        closeListeners()
        for case let c? in connections { closeNow(c, error: GNetError.shutdownTimeout) }
        for task in inbox.close() {
            if case .adopt(let fd, _, _) = task { _ = closeDescriptor(fd) } else { task.abandon() }
        }
    }
}

@available(*, unavailable)
extension LoopBase: Sendable {}

/// A timer on a loop, ordered by deadline (then by scheduling order).
struct LoopTimer: Comparable {
    enum Kind { case tick, resumeAccept(Int32), closeDeadline(Int32, UInt32), stopDeadline }
    var deadline: ContinuousClock.Instant
    var sequence: Int
    var kind: Kind

    static func < (a: Self, b: Self) -> Bool { (a.deadline, a.sequence) < (b.deadline, b.sequence) }
    static func == (a: Self, b: Self) -> Bool { a.deadline == b.deadline && a.sequence == b.sequence }
}

/// The loop specialised for one poller type.
final class EventLoop<P: Poller>: LoopBase {
    let poller: P

    init(index: Int, engine: Engine, poller: P) throws {
        self.poller = poller
        let inbox = LoopInbox(index: index, waker: try poller.makeWaker())
        super.init(index: index, engine: engine, inbox: inbox)
    }

    override func pollerRegister(_ fd: Int32, _ interest: IOEvents, _ token: PollToken) throws {
        try poller.register(fd, interest: interest, token: token, trigger: .level)
    }
    override func pollerModify(_ fd: Int32, _ old: IOEvents, _ new: IOEvents, _ token: PollToken) throws {
        try poller.modify(fd, from: old, to: new, token: token)
    }
    override func pollerDeregister(_ fd: Int32, _ old: IOEvents) throws {
        try poller.deregister(fd, interest: old)
    }

    /// Registers this loop's listeners. Called before the thread starts.
    func registerListeners() throws {
        for l in listeners {
            try poller.register(l.fd, interest: .read, token: PollToken(fd: l.fd, generation: Self.listenerGeneration))
        }
    }

    /// The loop: tasks, wait, events, timers — until a stop has closed every connection.
    func run() {
        while true {
            runTasks()
            if finished { break }
            do {
                _ = try poller.wait(nextTimeout()) { token, events in
                    self.dispatch(token, events)
                }
            } catch {
                logger.critical("poller failed; stopping the engine", metadata: ["loop": "\(index)", "error": "\(error)"])
                engine.stop()
                beginStop()
                tearDown()
                break
            }
            runTimers()
        }
        tearDown()
        try? poller.close()
    }
}
