import CLibevent
import Poller
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// libevent 2.1 as a `Poller`: one `event_base` per poller, running whichever OS method the base
/// was given (`epoll`, `poll` or `select` on Linux; `kqueue` on the BSDs and macOS).
///
/// ## Thread rule
/// Confined to the thread that runs its loop (see `Poller`); only the waker from `makeWaker()`
/// may be used from other threads.
///
/// ## Shape
/// Each registration owns two persistent events on the same descriptor, one for `read` and one
/// for `write`, added and deleted as the interest changes. Two events rather than one whose flags
/// are rewritten: turning write interest on or off then touches only the write event, which
/// libevent turns into a single `EPOLL_CTL_MOD` instead of a `DEL` plus an `ADD`.
///
/// One `wait`:
///
///     wait(timeout)
///      ├─ .after: add the one-shot `timer` event     .now: EVLOOP_NONBLOCK
///      ├─ event_base_loop(EVLOOP_ONCE)  — dispatch (epoll_wait / poll / select), then callbacks:
///      │     onIO(registration, what)  first time this pass → ready.append(registration)
///      │                                always             → registration.collected ∪= what
///      │     onWake                    clears the waker's pending flag; never reaches `body`
///      │     timer                     nothing: being active is what ends the loop
///      └─ deliver: for each registration in `ready` still live,
///                  body(token, collected ∩ (interest ∪ [readEOF, reset, error]))
///
/// A registration deregistered while `ready` is being delivered is marked dead and parked in
/// `retired` until the pass ends, so an event already collected for it is dropped, and a new
/// registration of the same descriptor in the same pass gets a fresh record.
///
/// ## What libevent reports
/// libevent folds hang-up and error into "readable and writable", so `reset` and `error` are
/// never reported by name: they surface as `read`/`write` (within the interest), and the
/// following read or write returns the error. `readEOF` is reported where the method supports
/// `EV_CLOSED` (epoll's `EPOLLRDHUP`) and read interest is on; elsewhere a read returning 0
/// reveals the end of the stream. With an empty interest nothing is watched, so nothing is
/// reported until interest returns.
public final class LibeventPoller: Poller {
    public static let name = "libevent"

    /// The methods this build of libevent offers, best first (`["epoll", "poll", "select"]` on
    /// Linux). Any thread.
    public static var availableMethods: [String] { libeventMethods }

    /// The events reported whatever the interest.
    /// What a registration with `interest` may be told: its interest, `reset` and `error`
    /// always, and `readEOF` only with read interest (the contract in `Poller`).
    @inline(__always)
    private static func reportable(for interest: IOEvents) -> IOEvents {
        interest.contains(.read) ? interest.union([.readEOF, .reset, .error]) : interest.union([.reset, .error])
    }

    public let capabilities: PollerCapabilities

    // MARK: Any thread (through the waker)

    private let wake: WakeChannel

    // MARK: Loop thread only

    private var base: OpaquePointer?
    /// A one-shot timer event bounding `wait(.after(_:))`.
    private let timer: OpaquePointer
    /// `EV_CLOSED` on read events: the method detects a peer's shutdown by itself.
    private let earlyClose: Bool
    /// Whether `register` checks the descriptor itself: `poll` and `select` accept any number at
    /// `event_add` and only fail (or spin on `POLLNVAL`) later, inside the wait.
    private let checksDescriptors: Bool

    private var registrations: [Int32: Registration] = [:]
    /// Records free for reuse, events deleted: `register` costs no allocation in steady state.
    private var spare: [Registration] = []
    /// Deregistered during the current delivery pass; recycled when it ends.
    private var retired: [Registration] = []
    /// Records whose events libevent failed to delete: never reused, freed at `close`.
    private var broken: [Registration] = []
    /// Registrations with events collected in the current pass, each once. Unretained: every
    /// record in it is held by `registrations`, `retired` or `broken` until the pass ends.
    private var ready: [Unmanaged<Registration>] = []
    private var delivering = false

    /// Makes a poller on a new event base.
    ///
    /// - Parameter method: the OS method to use (one of `availableMethods`), or `nil` for
    ///   libevent's choice (which honours the `EVENT_NO*` environment variables).
    /// - Throws: `PollerError.unavailable` when the method is not offered or the base cannot be
    ///   made.
    public init(method: String? = nil) throws {
        func unavailable(_ why: String) -> PollerError {
            .unavailable(
                backend: Self.name,
                reason: "\(why); available: \(libeventMethods.joined(separator: ", "))")
        }
        guard libeventThreadingReady else { throw unavailable("evthread_use_pthreads failed") }
        if let method, !libeventMethods.contains(method) {
            throw unavailable("method \(method) not available")
        }
        guard let config = event_config_new() else { throw unavailable("event_config_new failed") }
        defer { event_config_free(config) }
        // Without it libevent keeps time with CLOCK_MONOTONIC_COARSE on Linux, one jiffy (4 ms
        // here) coarse, and waits overshoot by ~2.4 ms on median; with it, by ~0.15 ms. The price
        // on epoll is one timerfd_settime per wait.
        event_config_set_flag(config, Int32(EVENT_BASE_FLAG_PRECISE_TIMER.rawValue))
        if let method {
            event_config_set_flag(config, Int32(EVENT_BASE_FLAG_IGNORE_ENV.rawValue))
            for other in libeventMethods where other != method {
                event_config_avoid_method(config, other)
            }
        }
        guard let base = event_base_new_with_config(config) else {
            throw unavailable("method \(method ?? "(default)") could not start an event base")
        }
        let actual = String(cString: event_base_get_method(base))
        guard method == nil || actual == method else {
            event_base_free(base)
            throw unavailable("method \(method ?? "") not available")
        }
        let wake = WakeChannel()
        let timer = event_new(base, -1, 0, { _, _, _ in }, nil)
        let wakeEvent = event_new(
            base, -1, 0, { _, _, arg in LibeventPoller.onWake(arg) },
            Unmanaged.passUnretained(wake).toOpaque())
        guard let timer, let wakeEvent else {
            timer.map { event_free($0) }
            wakeEvent.map { event_free($0) }
            event_base_free(base)
            throw unavailable("event_new failed")
        }
        wake.event = wakeEvent  // before any waker exists
        self.base = base
        self.timer = timer
        self.wake = wake
        self.earlyClose =
            event_base_get_features(base) & Int32(EV_FEATURE_EARLY_CLOSE.rawValue) != 0
        self.checksDescriptors = actual != "epoll"
        // Edge triggering is the method's to give (epoll has it; poll and select do not).
        self.capabilities = PollerCapabilities(
            edgeTriggered: event_base_get_features(base) & Int32(EV_FEATURE_ET.rawValue) != 0, method: actual)
        ready.reserveCapacity(64)
    }

    deinit {
        try? close()
    }

    // MARK: Registrations

    public func register(_ fd: Int32, interest: IOEvents, token: PollToken, trigger: PollTrigger) throws {
        guard let base else { throw PollerError.closed }
        guard trigger == .level || capabilities.edgeTriggered else {
            throw PollerError.unsupported(backend: Self.name, feature: "edge-triggered")
        }
        guard fd >= 0 else { throw PollerError.invalidDescriptor(fd: fd) }
        guard registrations[fd] == nil else { throw PollerError.alreadyRegistered(fd: fd) }
        if checksDescriptors {
            _ = try sysCall("fcntl(fd \(fd), F_GETFD)") { fcntl(fd, F_GETFD) }
        }

        let reg = try spare.popLast() ?? Registration.make(for: self, on: base)
        let arg = Unmanaged.passUnretained(reg).toOpaque()
        // Both events of a descriptor must agree on EV_ET: libevent keeps one kernel
        // registration per descriptor.
        let edge = trigger == .edge ? EV_ET : 0
        let readFlags = EV_READ | EV_PERSIST | (earlyClose ? EV_CLOSED : 0) | edge
        guard
            event_assign(reg.readEvent, base, fd, Int16(readFlags), Self.ioCallback, arg) == 0,
            event_assign(reg.writeEvent, base, fd, Int16(EV_WRITE | EV_PERSIST | edge), Self.ioCallback, arg) == 0
        else {
            spare.append(reg)
            throw SystemError("event_assign(fd \(fd))", errno: EINVAL)
        }
        reg.token = token
        reg.interest = []
        do {
            try apply(interest.interest, to: reg)
        } catch {
            // Whatever was added is deleted again; if even that fails, quarantine the record.
            let readDeleted = event_del(reg.readEvent) == 0
            let writeDeleted = event_del(reg.writeEvent) == 0
            if readDeleted && writeDeleted {
                reg.interest = []
                spare.append(reg)
            } else {
                broken.append(reg)
            }
            throw error
        }
        reg.isLive = true
        registrations[fd] = reg
    }

    public func modify(_ fd: Int32, from old: IOEvents, to new: IOEvents, token: PollToken) throws {
        guard base != nil else { throw PollerError.closed }
        guard let reg = registrations[fd] else { throw PollerError.notRegistered(fd: fd) }
        reg.token = token
        try apply(new.interest, to: reg)
    }

    public func deregister(_ fd: Int32, interest old: IOEvents) throws {
        guard base != nil else { throw PollerError.closed }
        guard let reg = registrations.removeValue(forKey: fd) else {
            throw PollerError.notRegistered(fd: fd)
        }
        reg.isLive = false
        errno = 0
        let readDeleted = event_del(reg.readEvent) == 0
        let writeDeleted = event_del(reg.writeEvent) == 0
        guard readDeleted && writeDeleted else {
            let e = errno
            broken.append(reg)  // libevent may still hold the events: never reuse them
            throw SystemError("event_del(fd \(fd))", errno: e == 0 ? EIO : e)
        }
        reg.interest = []
        if delivering { retired.append(reg) } else { spare.append(reg) }
    }

    /// Adds or deletes the read and write events so the registration watches `new`. On failure
    /// `interest` still tells what is watched.
    private func apply(_ new: IOEvents, to reg: Registration) throws {
        try watch(.read, reg.readEvent, new.contains(.read), reg)
        try watch(.write, reg.writeEvent, new.contains(.write), reg)
    }

    private func watch(_ member: IOEvents, _ event: OpaquePointer, _ on: Bool, _ reg: Registration) throws {
        guard reg.interest.contains(member) != on else { return }
        errno = 0
        let rc = on ? event_add(event, nil) : event_del(event)
        guard rc == 0 else {
            let e = errno
            throw SystemError(
                "\(on ? "event_add" : "event_del")(fd \(reg.token.fd), \(member))",
                errno: e == 0 ? EIO : e)
        }
        if on { reg.interest.insert(member) } else { reg.interest.remove(member) }
    }

    // MARK: Waiting

    public func wait(_ timeout: PollTimeout, _ body: (PollToken, IOEvents) throws -> Void) throws -> Int {
        guard let base else { throw PollerError.closed }
        var flags = EVLOOP_ONCE | EVLOOP_NO_EXIT_ON_EMPTY
        var timerArmed = false
        switch timeout {
        case .block:
            break
        case .now:
            flags |= EVLOOP_NONBLOCK
        case .after(let duration):
            if var tv = Self.timeval(rounding: duration) {
                guard event_add(timer, &tv) == 0 else {
                    throw SystemError("event_add(timeout)", errno: errno == 0 ? EIO : errno)
                }
                timerArmed = true
            } else {
                flags |= EVLOOP_NONBLOCK
            }
        }
        let rc = event_base_loop(base, flags)
        let loopErrno = errno
        if timerArmed { event_del(timer) }
        guard rc >= 0 else {
            _ = try? deliver { _, _ in }  // forget whatever was collected before the failure
            throw SystemError("event_base_loop(\(capabilities.method))", errno: loopErrno)
        }
        return try deliver(body)
    }

    /// Calls `body` for each live registration collected by the last loop, then resets the pass.
    private func deliver(_ body: (PollToken, IOEvents) throws -> Void) throws -> Int {
        if ready.isEmpty { return 0 }
        delivering = true
        var next = 0
        defer {
            // Reached early only when `body` threw: forget the rest of this pass.
            while next < ready.count {
                ready[next].takeUnretainedValue().collected = []
                next += 1
            }
            ready.removeAll(keepingCapacity: true)
            delivering = false
            if !retired.isEmpty {
                if base != nil { spare.append(contentsOf: retired) }
                retired.removeAll(keepingCapacity: true)
            }
        }
        var reported = 0
        while next < ready.count {
            let reg = ready[next].takeUnretainedValue()
            next += 1
            let collected = reg.collected
            reg.collected = []
            guard reg.isLive else { continue }
            let events = collected.intersection(Self.reportable(for: reg.interest))
            if events.isEmpty { continue }
            reported += 1
            try body(reg.token, events)
        }
        return reported
    }

    /// The callback of every registration's events; `arg` is its `Registration`.
    private static let ioCallback: event_callback_fn = { _, what, arg in
        LibeventPoller.onIO(what, arg)
    }

    private static func onIO(_ what: Int16, _ arg: UnsafeMutableRawPointer?) {
        guard let arg else { return }
        let reg = Unmanaged<Registration>.fromOpaque(arg).takeUnretainedValue()
        let bits = Int32(what)
        var events: IOEvents = []
        if bits & EV_READ != 0 { events.insert(.read) }
        if bits & EV_WRITE != 0 { events.insert(.write) }
        if bits & EV_CLOSED != 0 { events.insert(.readEOF) }
        if events.isEmpty { return }
        // Read and write are separate events: the second callback of a pass merges into the first.
        if reg.collected.isEmpty { reg.owner.ready.append(Unmanaged.passUnretained(reg)) }
        reg.collected.formUnion(events)
    }

    private static func onWake(_ arg: UnsafeMutableRawPointer?) {
        guard let arg else { return }
        // Acquire pairs with the waker's exchange, so work published before `wakeup()` is
        // visible once `wait` returns; clearing re-arms the waker for the next wait.
        _ = Unmanaged<WakeChannel>.fromOpaque(arg).takeUnretainedValue()
            .pending.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// `duration` rounded up to whole microseconds, or `nil` when it is not positive.
    private static func timeval(rounding duration: Duration) -> CLibevent.timeval? {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return nil }
        var sec = seconds
        var usec = (attoseconds + 999_999_999_999) / 1_000_000_000_000
        if usec >= 1_000_000 {
            sec += 1
            usec -= 1_000_000
        }
        return CLibevent.timeval(
            tv_sec: .init(truncatingIfNeeded: min(sec, Int64(Int32.max))),
            tv_usec: .init(truncatingIfNeeded: usec))
    }

    // MARK: Waker and lifetime

    public func makeWaker() throws -> any PollerWaker {
        guard base != nil else { throw PollerError.closed }
        return LibeventWaker(channel: wake)
    }

    public func close() throws {
        guard let base else { return }
        self.base = nil
        wake.shutDown()
        var records = Array(registrations.values)
        records += spare
        records += retired
        records += broken
        for reg in records {
            reg.isLive = false
            event_free(reg.readEvent)
            event_free(reg.writeEvent)
        }
        registrations.removeAll()
        spare.removeAll()
        broken.removeAll()
        // A `close` from inside `body`: `ready` still points at these until the pass ends.
        retired = delivering ? records : []
        event_free(timer)
        event_base_free(base)
    }
}

@available(*, unavailable)
extension LibeventPoller: Sendable {}

/// One registration's record. Its address is the callback argument of its two events.
private final class Registration {
    let readEvent: OpaquePointer
    let writeEvent: OpaquePointer
    /// The poller outlives every record: records live only in its tables.
    unowned(unsafe) let owner: LibeventPoller
    var token = PollToken(fd: -1, generation: 0)
    /// What is watched: which of the two events are added.
    var interest: IOEvents = []
    /// Reported by callbacks in the current pass, not yet delivered.
    var collected: IOEvents = []
    /// False once deregistered: collected events are dropped.
    var isLive = false

    private init(owner: LibeventPoller, readEvent: OpaquePointer, writeEvent: OpaquePointer) {
        self.owner = owner
        self.readEvent = readEvent
        self.writeEvent = writeEvent
    }

    /// A record with two blank events on `base`; `register` assigns descriptor and callback.
    static func make(for owner: LibeventPoller, on base: OpaquePointer) throws -> Registration {
        guard let r = event_new(base, -1, 0, nil, nil) else {
            throw SystemError("event_new", errno: ENOMEM)
        }
        guard let w = event_new(base, -1, 0, nil, nil) else {
            event_free(r)
            throw SystemError("event_new", errno: ENOMEM)
        }
        return Registration(owner: owner, readEvent: r, writeEvent: w)
    }
}

/// What the poller shares with its wakers.
///
/// `users` counts the wakers inside `event_active` at this moment; `closedBit` in it means the
/// poller is closed. `wakeup` enters only while the bit is clear, and `shutDown` sets the bit,
/// then waits for the count to drain before freeing the event: no wakeup ever touches a freed
/// event, and no lock is taken (atomics only, which ThreadSanitizer also sees through).
private final class WakeChannel: Sendable {
    /// A wakeup is on its way and not yet consumed by the loop: later ones coalesce into it.
    let pending = Atomic<Bool>(false)
    let users = Atomic<Int>(0)
    static let closedBit = 1 << 40
    /// The dedicated event that `wakeup()` activates. Set by the poller's `init` before any
    /// waker exists, freed by `shutDown` once no waker is using it.
    nonisolated(unsafe) var event: OpaquePointer?

    /// Activates the event, or returns false when the poller is closed. Any thread.
    func activate() -> Bool {
        let entered = users.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
        defer { users.wrappingSubtract(1, ordering: .releasing) }
        guard entered & Self.closedBit == 0, let event else { return false }
        event_active(event, EV_READ, 0)
        return true
    }

    /// Closes the channel and frees the event. Loop thread, once.
    func shutDown() {
        users.bitwiseOr(Self.closedBit, ordering: .acquiringAndReleasing)
        // At most a few wakers are inside event_active, each for a moment.
        while users.load(ordering: .acquiring) != Self.closedBit { sched_yield() }
        if let event { event_free(event) }
        event = nil
    }
}

/// Wakes a `LibeventPoller` from any thread. After the poller is closed `wakeup()` throws
/// `PollerError.closed`, unless a wakeup was already pending, which it joins.
private struct LibeventWaker: PollerWaker {
    let channel: WakeChannel

    func wakeup() throws {
        // Only the caller that raises the flag goes on to event_active (which writes the base's
        // notification fd when the loop is blocked in its dispatch).
        guard !channel.pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if !channel.activate() {
            channel.pending.store(false, ordering: .releasing)
            throw PollerError.closed
        }
    }
}

/// Installs pthreads locking once per process, before any base exists, so that `event_active`
/// may be called from other threads. Also mutes libevent's own logging to stderr: its failures
/// reach callers as thrown errors instead.
private let libeventThreadingReady: Bool = {
    event_set_log_callback { _, _ in }
    return evthread_use_pthreads() == 0
}()

/// `event_get_supported_methods()`, read once: it rebuilds (and frees) its array on every call.
private let libeventMethods: [String] = {
    guard let list = event_get_supported_methods() else { return [] }
    var names: [String] = []
    var i = 0
    while let name = list[i] {
        names.append(String(cString: name))
        i += 1
    }
    return names
}()
