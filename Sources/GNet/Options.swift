import Logging

/// How an acceptor shared by several loops picks the loop for a new connection.
/// Used when `reusePort` is off (or the address is a Unix socket) and there is more than one loop.
public enum LoadBalancing: String, Sendable, Hashable, CaseIterable {
    /// Loops in turn.
    case roundRobin
    /// The loop with the fewest open connections.
    case leastConnections
    /// A hash of the remote address, so one client always lands on the same loop.
    case sourceAddressHash
}

/// Engine settings, with gnet's defaults. A plain value: build it anywhere, pass it to `Engine`.
public struct Options: Sendable {
    /// Event loops, one thread and one poller each. Default 1; `Options.coreCount` is one per core.
    /// Must be at least 1.
    public var loops: Int = 1

    /// With more than one loop, give every loop its own listener with `SO_REUSEPORT`, and let the
    /// kernel spread connections. Default false, as in gnet: one acceptor on the first loop hands
    /// connections out by `loadBalancing`, and a second server on the same port fails to start
    /// with `GNetError.addressInUse`. When true, any other process of the same user that also sets `SO_REUSEPORT`
    /// (another instance with this option, for one) may bind the same port and silently take
    /// part of its connections. Unix-socket addresses always use the shared acceptor.
    public var reusePort: Bool = false

    /// How the shared acceptor picks a loop (see `reusePort`).
    public var loadBalancing: LoadBalancing = .roundRobin

    /// The poller backend. `nil` picks `PollerKind.platformDefault`; the `GNET_POLLER`
    /// environment variable overrides both.
    public var poller: PollerKind? = nil

    /// Bytes one read may take, the size of each loop's shared read buffer. Default 64 KiB.
    /// Also the largest datagram a `udp` socket receives whole (64 KiB fits any UDP datagram);
    /// a larger one is dropped and reported (`EventHandler.onTruncatedDatagram`), never passed
    /// on cut short.
    public var readBufferCapacity: Int = 64 * 1024

    // MARK: Datagrams

    /// The most datagrams a loop receives from one `udp` socket per readiness (one `recvmmsg`),
    /// before it serves everything else that is ready. Default 32; from 1 to 1024. A loop with
    /// a datagram socket holds this many slots of `readBufferCapacity` bytes (2 MiB of address
    /// space by default, touched only as far as datagrams fill them; never more than 64 MiB:
    /// with a larger `readBufferCapacity` the batch is smaller).
    public var datagramBatchSize: Int = 32

    /// The interface on which `udp` addresses that are multicast groups (224.0.0.0/4,
    /// ff00::/8) are joined: a name (`eth0`) or an index (`"2"`). Default nil: the address's
    /// zone (`[ff02::1%eth0]`) if it has one, else the kernel picks the interface from its routes (which may have no multicast route; then the
    /// engine fails to start and says so). An unknown name fails the start with
    /// `GNetError.invalidOption`.
    public var multicastInterface: String? = nil

    /// `TCP_NODELAY` on accepted connections. Default true, as in gnet.
    public var tcpNoDelay: Bool = true

    /// TCP keep-alive: how long a connection is idle before the first probe; nil leaves the
    /// system default (off). Whole seconds.
    public var tcpKeepAlive: Duration? = nil

    /// With `tcpKeepAlive`: the time between probes (`TCP_KEEPINTVL`). nil: the same as
    /// `tcpKeepAlive`, as in gnet.
    public var tcpKeepAliveInterval: Duration? = nil

    /// With `tcpKeepAlive`: unanswered probes before the connection is dropped
    /// (`TCP_KEEPCNT`, 1 to 127). nil leaves the kernel's (9).
    public var tcpKeepAliveCount: Int? = nil

    /// `SO_REUSEADDR` on TCP listeners, so a restarted server binds while old connections sit
    /// in `TIME_WAIT`. Default true, as in gnet.
    public var reuseAddress: Bool = true

    /// Bind listeners and dialled sockets to this network interface (`SO_BINDTODEVICE`,
    /// e.g. "eth0"): only packets through it reach them. nil: any interface. Needs
    /// `CAP_NET_RAW` on kernels before 5.7. An unknown name fails `start()` (or the dial).
    public var bindToDevice: String? = nil

    /// `SO_RCVBUF` / `SO_SNDBUF` for accepted sockets and `udp` sockets; nil leaves the
    /// kernel's choice.
    public var socketReceiveBuffer: Int? = nil
    public var socketSendBuffer: Int? = nil

    /// The listen backlog. Default 1024 (the kernel clamps it to `somaxconn`).
    public var backlog: Int = 1024

    /// Call `onTick` periodically on the first loop. Default off.
    public var ticker: Bool = false

    /// Register connections edge-triggered (gnet's `EdgeTriggeredIO`): the poller reports a
    /// socket once per change, and the loop reads it until the kernel has no more, up to
    /// `edgeTriggeredReadBudget` bytes per turn, then serves the loop's other connections before
    /// reading on. Fewer wakeups for connections that stream; the same behaviour otherwise.
    /// Only backends that can (epoll; libevent on epoll or kqueue) take it: `Engine.start()` throws `GNetError.unsupported`
    /// on the others. Default false (level-triggered).
    public var edgeTriggered: Bool = false

    /// With `edgeTriggered`, the most bytes one connection may read per loop turn, so a
    /// fire-hose connection cannot starve the others on its loop. Default 1 MiB (gnet's
    /// `EdgeTriggeredIOChunk`). At least `readBufferCapacity`.
    public var edgeTriggeredReadBudget: Int = 1 << 20

    /// Time each loop's turns (two clock reads a turn), so that `LoopStatistics.busyTime`
    /// (and the `GNetMetrics` loop utilisation) says how much of its time a loop spends outside
    /// its wait. Default false: `busyTime` stays zero. Every other statistic is always kept.
    public var measureLoopTime: Bool = false

    // MARK: Flow control

    /// Queued output (bytes the socket has not taken) above which a connection turns
    /// unwritable: `Connection.isWritable` becomes false, `onWritabilityChanged` is called, and
    /// the loop stops reading from the connection until its output drains to
    /// `outboundLowWatermark`. Default 64 KiB.
    public var outboundHighWatermark: Int = 64 * 1024

    /// Queued output at or below which an unwritable connection turns writable again (and
    /// reading resumes). Default 32 KiB. Must not exceed `outboundHighWatermark`.
    public var outboundLowWatermark: Int = 32 * 1024

    /// Unconsumed input (bytes the handler left buffered) at or above which the loop stops
    /// reading from a connection, until the handler consumes some. The peer is held back by
    /// TCP; nothing is dropped. A connection buffers at most this plus one read
    /// (`readBufferCapacity`). Raise it above the largest frame a handler waits for whole.
    /// Default 1 MiB.
    public var inboundLimit: Int = 1 << 20

    /// The most output that writes from other threads (`ConnectionHandle.write`) may hold:
    /// per connection, its queued output; per loop, the bytes handed over and not yet taken
    /// by the loop. A handle write past either limit completes with
    /// `GNetError.outboundLimitExceeded`, and the connection is aborted (the peer sees a
    /// reset, never a stream with a hole in it; `onClose` gets the same error). Default 16 MiB.
    public var asyncWriteLimit: Int = 16 << 20

    /// Keep a connection open after the peer shuts down its sending side (`SHUT_WR`): the
    /// handler is told by `onInputClosed`, reading stops, and writing goes on until the handler
    /// (or a `ConnectionHandle`) closes it. Default false: the peer's EOF closes the connection
    /// once queued output is sent.
    public var allowHalfClosure: Bool = false

    // MARK: Idle timeouts

    /// Close a connection on which no bytes were read or sent for this long: `onIdle` is
    /// called with `.readWrite` first (its default closes; `onClose` then gets
    /// `GNetError.idleTimeout(.readWrite)`). Checked on time by one timer per connection, reset
    /// by a stamp on each read and send. `Connection.setIdleTimeout` overrides it per
    /// connection. Default nil: off.
    public var idleTimeout: Duration? = nil

    /// As `idleTimeout`, counting only bytes read from the peer (`IdleKind.read`). Default nil.
    public var readIdleTimeout: Duration? = nil

    /// As `idleTimeout`, counting only bytes sent to the peer (`IdleKind.write`). Default nil.
    public var writeIdleTimeout: Duration? = nil

    // MARK: Closing and stopping

    /// How long a closing connection may go without any progress in sending its queued output
    /// before it is aborted with `GNetError.closeTimeout` (the peer sees a reset). This bounds
    /// lack of progress, not the time to send: a peer that keeps reading, however slowly, gets
    /// every byte. Default 2 s.
    public var closeTimeout: Duration = .seconds(2)

    /// How long a closed connection waits, after its output was sent and its write side shut
    /// down, for the peer's EOF while discarding unread input (so the kernel does not answer
    /// that input with a reset that destroys the reply in flight). Then it closes anyway.
    /// Default 2 s.
    public var lingerTimeout: Duration = .seconds(2)

    /// How long a graceful stop waits for output to flush before closing connections anyway.
    public var shutdownTimeout: Duration = .seconds(5)

    /// Where the engine logs (boot, backend, accept trouble, stop).
    public var logger: Logger = Logger(label: "gnet")

    /// The layer of accepted connections (`layerFactory`, set by GNetTLS's `tls`).
    var acceptedLayer: (any ConnectionLayerFactory)? = nil

    public init() {}

    /// The number of cores this process may run on.
    public static var coreCount: Int { System.coreCount }

    /// Throws `GNetError.invalidOption` naming the first setting that cannot work.
    public func validate() throws(GNetError) {
        if loops < 1 {
            throw .invalidOption(name: "loops", reason: "must be at least 1, got \(loops)")
        }
        if loops > 1024 {
            throw .invalidOption(name: "loops", reason: "must be at most 1024, got \(loops)")
        }
        if readBufferCapacity < 512 || readBufferCapacity > 64 * 1024 * 1024 {
            throw .invalidOption(name: "readBufferCapacity", reason: "must be from 512 bytes to 64 MiB, got \(readBufferCapacity)")
        }
        if datagramBatchSize < 1 || datagramBatchSize > 1024 {
            throw .invalidOption(name: "datagramBatchSize", reason: "must be from 1 to 1024, got \(datagramBatchSize)")
        }
        if edgeTriggeredReadBudget < readBufferCapacity {
            throw .invalidOption(
                name: "edgeTriggeredReadBudget",
                reason: "must be at least readBufferCapacity (\(readBufferCapacity)), got \(edgeTriggeredReadBudget)")
        }
        if backlog < 1 {
            throw .invalidOption(name: "backlog", reason: "must be at least 1, got \(backlog)")
        }
        if let k = tcpKeepAlive, k < .seconds(1) {
            throw .invalidOption(name: "tcpKeepAlive", reason: "must be at least 1 second, got \(k)")
        }
        // Linux refuses TCP_KEEPIDLE and TCP_KEEPINTVL above 32767 s (MAX_TCP_KEEPIDLE, tcp(7));
        // whole seconds are set, so anything below 32768 s fits.
        if let k = tcpKeepAlive, k >= .seconds(32_768) {
            throw .invalidOption(name: "tcpKeepAlive", reason: "must be at most 32767 seconds (the kernel's limit), got \(k)")
        }
        if let k = tcpKeepAliveInterval, k < .seconds(1) || k >= .seconds(32_768) {
            throw .invalidOption(name: "tcpKeepAliveInterval", reason: "must be from 1 to 32767 seconds (the kernel's limit), got \(k)")
        }
        if let n = tcpKeepAliveCount, n < 1 || n > 127 {
            throw .invalidOption(name: "tcpKeepAliveCount", reason: "must be from 1 to 127 probes (the kernel's limit), got \(n)")
        }
        if (tcpKeepAliveInterval != nil || tcpKeepAliveCount != nil) && tcpKeepAlive == nil {
            throw .invalidOption(name: "tcpKeepAlive", reason: "tcpKeepAliveInterval and tcpKeepAliveCount need tcpKeepAlive (the idle time) set too")
        }
        if let d = bindToDevice, d.isEmpty || d.utf8.count >= 16 || d.contains("/") {
            throw .invalidOption(name: "bindToDevice", reason: "must be an interface name of 1 to 15 characters, got '\(d)'")
        }
        // SO_RCVBUF and SO_SNDBUF take a C int.
        for (name, value) in [("socketReceiveBuffer", socketReceiveBuffer), ("socketSendBuffer", socketSendBuffer)] {
            guard let b = value else { continue }
            if b < 1 { throw .invalidOption(name: name, reason: "must be positive, got \(b)") }
            if b > Int(Int32.max) {
                throw .invalidOption(name: name, reason: "must be at most \(Int32.max) bytes (a C int), got \(b)")
            }
        }
        if outboundHighWatermark < 1 {
            throw .invalidOption(name: "outboundHighWatermark", reason: "must be at least 1 byte, got \(outboundHighWatermark)")
        }
        if outboundLowWatermark < 0 || outboundLowWatermark > outboundHighWatermark {
            throw .invalidOption(
                name: "outboundLowWatermark",
                reason: "must be from 0 to outboundHighWatermark (\(outboundHighWatermark)), got \(outboundLowWatermark)")
        }
        if inboundLimit < 1 {
            throw .invalidOption(name: "inboundLimit", reason: "must be at least 1 byte, got \(inboundLimit)")
        }
        if asyncWriteLimit < 1 {
            throw .invalidOption(name: "asyncWriteLimit", reason: "must be at least 1 byte, got \(asyncWriteLimit)")
        }
        for (name, value) in [("idleTimeout", idleTimeout), ("readIdleTimeout", readIdleTimeout), ("writeIdleTimeout", writeIdleTimeout)] {
            if let d = value, d <= .zero {
                throw .invalidOption(name: name, reason: "must be positive (nil turns it off), got \(d)")
            }
        }
        if lingerTimeout < .zero {
            throw .invalidOption(name: "lingerTimeout", reason: "must not be negative, got \(lingerTimeout)")
        }
        if closeTimeout < .zero {
            throw .invalidOption(name: "closeTimeout", reason: "must not be negative, got \(closeTimeout)")
        }
        if shutdownTimeout < .zero {
            throw .invalidOption(name: "shutdownTimeout", reason: "must not be negative, got \(shutdownTimeout)")
        }
    }
}
