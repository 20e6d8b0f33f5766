#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A system call failed: which call, and its `errno`.
///
/// `description` reads like `"epoll_ctl(ADD fd 7): Bad file descriptor (errno 9)"`.
/// Match a specific errno with `catch let e as SystemError where e.errno == EAGAIN`.
public struct SystemError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The call that failed, with any context worth printing (`"bind(127.0.0.1:80)"`).
    public var call: String
    /// The `errno` it left.
    public var errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    /// The C library's text for `errno`.
    public var reason: String {
        guard let s = strerror(errno) else { return "errno \(errno)" }
        return String(cString: s)
    }

    public var description: String { "\(call): \(reason) (errno \(errno))" }
}

/// What a poller reports when it is used against its contract or asked for what it lacks.
public enum PollerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The backend cannot do this (e.g. edge-triggered on a backend without it).
    case unsupported(backend: String, feature: String)
    /// `register` for a descriptor that is already registered.
    case alreadyRegistered(fd: Int32)
    /// `modify` or `deregister` for a descriptor that is not registered.
    case notRegistered(fd: Int32)
    /// The descriptor cannot be watched (negative, or beyond what the backend handles).
    case invalidDescriptor(fd: Int32)
    /// The poller was closed.
    case closed
    /// The backend could not be set up: which backend and why.
    case unavailable(backend: String, reason: String)

    public var description: String {
        switch self {
        case .unsupported(let b, let f): return "poller \(b) does not support \(f)"
        case .alreadyRegistered(let fd): return "fd \(fd) is already registered with this poller; deregister it first"
        case .notRegistered(let fd): return "fd \(fd) is not registered with this poller"
        case .invalidDescriptor(let fd): return "fd \(fd) cannot be watched"
        case .closed: return "the poller is closed"
        case .unavailable(let b, let r): return "poller \(b) is unavailable: \(r)"
        }
    }
}
