/// A readiness notifier owned by one event loop: the seam between the engine and the OS.
///
/// ## Thread rule
/// A poller is confined to the thread that runs its loop: every method except those of the
/// waker it hands out (`makeWaker()`) must be called from that one thread. Types conforming to
/// it are deliberately not `Sendable`. The waker is the only door from other threads.
///
/// ## Semantics every backend gives (the conformance suite checks each one)
/// - **Level-triggered** by default: a descriptor that stays readable (or writable) is reported
///   again by the next `wait`. Edge-triggered is opt-in (`PollTrigger.edge`); a backend that
///   cannot do it throws `PollerError.unsupported`.
/// - Reported events are intersected with the *current* interest, plus `reset` and `error`,
///   which are always reported. `readEOF` comes only with read interest: a registration that
///   wants only write readiness must not be woken, again and again, by a peer's EOF it is not
///   reading. **Spurious events are allowed** — a caller must
///   tolerate a `read` event whose read returns `EAGAIN` — but **no event is lost**: readiness
///   that exists when `wait` is called, or arises during it, is reported by it or a later wait.
/// - After `deregister`, no event of that registration is reported, even if the descriptor is
///   closed and its number reused by a new registration with another token.
/// - `wakeup()` on the waker, from any thread, makes a blocked or future `wait` return promptly;
///   many wakeups before a wait coalesce into one return. A wakeup is not reported to `body`.
/// - Timeouts are honoured to within a millisecond or two; `.now` never blocks.
/// - Failures are thrown as `PollerError` or `SystemError`, never a crash.
///
/// A descriptor is registered at most once at a time; registering it again without
/// deregistering is `PollerError.alreadyRegistered` where the backend can tell.
public protocol Poller: AnyObject {
    /// The backend's name as users select it: `"epoll"`, `"libevent"`, `"dispatch"`.
    static var name: String { get }

    /// What this instance can do, for callers that adapt (edge-triggered, its OS method).
    var capabilities: PollerCapabilities { get }

    /// Starts watching `fd` for `interest` (a subset of `[.read, .write]`, possibly empty).
    func register(_ fd: Int32, interest: IOEvents, token: PollToken, trigger: PollTrigger) throws

    /// Changes the interest of a registered `fd` from `old` (what was last set) to `new`.
    /// `token` may carry a new generation.
    func modify(_ fd: Int32, from old: IOEvents, to new: IOEvents, token: PollToken) throws

    /// Stops watching `fd`, whose last interest was `old`. Call it before closing `fd`.
    func deregister(_ fd: Int32, interest old: IOEvents) throws

    /// Blocks per `timeout` (returning early on a wakeup), then calls `body` once per ready
    /// registration with its token and events, and returns how many it reported.
    /// `body` may register, modify and deregister descriptors, including the one it was called for.
    func wait(_ timeout: PollTimeout, _ body: (PollToken, IOEvents) throws -> Void) throws -> Int

    /// The waker of this poller. Every call returns a handle to the same wake-up channel.
    func makeWaker() throws -> any PollerWaker

    /// Releases the backend's resources. Registered descriptors are not closed; the poller must
    /// not be used afterwards. Calling it twice is harmless.
    func close() throws
}

extension Poller {
    /// Registers `fd` level-triggered.
    @inlinable
    public func register(_ fd: Int32, interest: IOEvents, token: PollToken) throws {
        try register(fd, interest: interest, token: token, trigger: .level)
    }
}

/// The only part of a poller that may be used from any thread.
public protocol PollerWaker: Sendable {
    /// Makes the poller's current or next `wait` return promptly. Safe from any thread, cheap,
    /// and coalescing: callers may invoke it as often as they like.
    func wakeup() throws
}

/// What a poller instance supports.
public struct PollerCapabilities: Sendable, Hashable {
    /// Whether `PollTrigger.edge` is accepted.
    public var edgeTriggered: Bool
    /// The OS mechanism underneath, e.g. `"epoll"`, `"poll"`, `"select"`, `"kqueue"`, `"dispatch"`.
    public var method: String

    public init(edgeTriggered: Bool, method: String) {
        self.edgeTriggered = edgeTriggered
        self.method = method
    }
}
