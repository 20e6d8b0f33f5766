import GNet
import Glibc
import Poller
import Synchronization
import TestSupport

/// Checks of the `Poller` contract itself, below the engine.
enum PollerScenarios {
    static let all: [Scenario] = [
        Scenario("poller.readable-writable", .poller, run: readableWritable),
        Scenario("poller.level-triggered", .poller, run: levelTriggered),
        Scenario("poller.modify-deregister", .poller, run: modifyDeregister),
        Scenario("poller.no-stale-event-after-reuse", .poller, run: noStaleEvent),
        Scenario("poller.deregister-inside-wait", .poller, run: deregisterInsideWait),
        Scenario("poller.wakeup-from-thread", .poller, run: wakeupFromThread),
        Scenario("poller.timeouts", .poller, run: timeouts),
        Scenario("poller.peer-eof", .poller, run: peerEOF),
        Scenario("poller.no-readEOF-without-read-interest", .poller, run: noReadEOFWithoutReadInterest),
        Scenario("poller.bad-descriptor", .poller, run: badDescriptor),
    ]

    /// Collects one wait's reports.
    static func collect(_ p: any Poller, _ timeout: PollTimeout = .after(.milliseconds(200))) throws -> [(PollToken, IOEvents)] {
        var got: [(PollToken, IOEvents)] = []
        _ = try p.wait(timeout) { got.append(($0, $1)) }
        return got
    }

    /// Waits until `token`'s registration reports all of `events` in one report (tolerating
    /// spurious and unrelated reports) for up to `timeout`. Bounded by time, not by a count of
    /// waits: a level-triggered `write` can end every wait at once while `read` is on its way.
    static func waitFor(_ p: any Poller, _ token: PollToken, _ events: IOEvents, timeout: Duration = .seconds(2)) throws {
        let deadline = ContinuousClock.now + timeout
        repeat {
            for (t, e) in try collect(p, .after(.milliseconds(50))) where t == token && e.isSuperset(of: events) { return }
        } while ContinuousClock.now < deadline
        throw ConformanceFailure("\(events) for \(token) was never reported within \(timeout)")
    }

    static func readableWritable(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let pair = try SocketPair()
        defer { pair.close() }
        let token = PollToken(fd: pair.a, generation: 7)
        try p.register(pair.a, interest: [.read, .write], token: token)
        // A fresh socket is writable, not readable.
        try waitFor(p, token, .write)
        for (t, e) in try collect(p, .now) where t == token {
            try expect(!e.contains(.read), "read reported before any byte was sent: \(e)")
        }
        try send(pair.b, "x")
        try waitFor(p, token, [.read, .write])
        try p.deregister(pair.a, interest: [.read, .write])
        return nil
    }

    static func levelTriggered(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let pair = try SocketPair()
        defer { pair.close() }
        let token = PollToken(fd: pair.a, generation: 1)
        try p.register(pair.a, interest: .read, token: token)
        try send(pair.b, "hello")
        // Unread input must be reported on every wait, not once.
        for round in 0..<3 {
            let got = try collect(p)
            try expect(got.contains { $0.0 == token && $0.1.contains(.read) },
                       "unread input not reported again on wait \(round + 1): \(got.map { "\($0.0) \($0.1)" })")
        }
        try expect(drain(pair.a) == 5, "expected the 5 bytes to be readable")
        // Drained: nothing more (a spurious report is allowed once, never forever).
        var quiet = false
        for _ in 0..<3 where !quiet {
            quiet = try collect(p, .after(.milliseconds(30))).allSatisfy { $0.0 != token || !$0.1.contains(.read) }
        }
        try expect(quiet, "read keeps being reported after the input was drained")
        try p.deregister(pair.a, interest: .read)
        return nil
    }

    static func modifyDeregister(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let pair = try SocketPair()
        defer { pair.close() }
        var token = PollToken(fd: pair.a, generation: 1)
        try p.register(pair.a, interest: .read, token: token)
        try send(pair.b, "data")
        try waitFor(p, token, .read)
        // read → write: read must no longer be reported, write must be.
        token.generation = 2
        try p.modify(pair.a, from: .read, to: .write, token: token)
        var sawWrite = false
        for _ in 0..<3 {
            for (t, e) in try collect(p) where t.fd == pair.a {
                try expect(!e.contains(.read), "read reported after interest became [write]")
                try expect(t.generation == 2, "old token \(t) reported after modify")
                if e.contains(.write) { sawWrite = true }
            }
            if sawWrite { break }
        }
        try expect(sawWrite, "write not reported after modify to [write]")
        // → []: nothing at all.
        try p.modify(pair.a, from: .write, to: [], token: token)
        for (t, e) in try collect(p, .after(.milliseconds(50))) where t.fd == pair.a {
            try expect(e.interest.isEmpty, "\(e) reported with an empty interest")
        }
        // back to read: the waiting input shows up again.
        try p.modify(pair.a, from: [], to: .read, token: token)
        try waitFor(p, token, .read)
        try p.deregister(pair.a, interest: .read)
        for (t, _) in try collect(p, .after(.milliseconds(50))) {
            try expect(t.fd != pair.a, "event reported after deregister: \(t)")
        }
        return nil
    }

    static func noStaleEvent(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let first = try SocketPair()
        try p.register(first.a, interest: [.read, .write], token: PollToken(fd: first.a, generation: 1))
        try send(first.b, "old")
        _ = try collect(p, .now)
        let reused = first.a
        try p.deregister(first.a, interest: [.read, .write])
        first.close()
        // The kernel hands out the lowest free number: the new pair reuses the old one.
        let second = try SocketPair()
        defer { second.close() }
        try expect(second.a == reused || second.b == reused, "descriptor \(reused) was not reused; cannot test")
        let fd = second.a == reused ? second.a : second.b
        let token = PollToken(fd: fd, generation: 2)
        try p.register(fd, interest: .read, token: token)
        for _ in 0..<3 {
            for (t, _) in try collect(p, .after(.milliseconds(30))) {
                try expect(t.generation != 1, "an event of the closed registration reached the new one: \(t)")
            }
        }
        _ = (fd == second.a ? second.b : second.a).description
        try send(fd == second.a ? second.b : second.a, "new")
        try waitFor(p, token, .read)
        try p.deregister(fd, interest: .read)
        return nil
    }

    static func deregisterInsideWait(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let x = try SocketPair()
        let y = try SocketPair()
        defer { x.close(); y.close() }
        let tx = PollToken(fd: x.a, generation: 1)
        let ty = PollToken(fd: y.a, generation: 1)
        try p.register(x.a, interest: .read, token: tx)
        try p.register(y.a, interest: .read, token: ty)
        try send(x.b, "1")
        try send(y.b, "2")
        // Both readable; whichever is reported first deregisters the other, whose report must
        // then not arrive in the same wait or any later one.
        try await Task.sleep(for: .milliseconds(20))
        var reported: [PollToken] = []
        var removed: PollToken? = nil
        _ = try p.wait(.after(.milliseconds(200))) { t, _ in
            reported.append(t)
            if removed == nil {
                let other = t == tx ? y : x
                try p.deregister(other.a, interest: .read)
                removed = t == tx ? ty : tx
            }
        }
        guard let removed else { throw ConformanceFailure("no event reported for two readable sockets") }
        try expect(!reported.contains(removed), "an event of a registration deregistered during the wait was still reported")
        for (t, _) in try collect(p, .after(.milliseconds(30))) {
            try expect(t != removed, "deregistered registration reported on a later wait")
        }
        let kept = removed == tx ? y : x
        try p.deregister(kept.a, interest: .read)
        return nil
    }

    static func wakeupFromThread(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let waker = try p.makeWaker()
        // A wakeup during a blocked wait ends it promptly.
        let start = ContinuousClock.now
        TestThread.detach {
            usleep(50_000)
            try? waker.wakeup()
        }
        let n = try p.wait(.after(.seconds(5))) { _, _ in }
        let waited = ContinuousClock.now - start
        try expect(n == 0, "a wakeup was reported as \(n) events")
        try expect(waited < .seconds(2), "wait returned only after \(waited), not on the wakeup")
        // Many wakeups before a wait coalesce: the first wait returns at once, the next blocks.
        for _ in 0..<100 { try waker.wakeup() }
        let t0 = ContinuousClock.now
        _ = try p.wait(.after(.seconds(5))) { _, _ in }
        try expect(ContinuousClock.now - t0 < .seconds(1), "pending wakeups did not end the next wait")
        var drained = false
        for _ in 0..<3 where !drained {
            let t1 = ContinuousClock.now
            _ = try p.wait(.after(.milliseconds(100))) { _, _ in }
            drained = ContinuousClock.now - t1 >= .milliseconds(90)
        }
        try expect(drained, "100 wakeups did not coalesce: waits keep returning early")
        return nil
    }

    static func timeouts(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let t0 = ContinuousClock.now
        _ = try p.wait(.now) { _, _ in }
        try expect(ContinuousClock.now - t0 < .milliseconds(50), ".now blocked")
        for ms in [10, 50] {
            let start = ContinuousClock.now
            _ = try p.wait(.after(.milliseconds(ms))) { _, _ in }
            let waited = ContinuousClock.now - start
            try expect(waited >= .milliseconds(ms - 1), ".after(\(ms) ms) returned after only \(waited)")
            try expect(waited < .milliseconds(ms + 150), ".after(\(ms) ms) took \(waited)")
        }
        return nil
    }

    static func peerEOF(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let pair = try SocketPair()
        defer { Glibc.close(pair.a) }
        let token = PollToken(fd: pair.a, generation: 1)
        try p.register(pair.a, interest: .read, token: token)
        try send(pair.b, "last")
        Glibc.close(pair.b)
        try waitFor(p, token, .read)
        var buf = [UInt8](repeating: 0, count: 16)
        try expect(Glibc.read(pair.a, &buf, 16) == 4, "the bytes sent before EOF were not readable")
        try expect(Glibc.read(pair.a, &buf, 16) == 0, "read after the data did not report EOF")
        try p.deregister(pair.a, interest: .read)
        return nil
    }

    /// A registration that wants only write readiness, on a socket whose send buffer is full
    /// and whose peer has sent EOF, is not reported: a peer's EOF comes only with read interest,
    /// or a loop waiting for a closing connection to drain would spin.
    static func noReadEOFWithoutReadInterest(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        let pair = try SocketPair()
        defer { pair.close() }
        _ = fcntl(pair.a, F_SETFL, fcntl(pair.a, F_GETFL) | O_NONBLOCK)
        let chunk = [UInt8](repeating: 7, count: 65536)
        while chunk.withUnsafeBytes({ Glibc.send(pair.a, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) > 0 {}
        Glibc.shutdown(pair.b, Int32(SHUT_WR))
        let token = PollToken(fd: pair.a, generation: 1)
        // Registered for reading first, as the engine registers a connection; then only
        // writing is wanted, as while a closing connection drains.
        try p.register(pair.a, interest: .read, token: token)
        _ = try p.wait(.after(.milliseconds(20))) { _, _ in }
        try p.modify(pair.a, from: .read, to: .write, token: token)
        var reported: [IOEvents] = []
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .milliseconds(60) {
            _ = try p.wait(.after(.milliseconds(20))) { _, e in reported.append(e) }
        }
        try expect(reported.count <= 1, "a write-only registration was reported \(reported.count) times in 60 ms: \(reported.prefix(3))")
        try expect(!reported.contains { $0.contains(.readEOF) }, "readEOF reported without read interest: \(reported)")
        try p.modify(pair.a, from: .write, to: .read, token: token)
        var sawEOF = false
        _ = try p.wait(.after(.milliseconds(200))) { _, e in sawEOF = e.contains(.readEOF) || e.contains(.read) }
        try expect(sawEOF, "with read interest the peer's EOF was not reported")
        try p.deregister(pair.a, interest: .read)
        return nil
    }

    static func badDescriptor(_ kind: PollerKind) async throws -> Trace? {
        let p = try kind.makePoller()
        defer { try? p.close() }
        for fd: Int32 in [-1, 1_000_000] {
            do {
                try p.register(fd, interest: .read, token: PollToken(fd: fd, generation: 1))
                throw ConformanceFailure("registering fd \(fd) succeeded")
            } catch is PollerError {
            } catch is SystemError {
            }
        }
        return nil
    }
}
