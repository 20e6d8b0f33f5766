import Poller

/// Everything the engine reports as going wrong. Each case says what was wrong and what to do.
///
/// Poller failures arrive as `PollerError`, failed system calls as `SystemError`; both can also
/// reach `onClose` as the reason a connection ended.
public enum GNetError: Error, Sendable, Hashable, CustomStringConvertible {
    /// An address string could not be understood.
    case invalidAddress(String, reason: String)
    /// The address is taken by another socket.
    case addressInUse(String)
    /// An option has a value the engine cannot use.
    case invalidOption(name: String, reason: String)
    /// The network scheme is known but not served by this engine yet.
    case unsupportedNetwork(String)
    /// The chosen poller is unknown or cannot run here.
    case pollerUnavailable(name: String, reason: String)
    /// The operation needs a running engine (or one that has not run before).
    case engineState(String)
    /// The connection was closed before the operation could be done.
    case connectionClosed
    /// The loop had ended (its engine stopped) before it could take the work
    /// (`EventLoopHandle.submit`).
    case engineStopped
    /// The engine's shutdown deadline passed before this connection finished closing; queued
    /// output, if any, was abandoned with a reset.
    case shutdownTimeout
    /// The engine was stopped immediately (`Engine.stop(.immediately)`, or the task of a
    /// service running it was cancelled): the connection was aborted with a reset, and output
    /// still queued was abandoned.
    case stoppedImmediately
    /// A closing connection's output made no progress for `Options.closeTimeout` (the peer
    /// stopped reading): the connection was aborted with a reset, and `unsent` bytes were lost.
    case closeTimeout(unsent: Int)
    /// A write from another thread would have queued more than `Options.asyncWriteLimit`
    /// bytes: the write failed and the connection was aborted with a reset.
    case outboundLimitExceeded(limit: Int)
    /// The connection was idle (no bytes of the kind said) for its idle timeout
    /// (`Options.idleTimeout`, `Connection.setIdleTimeout` and their read and write variants),
    /// and `onIdle` closed it (the default).
    case idleTimeout(IdleKind)
    /// The connection was used against its rules (what was wrong is said).
    case misuse(String)
    /// The engine's poller cannot do what the options ask (`feature`), e.g. edge-triggered I/O
    /// on a backend without it.
    case unsupported(poller: String, feature: String)
    /// A dial found nothing listening at the address (the peer refused the connection, or no
    /// Unix socket exists at the path).
    case connectionRefused(String)
    /// A dial's address cannot be reached from here (no route to the network or host); the
    /// system's error says which.
    case unreachable(String, SystemError)
    /// A dial did not connect within its timeout (`timeout`; nil when the system's own
    /// connect timeout gave up first): nothing answered, or the listener's backlog is full.
    case connectTimeout(String, timeout: Duration?)

    public var description: String {
        switch self {
        case .invalidAddress(let a, let r):
            return "invalid address '\(a)': \(r); use forms like tcp://127.0.0.1:9000, tcp6://[::1]:9000, udp://127.0.0.1:9001, unix:///tmp/s.sock"
        case .addressInUse(let a):
            return "address \(a) is already in use; stop the other server or choose another port (port 0 picks a free one)"
        case .invalidOption(let n, let r):
            return "invalid option \(n): \(r)"
        case .unsupportedNetwork(let s):
            return "network '\(s)' is not supported yet; use tcp, tcp4, tcp6, udp, udp4, udp6, unix or unixgram"
        case .pollerUnavailable(let n, let r):
            return "poller '\(n)' is unavailable: \(r)"
        case .engineState(let s):
            return s
        case .connectionClosed:
            return "the connection is closed"
        case .engineStopped:
            return "the event loop has ended because its engine stopped; it takes no more work"
        case .shutdownTimeout:
            return "the engine's shutdown deadline passed before the connection's output was flushed"
        case .stoppedImmediately:
            return "the engine was stopped immediately (Engine.stop(.immediately) or a cancelled task); the connection was aborted with a reset"
        case .closeTimeout(let unsent):
            return "the peer read nothing for Options.closeTimeout while the connection was closing; aborted with \(unsent) bytes unsent (raise closeTimeout if peers stall for longer)"
        case .outboundLimitExceeded(let limit):
            return "writes from other threads would queue more than Options.asyncWriteLimit (\(limit) bytes) for a connection whose peer is not reading; the connection was aborted (watch ConnectionHandle completions, or raise the limit)"
        case .idleTimeout(let kind):
            return "the connection was closed by its \(kind) timeout (no bytes \(kind == .read ? "read" : kind == .write ? "sent" : "either way") for that long); raise or turn off the timeout, or handle onIdle"
        case .misuse(let what):
            return what
        case .unsupported(let poller, let feature):
            return "poller \(poller) cannot do \(feature); choose a backend that can (epoll, or libevent on epoll or kqueue), or turn the option off"
        case .connectionRefused(let a):
            return "connection to \(a) refused: nothing listens there; start the server first, or check the address"
        case .unreachable(let a, let e):
            return "\(a) is unreachable from here (\(e.reason)); check the address and the network's routes"
        case .connectTimeout(let a, let t):
            let within = t.map { " within \($0)" } ?? ""
            return "connecting to \(a) timed out\(within): nothing answered or its backlog is full; check that the server accepts, or raise the dial timeout"
        }
    }
}
