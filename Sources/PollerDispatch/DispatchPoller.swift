#if canImport(Dispatch) && (canImport(Glibc) || canImport(Musl) || canImport(Darwin))
import Dispatch
import GNetLocks
import Poller
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A poller built on `DispatchSource` read and write sources: the portable fallback.
///
/// ## How readiness flows
/// ```
///  kernel ─► libdispatch ─► source handler, on this poller's private serial queue:
///                             suspend its own source, mark the side "fired", queue the fd,
///                             signal the loop thread if it is blocked in `wait`
///
///  loop thread, `wait`:       poll(2) the queued fds once, timeout 0
///                             ├─ still ready ─► report it; the source stays suspended and the
///                             │                 fd stays queued, so the next wait polls it again
///                             └─ not ready   ─► resume the source (re-armed); the fd leaves the queue
/// ```
/// Why this shape:
/// - **Level-triggered, deterministically.** A dispatch source re-fires only after it is
///   re-armed, and re-arming is asynchronous, so "resume and hope it fires before the wait
///   ends" would miss a `.now` wait. A descriptor known to be hot is instead re-checked by the
///   poll of every wait until it is drained; only then does the source take over again.
/// - **No busy queue.** A source whose data is left unread would otherwise fire again after
///   every handler run. Suspended from its own handler, it fires at most once per wait cycle.
/// - **Exact bits.** A source says only "readable"/"writable"; the poll adds `readEOF`
///   (`POLLRDHUP`, Linux), `reset` (`POLLHUP`) and `error` (`POLLERR`), so they are reported
///   only when the kernel says so, never guessed.
///
/// ## Suspend balance
/// libdispatch traps on releasing a suspended source and delivers no cancel handler to one.
/// Each side has one state (`Side.State`); its suspend count is 1 exactly in `parked` and
/// `fired`, 0 in `armed`. Every `suspend`/`resume` happens under the lock together with its
/// state change, whichever thread makes it, so the count can never drift. `modify` and
/// `deregister` therefore rely on this state, not on the `old` interest the caller passes.
///
/// ## Closing rule
/// libdispatch keeps using a descriptor until the source's cancel handler has run. `deregister`
/// and `close` cancel the sources and block the loop thread until every cancel handler ran,
/// so the caller may close the descriptor as soon as they return. The handlers run on the
/// private queue and never wait for the loop thread, so this cannot deadlock.
///
/// ## Limits
/// `readEOF`, `reset` and `error` are noticed when a source of the current interest fires;
/// with an empty interest no source is armed and nothing is reported.
///
/// ## Threads
/// Loop-confined like every `Poller`; only the waker may be used from other threads.
public final class DispatchPoller: Poller {
    public static let name = "dispatch"

    public var capabilities: PollerCapabilities {
        PollerCapabilities(edgeTriggered: false, method: "dispatch")
    }

    // MARK: Any thread (shared with the source handlers and the waker)

    private let core = Core()
    private let queue = DispatchQueue(label: "gnet.poller.dispatch")

    // MARK: Loop thread only

    /// What the last `collect` found; reused so that a wait does not allocate.
    private var reports: [Report] = []
    /// The `poll(2)` argument; reused.
    private var pollSet: [pollfd] = []
    /// Unique per registration, so a late handler of a gone registration is recognised.
    private var nextSerial: UInt64 = 0
    private var isClosed = false

    /// Creates a poller with its own serial queue. Loop thread.
    public init() {}

    deinit { try? close() }

    /// Loop thread. `trigger` must be `.level`.
    public func register(_ fd: Int32, interest: IOEvents, token: PollToken, trigger: PollTrigger) throws {
        guard trigger == .level else {
            throw PollerError.unsupported(backend: Self.name, feature: "edge-triggered")
        }
        guard !isClosed else { throw PollerError.closed }
        guard fd >= 0 else { throw PollerError.invalidDescriptor(fd: fd) }
        // libdispatch has no way to report a bad descriptor to us (its registration just
        // fails inside the library, and the source never fires): check it here.
        _ = try sysCall("register(fd \(fd)): fcntl(F_GETFD)") { fcntl(fd, F_GETFD) }
        nextSerial &+= 1
        let serial = nextSerial
        try core.state.withLock { s throws(PollerError) in
            let i = Int(fd)
            if i >= s.slots.count {
                let grown = max(i + 1, s.slots.count * 2)
                s.slots.append(contentsOf: repeatElement(Slot(), count: grown - s.slots.count))
            }
            guard s.slots[i].serial == 0 else { throw .alreadyRegistered(fd: fd) }
            s.slots[i] = Slot(serial: serial, token: token, interest: interest.interest)
            Self.apply(interest, to: &s.slots[i], fd: fd, queue: queue, core: core)
        }
    }

    /// Loop thread. `old` is not needed: each side's state is tracked here.
    public func modify(_ fd: Int32, from old: IOEvents, to new: IOEvents, token: PollToken) throws {
        guard !isClosed else { throw PollerError.closed }
        try core.state.withLock { s throws(PollerError) in
            let i = Int(fd)
            guard fd >= 0, i < s.slots.count, s.slots[i].serial != 0 else { throw .notRegistered(fd: fd) }
            s.slots[i].token = token
            s.slots[i].interest = new.interest
            Self.apply(new, to: &s.slots[i], fd: fd, queue: queue, core: core)
        }
    }

    /// Loop thread. Returns once libdispatch has let go of `fd`: closing it is then safe.
    /// Nothing of this registration is reported afterwards, not even what is already queued.
    public func deregister(_ fd: Int32, interest old: IOEvents) throws {
        guard !isClosed else { throw PollerError.closed }
        let cancels = try core.state.withLock { s throws(PollerError) -> Int in
            let i = Int(fd)
            guard fd >= 0, i < s.slots.count, s.slots[i].serial != 0 else { throw .notRegistered(fd: fd) }
            if s.slots[i].queued { s.queued.removeAll { $0 == fd } }
            let n = s.slots[i].read.cancel() + s.slots[i].write.cancel()
            s.slots[i] = Slot()
            return n
        }
        for _ in 0..<cancels { core.cancelled.wait() }
    }

    /// Loop thread. See the type's documentation for how readiness is found.
    public func wait(_ timeout: PollTimeout, _ body: (PollToken, IOEvents) throws -> Void) throws -> Int {
        guard !isClosed else { throw PollerError.closed }
        let deadline = Self.deadline(timeout)
        while true {
            let found = collect()
            let woken = core.woken.exchange(false, ordering: .acquiringAndReleasing)
            if found || woken { break }
            guard let deadline, DispatchTime.now() < deadline else { break }
            block(until: deadline)
        }
        var count = 0
        for r in reports {
            // `body` may have deregistered or modified a later entry: look at it afresh.
            let current: (PollToken, IOEvents)? = core.state.withLock { s in
                let i = Int(r.fd)
                guard i < s.slots.count, s.slots[i].serial == r.serial else { return nil }
                let events = r.events.intersection(Self.reportable(for: s.slots[i].interest))
                return events.isEmpty ? nil : (s.slots[i].token, events)
            }
            guard let (token, events) = current else { continue }
            count += 1
            try body(token, events)
        }
        return count
    }

    /// Loop thread. The waker itself may be used from any thread; after `close` it does nothing.
    public func makeWaker() throws -> any PollerWaker {
        guard !isClosed else { throw PollerError.closed }
        return Waker(core: core)
    }

    /// Loop thread. Cancels every source and waits for their cancel handlers. Idempotent.
    public func close() throws {
        guard !isClosed else { return }
        isClosed = true
        let cancels = core.state.withLock { s in
            var n = 0
            for i in s.slots.indices where s.slots[i].serial != 0 {
                n += s.slots[i].read.cancel() + s.slots[i].write.cancel()
            }
            s.slots = []
            s.queued = []
            return n
        }
        for _ in 0..<cancels { core.cancelled.wait() }
    }

    // MARK: Private

    /// What a registration with `interest` may be told: its interest, `reset` and `error`
    /// always, and `readEOF` only with read interest (the contract in `Poller`).
    @inline(__always)
    private static func reportable(for interest: IOEvents) -> IOEvents {
        interest.contains(.read) ? interest.union([.readEOF, .reset, .error]) : interest.union([.reset, .error])
    }

    #if os(Linux)
    /// `POLLRDHUP`, which Glibc only defines under `_GNU_SOURCE` and Swift does not import.
    private static let pollRDHUP: Int16 = 0x2000
    #else
    private static let pollRDHUP: Int16 = 0
    #endif
    private static let pollReadable = Int16(POLLIN | POLLHUP | POLLERR | POLLNVAL) | pollRDHUP
    private static let pollWritable = Int16(POLLOUT | POLLHUP | POLLERR | POLLNVAL)

    /// Arms or parks each side of `slot` to match `interest`. Under the lock.
    private static func apply(
        _ interest: IOEvents, to slot: inout Slot, fd: Int32, queue: DispatchQueue, core: Core
    ) {
        let serial = slot.serial
        if interest.contains(.read) {
            slot.read.enable { makeSource(fd, serial, write: false, queue: queue, core: core) }
        } else {
            slot.read.disable()
        }
        if interest.contains(.write) {
            slot.write.enable { makeSource(fd, serial, write: true, queue: queue, core: core) }
        } else {
            slot.write.disable()
        }
    }

    private static func makeSource(
        _ fd: Int32, _ serial: UInt64, write: Bool, queue: DispatchQueue, core: Core
    ) -> any DispatchSourceProtocol {
        let source: any DispatchSourceProtocol = write
            ? DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
            : DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { core.fired(fd, serial, write: write) }
        source.setCancelHandler { core.cancelled.signal() }
        return source
    }

    /// Polls every queued descriptor once, re-arms the sides whose condition has passed and
    /// fills `reports` with the ones still ready. Returns whether it found any.
    /// The lock is held across `poll(2)` (timeout 0, a few µs), so that a side's state cannot
    /// change between being polled and being re-armed.
    private func collect() -> Bool {
        reports.removeAll(keepingCapacity: true)
        return core.state.withLock { s in
            guard !s.queued.isEmpty else { return false }
            pollSet.removeAll(keepingCapacity: true)
            for fd in s.queued {
                var events = Self.pollRDHUP
                if s.slots[Int(fd)].read.state == .fired { events |= Int16(POLLIN) }
                if s.slots[Int(fd)].write.state == .fired { events |= Int16(POLLOUT) }
                pollSet.append(pollfd(fd: fd, events: events, revents: 0))
            }
            let n = pollSet.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), 0) }
            var kept = 0
            for entry in pollSet {
                let i = Int(entry.fd)
                // If poll itself failed, treat every fired side as ready: spurious, never lost.
                let re = n < 0 ? Int16(POLLIN | POLLOUT) : entry.revents
                var events: IOEvents = []
                if s.slots[i].read.state == .fired {
                    if re & Self.pollReadable != 0 { events.insert(.read) } else { s.slots[i].read.rearm() }
                }
                if s.slots[i].write.state == .fired {
                    if re & Self.pollWritable != 0 { events.insert(.write) } else { s.slots[i].write.rearm() }
                }
                if events.isEmpty {
                    s.slots[i].queued = false
                    continue
                }
                if re & Self.pollRDHUP != 0 { events.insert(.readEOF) }
                if re & Int16(POLLHUP) != 0 { events.insert(.reset) }
                if re & Int16(POLLERR | POLLNVAL) != 0 { events.insert(.error) }
                reports.append(Report(fd: entry.fd, serial: s.slots[i].serial, events: events))
                s.queued[kept] = entry.fd
                kept += 1
            }
            s.queued.removeLast(s.queued.count - kept)
            return kept > 0
        }
    }

    /// Sleeps until a source fires, a wakeup arrives or `deadline` passes.
    private func block(until deadline: DispatchTime) {
        let core = self.core
        let mayBlock = core.state.withLock { s in
            // Something fired or a wakeup came since `collect` looked: do not sleep.
            if !s.queued.isEmpty || core.woken.load(ordering: .acquiring) { return false }
            s.waiting = true
            return true
        }
        guard mayBlock else { return }
        let result = core.wake.wait(timeout: deadline)
        let stray = core.state.withLock { s in
            defer { s.waiting = false; s.signalPending = false }
            return s.signalPending && result == .timedOut
        }
        // A signal posted between the timeout and our lock: take it, so the count is 0 again.
        if stray { core.wake.wait() }
    }

    /// `nil` for "do not block".
    private static func deadline(_ timeout: PollTimeout) -> DispatchTime? {
        switch timeout {
        case .now: return nil
        case .block: return .distantFuture
        case .after(let d):
            let (s, atto) = d.components
            if s < 0 || (s == 0 && atto <= 0) { return nil }
            if s >= 1 << 32 { return .distantFuture }
            let ns = UInt64(s) * 1_000_000_000 + UInt64(atto / 1_000_000_000)
            return DispatchTime(uptimeNanoseconds: DispatchTime.now().uptimeNanoseconds + ns)
        }
    }
}

@available(*, unavailable)
extension DispatchPoller: Sendable {}

/// One readiness found by `collect`, checked again against the registration before delivery.
private struct Report {
    var fd: Int32
    var serial: UInt64
    var events: IOEvents
}

/// One dispatch source (read or write) of a registration and where it stands.
private struct Side {
    enum State {
        /// No source yet: this interest was never on.
        case absent
        /// Resumed: its handler runs when the condition holds.
        case armed
        /// Suspended because the interest is off.
        case parked
        /// Suspended by its own handler; the fd is queued for the next `wait` to check.
        case fired
    }

    var source: (any DispatchSourceProtocol)?
    var state = State.absent

    /// The interest is on.
    mutating func enable(_ make: () -> any DispatchSourceProtocol) {
        switch state {
        case .absent:
            let s = make()
            s.activate()
            source = s
            state = .armed
        case .parked:
            source?.resume()
            state = .armed
        case .armed, .fired:
            break  // a fired side is checked (and re-armed if need be) by the next wait
        }
    }

    /// The interest is off.
    mutating func disable() {
        switch state {
        case .armed:
            source?.suspend()
            state = .parked
        case .fired:
            state = .parked  // already suspended
        case .absent, .parked:
            break
        }
    }

    /// From the source's handler. Returns whether the side was armed (else the call is stale).
    mutating func fire() -> Bool {
        guard state == .armed else { return false }
        source?.suspend()
        state = .fired
        return true
    }

    /// `wait` found the condition gone: let the source watch again.
    mutating func rearm() {
        source?.resume()
        state = .armed
    }

    /// Cancels the source, resuming it if suspended so that its cancel handler is delivered.
    /// Returns how many cancel handlers to wait for.
    mutating func cancel() -> Int {
        guard let source else { return 0 }
        source.cancel()
        if state != .armed { source.resume() }
        self = Side()
        return 1
    }
}

/// One registration, indexed by its descriptor. `serial == 0` marks a free slot.
private struct Slot {
    var serial: UInt64 = 0
    var token = PollToken(fd: -1, generation: 0)
    var interest: IOEvents = []
    var read = Side()
    var write = Side()
    /// Whether the fd is in `Shared.queued`.
    var queued = false
}

/// Everything the source handlers and the loop thread share, behind `Core.state`.
private struct Shared {
    var slots: [Slot] = []
    /// Descriptors with a fired side, in firing order, each at most once.
    var queued: [Int32] = []
    /// The loop thread is (about to be) blocked on `Core.wake`.
    var waiting = false
    /// `Core.wake` was signalled for the current block: signal it at most once.
    var signalPending = false

    mutating func signalIfWaiting(_ wake: DispatchSemaphore) {
        guard waiting, !signalPending else { return }
        signalPending = true
        wake.signal()
    }
}

private final class Core: Sendable {
    let state = Locked(Shared())
    /// Wakes the loop thread blocked in `wait`. Its count is never above 1.
    let wake = DispatchSemaphore(value: 0)
    /// Signalled by each cancel handler.
    let cancelled = DispatchSemaphore(value: 0)
    /// A wakeup arrived and no wait has returned for it yet.
    let woken = Atomic<Bool>(false)

    /// A source's event handler, on the private queue.
    func fired(_ fd: Int32, _ serial: UInt64, write: Bool) {
        state.withLock { s in
            let i = Int(fd)
            guard i < s.slots.count, s.slots[i].serial == serial else { return }
            let wasArmed = write ? s.slots[i].write.fire() : s.slots[i].read.fire()
            guard wasArmed else { return }
            if !s.slots[i].queued {
                s.slots[i].queued = true
                s.queued.append(fd)
            }
            s.signalIfWaiting(wake)
        }
    }

    /// Any thread. Only the first wakeup since the last return of `wait` takes the lock.
    func wakeup() {
        guard !woken.exchange(true, ordering: .acquiringAndReleasing) else { return }
        state.withLock { $0.signalIfWaiting(wake) }
    }
}

private struct Waker: PollerWaker {
    let core: Core
    /// Any thread. Coalescing; a no-op once the poller is closed (nobody waits any more).
    func wakeup() { core.wakeup() }
}
#endif
