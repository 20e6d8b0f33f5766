#if canImport(Glibc)
import Dispatch
import Glibc
import Poller
import PollerDispatch
import Synchronization
import TestSupport
import Testing

// MARK: Helpers

/// One wait, its reports collected (several reports of one token are OR-ed).
private func waitOnce(_ p: DispatchPoller, _ t: PollTimeout) throws -> [PollToken: IOEvents] {
    var seen: [PollToken: IOEvents] = [:]
    let n = try p.wait(t) { token, events in
        #expect(seen[token] == nil, "one report per registration per wait")
        seen[token, default: []].formUnion(events)
    }
    #expect(n == seen.count)
    return seen
}

/// Waits (up to `limit`) until `token` is reported with all of `events`; returns what it saw.
private func waitFor(
    _ p: DispatchPoller, _ token: PollToken, _ events: IOEvents, limit: Duration = .seconds(2)
) throws -> IOEvents {
    let clock = ContinuousClock()
    let end = clock.now + limit
    var union: IOEvents = []
    while clock.now < end {
        let seen = try waitOnce(p, .after(.milliseconds(100)))
        if let e = seen[token] {
            union.formUnion(e)
            if e.isSuperset(of: events) { return e }
        }
    }
    Issue.record("\(token) never reported \(events) within \(limit); saw \(union)")
    return union
}

/// Runs `action` on its own thread after `delay` unless stopped first: lets a test whose
/// `.block` wait never returns fail instead of hanging.
private final class Watchdog: Sendable {
    private let thread: TestThread

    init(after delay: Duration = .seconds(1), _ action: @escaping @Sendable () -> Void) {
        let flag = StopFlag()
        thread = TestThread.start {
            let clock = ContinuousClock(), end = clock.now + delay
            while clock.now < end {
                if flag.value.load(ordering: .acquiring) { return }
                usleep(5_000)
            }
            action()
        }
        self.flag = flag
    }

    private let flag: StopFlag

    func stop() {
        flag.value.store(true, ordering: .releasing)
        thread.join()
    }
}

private final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

// MARK: Tests

/// Timing-sensitive and fd-number-sensitive: run one at a time.
@Suite(.serialized, .timeLimit(.minutes(1)))
struct DispatchPollerTests {
    @Test func nameAndCapabilities() {
        let p = DispatchPoller()
        #expect(DispatchPoller.name == "dispatch")
        #expect(p.capabilities == PollerCapabilities(edgeTriggered: false, method: "dispatch"))
    }

    @Test func readableAndWritableCarryTheirTokens() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        let ta = PollToken(fd: pair.a, generation: 7)
        let tb = PollToken(fd: pair.b, generation: 9)
        try p.register(pair.a, interest: .read, token: ta)
        #expect(try waitOnce(p, .after(.milliseconds(50))).isEmpty, "nothing to read yet")

        try send(pair.b, "a")
        let ea = try waitFor(p, ta, .read)
        #expect(!ea.contains(.write), "no write interest")

        try p.register(pair.b, interest: .write, token: tb)
        let eb = try waitFor(p, tb, .write)
        #expect(!eb.contains(.read))
        try p.close()
    }

    @Test func unreadDataIsReportedOnEveryWait() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        let t = PollToken(fd: pair.a, generation: 1)
        try p.register(pair.a, interest: .read, token: t)
        try send(pair.b, "0123456789")
        _ = try waitFor(p, t, .read)
        for round in 0..<5 {
            #expect(try waitOnce(p, .now)[t] == .read, "round \(round), .now")
            #expect(try waitOnce(p, .after(.milliseconds(100)))[t] == .read, "round \(round), .after")
        }
        // Left unread between waits, the source must not keep the queue busy.
        var before = rusage(), after = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &before)
        usleep(200_000)
        getrusage(Int32(RUSAGE_SELF.rawValue), &after)
        let cpu = (after.ru_utime.tv_sec - before.ru_utime.tv_sec) * 1_000_000
            + (after.ru_utime.tv_usec - before.ru_utime.tv_usec)
            + (after.ru_stime.tv_sec - before.ru_stime.tv_sec) * 1_000_000
            + (after.ru_stime.tv_usec - before.ru_stime.tv_usec)
        #expect(cpu < 50_000, "\(cpu) µs of CPU while idle: the source is spinning")

        #expect(drain(pair.a) == 10)
        #expect(try waitOnce(p, .after(.milliseconds(100)))[t] == nil, "drained: no longer readable")
        try send(pair.b, "a")
        _ = try waitFor(p, t, .read)
        try p.close()
    }

    @Test func modifyFollowsTheCurrentInterest() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        try send(pair.b, "a")  // a is now readable and writable
        var t = PollToken(fd: pair.a, generation: 1)
        try p.register(pair.a, interest: .read, token: t)
        #expect(!(try waitFor(p, t, .read)).contains(.write))

        t.generation = 2
        try p.modify(pair.a, from: .read, to: .write, token: t)
        #expect(!(try waitFor(p, t, .write)).contains(.read))
        #expect(try waitOnce(p, .now)[t] == .write, "still writable, level-triggered")

        try p.modify(pair.a, from: .write, to: [], token: t)
        #expect(try waitOnce(p, .after(.milliseconds(100))).isEmpty)
        #expect(try waitOnce(p, .now).isEmpty)

        try p.modify(pair.a, from: [], to: .read, token: t)
        #expect(!(try waitFor(p, t, .read)).contains(.write))

        try p.modify(pair.a, from: .read, to: [.read, .write], token: t)
        _ = try waitFor(p, t, [.read, .write])

        // Interest dropped while events are already found: nothing of it is reported.
        try p.modify(pair.a, from: [.read, .write], to: .read, token: t)
        #expect(try waitOnce(p, .now)[t] == .read)
        try p.close()
    }

    @Test func nothingAfterDeregister() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        let t = PollToken(fd: pair.a, generation: 1)
        try p.register(pair.a, interest: [.read, .write], token: t)
        try send(pair.b, "a")
        _ = try waitFor(p, t, [.read, .write])
        try p.deregister(pair.a, interest: [.read, .write])
        try send(pair.b, "a")
        #expect(try waitOnce(p, .after(.milliseconds(100))).isEmpty)
        #expect(throws: PollerError.notRegistered(fd: pair.a)) {
            try p.deregister(pair.a, interest: .read)
        }
        #expect(throws: PollerError.notRegistered(fd: pair.a)) {
            try p.modify(pair.a, from: .read, to: .write, token: t)
        }
        try p.close()
    }

    /// The old registration had an event found and pending; its fd number is reused at once.
    @Test func noStaleEventAfterFdReuse() throws {
        let p = DispatchPoller()
        for round in 0..<20 {
            let old = try SocketPair()
            let number = old.a
            let oldToken = PollToken(fd: number, generation: UInt32(2 * round))
            try p.register(number, interest: [.read, .write], token: oldToken)
            try send(old.b, "a")
            _ = try waitFor(p, oldToken, [.read, .write])  // found, left pending (unread)
            try p.deregister(number, interest: [.read, .write])
            _ = Glibc.close(number)

            let fresh = try SocketPair()
            if fresh.a != number {  // put a new socket at the same number
                try #require(dup2(fresh.a, number) == number)
                _ = Glibc.close(fresh.a)
                fresh.a = number
            }
            let newToken = PollToken(fd: number, generation: UInt32(2 * round + 1))
            try p.register(number, interest: .read, token: newToken)
            for _ in 0..<2 {
                let seen = try waitOnce(p, .after(.milliseconds(20)))
                #expect(seen.isEmpty, "round \(round): \(seen) — the new socket has nothing to read")
            }
            try send(fresh.b, "a")
            #expect(try waitFor(p, newToken, .read) == .read)
            try p.deregister(number, interest: .read)
            old.close()
            fresh.close()
        }
        try p.close()
    }

    /// Two pairs registered for read (generations 1 and 2) with data waiting on both, once both
    /// have been seen ready, so the next wait reports both. The caller closes the pairs.
    fileprivate func registerTwoReady(_ p: DispatchPoller) throws -> (SocketPair, SocketPair, PollToken, PollToken) {
        let one = try SocketPair(), two = try SocketPair()
        let t1 = PollToken(fd: one.a, generation: 1), t2 = PollToken(fd: two.a, generation: 2)
        try p.register(one.a, interest: .read, token: t1)
        try p.register(two.a, interest: .read, token: t2)
        try send(one.b, "a")
        try send(two.b, "a")
        var found: Set<PollToken> = []
        let clock = ContinuousClock(), end = clock.now + .seconds(2)
        while found.count < 2 && clock.now < end {
            found.formUnion(try waitOnce(p, .after(.milliseconds(100))).keys)
        }
        try #require(found.count == 2)
        return (one, two, t1, t2)
    }

    @Test func deregisterInsideBodyDropsPendingEvent() throws {
        let p = DispatchPoller()
        let (one, two, t1, _) = try registerTwoReady(p)
        defer { one.close(); two.close() }

        // Both are ready for this wait; the first body call removes the other and puts a new
        // registration (with data of its own) at its number.
        var calls: [PollToken] = []
        var reused: SocketPair?
        var newToken = PollToken(fd: -1, generation: 0)
        let n = try p.wait(.now) { token, _ in
            calls.append(token)
            let other = token == t1 ? two : one
            if calls.count == 1 {
                let number = other.a
                try p.deregister(number, interest: .read)
                other.close()  // safe: deregister returned
                let fresh = try SocketPair()
                if fresh.a != number {
                    try #require(dup2(fresh.a, number) == number)
                    _ = Glibc.close(fresh.a)
                    fresh.a = number
                }
                try send(fresh.b, "a")
                newToken = PollToken(fd: number, generation: 99)
                try p.register(number, interest: .read, token: newToken)
                reused = fresh
            }
        }
        #expect(calls.count == 1, "\(calls)")
        #expect(n == 1)
        _ = try waitFor(p, newToken, .read)  // the new registration gets its own event
        reused?.close()
        try p.close()
    }

    @Test func modifyInsideBodyAppliesToPendingReports() throws {
        let p = DispatchPoller()
        let (one, two, t1, t2) = try registerTwoReady(p)
        defer { one.close(); two.close() }

        // The first body call switches the other to write interest with a new generation:
        // its already-found read must not be reported.
        var calls: [(PollToken, IOEvents)] = []
        _ = try p.wait(.now) { token, events in
            calls.append((token, events))
            if calls.count == 1 {
                let other = token == t1 ? t2 : t1
                try p.modify(other.fd, from: .read, to: .write,
                             token: PollToken(fd: other.fd, generation: other.generation + 10))
            }
        }
        #expect(calls.count == 1, "\(calls)")
        #expect(calls.allSatisfy { $0.1 == .read })
        try p.close()
    }

    /// If libdispatch still held the old descriptor, its late `EPOLL_CTL_DEL` (or its muxnote
    /// keyed by the number) would swallow the new socket's events.
    @Test func closingAfterDeregisterIsSafe() throws {
        let p = DispatchPoller()
        var costs: [Duration] = []
        for round in 0..<100 {
            let pair = try SocketPair()
            let number = pair.a
            let t = PollToken(fd: number, generation: UInt32(round))
            try p.register(number, interest: [.read, .write], token: t)
            if round % 2 == 0 { try send(pair.b, "a") }
            _ = try waitOnce(p, .after(.milliseconds(round % 2 == 0 ? 5 : 0)))
            costs.append(try ContinuousClock().measure { try p.deregister(number, interest: [.read, .write]) })
            pair.close()

            let fresh = try SocketPair()
            if fresh.a != number {
                try #require(dup2(fresh.a, number) == number)
                _ = Glibc.close(fresh.a)
                fresh.a = number
            }
            let t2 = PollToken(fd: number, generation: 1_000 + UInt32(round))
            try p.register(number, interest: .read, token: t2)
            try send(fresh.b, "a")
            #expect(try waitFor(p, t2, .read) == .read, "round \(round)")
            try p.deregister(number, interest: .read)
            fresh.close()
        }
        costs.sort()
        print("dispatch poller: deregister (read+write sources) median \(costs[50].inMicroseconds) µs, p90 \(costs[90].inMicroseconds) µs")
        try p.close()
    }

    @Test func peerEOFIsReported() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        let t = PollToken(fd: pair.a, generation: 3)
        try p.register(pair.a, interest: .read, token: t)
        try send(pair.b, "abc")
        _ = shutdown(pair.b, Int32(SHUT_WR))
        let e = try waitFor(p, t, .read)
        #if os(Linux)
        #expect(e.contains(.readEOF), "\(e)")
        #endif
        #expect(!e.contains(.reset))
        #expect(drain(pair.a) == 3)
        var byte: UInt8 = 0
        #expect(Glibc.read(pair.a, &byte, 1) == 0, "EOF")
        #expect(try waitOnce(p, .now)[t]?.contains(.read) == true, "EOF stays readable")

        // The peer gone entirely: a hang-up.
        try p.deregister(pair.a, interest: .read)
        pair.close()
        let other = try SocketPair()
        defer { other.close() }
        let t2 = PollToken(fd: other.a, generation: 4)
        try p.register(other.a, interest: .read, token: t2)
        _ = Glibc.close(other.b)
        other.b = -1
        let e2 = try waitFor(p, t2, .read)
        #expect(e2.contains(.reset), "\(e2)")
        try p.close()
    }

    @Test func readinessWakesABlockedWait() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        let t = PollToken(fd: pair.a, generation: 5)
        try p.register(pair.a, interest: .read, token: t)
        let peer = pair.b
        let waker = try p.makeWaker()
        let watchdog = Watchdog { try? waker.wakeup() }
        let thread = TestThread.start {
            usleep(30_000)
            try? send(peer, "a")
        }
        var seen: [PollToken: IOEvents] = [:]
        let d = try ContinuousClock().measure { seen = try waitOnce(p, .block) }
        thread.join()
        watchdog.stop()
        #expect(seen[t] == .read)
        #expect(d >= .milliseconds(25) && d < .milliseconds(150), "\(d)")
        try p.close()
    }

    @Test func wakeupFromAnotherThread() throws {
        let p = DispatchPoller()
        let waker = try p.makeWaker()
        // If the wakeup is lost, readiness ends the wait (and the test fails) instead of a hang.
        let pair = try SocketPair()
        defer { pair.close() }
        try p.register(pair.a, interest: .read, token: PollToken(fd: pair.a, generation: 0))
        let peer = pair.b
        let watchdog = Watchdog { try? send(peer, "a") }
        let thread = TestThread.start {
            usleep(50_000)
            try? waker.wakeup()
        }
        var n = -1
        let d = try ContinuousClock().measure { n = try p.wait(.block) { _, _ in Issue.record("a wakeup is not an event") } }
        thread.join()
        watchdog.stop()
        #expect(n == 0)
        #expect(d >= .milliseconds(45) && d < .milliseconds(150), "\(d)")

        // Many wakeups, from several threads, before a wait: one prompt return, then quiet.
        let threads = (0..<4).map { _ in TestThread.start { for _ in 0..<1_000 { try? waker.wakeup() } } }
        threads.forEach { $0.join() }
        #expect(try ContinuousClock().measure { _ = try p.wait(.after(.seconds(1))) { _, _ in } } < .milliseconds(50))
        let quiet = try ContinuousClock().measure { _ = try p.wait(.after(.milliseconds(50))) { _, _ in } }
        #expect(quiet >= .milliseconds(49), "coalesced: no second early return (\(quiet))")

        try p.close()
        try waker.wakeup()  // after close: harmless
        #expect(throws: PollerError.closed) { try p.makeWaker() }
    }

    @Test func timeouts() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        try p.register(pair.a, interest: .read, token: PollToken(fd: pair.a, generation: 0))
        var seen: [PollToken: IOEvents] = [:]
        for _ in 0..<3 {
            let d = try ContinuousClock().measure { seen = try waitOnce(p, .after(.milliseconds(50))) }
            #expect(seen.isEmpty)
            #expect(d >= .milliseconds(49) && d < .milliseconds(200), "\(d)")
            print("dispatch poller: .after(50 ms) took \(d.inMicroseconds) µs")
        }
        let now = try ContinuousClock().measure { seen = try waitOnce(p, .now) }
        #expect(seen.isEmpty)
        #expect(now < .milliseconds(5), "\(now)")
        let negative = try ContinuousClock().measure { _ = try waitOnce(p, .after(.milliseconds(-5))) }
        #expect(negative < .milliseconds(5), "\(negative)")
        try p.close()
    }

    @Test func typedErrors() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        let t = PollToken(fd: pair.a, generation: 0)
        #expect(throws: PollerError.unsupported(backend: "dispatch", feature: "edge-triggered")) {
            try p.register(pair.a, interest: .read, token: t, trigger: .edge)
        }
        #expect(throws: PollerError.invalidDescriptor(fd: -1)) {
            try p.register(-1, interest: .read, token: t)
        }
        let pair2 = try SocketPair()
        defer { pair2.close() }
        let unused: Int32 = 4_000
        #expect(fcntl(unused, F_GETFD) == -1)
        let error = #expect(throws: SystemError.self) {
            try p.register(unused, interest: .read, token: PollToken(fd: unused, generation: 0))
        }
        #expect(error?.errno == EBADF)

        try p.register(pair2.a, interest: .read, token: PollToken(fd: pair2.a, generation: 1))
        #expect(throws: PollerError.alreadyRegistered(fd: pair2.a)) {
            try p.register(pair2.a, interest: .write, token: PollToken(fd: pair2.a, generation: 2))
        }
        try p.close()
        try p.close()  // idempotent
        #expect(throws: PollerError.closed) { try p.wait(.now) { _, _ in } }
        #expect(throws: PollerError.closed) {
            try p.register(pair2.b, interest: .read, token: PollToken(fd: pair2.b, generation: 0))
        }
    }

    /// 200 pairs, bytes written to random ones from another thread while the loop waits:
    /// every byte is seen, through a bounded number of waits.
    @Test func stressNoLostEvent() throws {
        let p = DispatchPoller()
        let count = 200, writes = 4_000
        let pairs = try (0..<count).map { _ in try SocketPair() }
        defer { pairs.forEach { $0.close() } }
        var index: [Int32: Int] = [:]
        for (i, pair) in pairs.enumerated() {
            index[pair.a] = i
            try p.register(pair.a, interest: .read, token: PollToken(fd: pair.a, generation: UInt32(i)))
        }
        let writers = pairs.map(\.b)
        let sent = Mutex([Int](repeating: 0, count: count))
        let writer = TestThread.start {
            var rng = SystemRandomNumberGenerator()
            for w in 0..<writes {
                let i = Int.random(in: 0..<count, using: &rng)
                if (try? send(writers[i], "a")) != nil { sent.withLock { $0[i] += 1 } }
                if w % 100 == 0 { usleep(200) }  // let the loop block now and then
            }
        }
        var received = [Int](repeating: 0, count: count)
        var waits = 0
        let clock = ContinuousClock(), end = clock.now + .seconds(20)
        var done = false
        while !done && clock.now < end {
            waits += 1
            _ = try p.wait(.after(.milliseconds(100))) { token, events in
                #expect(events.contains(.read))
                let i = try #require(index[token.fd])
                #expect(token.generation == UInt32(i))
                received[i] += drain(token.fd)
            }
            done = received.reduce(0, +) == writes
        }
        writer.join()
        #expect(received == sent.withLock { $0 }, "no lost event")
        #expect(received.reduce(0, +) == writes)
        #expect(waits < writes + 100, "\(waits) waits")
        try p.close()
    }

    /// Not a pass/fail check beyond sanity: prints what a wait cycle costs.
    @Test func waitCycleCost() throws {
        let p = DispatchPoller()
        let pair = try SocketPair()
        defer { pair.close() }
        let t = PollToken(fd: pair.a, generation: 0)
        try p.register(pair.a, interest: .read, token: t)

        // A level re-report: the fd stays readable, each wait polls and reports it.
        try send(pair.b, "a")
        _ = try waitFor(p, t, .read)
        let rounds = 20_000
        var reported = 0
        let level = try ContinuousClock().measure {
            for _ in 0..<rounds { reported += try p.wait(.now) { _, _ in } }
        }
        #expect(reported == rounds)
        drain(pair.a)

        // A full cycle through libdispatch: write, block until reported, read.
        let trips = 2_000
        var seen = 0
        let trip = try ContinuousClock().measure {
            for _ in 0..<trips {
                try send(pair.b, "a")
                while try p.wait(.after(.seconds(1)), { _, _ in drain(pair.a) }) == 0 {}
                seen += 1
            }
        }
        #expect(seen == trips)
        print("dispatch poller: wait(.now) re-reporting 1 ready fd \(level.inMicroseconds / Double(rounds)) µs; "
              + "write→wait→read through a source \(trip.inMicroseconds / Double(trips)) µs")
        try p.close()
    }
}
#endif
