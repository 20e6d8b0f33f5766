import Glibc
import GNetLocks
import Poller

/// One accepted connection, as its handler sees it.
///
/// ## Threads
/// Loop-confined: use it only on its loop's thread, inside the handler callbacks that receive
/// it (or in code they call). It is deliberately not `Sendable`. To reach the connection from
/// another thread or later, keep its `handle` (a `ConnectionHandle`), which is.
///
/// ## Reading
/// Input is lent, not copied: `withInbound` shows every buffered byte as a `RawSpan` that
/// cannot escape the closure. Consume with `discard(_:)` (or the copying `next(_:)`); what is
/// left stays buffered for the next `onTraffic`.
///
/// ## Writing
/// `write` and `writev` never block. Inside a callback for this connection, bytes are gathered
/// and sent with one system call when the callback returns; elsewhere they are sent at once.
/// What the socket does not take is queued and sent as it drains (`outboundBuffered`).
///
/// ## Datagrams
/// A datagram socket the engine listens on (`udp://`, `unixgram://`) has one `Connection` (`isDatagram` true), and `onTraffic` is
/// called once per datagram received, gnet's way: no `onOpen` or `onClose`; the input is
/// exactly that datagram (never split, never merged with another), `remoteAddress` its sender,
/// `listenerAddress` the socket it arrived on. What the handler leaves unconsumed is dropped
/// when `onTraffic` returns (datagrams are not a stream, so nothing is re-offered). Each
/// `write`, `writev` or `write(reservingCapacity:)` sends exactly one datagram to the sender
/// (never gathered with another write; a zero-byte write sends an empty datagram);
/// `sendTo(_:address:)` sends one to any address. Inside `onTraffic` the datagrams are queued
/// and sent together with one `sendmmsg` once the loop has handed over the whole receive
/// batch (an echo of the input is not even copied); one the kernel refuses then is dropped and
/// counted in `Engine.unsentDatagrams`. Elsewhere (a task on the loop, another connection's
/// callback) a write is sent at once and throws the refusal (a full send buffer is
/// `SystemError` with `EAGAIN`: UDP does not queue). Either way the socket serves on.
/// `close()`, `abort(_:)` and returning `.close` do nothing
/// (the socket is the engine's; `.shutdown` still stops the engine); idle timeouts do not
/// apply (they throw `GNetError.misuse`); `pauseReading()` stops reading the socket.
/// `context` belongs to the socket, shared by every sender. `handle` is a handle for the
/// current sender (see `ConnectionHandle`).
///
/// ## Dialled datagram connections
/// A datagram socket dialled with `Engine.dial` (`udp://`, `udp4://`, `udp6://`,
/// `unixgram://`) is connected to one peer, and is a connection like a dialled TCP one:
/// `onOpen`, then `onTraffic` once per datagram from that peer (received in batches and lent
/// as above; `remoteAddress` is always the peer, `listenerAddress` nil), then `onClose` once.
/// `write`, `writev` and `write(reservingCapacity:)` send one datagram to the peer: inside
/// `onTraffic` gathered into the batch's `sendmmsg` (a refused one counted in
/// `Engine.unsentDatagrams`), elsewhere (`onOpen`, a handle, a task) sent at once, throwing a
/// refusal; nothing is ever queued, so `outboundBuffered` stays 0 and the connection is always
/// writable. `sendTo(_:address:)` throws `GNetError.misuse` (the socket takes datagrams from
/// its peer only). There is no half-close and no end of input: `close()`, `.close` or a
/// handle's `close` sends what the batch has written, then closes the socket at once
/// (`onClose` with nil); `abort(_:)` closes it at once with the error. Idle timeouts,
/// `pauseReading()` (the kernel keeps, then drops, what arrives meanwhile), `context`,
/// `loop` and the engine's stop work as on any connection. The peer going away shows as an
/// ICMP error on the next send or receive: see `Engine.dial` for which ones close the
/// connection.
public final class Connection {
    // MARK: Loop thread only

    /// The socket descriptor. Valid until `onClose` returns.
    public let fd: Int32
    let generation: UInt32
    unowned(unsafe) let owner: EventLoop

    /// Bytes the handler left unconsumed, kept across reads. Empty (and unallocated) while
    /// `lent` holds the input.
    ///
    /// The hot buffers skip the runtime's dynamic exclusivity checks (two per write otherwise):
    /// they are touched only by this loop's thread, never through overlapping accesses, and
    /// the one way user code could overlap them (writing from inside an in-place render) is
    /// refused by `renderingInPlace` before any buffer is touched.
    @exclusivity(unchecked) var inbound = ByteQueue()
    /// The part of the loop's read buffer lent to the current `onTraffic`; empty otherwise.
    @exclusivity(unchecked) var lent = UnsafeRawBufferPointer(start: nil, count: 0)
    /// Bytes accepted by `write` that the socket has not taken yet, with the watermarks' state.
    @exclusivity(unchecked) var outbound = OutboundBuffer()
    /// The interest registered with the poller.
    var interest: IOEvents = .read
    /// Where the connection is in its life (see `ConnectionState`).
    var state = ConnectionState.open
    /// True while a handler callback for this connection runs; closing then waits for it.
    var inCallback = false
    /// True while a `write(reservingCapacity:)` closure renders into the output buffer.
    var renderingInPlace = false
    /// A close asked for while a callback ran, carried out when it returns.
    var pendingClose: CloseCause? = nil
    /// The peer's EOF was read: no more input will come, and no lingering close is needed.
    var inputClosed = false
    /// The handler paused reading (`pauseReading()`).
    var readingPaused = false
    /// The writability last told to the handler by `onWritabilityChanged`.
    var notifiedWritable = true
    /// `onTraffic` stopped re-offering buffered input because output backed up; offer it
    /// again when the connection turns writable.
    var trafficDeferred = false
    /// The transform between the socket and the handler (TLS), if any (`ConnectionLayer.swift`).
    var layer: (any ConnectionLayer)? = nil
    /// True while the layer runs: its writes go to the socket, not back through it.
    var belowLayer = false
    /// The layer saw the stream end cleanly (TLS close_notify).
    var layerEnded = false
    /// Queued in the loop's `edgeRetry` (edge-triggered only).
    var edgeRetryQueued = false
    /// While draining: when output last made progress (the close deadline counts from here).
    var lastProgress = ContinuousClock.Instant.now
    /// Idle timeouts (`EventLoop+Idle.swift`): when bytes were last read and sent (the loop's
    /// clock as a `Duration` since its epoch, stored on every read and send: no timer work per
    /// message), and, out of line so that a connection without a timeout stays small, the
    /// settings and the current timer (allocated once, when the connection gets a timeout).
    @exclusivity(unchecked) var lastRead = Duration.zero
    @exclusivity(unchecked) var lastWrite = Duration.zero
    var idle: IdleState? = nil
    /// Completions of `ConnectionHandle.close` waiting for `onClose`. Usually empty.
    var closeWaiters: [@Sendable (Result<Void, any Error>) -> Void] = []

    /// The peer's address; for a datagram connection, the sender of the datagram being handled
    /// (between batches, of the last one handled); nil for a datagram from an unbound Unix
    /// socket, which cannot be answered.
    public internal(set) var remoteAddress: SocketAddress?
    /// The address of the listener that accepted this connection, or of the datagram socket.
    public let listenerAddress: SocketAddress?
    /// The network of that listener (`tcp`, `tcp4`, `tcp6`, `unix`, `udp`, `udp4`, `udp6`,
    /// `unixgram`), so a
    /// handler serving several addresses knows which one a connection or datagram came from.
    public let network: Network
    /// Whether this is a datagram socket's connection (`udp`, `unixgram`), rather than a stream's.
    public let isDatagram: Bool
    /// A dialled datagram socket, connected to its one peer (`remoteAddress`), with a lifecycle
    /// of its own; false for a datagram listener's connection, whose socket is the engine's.
    let connectedDatagram: Bool
    /// A datagram listener's connection: it stands for the socket, not for a peer.
    var isListenerDatagram: Bool { isDatagram && !connectedDatagram }
    /// Anything the handler wants to keep with the connection (gnet's `Context`). Loop thread
    /// only, like the connection; see `sharedContext` for state other threads use too.
    public var context: Any? = nil

    /// A box for per-connection state that other threads read and write too (a worker
    /// finishing a request, say): `Sendable`, locked. Made on first use; keep the box itself
    /// where another thread can reach it (capture it with the connection's `handle`).
    public var sharedContext: SharedContext {
        if let s = shared { return s }
        let s = SharedContext()
        shared = s
        return s
    }
    private var shared: SharedContext? = nil

    init(fd: Int32, generation: UInt32, loop: EventLoop, remote: SocketAddress?, listener: SocketAddress?, network: Network) {
        self.fd = fd
        self.generation = generation
        self.owner = loop
        self.remoteAddress = remote
        self.listenerAddress = listener
        self.network = network
        self.isDatagram = network.isDatagram
        self.connectedDatagram = network.isDatagram && listener == nil
    }

    /// The local address of the socket.
    public var localAddress: SocketAddress? { Socket.localAddress(fd) }

    /// The index of the loop that owns this connection (0 ..< `Options.loops`), for handlers
    /// that keep per-loop state in an array.
    public var loopIndex: Int { owner.index }

    /// The loop that owns this connection, as a `Sendable` handle: run work on it now
    /// (`execute`) or later (`schedule(after:_:)`), in order with this connection's callbacks.
    public var loop: EventLoopHandle { EventLoopHandle(inbox: owner.inbox) }

    /// A `Sendable` handle for other threads: async writes, wake, close.
    public var handle: ConnectionHandle {
        ConnectionHandle(inbox: owner.inbox, fd: fd, generation: generation, isDatagram: isDatagram, peer: isDatagram ? remoteAddress : nil)
    }

    /// Whether the connection is open: false once closing or closed, and as soon as `close()`
    /// or `abort(_:)` is called inside a callback (the close itself happens when it returns).
    public var isOpen: Bool { state == .open && pendingClose == nil }

    /// False while more than `Options.outboundHighWatermark` bytes of output are queued, until
    /// they drain to `outboundLowWatermark` (`onWritabilityChanged` tells of each flip). While
    /// false the engine does not read from the connection. Writes still work: they queue.
    public var isWritable: Bool { outbound.isWritable }

    /// Stops reading from the connection until `resumeReading()` (SwiftNIO's `autoRead` off):
    /// for a handler that forwards input to a slow consumer elsewhere. The peer is held back by
    /// TCP; nothing is dropped. Input already buffered stays buffered.
    public func pauseReading() {
        guard !readingPaused else { return }
        readingPaused = true
        if isListenerDatagram { owner.setDatagramReading(self) } else { owner.settle(self) }
    }

    /// Resumes reading after `pauseReading()`. Input that was left buffered is offered to
    /// `onTraffic` again at once.
    public func resumeReading() {
        guard readingPaused else { return }
        readingPaused = false
        if isListenerDatagram {
            owner.setDatagramReading(self)
            return
        }
        trafficDeferred = trafficDeferred || inboundBuffered > 0
        owner.settle(self)
    }

    /// Whether reading was paused by `pauseReading()`.
    public var isReadingPaused: Bool { readingPaused }

    /// Whether the peer has shut down its sending side (its EOF was read).
    public var isInputClosed: Bool { inputClosed }

    // MARK: Reading

    /// The bytes readable now: the lent read buffer, or the kept inbound bytes.
    @inline(__always)
    var readable: UnsafeRawBufferPointer { lent.count > 0 ? lent : inbound.readable }

    /// How many received bytes are buffered and not yet consumed.
    public var inboundBuffered: Int { lent.count > 0 ? lent.count : inbound.count }

    /// `readable` for the inlinable lenders below: one call, no generic context, so that a
    /// handler's closure is specialised and inlined in its own module.
    @usableFromInline var inboundView: UnsafeRawBufferPointer { readable }

    /// Lends every buffered input byte. Nothing is consumed; call `discard(_:)` after.
    @inlinable
    public func withInbound<R>(_ body: (RawSpan) throws -> R) rethrows -> R {
        try body(inboundView.bytes)
    }

    /// Lends the buffered input as an unsafe pointer, for code that needs one (parsers in C).
    /// The pointer is valid only inside `body`. Nothing is consumed.
    @inlinable
    public func withUnsafeInboundBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(inboundView)
    }

    /// Lends the first `n` buffered bytes without consuming them, or returns nil (without
    /// calling `body`) when fewer than `n` are buffered.
    public func peek<R>(_ n: Int, _ body: (RawSpan) throws -> R) rethrows -> R? {
        let r = readable
        guard n >= 0, r.count >= n else { return nil }
        return try body(UnsafeRawBufferPointer(rebasing: r[..<n]).bytes)
    }

    /// Lends the first `n` buffered bytes, then consumes them; nil (nothing consumed) when fewer
    /// than `n` are buffered. `nil` for `n` takes everything buffered.
    public func next<R>(_ n: Int? = nil, _ body: (RawSpan) throws -> R) rethrows -> R? {
        let r = readable
        let want = n ?? r.count
        guard want >= 0, r.count >= want else { return nil }
        let result = try body(UnsafeRawBufferPointer(rebasing: r[..<want]).bytes)
        discard(want)
        return result
    }

    /// Copies out and consumes the first `n` buffered bytes (all of them for nil); nil when
    /// fewer than `n` are buffered.
    public func next(_ n: Int? = nil) -> [UInt8]? {
        let r = readable
        let want = n ?? r.count
        guard want >= 0, r.count >= want else { return nil }
        let out = Array(UnsafeRawBufferPointer(rebasing: r[..<want]))
        discard(want)
        return out
    }

    /// Consumes up to `n` buffered bytes; returns how many were dropped.
    @discardableResult
    public func discard(_ n: Int) -> Int {
        guard n > 0 else { return 0 }
        if lent.count > 0 {
            let k = min(n, lent.count)
            lent = UnsafeRawBufferPointer(rebasing: lent[k...])
            return k
        }
        let k = min(n, inbound.count)
        inbound.consume(k)
        return k
    }

    // MARK: Writing

    /// How many written bytes wait for the socket.
    public var outboundBuffered: Int {
        outbound.count + (owner.corkOwner === self ? owner.cork.count : 0)
    }

    /// Throws unless the connection can take a write now.
    @inline(__always)
    func checkWritable() throws(GNetError) {
        guard state == .open else { throw .connectionClosed }
        if renderingInPlace { throw Self.writeWhileRendering }
    }

    static let writeWhileRendering = GNetError.misuse(
        "Connection.write, writev or flush was called inside a write(reservingCapacity:) closure; "
            + "return from the closure first (its bytes are sent with the next write)")

    /// Sends `bytes` (or queues what the socket does not take now).
    /// Throws `GNetError.connectionClosed` once the connection is closing or closed, and
    /// `GNetError.misuse` inside a `write(reservingCapacity:)` closure.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try checkWritable()
        if isDatagram {
            try owner.sendDatagram(self, bytes, to: datagramDestination())
            return
        }
        // The loop outlives its connections; borrowing it costs no retain on this hot path.
        Unmanaged.passUnretained(owner)._withUnsafeGuaranteedRef { $0.write(self, bytes) }
    }

    /// Sends the bytes of a span (for instance the input lent by `withInbound`).
    public func write(_ bytes: RawSpan) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Sends the bytes of an array, a `Data`-like collection, or any contiguous byte collection.
    public func write<C: Collection>(_ bytes: C) throws where C.Element == UInt8 {
        if let done = try bytes.withContiguousStorageIfAvailable({ try write(UnsafeRawBufferPointer($0)) }) {
            return done
        }
        try write(Array(bytes))
    }

    /// Sends a string's UTF-8 bytes.
    public func write(_ string: String) throws {
        var s = string
        try s.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }

    /// Encodes output straight into the send buffer, with no intermediate copy: `body` gets
    /// `capacity` writable bytes, fills a prefix of them and returns how many it wrote. Use it
    /// to render replies in place. Returns that count.
    /// Throws `GNetError.connectionClosed` once the connection is closing or closed.
    @discardableResult
    public func write(
        reservingCapacity capacity: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws -> Int {
        try checkWritable()
        if isDatagram {
            let peer = try datagramDestination()
            renderingInPlace = true
            defer { renderingInPlace = false }
            return try owner.sendDatagramInPlace(self, max(capacity, 0), to: peer, body)
        }
        guard capacity > 0 else { return 0 }
        renderingInPlace = true
        defer { renderingInPlace = false }
        return try Unmanaged.passUnretained(owner)._withUnsafeGuaranteedRef { try $0.writeInPlace(self, capacity, body) }
    }

    /// Sends several buffers in order, gathered into as few system calls as possible.
    /// On a datagram connection, the buffers are gathered into one datagram.
    public func writev(_ buffers: [[UInt8]]) throws {
        try checkWritable()
        if isDatagram {
            try owner.sendDatagram(self, buffers, to: datagramDestination())
            return
        }
        owner.writev(self, buffers)
    }

    // MARK: Datagrams

    /// Sends `bytes` as one datagram to `address`, from this datagram connection's socket:
    /// with the rest of the batch's answers when called in its `onTraffic`, else at once (see
    /// the type's notes). Throws the send's error when sent at once (a full send buffer is
    /// `SystemError` with `EAGAIN`: the datagram was not sent), `GNetError.connectionClosed`
    /// once the engine has closed the socket, and `GNetError.misuse` on a stream connection or
    /// a dialled datagram connection (its socket is connected to one peer: write to it).
    public func sendTo(_ bytes: UnsafeRawBufferPointer, address: SocketAddress) throws {
        try checkWritable()
        guard isListenerDatagram else { throw isDatagram ? Self.sendToOnConnected : Self.sendToOnStream }
        try owner.sendDatagram(self, bytes, to: address)
    }

    /// Sends the bytes of a span as one datagram to `address` (see `sendTo(_:address:)`).
    public func sendTo(_ bytes: RawSpan, address: SocketAddress) throws {
        try bytes.withUnsafeBytes { try sendTo($0, address: address) }
    }

    /// Sends the bytes of an array or any byte collection as one datagram to `address`.
    public func sendTo<C: Collection>(_ bytes: C, address: SocketAddress) throws where C.Element == UInt8 {
        if let done = try bytes.withContiguousStorageIfAvailable({ try sendTo(UnsafeRawBufferPointer($0), address: address) }) {
            return done
        }
        try sendTo(Array(bytes), address: address)
    }

    /// Where a write on a datagram connection goes: the sender being answered, or nil for a
    /// dialled (connected) socket, which sends to its peer without naming it.
    @inline(__always)
    private func datagramDestination() throws(GNetError) -> SocketAddress? {
        if connectedDatagram { return nil }
        guard let peer = remoteAddress else { throw Self.noDatagramYet }
        return peer
    }

    static let sendToOnStream = GNetError.misuse(
        "Connection.sendTo is for datagram connections (udp://); a stream connection writes to its peer with write")
    static let sendToOnConnected = GNetError.misuse(
        "Connection.sendTo is for datagram listeners; a dialled datagram connection is connected to one peer: write to it, or dial another")
    static let noDatagramYet = GNetError.misuse(
        "a write on this datagram connection has no peer to answer: no datagram has arrived yet, or its sender "
            + "has no address (an unbound unixgram socket); use sendTo(_:address:)")

    /// Tries to send queued output now rather than when the callback returns. Throws the
    /// socket's error if the connection failed (it is then closed after the callback).
    public func flush() throws {
        guard state != .closed else { throw GNetError.connectionClosed }
        if renderingInPlace { throw Self.writeWhileRendering }
        if isDatagram { return } // every datagram was sent when it was written
        if let error = owner.flush(self) { throw error }
    }

    /// Closes the connection once what was written has been sent (`onClose` follows, with a nil
    /// error; see `Options.closeTimeout` for a peer that stops reading). Calling it again, or on
    /// a closed connection, does nothing. A dialled datagram connection closes as soon as the
    /// datagrams written in the current batch are sent; a datagram listener's does nothing.
    public func close() {
        guard !isListenerDatagram else { return }
        owner.requestClose(self, .orderly)
    }

    /// Closes the connection at once with a reset (`SO_LINGER` 0), dropping queued output; the
    /// peer sees `ECONNRESET`, never a clean end of a truncated stream. `onClose` gets `error`
    /// (`GNetError.connectionClosed` if nil). A dialled datagram connection closes at once
    /// (nothing is queued, and there is no reset to send); a datagram listener's does nothing.
    public func abort(_ error: (any Error)? = nil) {
        guard !isListenerDatagram else { return }
        owner.requestClose(self, .abandoned(error ?? GNetError.connectionClosed))
    }
}

@available(*, unavailable)
extension Connection: Sendable {}

// MARK: - Socket options

extension Connection {
    /// Every setter throws `GNetError.connectionClosed` once the connection has closed (its
    /// descriptor number may then belong to another socket).
    @inline(__always)
    private func checkSocket() throws(GNetError) {
        guard state != .closed else { throw .connectionClosed }
    }

    /// `TCP_NODELAY`: send small writes at once instead of coalescing them (Nagle).
    public func setNoDelay(_ on: Bool) throws {
        try checkSocket()
        try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, on ? 1 : 0, "TCP_NODELAY")
    }

    /// TCP keep-alive: probe a peer after `idle` without traffic, every `interval` (nil: `idle`,
    /// as in gnet), dropping the connection after `count` unanswered probes (nil: the kernel's
    /// 9). nil for `idle` turns keep-alive off. Whole seconds.
    public func setKeepAlive(_ idle: Duration?, interval: Duration? = nil, count: Int? = nil) throws {
        try checkSocket()
        guard let idle else {
            try Socket.setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 0, "SO_KEEPALIVE")
            return
        }
        let secs = Int32(clamping: max(1, idle.components.seconds))
        let every = interval.map { Int32(clamping: max(1, $0.components.seconds)) } ?? secs
        try Socket.setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE")
        try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, secs, "TCP_KEEPIDLE")
        try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, every, "TCP_KEEPINTVL")
        if let count { try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, Int32(clamping: count), "TCP_KEEPCNT") }
    }

    /// A duplicate of the socket's descriptor (gnet's `Conn.Dup`), close-on-exec, for code
    /// that needs the socket outside the engine (passing it to another process, say). The
    /// caller owns and closes it. It shares the socket, its options and its non-blocking mode
    /// with the connection: the engine keeps serving the original, and the socket stays open
    /// until both are closed.
    public func duplicateDescriptor() throws -> Int32 {
        try checkSocket()
        return try sysCall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
    }

    /// `SO_RCVBUF`, the kernel's receive buffer size.
    public func setReceiveBuffer(_ bytes: Int) throws {
        try checkSocket()
        try Socket.setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(clamping: bytes), "SO_RCVBUF")
    }

    /// `SO_SNDBUF`, the kernel's send buffer size.
    public func setSendBuffer(_ bytes: Int) throws {
        try checkSocket()
        try Socket.setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(clamping: bytes), "SO_SNDBUF")
    }

    /// `SO_LINGER`: on close, wait up to `timeout` for unsent data (zero resets the connection;
    /// nil restores the default graceful close).
    public func setLinger(_ timeout: Duration?) throws {
        try checkSocket()
        var l = linger(l_onoff: timeout == nil ? 0 : 1, l_linger: Int32(clamping: timeout?.components.seconds ?? 0))
        try Socket.setLinger(fd, &l)
    }
}

/// Per-connection state that any thread may use (`Connection.sharedContext`): one value under
/// a lock. `Sendable`.
public final class SharedContext: Sendable {
    private let box = Locked<(any Sendable)?>(nil)

    /// The value (nil until set). Any thread.
    public var value: (any Sendable)? {
        get { box.withLock { $0 } }
        set { box.withLock { $0 = newValue } }
    }

    /// Reads and changes the value atomically. Any thread; do not block inside `body`.
    public func withLock<R>(_ body: (inout (any Sendable)?) throws -> R) rethrows -> R {
        try box.withLock(body)
    }
}
