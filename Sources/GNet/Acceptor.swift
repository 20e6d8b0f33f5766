import Glibc
import Logging
import Poller

/// A listening socket owned by one loop.
final class Listener {
    let fd: Int32
    let address: ListenAddress
    let bound: SocketAddress
    /// Paused after an accept failure that would repeat at once; resumed by a timer. A
    /// datagram socket is paused by `Connection.pauseReading()`.
    var paused = false
    /// Accept trouble (or a datagram socket's errors), logged at most once per
    /// `RateLimitedLog.interval`.
    var trouble = RateLimitedLog()
    /// The poller refusing to pause or resume this listener, logged likewise.
    var pollerTrouble = RateLimitedLog()
    /// For a datagram socket, the one connection through which its datagrams are handled
    /// (made when the loop registers its listeners); nil for a stream listener.
    var datagram: Connection? = nil
    /// Datagrams dropped as larger than `Options.readBufferCapacity`, logged rate-limited.
    var truncations = RateLimitedLog()

    /// The bound address as a URL of the listener's network, for logs.
    var boundAddress: ListenAddress { ListenAddress(network: address.network, address: bound, original: address.original) }

    init(fd: Int32, address: ListenAddress, bound: SocketAddress) {
        self.fd = fd
        self.address = address
        self.bound = bound
    }
}

/// Logs a recurring problem at most once per interval, with how often it happened since.
struct RateLimitedLog {
    static let interval: Duration = .seconds(10)
    private var lastLogged: ContinuousClock.Instant? = nil
    private var suppressed = 0

    /// Returns how many occurrences this one stands for (itself plus those suppressed since the
    /// last log), or nil when it should not be logged.
    mutating func occurrence(now: ContinuousClock.Instant = .now) -> Int? {
        if let last = lastLogged, now - last < Self.interval {
            suppressed += 1
            return nil
        }
        lastLogged = now
        defer { suppressed = 0 }
        return suppressed + 1
    }
}

/// Accepting and balancing: each loop accepts on its own listeners; with a shared acceptor the
/// connection is handed to the loop the balancer picks.
///
/// Accept failures never stop the engine and never spin: a failure that belongs to one
/// connection (aborted before it was taken, refused by a firewall rule) skips to the next; a
/// failure that would repeat at once (out of descriptors or memory, a broken listener) pauses
/// that listener and retries after `exhaustionBackoff`. Both are logged at most once per
/// `RateLimitedLog.interval` per listener.
extension EventLoop {
    static let exhaustionBackoff: Duration = .milliseconds(100)
    static let brokenListenerBackoff: Duration = .seconds(1)

    final func acceptAll(_ l: Listener) {
        // Bounded per turn so a connection storm cannot starve established connections.
        for _ in 0..<256 {
            switch Socket.accept(l.fd) {
            case .accepted(let fd, let remote):
                let target = pickLoop(remote)
                // Counted against its loop now, not when that loop adopts it, so the
                // least-connections balancer sees the rest of a burst land elsewhere.
                peers[target].connectionCount.add(1, ordering: .relaxed)
                if target == index {
                    adopt(fd, remote: remote, listener: l.bound, network: l.address.network)
                } else {
                    peers[target].enqueue(.adopt(fd: fd, remote: remote, listener: l.bound, network: l.address.network))
                }
            case .wouldBlock:
                return
            case .skipped(let error):
                if let n = l.trouble.occurrence() {
                    logger.debug("a connection failed before it was accepted", metadata: [
                        "listener": "\(l.bound)", "error": "\(error)", "occurrences": "\(n)"])
                }
            case .exhausted(let error):
                pauseAccepting(l, for: Self.exhaustionBackoff, error, "out of descriptors or memory; accepting paused, retrying every 100 ms")
                return
            case .failed(let error):
                pauseAccepting(l, for: Self.brokenListenerBackoff, error, "the listener failed; accepting paused, retrying every second")
                return
            }
        }
    }

    /// Stops watching `l` for `delay` rather than spin on a listener that stays readable.
    private final func pauseAccepting(_ l: Listener, for delay: Duration, _ error: SystemError, _ message: String) {
        stats.acceptBackoffs += 1
        if let n = l.trouble.occurrence() {
            logger.warning("\(message)", metadata: ["listener": "\(l.bound)", "error": "\(error)", "occurrences": "\(n)"])
        }
        do {
            try poller.modify(l.fd, from: .read, to: [], token: PollToken(fd: l.fd, generation: Self.listenerGeneration))
            l.paused = true
        } catch {
            if let n = l.pollerTrouble.occurrence() {
                logger.error("cannot pause a failing listener", metadata: [
                    "listener": "\(l.bound)", "error": "\(error)", "occurrences": "\(n)"])
            }
        }
        schedule(after: delay, .resumeAccept(l.fd))
    }

    final func resumeAccepting(_ fd: Int32) {
        guard let l = listeners.first(where: { $0.fd == fd }), l.paused else { return }
        do {
            try poller.modify(l.fd, from: [], to: .read, token: PollToken(fd: l.fd, generation: Self.listenerGeneration))
            l.paused = false
        } catch {
            if let n = l.pollerTrouble.occurrence() {
                logger.error("cannot resume a listener; retrying every second", metadata: [
                    "listener": "\(l.bound)", "error": "\(error)", "occurrences": "\(n)"])
            }
            schedule(after: Self.brokenListenerBackoff, .resumeAccept(l.fd))
        }
    }

    private final func pickLoop(_ remote: SocketAddress) -> Int {
        guard peers.count > 1 else { return index }
        return options.loadBalancing.pick(among: peers, for: remote) {
            roundRobinNext = (roundRobinNext + 1) % peers.count
            return roundRobinNext
        }
    }

    /// Takes ownership of an accepted socket: options, registration, `onOpen`. The acceptor
    /// has already counted it in `inbox.connectionCount`.
    final func adopt(_ fd: Int32, remote: SocketAddress?, listener: SocketAddress?, network: Network) {
        _ = open(fd, generation: newGeneration(), remote: remote, listener: listener, network: network, registered: [], context: nil,
                 layer: options.acceptedLayer, serverName: nil)
    }

    /// A generation for a new registration: never the listeners' 0.
    final func newGeneration() -> UInt32 {
        nextGeneration &+= 1
        if nextGeneration == Self.listenerGeneration { nextGeneration = 1 }
        return nextGeneration
    }

    /// Makes a connected socket a connection of this loop: socket options, read interest (from
    /// `registered`, what the socket is registered for already), `onOpen`. Returns the
    /// connection (which `onOpen` may have closed already), or nil when the socket was closed
    /// instead (the loop is stopping, or the poller refused it). The socket was counted in
    /// `inbox.connectionCount` by whoever handed it here; a nil return uncounts it.
    final func open(_ fd: Int32, generation: UInt32, remote: SocketAddress?, listener: SocketAddress?, network: Network,
                    registered: IOEvents, context: (any Sendable)?,
                    layer factory: (any ConnectionLayerFactory)?, serverName: String?) -> Connection? {
        let token = PollToken(fd: fd, generation: generation)
        if stopping {
            if registered != [] { try? poller.deregister(fd, interest: registered) }
            inbox.connectionCount.subtract(1, ordering: .relaxed)
            _ = closeDescriptor(fd)
            return nil
        }
        let c = Connection(fd: fd, generation: generation, loop: self, remote: remote, listener: listener, network: network)
        c.context = context
        applySocketOptions(c, tcp: !network.isDatagram && remote?.family != .unix)
        do {
            if registered == [] {
                // Datagram sockets are watched level-triggered, also with `Options.edgeTriggered`.
                try poller.register(fd, interest: .read, token: token, trigger: network.isDatagram ? .level : trigger)
            } else {
                try poller.modify(fd, from: registered, to: .read, token: token)
            }
        } catch {
            if let n = socketOptionTrouble.occurrence() {
                logger.error("cannot watch a new connection; closing it", metadata: [
                    "fd": "\(fd)", "remote": "\(remote.map(\.description) ?? "?")", "error": "\(error)", "occurrences": "\(n)"])
            }
            if registered != [] { try? poller.deregister(fd, interest: registered) }
            inbox.connectionCount.subtract(1, ordering: .relaxed)
            _ = closeDescriptor(fd)
            return nil
        }
        let slot = Int(fd)
        if slot >= connections.count {
            connections.append(contentsOf: repeatElement(nil, count: max(slot + 1 - connections.count, connections.count)))
        }
        connections[slot] = c
        connectionCount += 1
        if listener != nil { stats.accepted += 1 } else { stats.dialled += 1 }
        startIdleTimers(c)
        if let factory {
            do {
                startLayer(c, try factory.makeLayer(accepted: listener != nil, serverName: serverName))
            } catch {
                fail(c, error)
            }
        }

        beginCallback(c)
        let (output, action) = handler.onOpen(c)
        if let output, c.state == .open {
            if c.isDatagram {
                do {
                    try sendDatagram(c, output, to: nil) // one datagram
                } catch {
                    // A refusal that closed the connection is told by onClose; one that did not
                    // (a full send buffer, a datagram too large) is counted and logged.
                    if c.state == .open { datagramNotSent(c, error) }
                }
            } else {
                output.withUnsafeBytes { write(c, $0) }
            }
        }
        endCallback(c, action)
        return c
    }

    /// The socket options of `Options`, validated there; a failure here (the kernel refusing a
    /// value) is logged, rate-limited, and the connection served without that option.
    private final func applySocketOptions(_ c: Connection, tcp: Bool) {
        do {
            if tcp {
                if options.tcpNoDelay { try c.setNoDelay(true) }
                if let k = options.tcpKeepAlive {
                    try c.setKeepAlive(k, interval: options.tcpKeepAliveInterval, count: options.tcpKeepAliveCount)
                }
            }
            if let b = options.socketReceiveBuffer { try c.setReceiveBuffer(b) }
            if let b = options.socketSendBuffer { try c.setSendBuffer(b) }
        } catch {
            if let n = socketOptionTrouble.occurrence() {
                var metadata = connectionMetadata(c)
                metadata["error"] = "\(error)"
                metadata["occurrences"] = "\(n)"
                logger.warning("a socket option from Options was refused for an accepted connection", metadata: metadata)
            }
        }
    }
}

extension LoadBalancing {
    /// The index in `loops` of the loop to take a connection with `remote`; `nextInTurn` gives
    /// the round-robin choice (the caller keeps the counter).
    func pick(among loops: [LoopInbox], for remote: SocketAddress, nextInTurn: () -> Int) -> Int {
        switch self {
        case .roundRobin:
            return nextInTurn()
        case .leastConnections:
            var best = 0
            var bestCount = Int.max
            for (i, p) in loops.enumerated() {
                let n = p.connectionCount.load(ordering: .relaxed)
                if n < bestCount { best = i; bestCount = n }
            }
            return best
        case .sourceAddressHash:
            var h: UInt64 = 14_695_981_039_346_656_037
            for b in remote.host.utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
            return Int(h % UInt64(loops.count))
        }
    }
}
