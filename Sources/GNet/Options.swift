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
    public var readBufferCapacity: Int = 64 * 1024

    /// `TCP_NODELAY` on accepted connections. Default true, as in gnet.
    public var tcpNoDelay: Bool = true

    /// TCP keep-alive idle time; nil leaves the system default (off).
    public var tcpKeepAlive: Duration? = nil

    /// `SO_RCVBUF` / `SO_SNDBUF` for accepted sockets; nil leaves the kernel's choice.
    public var socketReceiveBuffer: Int? = nil
    public var socketSendBuffer: Int? = nil

    /// The listen backlog. Default 1024 (the kernel clamps it to `somaxconn`).
    public var backlog: Int = 1024

    /// Call `onTick` periodically on the first loop. Default off.
    public var ticker: Bool = false

    /// How long a closing connection may take to flush its output, and (when unread input was
    /// left) to see the peer's end after its own, before it is closed anyway. Default 2 s.
    public var closeTimeout: Duration = .seconds(2)

    /// How long a graceful stop waits for output to flush before closing connections anyway.
    public var shutdownTimeout: Duration = .seconds(5)

    /// Where the engine logs (boot, backend, accept trouble, stop).
    public var logger: Logger = Logger(label: "gnet")

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
        if backlog < 1 {
            throw .invalidOption(name: "backlog", reason: "must be at least 1, got \(backlog)")
        }
        if let k = tcpKeepAlive, k < .seconds(1) {
            throw .invalidOption(name: "tcpKeepAlive", reason: "must be at least 1 second, got \(k)")
        }
        if let b = socketReceiveBuffer, b < 1 { throw .invalidOption(name: "socketReceiveBuffer", reason: "must be positive, got \(b)") }
        if let b = socketSendBuffer, b < 1 { throw .invalidOption(name: "socketSendBuffer", reason: "must be positive, got \(b)") }
        if closeTimeout < .zero {
            throw .invalidOption(name: "closeTimeout", reason: "must not be negative, got \(closeTimeout)")
        }
        if shutdownTimeout < .zero {
            throw .invalidOption(name: "shutdownTimeout", reason: "must not be negative, got \(shutdownTimeout)")
        }
    }
}
