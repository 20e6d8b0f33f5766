#if os(Linux)
import CGNetLinux
import Glibc
import Poller
import Synchronization

/// The native Linux backend: one epoll instance and one eventfd waker.
///
/// - Level-triggered unless a registration asks for `.edge` (`EPOLLET`).
/// - `EPOLLRDHUP` is requested with read interest, so a peer's shutdown shows as `readEOF`;
///   never without it, because the kernel keeps reporting it level-triggered and a caller that
///   wants only write readiness (a closing connection whose peer sent FIN and stopped reading)
///   would get a wait that never blocks.
/// - The token is packed into `epoll_event.data`, so an event carries its generation and a
///   caller can drop events of an earlier registration of a reused descriptor.
/// - Events land in one reusable buffer that doubles when a wait fills it; steady state
///   allocates nothing per wait or per event.
///
/// Loop-confined: only `makeWaker()`'s result may be used from other threads.
public final class EpollPoller: Poller {
    public static let name = "epoll"
    public let capabilities = PollerCapabilities(edgeTriggered: true, method: "epoll")

    // MARK: Loop thread only
    private var epfd: Int32
    private var events: UnsafeMutablePointer<epoll_event>
    private var eventCapacity: Int
    private let maxEventCapacity = 4096
    private let waker: EventFDWaker
    /// `epoll_event.data` value that marks the waker's eventfd; no real token packs to it
    /// because descriptors are never negative.
    private static let wakerData = UInt64.max

    /// Creates an epoll instance and its eventfd waker.
    /// - Parameter initialEventCapacity: events one wait can return before the buffer grows.
    public init(initialEventCapacity: Int = 64) throws {
        epfd = try sysCall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        let efd: Int32
        do {
            efd = try sysCall("eventfd") { eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC)) }
        } catch {
            Glibc.close(epfd)
            throw error
        }
        waker = EventFDWaker(fd: efd)
        eventCapacity = max(8, initialEventCapacity)
        events = .allocate(capacity: eventCapacity)
        var ev = epoll_event()
        cgnet_epoll_event_set(&ev, CGNET_EPOLLIN, Self.wakerData)
        do {
            _ = try sysCall("epoll_ctl(ADD eventfd \(efd))") { epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev) }
        } catch {
            try? close()
            throw error
        }
    }

    deinit { try? close() }

    @inline(__always)
    private static func epollBits(_ interest: IOEvents, _ trigger: PollTrigger) -> UInt32 {
        var bits: UInt32 = 0
        if interest.contains(.read) { bits |= CGNET_EPOLLIN | CGNET_EPOLLRDHUP }
        if interest.contains(.write) { bits |= CGNET_EPOLLOUT }
        if trigger == .edge { bits |= CGNET_EPOLLET }
        return bits
    }

    @inline(__always)
    private func ctl(_ op: Int32, _ fd: Int32, _ bits: UInt32, _ data: UInt64) throws {
        guard epfd >= 0 else { throw PollerError.closed }
        var ev = epoll_event()
        cgnet_epoll_event_set(&ev, bits, data)
        if epoll_ctl(epfd, op, fd, &ev) == 0 { return }
        switch errno {
        case EEXIST: throw PollerError.alreadyRegistered(fd: fd)
        case ENOENT: throw PollerError.notRegistered(fd: fd)
        case EBADF, EPERM: throw PollerError.invalidDescriptor(fd: fd)
        case let e: throw SystemError("epoll_ctl(op \(op), fd \(fd))", errno: e)
        }
    }

    /// Edge mode is remembered per registration so `modify` keeps it.
    private var edgeFDs = Set<Int32>()
    /// True while `wait` hands out a batch.
    private var inBatch = false
    /// Descriptors deregistered while a batch is handed out: their remaining events in the
    /// batch belong to the old registration and are dropped. (A registration made during the
    /// batch cannot have events in it, so dropping by descriptor is exact.) Usually empty.
    private var removedInBatch: [Int32] = []

    public func register(_ fd: Int32, interest: IOEvents, token: PollToken, trigger: PollTrigger) throws {
        guard fd >= 0 else { throw PollerError.invalidDescriptor(fd: fd) }
        try ctl(EPOLL_CTL_ADD, fd, Self.epollBits(interest, trigger), token.packed)
        if trigger == .edge { edgeFDs.insert(fd) } else if !edgeFDs.isEmpty { edgeFDs.remove(fd) }
    }

    public func modify(_ fd: Int32, from old: IOEvents, to new: IOEvents, token: PollToken) throws {
        let trigger: PollTrigger = !edgeFDs.isEmpty && edgeFDs.contains(fd) ? .edge : .level
        try ctl(EPOLL_CTL_MOD, fd, Self.epollBits(new, trigger), token.packed)
    }

    public func deregister(_ fd: Int32, interest old: IOEvents) throws {
        if !edgeFDs.isEmpty { edgeFDs.remove(fd) }
        if inBatch { removedInBatch.append(fd) }
        try ctl(EPOLL_CTL_DEL, fd, 0, 0)
    }

    public func wait(_ timeout: PollTimeout, _ body: (PollToken, IOEvents) throws -> Void) throws -> Int {
        guard epfd >= 0 else { throw PollerError.closed }
        let n: Int32
        while true {
            let r = epoll_wait(epfd, events, Int32(eventCapacity), timeout.milliseconds)
            if r >= 0 { n = r; break }
            let e = errno
            // EINTR: a signal arrived. Returning early is allowed (callers loop); it keeps a
            // timed wait from stretching past its deadline.
            if e == EINTR { return 0 }
            throw SystemError("epoll_wait", errno: e)
        }
        var reported = 0
        inBatch = true
        defer {
            inBatch = false
            if !removedInBatch.isEmpty { removedInBatch.removeAll(keepingCapacity: true) }
        }
        for i in 0..<Int(n) {
            let ev = events + i
            let data = cgnet_epoll_event_data(ev)
            if data == Self.wakerData {
                waker.drain()
                continue
            }
            if !removedInBatch.isEmpty && removedInBatch.contains(PollToken(packed: data).fd) { continue }
            let bits = cgnet_epoll_event_events(ev)
            var io = IOEvents()
            if bits & CGNET_EPOLLIN != 0 { io.insert(.read) }
            if bits & CGNET_EPOLLOUT != 0 { io.insert(.write) }
            if bits & CGNET_EPOLLRDHUP != 0 { io.insert(.readEOF) }
            if bits & CGNET_EPOLLHUP != 0 { io.insert(.reset) }
            if bits & CGNET_EPOLLERR != 0 { io.insert(.error) }
            reported += 1
            try body(PollToken(packed: data), io)
        }
        if Int(n) == eventCapacity && eventCapacity < maxEventCapacity {
            // A full buffer means more may be ready: grow so the next wait takes them all.
            events.deallocate()
            eventCapacity *= 2
            events = .allocate(capacity: eventCapacity)
        }
        return reported
    }

    public func makeWaker() throws -> any PollerWaker {
        guard epfd >= 0 else { throw PollerError.closed }
        return waker
    }

    public func close() throws {
        guard epfd >= 0 else { return }
        Glibc.close(epfd)
        epfd = -1
        events.deallocate()
        waker.close()
    }
}

@available(*, unavailable)
extension EpollPoller: Sendable {}

/// Wakes an `EpollPoller` by writing its eventfd. Coalesces: only the first wakeup after a
/// drain writes; the rest see the pending flag and return.
///
/// A wakeup may race the poller's `close`. The descriptor is closed only once no wakeup is
/// between reading it and writing to it (`users` counts them; `closedBit` stops new ones), so a
/// wakeup never writes into a descriptor number that was closed and reused by someone else.
final class EventFDWaker: PollerWaker {
    private let fd: Int32
    /// Wakeups inside their write, plus `closedBit` once `close` began.
    private let users = Atomic<Int>(0)
    private static let closedBit = 1 << 40
    private let pending = Atomic<Bool>(false)

    init(fd: Int32) { self.fd = fd }

    func wakeup() throws {
        if pending.exchange(true, ordering: .acquiringAndReleasing) { return }
        let before = users.wrappingAdd(1, ordering: .acquiring).oldValue
        defer { users.wrappingSubtract(1, ordering: .releasing) }
        guard before & Self.closedBit == 0 else { throw PollerError.closed }
        Self.beforeWriteHook?()
        var one: UInt64 = 1
        let r = Glibc.write(fd, &one, 8)
        // EAGAIN means the counter is already non-zero: the poller will wake anyway.
        if r < 0 && errno != EAGAIN { throw SystemError("write(eventfd)", errno: errno) }
    }

    /// Called by the poller thread when the eventfd is readable.
    func drain() {
        // Clear the flag first: a wakeup racing with the read below then writes again, so it
        // cannot be lost.
        pending.store(false, ordering: .releasing)
        var value: UInt64 = 0
        _ = Glibc.read(fd, &value, 8)
    }

    /// Refuses new wakeups, waits for those already writing (a few instructions), then closes
    /// the descriptor. Once only.
    func close() {
        let before = users.wrappingAdd(Self.closedBit, ordering: .acquiringAndReleasing).oldValue
        guard before & Self.closedBit == 0 else {
            users.wrappingSubtract(Self.closedBit, ordering: .relaxed)
            return
        }
        while users.load(ordering: .acquiring) != Self.closedBit { sched_yield() }
        Glibc.close(fd)
    }

    /// Tests only: runs inside `wakeup` between the closed check and the write, to widen the
    /// race with `close` that the design must survive. Set before the poller is used.
    nonisolated(unsafe) static var beforeWriteHook: (@Sendable () -> Void)? = nil
}
#endif
