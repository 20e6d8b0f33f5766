#if os(Linux)
import Glibc
import Poller
import PollerEpoll
import TestSupport
import Testing

/// What only the epoll backend does; the shared contract is checked by the conformance suite.
@Suite("EpollPoller")
struct EpollPollerTests {
    @Test func edgeTriggeredReportsOncePerChange() throws {
        let p = try EpollPoller()
        defer { try? p.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        let token = PollToken(fd: a, generation: 3)
        try p.register(a, interest: .read, token: token, trigger: .edge)
        try send(b, "x")
        var n = try p.wait(.after(.milliseconds(200))) { t, e in #expect(t == token && e.contains(.read)) }
        #expect(n == 1)
        // Not drained, but no new data: edge mode stays quiet.
        n = try p.wait(.after(.milliseconds(30))) { _, _ in }
        #expect(n == 0)
        try send(b, "y")
        n = try p.wait(.after(.milliseconds(200))) { _, _ in }
        #expect(n == 1)
        // modify keeps the edge mode.
        try p.modify(a, from: .read, to: .read, token: token)
        _ = try p.wait(.now) { _, _ in }
        n = try p.wait(.after(.milliseconds(30))) { _, _ in }
        #expect(n == 0)
    }

    @Test func eventBufferGrowsAndLosesNothing() throws {
        let p = try EpollPoller(initialEventCapacity: 8)
        defer { try? p.close() }
        var pairs: [(Int32, Int32)] = []
        for i in 0..<100 {
            let (a, b) = try socketPair()
            pairs.append((a, b))
            try p.register(a, interest: .read, token: PollToken(fd: a, generation: UInt32(i + 1)))
            try send(b, "z")
        }
        defer { for (a, b) in pairs { closeAll(a, b) } }
        var seen = Set<Int32>()
        for _ in 0..<20 where seen.count < 100 {
            _ = try p.wait(.after(.milliseconds(100))) { t, _ in seen.insert(t.fd) }
        }
        #expect(seen.count == 100)
    }

    @Test func capabilities() throws {
        let p = try EpollPoller()
        defer { try? p.close() }
        #expect(p.capabilities.edgeTriggered)
        #expect(EpollPoller.name == "epoll")
    }

    @Test func registerTwiceAndUnknownAreTyped() throws {
        let p = try EpollPoller()
        defer { try? p.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        try p.register(a, interest: .read, token: PollToken(fd: a, generation: 1))
        #expect(throws: PollerError.alreadyRegistered(fd: a)) {
            try p.register(a, interest: .read, token: PollToken(fd: a, generation: 1))
        }
        #expect(throws: PollerError.notRegistered(fd: b)) { try p.deregister(b, interest: .read) }
        try p.close()
        #expect(throws: PollerError.closed) { _ = try p.wait(.now) { _, _ in } }
        try p.close() // twice is harmless
    }
}
#endif

@Suite("Poller types")
struct PollerTypeTests {
    @Test func tokenPacksLosslessly() {
        for t in [PollToken(fd: 0, generation: 0), PollToken(fd: 7, generation: 1),
                  PollToken(fd: Int32.max, generation: UInt32.max), PollToken(fd: 65_535, generation: 123_456)] {
            #expect(PollToken(packed: t.packed) == t)
        }
    }

    @Test func timeoutMilliseconds() {
        #expect(PollTimeout.block.milliseconds == -1)
        #expect(PollTimeout.now.milliseconds == 0)
        #expect(PollTimeout.after(.milliseconds(5)).milliseconds == 5)
        #expect(PollTimeout.after(.microseconds(100)).milliseconds == 1) // rounds up, never busy-polls
        #expect(PollTimeout.after(.seconds(-3)).milliseconds == 0)
        #expect(PollTimeout.after(.seconds(Int64.max / 2)).milliseconds == Int32.max)
    }

    @Test func eventsDescription() {
        #expect(IOEvents([.read, .readEOF]).description == "[read,readEOF]")
        #expect(IOEvents([.read, .write, .error]).interest == [.read, .write])
    }
}

#if os(Linux)
@testable import PollerEpoll

/// The eventfd waker against the poller closing under it.
@Suite("EpollPoller waker", .serialized)
struct EpollWakerTests {
    /// A wakeup caught between deciding to write and writing, while the poller closes and the
    /// descriptor numbers are reused at once: the write must not land in the new descriptor.
    @Test func wakeupRacingCloseNeverWritesIntoAReusedDescriptor() throws {
        EventFDWaker.beforeWriteHook = { usleep(100_000) }
        defer { EventFDWaker.beforeWriteHook = nil }
        let p = try EpollPoller()
        let waker = try p.makeWaker()
        let thread = TestThread.start { try? waker.wakeup() }
        usleep(20_000) // the wakeup is now inside the hook
        try p.close()
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
        defer { closeAll(fds[0], fds[1]) }
        thread.join()
        var buf = [UInt8](repeating: 0, count: 8)
        let n = read(fds[0], &buf, 8)
        #expect(n == -1 && errno == EAGAIN, "a wakeup wrote \(n) bytes into a pipe that reused the poller's descriptors")
    }

    /// After close, a wakeup fails with `PollerError.closed` and touches nothing.
    @Test func wakeupAfterCloseFails() throws {
        let p = try EpollPoller()
        let waker = try p.makeWaker()
        try p.close()
        #expect(throws: PollerError.closed) { try waker.wakeup() }
    }
}
#endif
