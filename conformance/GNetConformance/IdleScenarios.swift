import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// Idle timeouts: they fire on time for a silent connection and never for a busy one on the
/// same loop, tell read silence from write silence, let `onIdle` send a goodbye, and a
/// connection's own setting beats the engine-wide one. Times are taken on the server, from
/// `onOpen` to `onIdle` / `onClose`.
enum IdleScenarios {
    static let all: [Scenario] = [
        Scenario("idle.timeout-fires-busy-neighbour-untouched", .engine, run: firesOnlyWhenIdle),
        Scenario("idle.read-idle-vs-write-idle", .engine, run: readVersusWrite),
        Scenario("idle.goodbye-before-eof", .engine, run: goodbye),
        Scenario("idle.per-connection-overrides-engine", .engine, run: perConnection),
    ]

    /// How late a timeout may fire on a loaded two-core machine.
    static let tolerance = Duration.milliseconds(300)
    /// The engine stamps a new connection just before `onOpen`, where the scenarios take their
    /// time, so a timeout measured from there may look this much short (microseconds, really).
    static let skew = Duration.milliseconds(2)

    /// What the server saw of each connection, by id.
    final class Log: Sendable {
        struct Entry { var opened: ContinuousClock.Instant? = nil; var idled: ContinuousClock.Instant? = nil
                       var closed: ContinuousClock.Instant? = nil; var error: (any Error)? = nil; var idles: [IdleKind] = [] }
        let entries = Locked<[Int: Entry]>([:])
        func open(_ id: Int) { entries.withLock { $0[id, default: Entry()].opened = .now } }
        func idle(_ id: Int, _ kind: IdleKind) {
            entries.withLock { e in
                e[id, default: Entry()].idles.append(kind)
                if e[id]!.idled == nil { e[id]!.idled = .now }
            }
        }
        func close(_ id: Int, _ error: (any Error)?) {
            entries.withLock { $0[id, default: Entry()].closed = .now; $0[id, default: Entry()].error = error }
        }
        subscript(id: Int) -> Entry { entries.withLock { $0[id] ?? Entry() } }
        func isClosed(_ id: Int) -> Bool { self[id].closed != nil }
        func isIdle(_ id: Int) -> Bool { self[id].idled != nil }
        /// From `onOpen` to the first `onIdle` (the close then lingers for the peer's EOF).
        func lifetime(_ id: Int) -> Duration? {
            let e = self[id]
            guard let o = e.opened, let i = e.idled else { return nil }
            return i - o
        }
    }

    /// `onClose` got `GNetError.idleTimeout(kind)`.
    static func expectIdleError(_ log: Log, _ id: Int, _ kind: IdleKind) throws {
        let e = log[id].error
        try expect((e as? GNetError) == .idleTimeout(kind),
                   "connection \(id): onClose got \(e.map { "\($0)" } ?? "nil"), not GNetError.idleTimeout(.\(kind))")
    }

    /// Engine-wide `idleTimeout` 300 ms, one loop: a silent connection is closed between 300 ms
    /// and 300 ms + tolerance after it opened, through the default `onIdle`, with the typed
    /// error; a connection on the same loop echoing a byte every 10 ms for 900 ms is never
    /// told it is idle and stays open.
    static func firesOnlyWhenIdle(_ kind: PollerKind) async throws -> Trace? {
        let log = Log()
        let handler = ScriptedHandler(
            onOpen: { _, id in log.open(id); return (nil, .none) },
            onTraffic: { c, _ in
                _ = try? c.next { try c.write($0) }
                return .none
            },
            onClose: { _, id, error in log.close(id, error) },
            onIdle: { _, id, kind in log.idle(id, kind); return .close })
        try await withEngine(kind, handler, configure: { $0.loops = 1; $0.idleTimeout = .milliseconds(300) }) { _, address in
            let busy = try TestClient(address)
            try await eventually("the busy connection to open") { log[0].opened != nil }
            let silent = try TestClient(address)
            try await eventually("the silent connection to open") { log[1].opened != nil }
            try await onThread(timeout: .seconds(10), "busy traffic") {
                let end = ContinuousClock.now + .milliseconds(900)
                while ContinuousClock.now < end {
                    try busy.send([7])
                    _ = try busy.receive(exactly: 1)
                    usleep(10_000)
                }
            }
            try await eventually("the silent connection to go idle") { log.isIdle(1) }
            try expect(!log.isClosed(0), "the busy connection was closed: \(log[0].error.map { "\($0)" } ?? "nil")")
            try expect(log[0].idles.isEmpty, "the busy connection was told it is idle: \(log[0].idles)")
            let lifetime = log.lifetime(1)!
            try expect(lifetime >= .milliseconds(300) - skew, "idleTimeout 300 ms closed a connection after \(lifetime)")
            try expect(lifetime < .milliseconds(300) + tolerance, "idleTimeout 300 ms closed a connection only after \(lifetime)")
            try expect(log[1].idles == [.readWrite], "the silent connection's onIdle calls: \(log[1].idles)")
            try expect(silent.isClosedByPeer(within: .seconds(2)), "the silent client saw no EOF")
            silent.shutdownWrite() // ends the server's linger
            try await eventually("onClose of the silent connection") { log.isClosed(1) }
            try expectIdleError(log, 1, .readWrite)
        }
        return nil
    }

    /// `readIdleTimeout` and `writeIdleTimeout` both 250 ms. Connection 0's peer sends a byte
    /// every 20 ms and the server never answers: its write side goes idle (`.write`), not its
    /// read side. Connection 1's peer sends nothing while the server writes it a byte every
    /// 20 ms (scheduled on the connection's loop): `.read`, not `.write`.
    static func readVersusWrite(_ kind: PollerKind) async throws -> Trace? {
        let log = Log()
        @Sendable func ping(_ loop: EventLoopHandle, _ handle: ConnectionHandle) {
            handle.write([1]) { result in
                if case .success = result { loop.schedule(after: .milliseconds(20)) { ping(loop, handle) } }
            }
        }
        let handler = ScriptedHandler(
            onOpen: { c, id in
                log.open(id)
                if id == 1 { ping(c.loop, c.handle) }
                return (nil, .none)
            },
            onTraffic: { c, _ in c.discard(c.inboundBuffered); return .none },
            onClose: { _, id, error in log.close(id, error) },
            onIdle: { _, id, kind in log.idle(id, kind); return .close })
        try await withEngine(kind, handler, configure: {
            $0.readIdleTimeout = .milliseconds(250)
            $0.writeIdleTimeout = .milliseconds(250)
        }) { _, address in
            let talker = try TestClient(address)
            try await eventually("connection 0 to open") { log[0].opened != nil }
            let listener = try TestClient(address)
            try await eventually("connection 1 to open") { log[1].opened != nil }
            let stop = Locked(false)
            let reader = TestThread.start {
                while !stop.withLock({ $0 }) { if (try? listener.receiveSome()).map(\.isEmpty) ?? true { return } }
            }
            defer { stop.withLock { $0 = true }; reader.join() }
            try await onThread(timeout: .seconds(10), "talking") {
                while !log.isIdle(0) {
                    _ = try? talker.send([2])
                    usleep(20_000)
                }
            }
            try await eventually("connection 1 to go idle") { log.isIdle(1) }
            talker.shutdownWrite()
            listener.shutdownWrite()
            try await eventually("both to close") { log.isClosed(0) && log.isClosed(1) }
            try expect(log[0].idles == [.write], "a peer that only sends: onIdle got \(log[0].idles), expected [write]")
            try expect(log[1].idles == [.read], "a peer that only receives: onIdle got \(log[1].idles), expected [read]")
            try expectIdleError(log, 0, .write)
            try expectIdleError(log, 1, .read)
            for id in 0...1 {
                let t = log.lifetime(id)!
                try expect(t >= .milliseconds(250) - skew && t < .milliseconds(250) + tolerance,
                           "connection \(id): a 250 ms idle timeout closed it after \(t)")
            }
        }
        return nil
    }

    /// `onIdle` writes a goodbye and returns `.close`: the peer receives it, then EOF, and
    /// `onClose` gets `GNetError.idleTimeout(.readWrite)`.
    static func goodbye(_ kind: PollerKind) async throws -> Trace? {
        let log = Log()
        let handler = ScriptedHandler(
            onOpen: { _, id in log.open(id); return (nil, .none) },
            onClose: { _, id, error in log.close(id, error) },
            onIdle: { c, id, kind in
                log.idle(id, kind)
                try? c.write("idle too long, bye\n")
                return .close
            })
        try await withEngine(kind, handler, configure: { $0.idleTimeout = .milliseconds(150) }) { _, address in
            let client = try TestClient(address)
            let got = try await onThread(timeout: .seconds(10), "goodbye") { try client.receiveUntilEOF() }
            try expect(String(decoding: got, as: UTF8.self) == "idle too long, bye\n",
                       "the peer received \(got.count) bytes before EOF: \(String(decoding: got, as: UTF8.self).debugDescription)")
            client.shutdownWrite()
            try await eventually("onClose") { log.isClosed(0) }
            try expectIdleError(log, 0, .readWrite)
        }
        return nil
    }

    /// Engine-wide `idleTimeout` 400 ms. Connection 0 sets 100 ms in `onOpen`, connection 1
    /// turns it off, connection 2 keeps the engine's: 0 closes first (well before 400 ms), 2
    /// at 400 ms, and 1 is still open after 900 ms.
    static func perConnection(_ kind: PollerKind) async throws -> Trace? {
        let log = Log()
        let problems = Locked<[String]>([])
        let handler = ScriptedHandler(
            onOpen: { c, id in
                log.open(id)
                do {
                    if id == 0 { try c.setIdleTimeout(.milliseconds(100)) }
                    if id == 1 { try c.setIdleTimeout(nil) }
                    let expected: Duration? = id == 0 ? .milliseconds(100) : id == 1 ? nil : .milliseconds(400)
                    if c.idleTimeouts.idle != expected { problems.withLock { $0.append("connection \(id): idleTimeouts.idle is \(String(describing: c.idleTimeouts.idle))") } }
                } catch {
                    problems.withLock { $0.append("setIdleTimeout threw \(error)") }
                }
                return (nil, .none)
            },
            onClose: { _, id, error in log.close(id, error) },
            onIdle: { _, id, kind in log.idle(id, kind); return .close })
        try await withEngine(kind, handler, configure: { $0.idleTimeout = .milliseconds(400) }) { _, address in
            var clients: [TestClient] = []
            for id in 0..<3 {
                clients.append(try TestClient(address))
                try await eventually("connection \(id) to open") { log[id].opened != nil }
            }
            try await eventually("connections 0 and 2 to go idle") { log.isIdle(0) && log.isIdle(2) }
            let t0 = log.lifetime(0)!, t2 = log.lifetime(2)!
            try expect(t0 >= .milliseconds(100) - skew && t0 < .milliseconds(100) + tolerance, "a 100 ms per-connection timeout closed after \(t0)")
            try expect(t2 >= .milliseconds(400) - skew && t2 < .milliseconds(400) + tolerance, "the 400 ms engine-wide timeout closed after \(t2)")
            let opened1 = log[1].opened!
            let sinceOpen = ContinuousClock.now - opened1
            if sinceOpen < .milliseconds(900) { try await Task.sleep(for: .milliseconds(900) - sinceOpen) }
            try expect(!log.isClosed(1) && !log.isIdle(1), "a connection that turned its idle timeout off was closed: \(log[1].error.map { "\($0)" } ?? "nil")")
            for c in clients { c.shutdownWrite() }
            try await eventually("connections 0 and 2 to close") { log.isClosed(0) && log.isClosed(2) }
            try expectIdleError(log, 0, .readWrite)
            try expectIdleError(log, 2, .readWrite)
        }
        let p = problems.withLock { $0 }
        try expect(p.isEmpty, p.joined(separator: "; "))
        return nil
    }
}
