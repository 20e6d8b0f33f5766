/// What one event loop has done since it started: counters kept in plain loop-local integers
/// (no atomics, no locks, nothing allocated on the hot path), read on the loop's thread by
/// `EventLoopHandle.statistics()`. The `GNetMetrics` product publishes them through
/// swift-metrics.
public struct LoopStatistics: Sendable, Hashable {
    /// Connections accepted from this loop's listeners or handed to it by the acceptor.
    public var accepted = 0
    /// Connections dialled or enrolled onto this loop that opened.
    public var dialled = 0
    /// Connections open now.
    public var open = 0
    /// Connections closed in order (no error in `onClose`).
    public var closedOrderly = 0
    /// Connections closed by a socket error (a reset by the peer, a failed send).
    public var closedByError = 0
    /// Connections closed by a timeout: idle (`GNetError.idleTimeout`), a drain that made no
    /// progress (`.closeTimeout`), the engine's shutdown deadline (`.shutdownTimeout`).
    public var closedByTimeout = 0
    /// Connections aborted with a reset for a limit (`.outboundLimitExceeded`), by
    /// `Connection.abort`, or by `Engine.stop(.immediately)` (`.stoppedImmediately`).
    public var aborted = 0
    /// Bytes read from sockets (and delivered to `onTraffic`).
    public var bytesRead = 0
    /// Bytes the sockets took.
    public var bytesWritten = 0
    /// Datagrams received on this loop's datagram sockets and handed to `onTraffic` (their
    /// bytes count in `bytesRead`).
    public var datagramsReceived = 0
    /// Datagrams sent from this loop's datagram sockets (their bytes count in `bytesWritten`).
    public var datagramsSent = 0
    /// Datagrams dropped as larger than `Options.readBufferCapacity` (`onTruncatedDatagram`).
    public var datagramsTruncated = 0
    /// Datagrams written during a receive batch that the kernel refused to send.
    public var datagramsUnsent = 0
    /// Times a listener paused accepting because descriptors or memory ran out, or it failed.
    public var acceptBackoffs = 0
    /// Turns of the loop: one wait for readiness and the work after it.
    public var iterations = 0
    /// Time the loop spent outside its wait for readiness — in handlers, system calls and the
    /// engine's own work — when `Options.measureLoopTime` is on (zero otherwise). Its growth
    /// over an interval, divided by the interval, is the loop's utilisation: a loop near 100%
    /// is saturated or stalled by a handler.
    public var busyTime = Duration.zero

    public init() {}

    /// All closes together.
    public var closed: Int { closedOrderly + closedByError + closedByTimeout + aborted }
}

extension EventLoop {
    /// Counts a connection's close by what `onClose` is told.
    final func countClose(_ error: (any Error)?) {
        guard let error else {
            stats.closedOrderly += 1
            return
        }
        switch error as? GNetError {
        case .idleTimeout?, .closeTimeout?, .shutdownTimeout?: stats.closedByTimeout += 1
        case .outboundLimitExceeded?, .connectionClosed?, .misuse?, .stoppedImmediately?: stats.aborted += 1
        default: stats.closedByError += 1
        }
    }
}
