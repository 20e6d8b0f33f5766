import CGNetLinux
import Glibc
import Poller

/// A loop's preallocated receive arrays for `recvmmsg`: one message header, one iovec, one
/// sender address and one slot of `Options.readBufferCapacity` bytes per datagram of a batch.
/// Made once, when the loop gets its first datagram socket, and reused for every batch, so
/// receiving allocates nothing per datagram.
///
/// ```
///  msgs[i].msg_hdr ──msg_iov──▶ iovecs[i] ──iov_base──▶ slots + i * slotSize  (slotSize bytes)
///                  ──msg_name─▶ names[i]  (sockaddr_storage; msg_namelen reset before each call)
/// ```
///
/// The slots are virtual memory until touched: a batch of small datagrams touches the first
/// page of a few slots. Loop thread only.
final class DatagramBatch {
    let capacity: Int
    let slotSize: Int
    let msgs: UnsafeMutablePointer<cgnet_mmsghdr>
    private let iovecs: UnsafeMutablePointer<iovec>
    let names: UnsafeMutablePointer<sockaddr_storage>
    private let slots: UnsafeMutableRawPointer

    init(capacity: Int, slotSize: Int) {
        self.capacity = capacity
        self.slotSize = slotSize
        (msgs, iovecs, names) = linkedMessageHeaders(capacity)
        slots = .allocate(byteCount: capacity * slotSize, alignment: 16)
        for i in 0..<capacity { iovecs[i] = iovec(iov_base: slots + i * slotSize, iov_len: slotSize) }
    }

    deinit {
        msgs.deallocate()
        iovecs.deallocate()
        names.deallocate()
        slots.deallocate()
    }

    /// Makes every header ready for the next `recvmmsg` (the kernel overwrote the address
    /// lengths and flags).
    @inline(__always)
    func reset() {
        let nameSize = socklen_t(MemoryLayout<sockaddr_storage>.size)
        for i in 0..<capacity {
            msgs[i].msg_hdr.msg_namelen = nameSize
            msgs[i].msg_hdr.msg_flags = 0
        }
    }

    @inline(__always)
    func slot(_ i: Int) -> UnsafeMutableRawPointer { slots + i * slotSize }

    /// Whether `bytes` lie within the slots (an echo of received input).
    @inline(__always)
    func holds(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let p = bytes.baseAddress else { return false }
        let start = UnsafeRawPointer(slots)
        return p >= start && p + bytes.count <= start + capacity * slotSize
    }
}

/// Datagram sockets (`udp://`): each is a `Listener` of its loop with one `Connection` of its
/// own (`Listener.datagram`), through which every datagram it receives is lent to `onTraffic`.
///
/// Per readiness the loop takes one batch of up to `Options.datagramBatchSize` datagrams with
/// one `recvmmsg`, then hands them to the handler one by one: the connection's input is
/// exactly that datagram (lent from its slot, never copied), `remoteAddress` its sender. What
/// the handler leaves unconsumed is dropped when the callback returns: datagrams are not a
/// stream. More waiting datagrams are reported again by the (level-triggered) poller, after
/// the loop has served everything else that is ready, so a busy socket cannot starve the loop.
///
/// Writes made during a batch's callbacks are not sent one by one: they are queued
/// (`DatagramSendQueue`, without copying when they echo the input) and sent with one
/// `sendmmsg` when the batch is done, so a batch of requests costs two system calls, not one per
/// answer. A datagram the kernel refuses then is dropped, counted (`Engine.unsentDatagrams`)
/// and logged rate-limited; the socket serves on. Outside a batch, a write is sent at once and
/// throws the kernel's refusal.
///
/// A datagram larger than its slot (`MSG_TRUNC`) is not passed on as if whole: it is counted
/// (`Engine.truncatedDatagrams`), logged rate-limited, and reported by `onTruncatedDatagram`.
/// Socket errors (an ICMP error queued on the socket) are logged rate-limited and cleared; they
/// never close the socket.
///
/// Dialled datagram sockets (`EventLoop+ConnectedDatagram.swift`) use the same arrays, the
/// same receive and hand-over (`receiveDatagrams`, `handOver`) and the same sends; their peer
/// is fixed (sends name no address), and an error meaning the peer is gone closes them.
extension EventLoop {
    /// The most address space a loop's receive slots take (`datagramBatchSize` ×
    /// `readBufferCapacity`, the batch made smaller if need be).
    static let maxSlotBytes = 64 << 20

    /// Makes the connection of each datagram listener and, for the first, the receive arrays.
    final func prepareDatagramListeners() {
        for l in listeners where l.address.network.isDatagram && l.datagram == nil {
            l.datagram = Connection(
                fd: l.fd, generation: Self.listenerGeneration, loop: self, remote: nil, listener: l.bound,
                network: l.address.network)
            prepareDatagramArrays()
        }
    }

    /// Makes the loop's receive arrays and send queue, once: for its first datagram socket,
    /// listened on or dialled.
    final func prepareDatagramArrays() {
        guard datagramBatch == nil else { return }
        // At most `maxSlotBytes` of slots: a huge readBufferCapacity makes batches smaller.
        let count = max(1, min(options.datagramBatchSize, Self.maxSlotBytes / options.readBufferCapacity))
        datagramBatch = DatagramBatch(capacity: count, slotSize: options.readBufferCapacity)
        datagramSendQueue = DatagramSendQueue(capacity: max(64, 2 * count))
    }

    /// The datagram socket `l` is ready: clear a reported error, then receive one batch.
    final func handleDatagramSocket(_ l: Listener, _ c: Connection, _ events: IOEvents) {
        if !events.isDisjoint(with: [.error, .reset]) { takeDatagramSocketError(c) }
        guard events.contains(.read), !l.paused, c.state == .open, let batch = datagramBatch else { return }
        let n = receiveDatagrams(c, into: batch)
        guard n > 0 else { return }
        handOver(c, batch, count: n, listener: l)
    }

    /// Reads (and so clears) the error the poller reported on `c`'s socket, and reports it
    /// (`datagramTrouble`): a queued ICMP error is reported once, never a busy loop.
    final func takeDatagramSocketError(_ c: Connection) {
        let e = Socket.getOption(c.fd, SOL_SOCKET, SO_ERROR) ?? 0
        if e != 0 { datagramTrouble(c, SystemError("datagram socket", errno: e)) }
    }

    /// Receives one batch from `c`'s socket into `batch`: how many datagrams, 0 when none
    /// waited or the receive failed (then reported: `ECONNREFUSED` and kin are an earlier
    /// send's ICMP error, reported by this receive).
    final func receiveDatagrams(_ c: Connection, into batch: DatagramBatch) -> Int {
        batch.reset()
        do {
            return try Socket.receiveBatch(c.fd, batch.msgs, batch.capacity)
        } catch {
            datagramTrouble(c, error)
            return 0
        }
    }

    /// Lends the `n` datagrams of `batch` to `onTraffic` one by one, then sends what the
    /// handler wrote meanwhile. For a listener's socket each datagram's sender becomes
    /// `remoteAddress`; a dialled socket's peer stays its own. Stops early when the connection
    /// closes (the engine stopped, or a dialled connection's handler closed it: the close is
    /// carried out by the caller, after the answers are sent).
    final func handOver(_ c: Connection, _ batch: DatagramBatch, count n: Int, listener l: Listener?) {
        batchOwner = c
        defer {
            batchOwner = nil
            if let error = flushDatagrams(c) { datagramTrouble(c, error) }
        }
        for i in 0..<n {
            guard c.state == .open, c.pendingClose == nil else { return }
            let m = batch.msgs[i]
            if l != nil {
                // An unbound Unix datagram socket sends without an address (length 0).
                c.remoteAddress = m.msg_hdr.msg_namelen == 0 ? nil : SocketAddress(storage: batch.names[i], length: m.msg_hdr.msg_namelen)
            }
            let length = Int(m.msg_len)
            if m.msg_hdr.msg_flags & CGNET_MSG_TRUNC != 0 || length > batch.slotSize {
                truncated(c, length: length, listener: l)
                continue
            }
            stats.datagramsReceived &+= 1
            stats.bytesRead &+= length
            c.lent = UnsafeRawBufferPointer(start: batch.slot(i), count: length)
            c.inCallback = true
            let action = handler.onTraffic(c)
            c.inCallback = false
            c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
            finishDatagramCallback(c, action)
        }
    }

    /// Applies a datagram callback's action: `.shutdown` stops the engine; `.close` closes a
    /// dialled connection once its batch is done (a listener's socket is the engine's).
    @inline(__always)
    private final func finishDatagramCallback(_ c: Connection, _ action: Action) {
        switch action {
        case .none: break
        case .close: if c.connectedDatagram { c.pendingClose = c.pendingClose?.merged(with: .orderly) ?? .orderly }
        case .shutdown: engine.stop()
        }
    }

    private final func truncated(_ c: Connection, length: Int, listener l: Listener?) {
        inbox.truncatedDatagrams.add(1, ordering: .relaxed)
        stats.datagramsTruncated &+= 1
        if let n = l != nil ? l!.truncations.occurrence() : connectedDatagramTrouble.occurrence() {
            logger.warning("a datagram larger than Options.readBufferCapacity was dropped", metadata: [
                "socket": "\(datagramSocketName(c))", "from": "\(c.remoteAddress.map(\.description) ?? "?")",
                "bytes": "\(length)", "readBufferCapacity": "\(options.readBufferCapacity)", "occurrences": "\(n)"])
        }
        c.inCallback = true
        let action = handler.onTruncatedDatagram(c, length: length)
        c.inCallback = false
        finishDatagramCallback(c, action)
    }

    /// Sends what the handler wrote during `c`'s batch. Returns the last refusal when the
    /// kernel refused some (each counted in `Engine.unsentDatagrams`).
    private final func flushDatagrams(_ c: Connection) -> (any Error)? {
        guard let q = datagramSendQueue, q.count > 0 else { return nil }
        guard c.state == .open else {
            q.discard()
            return nil
        }
        let (sent, bytes, unsent, error) = q.flush(c.fd)
        stats.datagramsSent &+= sent
        stats.bytesWritten &+= bytes
        if sent > 0 { c.lastWrite = clock }
        guard unsent > 0 else { return nil }
        stats.datagramsUnsent &+= unsent
        inbox.unsentDatagrams.add(unsent, ordering: .relaxed)
        return error ?? SystemError("sendmmsg", errno: EAGAIN)
    }

    /// An error of `c`'s socket (reported by the poller, a receive or a batch's send): a
    /// listener's socket logs it and serves on; a dialled one closes when it means the peer
    /// is gone (`connectedDatagramFailed`).
    final func datagramTrouble(_ c: Connection, _ error: any Error) {
        if c.connectedDatagram {
            connectedDatagramFailed(c, error)
            return
        }
        guard let l = listeners.first(where: { $0.fd == c.fd }), let n = l.trouble.occurrence() else { return }
        logger.info("a datagram socket reported an error; it keeps serving", metadata: [
            "listener": "\(l.boundAddress)", "error": "\(error)", "occurrences": "\(n)"])
    }

    /// The socket of `c` for a log line: the listener's bound address, or where a dialled one goes.
    final func datagramSocketName(_ c: Connection) -> String {
        if let bound = c.listenerAddress {
            return "\(ListenAddress(network: c.network, address: bound, original: ""))"
        }
        guard let peer = c.remoteAddress else { return "\(c.network)" }
        return "\(c.network) to \(ListenAddress(network: c.network, address: peer, original: ""))"
    }

    /// `pauseReading`/`resumeReading` on a datagram connection: watch its socket or not. The
    /// kernel keeps (then, when its buffer is full, drops) what arrives meanwhile.
    final func setDatagramReading(_ c: Connection) {
        guard c.state == .open, let l = listeners.first(where: { $0.fd == c.fd }) else { return }
        let pause = c.readingPaused
        guard pause != l.paused else { return }
        do {
            try poller.modify(
                l.fd, from: l.paused ? [] : .read, to: pause ? [] : .read,
                token: PollToken(fd: l.fd, generation: Self.listenerGeneration))
            l.paused = pause
        } catch {
            logger.error("cannot change a datagram socket's interest", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Sending

    /// Sends `bytes` as one datagram from `c`'s socket to `address` (nil: a dialled socket's
    /// peer): queued for the end of the batch while `c`'s batch is being handled, else now,
    /// throwing the send's `SystemError` (a full send buffer is `EAGAIN`: the datagram was not
    /// sent; UDP does not queue), or for a dialled socket the error that closed it.
    @inline(__always)
    final func sendDatagram(_ c: Connection, _ bytes: UnsafeRawBufferPointer, to address: SocketAddress?) throws {
        if batchOwner === c, let q = datagramSendQueue {
            if datagramBatch!.holds(bytes) {
                q.queue(inPlace: bytes, to: address)
            } else {
                let offset = q.arena.count
                q.arena.append(bytes)
                q.queue(arenaOffset: offset, length: bytes.count, to: address)
            }
            if q.isFull { flushDatagramsNow(c) }
            return
        }
        iovecs[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        try sendDatagram(c, iovecCount: 1, to: address)
    }

    /// Sends `buffers` gathered into one datagram to `address`.
    final func sendDatagram(_ c: Connection, _ buffers: [[UInt8]], to address: SocketAddress?) throws {
        if batchOwner === c, let q = datagramSendQueue {
            let offset = q.arena.count
            for b in buffers { b.withUnsafeBytes { q.arena.append($0) } }
            q.queue(arenaOffset: offset, length: q.arena.count - offset, to: address)
            if q.isFull { flushDatagramsNow(c) }
            return
        }
        guard buffers.count <= iovecCapacity else {
            try sendDatagram(c, Array(buffers.joined()), to: address)
            return
        }
        var n = 0
        // `buffers` is immutable and alive for this whole call, so each element's storage
        // stays where the iovecs point.
        for b in buffers where !b.isEmpty {
            b.withUnsafeBytes { raw in
                iovecs[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            }
            n += 1
        }
        try sendDatagram(c, iovecCount: n, to: address)
    }

    final func sendDatagram(_ c: Connection, _ bytes: [UInt8], to address: SocketAddress?) throws {
        try bytes.withUnsafeBytes { try sendDatagram(c, $0, to: address) }
    }

    private final func sendDatagram(_ c: Connection, iovecCount n: Int, to address: SocketAddress?) throws {
        let sent: Int?
        do {
            sent = try Socket.sendDatagram(c.fd, iovecs, n, to: address)
        } catch {
            // A dialled socket's peer may be gone (an ICMP error of an earlier datagram).
            throw c.connectedDatagram ? connectedDatagramFailed(c, error) : error
        }
        guard let sent else {
            throw SystemError("sendmsg(\(address.map(\.description) ?? "the peer")): the socket's send buffer is full; the datagram was not sent", errno: EAGAIN)
        }
        stats.datagramsSent &+= 1
        stats.bytesWritten &+= sent
        c.lastWrite = clock
    }

    /// Renders one datagram in place (`write(reservingCapacity:)`) and sends it to `address`.
    final func sendDatagramInPlace(
        _ c: Connection, _ capacity: Int, to address: SocketAddress?, _ body: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws -> Int {
        if batchOwner === c, let q = datagramSendQueue {
            let offset = q.arena.count
            let n = try q.arena.appendInPlace(reserving: capacity, body)
            q.queue(arenaOffset: offset, length: n, to: address)
            if q.isFull { flushDatagramsNow(c) }
            return n
        }
        defer { datagramScratch.reset(keepingCapacityUpTo: options.readBufferCapacity) }
        let n = try datagramScratch.appendInPlace(reserving: capacity, body)
        try sendDatagram(c, datagramScratch.readable, to: address)
        return n
    }

    /// The send queue filled up during a batch: send it now.
    private final func flushDatagramsNow(_ c: Connection) {
        if let error = flushDatagrams(c) { datagramTrouble(c, error) }
    }

    /// A handle's write (`ConnectionHandle.write` on a datagram connection): from the datagram
    /// listener socket `fd` to `peer`, or from the dialled connection `fd`/`generation` to its
    /// own peer.
    final func sendHandleDatagram(_ fd: Int32, _ generation: UInt32, _ peer: SocketAddress, _ buffers: [[UInt8]]) -> Result<Void, any Error> {
        if generation == Self.listenerGeneration {
            guard let c = listeners.first(where: { $0.fd == fd })?.datagram, c.state == .open else {
                return .failure(GNetError.connectionClosed)
            }
            return Result { try sendDatagram(c, buffers, to: peer) }
        }
        guard let c = liveConnection(fd, generation), c.state == .open else { return .failure(GNetError.connectionClosed) }
        return Result { try sendDatagram(c, buffers, to: nil) }
    }
}
