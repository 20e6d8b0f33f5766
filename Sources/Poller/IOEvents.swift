/// A normalized set of I/O interest or readiness, shared by every backend.
///
/// The same type states what a registration is interested in (`read`, `write`) and what a
/// wait reported (any member). Backends convert their OS bits privately; no `EPOLL*`,
/// `EV_*` or Dispatch constant ever leaves a backend.
///
/// - `read`: bytes (or a pending connection, for a listener) can be read without blocking.
/// - `write`: the socket accepts bytes without blocking.
/// - `readEOF`: the peer shut down its side for writing; reads drain what is left, then return 0.
/// - `reset`: the connection is gone (hang-up or reset); reads and writes will fail.
/// - `error`: an error is pending on the descriptor (`SO_ERROR` tells which).
///
/// `reset` and `error` are always reported when they happen, and `readEOF` whenever read
/// interest is on; asking for them in an interest is allowed and has no effect.
public struct IOEvents: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let read = IOEvents(rawValue: 1 << 0)
    public static let write = IOEvents(rawValue: 1 << 1)
    public static let readEOF = IOEvents(rawValue: 1 << 2)
    public static let reset = IOEvents(rawValue: 1 << 3)
    public static let error = IOEvents(rawValue: 1 << 4)

    /// The members that may appear in an interest: `read` and `write`.
    public static let interestMask: IOEvents = [.read, .write]

    /// Only the interest members of `self`.
    @inlinable public var interest: IOEvents { intersection(.interestMask) }

    public var description: String {
        var names: [String] = []
        if contains(.read) { names.append("read") }
        if contains(.write) { names.append("write") }
        if contains(.readEOF) { names.append("readEOF") }
        if contains(.reset) { names.append("reset") }
        if contains(.error) { names.append("error") }
        return "[" + names.joined(separator: ",") + "]"
    }
}

/// Whether readiness is reported while it lasts (level) or once per change (edge).
public enum PollTrigger: Sendable, Hashable {
    /// Reported on every wait while the condition holds. Every backend supports it; the default.
    case level
    /// Reported when the condition becomes true; the caller must drain until `EAGAIN`.
    /// Backends without it throw `PollerError.unsupported` from `register`.
    case edge
}
