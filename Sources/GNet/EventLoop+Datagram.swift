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
        msgs = .allocate(capacity: capacity)
        iovecs = .allocate(capacity: capacity)
        names = .allocate(capacity: capacity)
        slots = .allocate(byteCount: capacity * slotSize, alignment: 16)
        for i in 0..<capacity {
            names[i] = sockaddr_storage()
            iovecs[i] = iovec(iov_base: slots + i * slotSize, iov_len: slotSize)
            var m = cgnet_mmsghdr()
            m.msg_hdr.msg_iov = iovecs + i
            m.msg_hdr.msg_iovlen = 1
            m.msg_hdr.msg_name = UnsafeMutableRawPointer(names + i)
            msgs[i] = m
        }
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
/// A datagram larger than its slot (`MSG_TRUNC`) is not passed on as if whole: it is counted
/// (`Engine.truncatedDatagrams`), logged rate-limited, and reported by `onTruncatedDatagram`.
/// Socket errors (an ICMP error queued on the socket) are logged rate-limited and cleared; they
/// never close the socket.
extension EventLoop {
    /// Makes the connection of each datagram listener and, for the first, the receive arrays.
    final func prepareDatagramListeners() {
        for l in listeners where l.address.network.isDatagram && l.datagram == nil {
            l.datagram = Connection(
                fd: l.fd, generation: Self.listenerGeneration, loop: self, remote: nil, listener: l.bound,
                network: l.address.network)
            if datagramBatch == nil {
                datagramBatch = DatagramBatch(capacity: options.datagramBatchSize, slotSize: options.readBufferCapacity)
            }
        }
    }

    /// The datagram socket `l` is ready: clear a reported error, then receive one batch.
    final func handleDatagramSocket(_ l: Listener, _ c: Connection, _ events: IOEvents) {
        if !events.isDisjoint(with: [.error, .reset]) {
            // Reading SO_ERROR clears it, so a queued ICMP error is reported once, not forever.
            let e = Socket.getOption(l.fd, SOL_SOCKET, SO_ERROR) ?? 0
            if e != 0 { datagramTrouble(l, SystemError("datagram socket", errno: e)) }
        }
        guard events.contains(.read), !l.paused, c.state == .open, let batch = datagramBatch else { return }
        batch.reset()
        let n: Int
        do {
            n = try Socket.receiveBatch(l.fd, batch.msgs, batch.capacity)
        } catch {
            // ECONNREFUSED and kin: an earlier send's ICMP error, reported by this receive.
            datagramTrouble(l, error)
            return
        }
        for i in 0..<n {
            guard c.state == .open else { return } // the engine stopped during a callback
            let m = batch.msgs[i]
            c.remoteAddress = SocketAddress(storage: batch.names[i], length: m.msg_hdr.msg_namelen)
            let length = Int(m.msg_len)
            if m.msg_hdr.msg_flags & CGNET_MSG_TRUNC != 0 || length > batch.slotSize {
                truncated(l, c, length: length)
                continue
            }
            c.lent = UnsafeRawBufferPointer(start: batch.slot(i), count: length)
            c.inCallback = true
            let action = handler.onTraffic(c)
            c.inCallback = false
            c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
            if action == .shutdown { engine.stop() }
        }
    }

    private final func truncated(_ l: Listener, _ c: Connection, length: Int) {
        inbox.truncatedDatagrams.add(1, ordering: .relaxed)
        if let n = l.truncations.occurrence() {
            logger.warning("a datagram larger than Options.readBufferCapacity was dropped", metadata: [
                "listener": "\(l.address.network)://\(l.bound.host):\(l.bound.port ?? 0)", "from": "\(c.remoteAddress.map(\.description) ?? "?")",
                "bytes": "\(length)", "readBufferCapacity": "\(options.readBufferCapacity)", "occurrences": "\(n)"])
        }
        c.inCallback = true
        let action = handler.onTruncatedDatagram(c, length: length)
        c.inCallback = false
        if action == .shutdown { engine.stop() }
    }

    private final func datagramTrouble(_ l: Listener, _ error: any Error) {
        if let n = l.trouble.occurrence() {
            logger.info("a datagram socket reported an error; it keeps serving", metadata: [
                "listener": "\(l.address.network)://\(l.bound.host):\(l.bound.port ?? 0)", "error": "\(error)",
                "occurrences": "\(n)"])
        }
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

    /// Sends `bytes` as one datagram to `address` from `c`'s socket, now. Throws the send's
    /// `SystemError`; a full send buffer is `EAGAIN` (the datagram was not sent: UDP does not
    /// queue).
    @inline(__always)
    final func sendDatagram(_ c: Connection, _ bytes: UnsafeRawBufferPointer, to address: SocketAddress) throws {
        iovecs[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        try sendDatagram(c, iovecCount: 1, to: address)
    }

    /// Sends `buffers` gathered into one datagram to `address`.
    final func sendDatagram(_ c: Connection, _ buffers: [[UInt8]], to address: SocketAddress) throws {
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

    final func sendDatagram(_ c: Connection, _ bytes: [UInt8], to address: SocketAddress) throws {
        try bytes.withUnsafeBytes { try sendDatagram(c, $0, to: address) }
    }

    private final func sendDatagram(_ c: Connection, iovecCount n: Int, to address: SocketAddress) throws {
        guard try Socket.sendDatagram(c.fd, iovecs, n, to: address) else {
            throw SystemError("sendmsg(\(address)): the socket's send buffer is full; the datagram was not sent", errno: EAGAIN)
        }
    }

    /// Renders one datagram in place (`write(reservingCapacity:)`) and sends it to `address`.
    final func sendDatagramInPlace(
        _ c: Connection, _ capacity: Int, to address: SocketAddress, _ body: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws -> Int {
        defer { datagramScratch.reset(keepingCapacityUpTo: options.readBufferCapacity) }
        let n = try datagramScratch.appendInPlace(reserving: capacity, body)
        try sendDatagram(c, datagramScratch.readable, to: address)
        return n
    }

    /// A handle's write to a datagram peer (`ConnectionHandle.write` on a datagram connection).
    final func sendHandleDatagram(_ fd: Int32, _ peer: SocketAddress, _ buffers: [[UInt8]]) -> Result<Void, any Error> {
        guard let c = listeners.first(where: { $0.fd == fd })?.datagram, c.state == .open else {
            return .failure(GNetError.connectionClosed)
        }
        return Result { try sendDatagram(c, buffers, to: peer) }
    }
}
