#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Poller
import PollerLibevent
import Synchronization
import TestSupport
import Testing

/// The libevent backend against the `Poller` contract, once per method this libevent offers
/// (epoll, poll and select on Linux). Serialized: several scenarios measure time.
@Suite(.serialized)
struct LibeventPollerTests {
    @Test(arguments: LibeventPoller.availableMethods)
    func reportsReadableWithItsToken(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        #expect(poller.capabilities.method == method)
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        let token = PollToken(fd: a, generation: 7)
        try poller.register(a, interest: .read, token: token)

        #expect(try events(poller, .now).isEmpty)
        try send(b, "x")
        // Exactly read: no write (not asked for), no readEOF (the peer is still open).
        #expect(try events(poller, .after(.seconds(1))) == [Seen(token, [.read])])
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func reportsWritableWithItsToken(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        try send(a, "data for b")
        let ta = PollToken(fd: a, generation: 1)
        let tb = PollToken(fd: b, generation: 2)
        try poller.register(a, interest: .write, token: ta)
        try poller.register(b, interest: .read, token: tb)
        let seen = try events(poller, .after(.seconds(1))).sorted()
        #expect(seen == [Seen(ta, [.write]), Seen(tb, [.read])].sorted())
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func unreadDataIsReportedAgain(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        let token = PollToken(fd: a, generation: 1)
        try poller.register(a, interest: .read, token: token)
        try send(b, "abc")

        #expect(try events(poller, .after(.seconds(1))) == [Seen(token, [.read])])
        #expect(try events(poller, .after(.seconds(1))) == [Seen(token, [.read])])
        #expect(try receive(a, max: 1) == 1)
        #expect(try events(poller, .after(.seconds(1))) == [Seen(token, [.read])])
        #expect(try receive(a, max: 16) == 2)
        #expect(try events(poller, .now).isEmpty)
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func modifyFollowsInterestAndToken(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        try send(b, "pending")  // `a` is now readable and writable

        let t1 = PollToken(fd: a, generation: 1)
        try poller.register(a, interest: .read, token: t1)
        #expect(try events(poller, .after(.seconds(1))) == [Seen(t1, [.read])])

        let t2 = PollToken(fd: a, generation: 2)
        try poller.modify(a, from: .read, to: .write, token: t2)
        #expect(try events(poller, .after(.seconds(1))) == [Seen(t2, [.write])])

        let t3 = PollToken(fd: a, generation: 3)
        try poller.modify(a, from: .write, to: [], token: t3)
        #expect(try events(poller, .after(.milliseconds(20))).isEmpty)

        let t4 = PollToken(fd: a, generation: 4)
        try poller.modify(a, from: [], to: [.read, .write], token: t4)
        // Read and write of one registration arrive merged, in one call.
        #expect(try events(poller, .after(.seconds(1))) == [Seen(t4, [.read, .write])])

        try poller.modify(a, from: [.read, .write], to: .read, token: t4)
        #expect(try events(poller, .after(.seconds(1))) == [Seen(t4, [.read])])
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func deregisterStopsEvents(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        try send(b, "pending")
        try poller.register(a, interest: [.read, .write], token: PollToken(fd: a, generation: 1))
        try poller.deregister(a, interest: [.read, .write])
        #expect(try events(poller, .after(.milliseconds(20))).isEmpty)

        #expect(throws: PollerError.notRegistered(fd: a)) {
            try poller.modify(a, from: [], to: .read, token: PollToken(fd: a, generation: 1))
        }
        #expect(throws: PollerError.notRegistered(fd: a)) { try poller.deregister(a, interest: []) }

        let again = PollToken(fd: a, generation: 2)
        try poller.register(a, interest: .read, token: again)
        #expect(try events(poller, .after(.seconds(1))) == [Seen(again, [.read])])
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func noStaleEventAfterDescriptorReuse(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        try send(b, "for the old socket")
        try poller.register(a, interest: [.read, .write], token: PollToken(fd: a, generation: 1))
        #expect(try events(poller, .now).count == 1)  // the old registration is live and ready
        try poller.deregister(a, interest: [.read, .write])
        closeAll(b)

        // Put a fresh, idle socket under the same number (dup2 closes the old one atomically).
        let (c, d) = try socketPair()
        defer { closeAll(a, d) }
        #expect(dup2(c, a) == a)
        closeAll(c)
        let fresh = PollToken(fd: a, generation: 2)
        try poller.register(a, interest: .read, token: fresh)
        #expect(try events(poller, .after(.milliseconds(20))).isEmpty)
        try send(d, "for the new socket")
        #expect(try events(poller, .after(.seconds(1))) == [Seen(fresh, [.read])])
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func deregisterInsideBodyDropsCollectedEvent(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        let (c, d) = try socketPair()
        let (e, f) = try socketPair()
        defer { closeAll(a, b, c, d, f) }
        try send(b, "x")
        try send(d, "x")
        try send(f, "x")  // `e` is readable: it will replace whichever of a, c is dropped
        try poller.register(a, interest: .read, token: PollToken(fd: a, generation: 1))
        try poller.register(c, interest: .read, token: PollToken(fd: c, generation: 1))

        // Both are ready before the wait, so one pass collects both. The first call drops the
        // other, puts a new readable socket under its number and registers it anew.
        var seen: [Seen] = []
        var replaced: Int32 = -1
        let n = try poller.wait(.after(.seconds(1))) { token, events in
            seen.append(Seen(token, events))
            guard replaced < 0 else { return }
            replaced = token.fd == a ? c : a
            try poller.deregister(replaced, interest: .read)
            #expect(dup2(e, replaced) == replaced)
            try poller.register(replaced, interest: .read, token: PollToken(fd: replaced, generation: 2))
        }
        closeAll(e)
        #expect(n == 1)
        #expect(seen.count == 1)
        #expect(seen.first?.token.generation == 1)
        #expect(seen.first?.events == [.read])

        // The next wait sees the survivor (level-triggered) and only the new registration.
        let kept = seen.first?.token ?? PollToken(fd: -1, generation: 0)
        let next = try events(poller, .after(.seconds(1))).sorted()
        #expect(next == [Seen(kept, [.read]), Seen(PollToken(fd: replaced, generation: 2), [.read])].sorted())
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func wakeupFromAnotherThreadEndsABlockedWait(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        try poller.register(a, interest: .read, token: PollToken(fd: a, generation: 1))
        let waker = try poller.makeWaker()
        let returned = Atomic<Bool>(false)

        let thread = TestThread.start {
            usleep(30_000)
            try? waker.wakeup()
            // A safety net so a broken wakeup fails the timing check instead of hanging.
            for _ in 0..<200 where !returned.load(ordering: .acquiring) { usleep(10_000) }
            try? waker.wakeup()
        }
        var n = -1
        let elapsed = try ContinuousClock().measure {
            n = try poller.wait(.block) { token, events in
                Issue.record("a wakeup reached body as \(token) \(events)")
            }
        }
        returned.store(true, ordering: .releasing)
        thread.join()
        #expect(n == 0)
        #expect(elapsed >= .milliseconds(25))
        #expect(elapsed < .milliseconds(130))
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func manyWakeupsCoalesce(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let waker = try poller.makeWaker()

        // From this thread, before the wait: one quick return, then nothing left over.
        for _ in 0..<1000 { try waker.wakeup() }
        let (first, firstSeen) = try timedEvents(poller, .after(.seconds(1)))
        #expect(firstSeen.isEmpty)
        #expect(first < .milliseconds(100))
        let (second, secondSeen) = try timedEvents(poller, .after(.milliseconds(50)))
        #expect(secondSeen.isEmpty)
        #expect(second >= .milliseconds(49))
        // The waker is re-armed: the next wakeup ends a wait again.
        try waker.wakeup()
        let (rearmed, _) = try timedEvents(poller, .after(.seconds(1)))
        #expect(rearmed < .milliseconds(100))

        // From four threads while the loop waits: every return is prompt, and once they stop at
        // most one wakeup is still pending.
        let done = Atomic<Int>(0)
        var threads: [TestThread] = []
        for _ in 0..<4 {
            threads.append(TestThread.start {
                for i in 0..<5000 {
                    try? waker.wakeup()
                    if i % 500 == 0 { usleep(1000) }
                }
                done.add(1, ordering: .releasing)
            })
        }
        var returns = 0
        while done.load(ordering: .acquiring) < 4 {
            _ = try poller.wait(.after(.seconds(1))) { _, _ in Issue.record("a wakeup reached body") }
            returns += 1
        }
        threads.forEach { $0.join() }
        #expect(returns < 20_000)
        _ = try poller.wait(.now) { _, _ in }
        let (settled, _) = try timedEvents(poller, .after(.milliseconds(50)))
        #expect(settled >= .milliseconds(49))
        try waker.wakeup()
        let (last, _) = try timedEvents(poller, .after(.seconds(1)))
        #expect(last < .milliseconds(100))
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func timeoutIsHonoured(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        // Nothing registered at all: the wait must still sleep, not return "no events".
        let (empty, emptySeen) = try timedEvents(poller, .after(.milliseconds(50)))
        #expect(emptySeen.isEmpty)
        #expect(empty >= .milliseconds(49))
        #expect(empty < .milliseconds(200))

        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        try poller.register(a, interest: .read, token: PollToken(fd: a, generation: 1))
        for _ in 0..<3 {
            let (idle, idleSeen) = try timedEvents(poller, .after(.milliseconds(50)))
        #expect(idleSeen.isEmpty)
            #expect(idle >= .milliseconds(49))
            #expect(idle < .milliseconds(200))
        }
        let (short, _) = try timedEvents(poller, .after(.milliseconds(2)))
        #expect(short >= .milliseconds(2))
        #expect(short < .milliseconds(50))
    }

    /// Guards `EVENT_BASE_FLAG_PRECISE_TIMER`: on libevent's default coarse clock a wait
    /// overshoots by a jiffy's worth (2-4 ms here, median 2.4 ms against 0.15 ms), beyond the
    /// contract's millisecond or two. Measured against a plain `poll(2)` sleep taken alternately,
    /// and best of three rounds, so that a loaded machine's scheduling delay is not counted; a
    /// systematic overshoot still fails every round.
    @Test(arguments: LibeventPoller.availableMethods)
    func timeoutIsPrecise(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        var best = Duration.seconds(1)
        for _ in 0..<3 where best >= .milliseconds(1) {
            var waits: [Duration] = []
            var sleeps: [Duration] = []
            for _ in 0..<21 {
                let (elapsed, _) = try timedEvents(poller, .after(.milliseconds(5)))
                #expect(elapsed >= .milliseconds(5))
                waits.append(elapsed)
                sleeps.append(ContinuousClock().measure { _ = poll(nil, 0, 5) })
            }
            waits.sort()
            sleeps.sort()
            best = min(best, waits[waits.count / 2] - sleeps[sleeps.count / 2])
        }
        #expect(best < .milliseconds(1), "median wait minus median poll(2) sleep, best of three")
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func nowNeverBlocks(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (bare, bareSeen) = try timedEvents(poller, .now)
        #expect(bareSeen.isEmpty)
        #expect(bare < .milliseconds(20))

        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        try poller.register(a, interest: .read, token: PollToken(fd: a, generation: 1))
        for timeout in [PollTimeout.now, .after(.zero), .after(.milliseconds(-5))] {
            let (idle, idleSeen) = try timedEvents(poller, timeout)
        #expect(idleSeen.isEmpty)
            #expect(idle < .milliseconds(20))
        }
    }

    /// Edge triggering follows the method: epoll has it (a registration is reported once per
    /// change, and an interest change re-arms it); poll and select refuse it.
    @Test(arguments: LibeventPoller.availableMethods)
    func edgeTriggeredFollowsTheMethod(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        #expect(poller.capabilities.edgeTriggered == (method == "epoll" || method == "kqueue"))
        guard !poller.capabilities.edgeTriggered else {
            let (a, b) = try socketPair()
            defer { closeAll(a, b) }
            let token = PollToken(fd: a, generation: 1)
            try poller.register(a, interest: .read, token: token, trigger: .edge)
            try send(b, "x")
            #expect(try events(poller, .after(.milliseconds(200))).map(\.events.interest) == [.read])
            // Not drained, no new data: quiet.
            #expect(try events(poller, .after(.milliseconds(30))).isEmpty)
            try send(b, "y")
            #expect(try events(poller, .after(.milliseconds(200))).map(\.events.interest) == [.read])
            // Adding write interest re-arms: the unread input is reported again, with writability.
            try poller.modify(a, from: .read, to: [.read, .write], token: token)
            let rearmed = try events(poller, .after(.milliseconds(200)))
            #expect(rearmed.count == 1 && rearmed[0].events.contains(.read) && rearmed[0].events.contains(.write))
            try poller.deregister(a, interest: [.read, .write])
            return
        }
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        let token = PollToken(fd: a, generation: 1)
        #expect(throws: PollerError.unsupported(backend: "libevent", feature: "edge-triggered")) {
            try poller.register(a, interest: .read, token: token, trigger: .edge)
        }
        // Nothing was half-registered.
        try poller.register(a, interest: .write, token: token)
        #expect(try events(poller, .now) == [Seen(token, [.write])])
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func badDescriptorsAreTypedErrors(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        #expect(throws: PollerError.invalidDescriptor(fd: -1)) {
            try poller.register(-1, interest: .read, token: PollToken(fd: -1, generation: 1))
        }
        let closedFD: Int32 = 9999
        try #require(fcntl(closedFD, F_GETFD) == -1, "fd 9999 must not be open for this test")
        #expect {
            try poller.register(closedFD, interest: .read, token: PollToken(fd: closedFD, generation: 1))
        } throws: { error in
            (error as? SystemError)?.errno == EBADF
        }
        #expect(throws: PollerError.notRegistered(fd: closedFD)) { try poller.deregister(closedFD, interest: .read) }

        // The poller is unharmed, and a second registration of one descriptor is refused.
        let (a, b) = try socketPair()
        defer { closeAll(a, b) }
        let token = PollToken(fd: a, generation: 1)
        try poller.register(a, interest: .write, token: token)
        #expect(throws: PollerError.alreadyRegistered(fd: a)) {
            try poller.register(a, interest: .read, token: token)
        }
        #expect(try events(poller, .after(.seconds(1))) == [Seen(token, [.write])])
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func peerShutdownIsReported(method: String) throws {
        let poller = try LibeventPoller(method: method)
        defer { try? poller.close() }
        let (a, b) = try socketPair()
        defer { closeAll(a) }
        let token = PollToken(fd: a, generation: 1)
        try poller.register(a, interest: .read, token: token)
        try send(b, "hi")
        #expect(shutdown(b, Int32(SHUT_WR)) == 0)

        let first = try events(poller, .after(.seconds(1)))
        #expect(first.count == 1)
        #expect(first.first?.token == token)
        #expect(first.first?.events.contains(.read) == true)
        #expect(first.first.map { $0.events.isSubset(of: [.read, .readEOF]) } == true)
        if method == "epoll" {  // EPOLLRDHUP: the shutdown is named as such
            #expect(first.first?.events == [.read, .readEOF])
        }
        #expect(try receive(a, max: 16) == 2)  // data before the end of the stream
        #expect(try receive(a, max: 16) == 0)

        closeAll(b)
        let after = try events(poller, .after(.seconds(1)))
        #expect(after.count == 1)
        #expect(after.first?.events.contains(.read) == true)
        #expect(try receive(a, max: 16) == 0)
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func closeIsIdempotentAndOutlivedByItsWaker(method: String) throws {
        let poller = try LibeventPoller(method: method)
        let waker = try poller.makeWaker()
        try poller.close()
        try poller.close()
        #expect(throws: PollerError.closed) { try waker.wakeup() }
        #expect(throws: PollerError.closed) { try waker.wakeup() }
        #expect(throws: PollerError.closed) { _ = try poller.wait(.now) { _, _ in } }
        #expect(throws: PollerError.closed) { _ = try poller.makeWaker() }
        #expect(throws: PollerError.closed) {
            try poller.register(0, interest: .read, token: PollToken(fd: 0, generation: 1))
        }
    }

    @Test(arguments: LibeventPoller.availableMethods)
    func closeWhileAnotherThreadWakes(method: String) throws {
        let poller = try LibeventPoller(method: method)
        let waker = try poller.makeWaker()
        let started = Atomic<Bool>(false)
        let thread = TestThread.start {
            var closedSeen = false
            for _ in 0..<100_000 {
                started.store(true, ordering: .releasing)
                do { try waker.wakeup() } catch PollerError.closed { closedSeen = true } catch {
                    Issue.record("unexpected \(error)")
                }
                if closedSeen { break }
            }
        }
        while !started.load(ordering: .acquiring) { usleep(100) }
        for _ in 0..<20 { _ = try poller.wait(.after(.milliseconds(1))) { _, _ in } }
        try poller.close()
        thread.join()
    }

    @Test func unknownMethodIsUnavailable() throws {
        let methods = LibeventPoller.availableMethods
        #expect(!methods.isEmpty)
        #if os(Linux)
        #expect(methods.contains("epoll"))
        #endif
        let reason = "method nope not available; available: \(methods.joined(separator: ", "))"
        #expect(throws: PollerError.unavailable(backend: "libevent", reason: reason)) {
            _ = try LibeventPoller(method: "nope")
        }
        let poller = try LibeventPoller()
        defer { try? poller.close() }
        #expect(methods.contains(poller.capabilities.method))
        #expect(LibeventPoller.name == "libevent")
    }
}

// MARK: Helpers

/// One call of a wait's body.
private struct Seen: Equatable, Comparable, CustomStringConvertible {
    var token: PollToken
    var events: IOEvents
    init(_ token: PollToken, _ events: IOEvents) {
        self.token = token
        self.events = events
    }
    static func < (l: Seen, r: Seen) -> Bool {
        (l.token.fd, l.token.generation, l.events.rawValue) < (r.token.fd, r.token.generation, r.events.rawValue)
    }
    var description: String { "\(token) \(events)" }
}

/// Every call of one wait's body, checked against the count the wait returns.
private func events(_ poller: LibeventPoller, _ timeout: PollTimeout) throws -> [Seen] {
    var seen: [Seen] = []
    let n = try poller.wait(timeout) { seen.append(Seen($0, $1)) }
    #expect(n == seen.count)
    return seen
}

/// `events(poller, timeout)` and how long the wait took.
private func timedEvents(_ poller: LibeventPoller, _ timeout: PollTimeout) throws -> (Duration, [Seen]) {
    let start = ContinuousClock.now
    let seen = try events(poller, timeout)
    return (ContinuousClock.now - start, seen)
}
