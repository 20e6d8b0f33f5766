import Glibc
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
public final class Connection {
    /// The lifecycle: open → [closing: flushing output] → [lingering: write side shut down,
    /// discarding unread input until the peer's EOF] → closed.
    enum State { case open, closing, lingering, closed }

    // MARK: Loop thread only

    /// The socket descriptor. Valid until `onClose` returns.
    public let fd: Int32
    let generation: UInt32
    unowned(unsafe) let loop: LoopBase

    /// Bytes the handler left unconsumed, kept across reads. Empty (and unallocated) while
    /// `lent` holds the input.
    ///
    /// The hot buffers skip the runtime's dynamic exclusivity checks (two per write otherwise):
    /// they are touched only by this loop's thread, and never through overlapping accesses.
    @exclusivity(unchecked) var inbound = ByteQueue()
    /// The part of the loop's read buffer lent to the current `onTraffic`; empty otherwise.
    @exclusivity(unchecked) var lent = UnsafeRawBufferPointer(start: nil, count: 0)
    /// Bytes accepted by `write` that the socket has not taken yet.
    @exclusivity(unchecked) var outbound = ByteQueue()
    /// The interest registered with the poller.
    var interest: IOEvents = .read
    var state = State.open
    /// True while a handler callback for this connection runs; closing then waits for it.
    var inCallback = false
    /// The peer's EOF was read: no lingering close is needed.
    var peerClosed = false
    /// A close asked for during a callback, with its reason.
    var pendingClose: (any Error)?? = nil

    /// The peer's address.
    public let remoteAddress: SocketAddress?
    /// The address of the listener that accepted this connection.
    public let listenerAddress: SocketAddress?
    /// Anything the handler wants to keep with the connection (gnet's `Context`).
    public var context: Any? = nil

    init(fd: Int32, generation: UInt32, loop: LoopBase, remote: SocketAddress?, listener: SocketAddress?) {
        self.fd = fd
        self.generation = generation
        self.loop = loop
        self.remoteAddress = remote
        self.listenerAddress = listener
    }

    /// The local address of the socket.
    public var localAddress: SocketAddress? { Socket.localAddress(fd) }

    /// The index of the loop that owns this connection (0 ..< `Options.loops`), for handlers
    /// that keep per-loop state in an array.
    public var loopIndex: Int { loop.index }

    /// A `Sendable` handle for other threads: async writes, wake, close.
    public var handle: ConnectionHandle {
        ConnectionHandle(inbox: loop.inbox, fd: fd, generation: generation)
    }

    /// Whether the connection is open (false once closing or closed).
    public var isOpen: Bool { state == .open }

    // MARK: Reading

    /// The bytes readable now: the lent read buffer, or the kept inbound bytes.
    @inline(__always)
    var readable: UnsafeRawBufferPointer { lent.count > 0 ? lent : inbound.readable }

    /// How many received bytes are buffered and not yet consumed.
    public var inboundBuffered: Int { lent.count > 0 ? lent.count : inbound.count }

    /// Lends every buffered input byte. Nothing is consumed; call `discard(_:)` after.
    public func withInbound<R>(_ body: (RawSpan) throws -> R) rethrows -> R {
        try body(readable.bytes)
    }

    /// Lends the buffered input as an unsafe pointer, for code that needs one (parsers in C).
    /// The pointer is valid only inside `body`. Nothing is consumed.
    public func withUnsafeInboundBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(readable)
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
        outbound.count + (loop.corkOwner === self ? loop.cork.count : 0)
    }

    /// Sends `bytes` (or queues what the socket does not take now).
    /// Throws `GNetError.connectionClosed` once the connection is closing or closed.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard state == .open else { throw GNetError.connectionClosed }
        loop.write(self, bytes)
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
        guard state == .open else { throw GNetError.connectionClosed }
        guard capacity > 0 else { return 0 }
        return try loop.writeInPlace(self, capacity, body)
    }

    /// Sends several buffers in order, gathered into as few system calls as possible.
    public func writev(_ buffers: [[UInt8]]) throws {
        guard state == .open else { throw GNetError.connectionClosed }
        loop.writev(self, buffers)
    }

    /// Tries to send queued output now rather than when the callback returns. Throws the
    /// socket's error if the connection failed (it is then closed after the callback).
    public func flush() throws {
        guard state != .closed else { throw GNetError.connectionClosed }
        if let error = loop.flush(self) { throw error }
    }

    /// Closes the connection once what was written has been sent (`onClose` follows, with a nil
    /// error). Calling it again, or on a closed connection, does nothing.
    public func close() {
        loop.requestClose(self, error: nil)
    }
}

@available(*, unavailable)
extension Connection: Sendable {}

// MARK: - Socket options

extension Connection {
    /// `TCP_NODELAY`: send small writes at once instead of coalescing them (Nagle).
    public func setNoDelay(_ on: Bool) throws {
        try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, on ? 1 : 0, "TCP_NODELAY")
    }

    /// TCP keep-alive: probe an idle peer after `idle` (nil turns keep-alive off).
    public func setKeepAlive(_ idle: Duration?) throws {
        guard let idle else {
            try Socket.setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 0, "SO_KEEPALIVE")
            return
        }
        let secs = Int32(clamping: max(1, idle.components.seconds))
        try Socket.setOption(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE")
        try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, secs, "TCP_KEEPIDLE")
        try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, secs, "TCP_KEEPINTVL")
    }

    /// `SO_RCVBUF`, the kernel's receive buffer size.
    public func setReceiveBuffer(_ bytes: Int) throws {
        try Socket.setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(clamping: bytes), "SO_RCVBUF")
    }

    /// `SO_SNDBUF`, the kernel's send buffer size.
    public func setSendBuffer(_ bytes: Int) throws {
        try Socket.setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(clamping: bytes), "SO_SNDBUF")
    }

    /// `SO_LINGER`: on close, wait up to `timeout` for unsent data (zero resets the connection;
    /// nil restores the default graceful close).
    public func setLinger(_ timeout: Duration?) throws {
        var l = linger(l_onoff: timeout == nil ? 0 : 1, l_linger: Int32(clamping: timeout?.components.seconds ?? 0))
        _ = try sysCall("setsockopt(SO_LINGER)") {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        }
    }
}
