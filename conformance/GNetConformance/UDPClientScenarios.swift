import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// Dialled datagram connections (`Engine.dial("udp://…")`, `udp6`, `unixgram`): a connection
/// per dial with `onOpen` … `onClose`, one `onTraffic` per datagram from the peer (never split
/// or merged), writes as datagrams to it, the peer's refusal as a typed `onClose`, balancing,
/// closing from a handler or a handle, and stopping with nothing left behind.
enum UDPClientScenarios {
    static let all: [Scenario] = [
        Scenario("client.udp-echo-10000-random-sizes", .engine, run: echoRandomSizes),
        Scenario("client.udp6-and-unixgram", .engine, run: udp6AndUnixgram),
        Scenario("client.udp-refused-closes-typed", .engine, run: refused),
        Scenario("client.udp-chosen-loop-and-8-threads", .engine, run: chosenLoopAndThreads),
        Scenario("client.udp-outside-life-and-stop", .engine, run: outsideLifeAndStop),
        Scenario("client.udp-close-from-handler-and-handle", .engine, run: closes),
        Scenario("client.udp-idle-timeout-and-counts", .engine, run: idleAndCounts),
    ]

    /// The datagrams of the echo scenario: sizes 1…1400 from a fixed seed, bytes from a
    /// pattern, the first (up to) four bytes the index; and burst lengths 1…32.
    struct Datagrams {
        static let count = 10_000
        static let oneByOne = 5_000
        let pool = patternBytes(4096, seed: 7)
        var sizes: [Int] = []
        var bursts: [Int] = []

        init() {
            var x: UInt64 = 0x2545_f491_4f6c_dd1d
            func next() -> UInt64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
            for _ in 0..<Self.count { sizes.append(1 + Int(next() % 1400)) }
            for _ in 0..<Self.count { bursts.append(1 + Int(next() % 32)) }
        }

        func bytes(_ i: Int) -> [UInt8] {
            let offset = (i &* 613) % 2048
            var b = Array(pool[offset..<offset + sizes[i]])
            for k in 0..<min(4, b.count) { b[k] = UInt8(truncatingIfNeeded: i >> (8 * k)) }
            return b
        }
    }

    /// The client side of the echo: datagram 0 is `onOpen`'s output; up to `oneByOne` each echo
    /// must be exactly the datagram sent last, and sends the next from `onTraffic` (the batch's
    /// `sendmmsg`); then bursts of 1…32 datagrams, each echo matched against the burst's
    /// outstanding ones, the next burst sent when the last is complete. Done: `.close`.
    final class EchoDriver: Sendable {
        let d = Datagrams()
        let failures = Locked<[String]>([])
        let progress = Locked<(received: Int, done: Bool)>((0, false))
        final class State {
            var next = 1
            var outstanding: [Int] = []
            var burst = 0
        }
        func makeHandler() -> ScriptedHandler {
            ScriptedHandler(
                onOpen: { [self] c, _ in
                    c.context = State()
                    return (d.bytes(0), .none)
                },
                onTraffic: { [self] c, _ in traffic(c) })
        }

        private func fail(_ message: String) -> Action {
            failures.withLock { $0.append(message) }
            return .close
        }

        private func traffic(_ c: Connection) -> Action {
            guard let s = c.context as? State else { return fail("no state in context") }
            guard c.isDatagram, c.listenerAddress == nil, c.isOpen else { return fail("a dialled udp connection that is not one") }
            let got = c.next() ?? []
            let received = progress.withLock { p -> Int in p.received += 1; return p.received }
            if s.next <= Datagrams.oneByOne {
                let i = s.next - 1
                guard sameBytes(got, d.bytes(i)) else {
                    return fail("datagram \(i): sent \(d.sizes[i]) bytes, got back \(got.count) (merged, split, corrupted or reordered)")
                }
                if s.next == Datagrams.oneByOne { return sendBurst(c, s) }
                do { try c.write(d.bytes(s.next)) } catch { return fail("writing datagram \(s.next): \(error)") }
                s.next += 1
                return .none
            }
            guard let k = s.outstanding.firstIndex(where: { d.sizes[$0] == got.count && sameBytes(d.bytes($0), got) }) else {
                return fail("an echo of \(got.count) bytes (received #\(received)) matches no datagram of the burst \(s.outstanding) (merged, split or corrupted)")
            }
            s.outstanding.remove(at: k)
            guard s.outstanding.isEmpty else { return .none }
            if s.next == Datagrams.count {
                progress.withLock { $0.done = true }
                return .close
            }
            return sendBurst(c, s)
        }

        private func sendBurst(_ c: Connection, _ s: State) -> Action {
            let n = min(d.bursts[s.burst], Datagrams.count - s.next)
            s.burst += 1
            for _ in 0..<n {
                do { try c.write(d.bytes(s.next)) } catch { return fail("writing datagram \(s.next) of a burst: \(error)") }
                s.outstanding.append(s.next)
                s.next += 1
            }
            return .none
        }
    }

    /// Dial udp to a gnet udp echo server and echo 10,000 datagrams of 1…1400 bytes, 5,000 one
    /// by one and 5,000 in bursts of up to 32, each checked: none merged, split or corrupted,
    /// none reordered one by one. Then the handler closes (`onClose` with no error).
    static func echoRandomSizes(_ kind: PollerKind) async throws -> Trace? {
        try await withDatagramEngine(kind, UDPScenarios.echo()) { engine in
            let server = engine.addresses[0]
            let driver = EchoDriver()
            let client = driver.makeHandler()
            try await ClientScenarios.withClient(kind, client, configure: { $0.socketReceiveBuffer = 1 << 20 }) { c in
                let handle = try await c.dial("udp://127.0.0.1:\(server.port!)")
                try expect(handle.isDatagram && handle.peer == server, "the handle: isDatagram \(handle.isDatagram), peer \(String(describing: handle.peer))")
                try await eventually("10,000 echoes (\(driver.progress.withLock { $0.received }) so far; failures \(driver.failures.withLock { $0 }))",
                                     timeout: .seconds(60)) {
                    driver.progress.withLock { $0.done } || !driver.failures.withLock { $0 }.isEmpty
                }
                let failures = driver.failures.withLock { $0 }
                try expect(failures.isEmpty, failures.first ?? "")
                try await eventually("the connection to close") { client.open == 0 }
                try expect(client.closeErrors.isEmpty, "onClose got \(client.closeErrors)")
                try expect(driver.progress.withLock { $0.received } == Datagrams.count,
                           "\(driver.progress.withLock { $0.received }) echoes for \(Datagrams.count) datagrams")
            }
        }
        return nil
    }

    /// Records each connection's datagrams (copied), network and remote address, by context.
    final class Recorder: Sendable {
        let datagrams = Locked<[Int: [[UInt8]]]>([:])
        let opened = Locked<[Int: (network: Network, remote: SocketAddress?, loop: Int)]>([:])
        let closed = Locked<[Int: String]>([:])
        let handler: ScriptedHandler
        /// What `onTraffic` returns after recording, by context (default `.none`).
        init(_ then: @escaping @Sendable (Connection, Int) -> Action = { _, _ in .none }) {
            let (datagrams, opened, closed) = (datagrams, opened, closed)
            handler = ScriptedHandler(
                onOpen: { c, _ in
                    let key = c.context as? Int ?? -1
                    opened.withLock { $0[key] = (c.network, c.remoteAddress, c.loopIndex) }
                    return (nil, .none)
                },
                onTraffic: { c, _ in
                    let key = c.context as? Int ?? -1
                    let bytes = c.next() ?? []
                    datagrams.withLock { $0[key, default: []].append(bytes) }
                    return then(c, key)
                },
                onClose: { c, _, error in
                    closed.withLock { $0[c.context as? Int ?? -1] = error.map { "\($0)" } ?? "" }
                })
        }
        func count(_ key: Int) -> Int { datagrams.withLock { $0[key]?.count ?? 0 } }
    }

    /// `udp6://[::1]` and `unixgram://` dialled onto an echo server serving both: each
    /// connection's network and peer are what was dialled, and datagrams of 1, 1400 and 9000
    /// bytes come back whole (the unixgram socket is bound by the kernel, so it can be answered).
    static func udp6AndUnixgram(_ kind: PollerKind) async throws -> Trace? {
        let path = "/tmp/gnet-conf-dial-gram-\(getpid()).sock"
        try await withDatagramEngine(kind, UDPScenarios.echo(), addresses: ["udp6://[::1]:0", "unixgram://\(path)"]) { engine in
            let recorder = Recorder()
            try await ClientScenarios.withClient(kind, recorder.handler) { client in
                let v6 = try await client.dial("udp6://[::1]:\(engine.addresses[0].port!)", context: 6)
                let unix = try await client.dial("unixgram://\(path)", context: 8)
                let opened = recorder.opened.withLock { $0 }
                try expect(opened[6]?.network == .udp6 && opened[6]?.remote == engine.addresses[0],
                           "the udp6 connection opened as \(String(describing: opened[6]))")
                try expect(opened[8]?.network == .unixgram && opened[8]?.remote?.host == path,
                           "the unixgram connection opened as \(String(describing: opened[8]))")
                let sizes = [1, 1400, 9000]
                for (key, handle) in [(6, v6), (8, unix)] {
                    for (i, n) in sizes.enumerated() { try await handle.write(patternBytes(n, seed: UInt64(key * 10 + i))) }
                    try await eventually("the \(key == 6 ? "udp6" : "unixgram") echoes") { recorder.count(key) == sizes.count }
                    let got = recorder.datagrams.withLock { $0[key]! }
                    for (i, n) in sizes.enumerated() {
                        try expect(sameBytes(got[i], patternBytes(n, seed: UInt64(key * 10 + i))),
                                   "\(key == 6 ? "udp6" : "unixgram") echo \(i): \(got[i].count) bytes for \(n) sent, or different bytes")
                    }
                    try await handle.close()
                }
            }
        }
        return nil
    }

    /// A UDP port nobody listens on: the dial succeeds (UDP connects at once), the first
    /// datagram draws an ICMP port unreachable, and the connection closes with
    /// `GNetError.connectionRefused` within a second, its descriptor closed, the loop idle (no
    /// busy loop); a later handle write completes with `connectionClosed`. On `dispatch` the
    /// error is noticed by the next send, which completes with `connectionRefused`. A unixgram path
    /// with no socket is refused at the dial; one whose server went away refuses the next
    /// write, which completes with `connectionRefused` and closes the connection.
    static func refused(_ kind: PollerKind) async throws -> Trace? {
        let port = try closedUDPPort()
        let refusedAt = Locked<[Int: ContinuousClock.Instant]>([:])
        let recorder = Recorder()
        let before = openDescriptorCount()
        let handler = ScriptedHandler(onClose: { c, _, error in
            if case GNetError.connectionRefused? = error { refusedAt.withLock { $0[c.context as? Int ?? -1] = .now } }
        })
        try await ClientScenarios.withClient(kind, handler) { client in
            let handle = try await client.dial("udp://127.0.0.1:\(port)", context: 1)
            let fd = handle.fd
            let idleBefore = try await client.loops[0].statistics().iterations
            let sent = ContinuousClock.now
            try await handle.write(Array("anyone?".utf8))
            if kind == .dispatch {
                // A libdispatch read source does not fire for a socket error alone (the
                // backend's documented limit): the refusal waits for the next send.
                try await Task.sleep(for: .milliseconds(100))
                try expect(refusedAt.withLock { $0[1] } == nil, "dispatch noticed the refusal without a send; update this scenario and the docs")
                try await ClientScenarios.expectFailure("the next write after the refusal (dispatch)", {
                    if case GNetError.connectionRefused = $0 { return true } else { return false }
                }) { try await handle.write(Array("anyone there?".utf8)) }
            }
            try await eventually("onClose with GNetError.connectionRefused (closed with \(handler.closeErrors))", timeout: .seconds(2)) {
                refusedAt.withLock { $0[1] } != nil
            }
            let took = refusedAt.withLock { $0[1]! } - sent
            try expect(took < .seconds(1), "the refusal closed the connection \(took) after the write")
            try expect(client.connectionCount == 0, "\(client.connectionCount) connections open after the refusal")
            try expect(fcntl(fd, F_GETFD) == -1, "the refused connection's descriptor \(fd) is open")
            try await Task.sleep(for: .milliseconds(100))
            let turns = try await client.loops[0].statistics().iterations - idleBefore
            try expect(turns < 50, "the loop turned \(turns) times around a refusal (a busy loop?)")
            try await ClientScenarios.expectFailure("a write after the refusal", {
                if case GNetError.connectionClosed = $0 { return true } else { return false }
            }) { try await handle.write([1]) }
        }
        try await ClientScenarios.withClient(kind, recorder.handler) { client in
            try await ClientScenarios.expectFailure("a dial to a unixgram path without a socket", {
                if case GNetError.connectionRefused = $0 { return true } else { return false }
            }) { _ = try await client.dial("unixgram:///tmp/gnet-conf-nothing-\(getpid()).sock") }
            let path = "/tmp/gnet-conf-gone-\(getpid()).sock"
            var options = Options()
            options.poller = kind
            options.logger.logLevel = .error
            let server = try Engine(handler: UDPScenarios.echo(), addresses: ["unixgram://\(path)"], options: options)
            try server.start()
            let handle = try await client.dial("unixgram://\(path)", context: 2)
            try await handle.write([1, 2, 3])
            try await eventually("the unixgram echo") { recorder.count(2) == 1 }
            server.stop()
            try await onThread(timeout: .seconds(10), "server stop") { server.wait() }
            try await ClientScenarios.expectFailure("a write to a unixgram server that went away", {
                if case GNetError.connectionRefused = $0 { return true } else { return false }
            }) { try await handle.write([4]) }
            try await eventually("the unixgram connection to close") { recorder.handler.open == 0 }
            let reason = recorder.closed.withLock { $0[2] } ?? "?"
            try expect(reason.contains("refused"), "the unixgram connection closed with '\(reason)', not a refusal")
        }
        try await eventually("descriptors back to \(before)") { openDescriptorCount() == before }
        return nil
    }

    /// A UDP port with nothing bound to it (bound, then closed).
    static func closedUDPPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { Glibc.close(fd) }
        let any = SocketAddress(ipAddress: "127.0.0.1", port: 0)!
        try expect(any.withUnsafeSockaddr { Glibc.bind(fd, $0, $1) } == 0, "bind for a free port failed")
        guard let port = ClientScenarios.localPort(fd) else { throw ConformanceFailure("getsockname failed") }
        return port
    }

    /// Two loops: three dials `on: loops[1]` land there; 8 threads × 10 balanced dials with
    /// callbacks each complete once, spread over both loops, and each connection's datagram
    /// comes back to it alone.
    static func chosenLoopAndThreads(_ kind: PollerKind) async throws -> Trace? {
        try await withDatagramEngine(kind, UDPScenarios.echo()) { engine in
            let address = "udp://127.0.0.1:\(engine.addresses[0].port!)"
            let recorder = Recorder()
            try await ClientScenarios.withClient(kind, recorder.handler, configure: { $0.loops = 2 }) { client in
                for i in 0..<3 { _ = try await client.dial(address, on: client.loops[1], context: i) }
                let chosen = recorder.opened.withLock { $0 }
                try expect((0..<3).allSatisfy { chosen[$0]?.loop == 1 }, "dials onto loop 1 landed on \(chosen.mapValues(\.loop))")
                let threads = 8
                let perThread = 10
                let results = Locked<(ok: [Int: ConnectionHandle], failed: [String])>(([:], []))
                try await onThread(timeout: .seconds(30), "dialling from 8 threads") {
                    let workers = (0..<threads).map { t in
                        TestThread.start {
                            for k in 0..<perThread {
                                let key = 100 + t * perThread + k
                                client.dial(address, context: key) { r in
                                    results.withLock { s in
                                        switch r {
                                        case .success(let h): s.ok[key] = h
                                        case .failure(let e): s.failed.append("\(e)")
                                        }
                                    }
                                }
                            }
                        }
                    }
                    for w in workers { w.join() }
                }
                let total = threads * perThread
                try await eventually("\(total) dial completions", timeout: .seconds(20)) {
                    results.withLock { $0.ok.count + $0.failed.count } == total
                }
                let (ok, failed) = results.withLock { ($0.ok, $0.failed) }
                try expect(failed.isEmpty, "\(failed.count) dials failed: \(failed.prefix(3))")
                let loops = Set(recorder.opened.withLock { $0 }.filter { $0.key >= 100 }.map(\.value.loop))
                try expect(loops == [0, 1], "\(total) balanced dials landed on loops \(loops.sorted()), not both")
                for (key, h) in ok { h.write(withUnsafeBytes(of: UInt32(key).littleEndian, Array.init), completion: nil) }
                try await eventually("every connection's echo", timeout: .seconds(20)) {
                    ok.keys.allSatisfy { recorder.count($0) == 1 }
                }
                let mixed = recorder.datagrams.withLock { d in
                    ok.keys.filter { d[$0]?.first != withUnsafeBytes(of: UInt32($0).littleEndian, Array.init) }
                }
                try expect(mixed.isEmpty, "connections \(mixed.sorted().prefix(5)) got another connection's echo")
                try await Task.sleep(for: .milliseconds(20))
                try expect(results.withLock { $0.ok.count } == total, "a dial completed more than once")
            }
        }
        return nil
    }

    /// Before `start()`: `GNetError.engineState`; after `stop()`: `engineStopped` (as for TCP).
    /// A stop with five dialled UDP connections open (and datagrams flowing on one) calls
    /// `onClose` once for each, and the client leaves no descriptor and no loop thread (checked
    /// right after it stopped, and again, with the server, by `withDatagramEngine`).
    static func outsideLifeAndStop(_ kind: PollerKind) async throws -> Trace? {
        try await withDatagramEngine(kind, UDPScenarios.echo()) { engine in
            let address = "udp://127.0.0.1:\(engine.addresses[0].port!)"
            try await warmUpRuntime()
            let before = openDescriptorCount()
            let listBefore = openDescriptors()
            var options = Options()
            options.poller = kind
            options.logger.logLevel = .warning
            // Echo back what comes back: connection 0 keeps a datagram going until the stop.
            let handler = ScriptedHandler(onTraffic: { c, _ in
                _ = try? c.next { try c.write($0) }
                return .none
            })
            let client = try Client(handler: handler, options: options)
            try await ClientScenarios.expectFailure("a udp dial before start", {
                if case GNetError.engineState = $0 { return true } else { return false }
            }) { _ = try await client.dial(address) }
            try client.start()
            var handles: [ConnectionHandle] = []
            for i in 0..<5 { handles.append(try await client.dial(address, context: i)) }
            try await handles[0].write(Array("ping-pong".utf8))
            try await Task.sleep(for: .milliseconds(50))
            try expect(client.connectionCount == 5, "\(client.connectionCount) connections open, not 5")
            client.stop()
            try await onThread(timeout: .seconds(10), "client stop") { client.wait() }
            try expect(handler.opened == 5 && handler.closes == 5, "\(handler.opened) onOpen, \(handler.closes) onClose at the stop")
            try handler.checkLifecycle()
            try await ClientScenarios.expectFailure("a udp dial after stop", {
                if case GNetError.engineStopped = $0 { return true } else { return false }
            }) { _ = try await client.dial(address) }
            try checkEngineLeftNothing(descriptorsBefore: before, listBefore: listBefore, loopThreads: 1) // the server's
        }
        return nil
    }

    /// Closing: a handler returning `.close` after writing a last datagram (sent with the batch,
    /// before the socket closes), a handler calling `close()`, and a handle's `close` from another thread
    /// (completing after `onClose`, the handle's later writes failing with `connectionClosed`).
    /// Each `onClose` once, with no error.
    static func closes(_ kind: PollerKind) async throws -> Trace? {
        let serverSaw = Locked<[[UInt8]]>([])
        let server = DatagramHandler { c in
            let bytes = c.next() ?? []
            serverSaw.withLock { $0.append(bytes) }
            try? c.write(bytes)
            return .none
        }
        try await withDatagramEngine(kind, server) { engine in
            let address = "udp://127.0.0.1:\(engine.addresses[0].port!)"
            let recorder = Recorder { c, key in
                switch key {
                case 1:
                    try? c.write(Array("last words".utf8))
                    return .close
                case 2:
                    c.close()
                    return .none
                default:
                    return .none
                }
            }
            try await ClientScenarios.withClient(kind, recorder.handler) { client in
                let byAction = try await client.dial(address, context: 1)
                let byClose = try await client.dial(address, context: 2)
                let byHandle = try await client.dial(address, context: 3)
                try await byAction.write([1])
                try await byClose.write([2])
                try await byHandle.write([3])
                try await eventually("two connections closed by their handler") { recorder.handler.open == 1 }
                try await eventually("the last words sent before the close") {
                    serverSaw.withLock { $0.contains(Array("last words".utf8)) }
                }
                try await eventually("connection 3's echo") { recorder.count(3) == 1 }
                let closeDone = ResultBox<Void>()
                try await onThread("a close from another thread") {
                    byHandle.close { closeDone.set($0) }
                }
                try await eventually("the handle's close to complete") { closeDone.get() != nil }
                guard case .success? = closeDone.get() else {
                    throw ConformanceFailure("the handle's close completed with \(String(describing: closeDone.get()))")
                }
                try expect(recorder.handler.open == 0, "the handle's close completed before onClose")
                try await ClientScenarios.expectFailure("a write through a closed handle", {
                    if case GNetError.connectionClosed = $0 { return true } else { return false }
                }) { try await byHandle.write([4]) }
                let closed = recorder.closed.withLock { $0 }
                try expect(closed == [1: "", 2: "", 3: ""], "onClose errors \(closed), not none for 1, 2 and 3")
            }
        }
        return nil
    }

    /// A peer that never answers: with `Options.readIdleTimeout` 150 ms the dialled connection
    /// gets `onIdle(.read)` and closes with `GNetError.idleTimeout(.read)`, no earlier than the
    /// timeout; while open it counts on its loop (`loops[i].connectionCount`, `connectionCount`),
    /// and `connection.loop` runs work in order with its callbacks.
    static func idleAndCounts(_ kind: PollerKind) async throws -> Trace? {
        let silent = DatagramHandler { c in
            c.discard(c.inboundBuffered)
            return .none
        }
        try await withDatagramEngine(kind, silent) { engine in
            let address = "udp://127.0.0.1:\(engine.addresses[0].port!)"
            let idle = Locked<(kind: IdleKind?, closed: String?, at: ContinuousClock.Instant?)>((nil, nil, nil))
            let ranOnLoop = Locked(false)
            let handler = ScriptedHandler(
                onOpen: { c, _ in
                    let loop = c.loop
                    _ = loop.execute { ranOnLoop.withLock { $0 = loop.inEventLoop } }
                    return (Array("hello?".utf8), .none)
                },
                onClose: { _, _, error in
                    idle.withLock { $0.closed = error.map { "\($0)" } ?? "nil"; $0.at = .now }
                },
                onIdle: { _, _, kind in
                    idle.withLock { $0.kind = kind }
                    return .close
                })
            try await ClientScenarios.withClient(kind, handler, configure: { $0.loops = 2; $0.readIdleTimeout = .milliseconds(150) }) { client in
                let opened = ContinuousClock.now
                _ = try await client.dial(address, on: client.loops[1])
                try expect(client.loops[1].connectionCount == 1 && client.loops[0].connectionCount == 0 && client.connectionCount == 1,
                           "counts while open: loop 0 \(client.loops[0].connectionCount), loop 1 \(client.loops[1].connectionCount)")
                try await eventually("the idle timeout to close the connection", timeout: .seconds(3)) { idle.withLock { $0.at } != nil }
                let (kind, closed, at) = idle.withLock { $0 }
                try expect(kind == .read, "onIdle got \(String(describing: kind)), not .read")
                try expect(closed == "\(GNetError.idleTimeout(.read))", "onClose got \(closed ?? "?"), not the read-idle timeout")
                try expect(at! - opened >= .milliseconds(150), "the 150 ms read-idle timeout closed after \(at! - opened)")
                try expect(ranOnLoop.withLock { $0 }, "connection.loop's execute did not run on the connection's loop")
                try await eventually("the counts back to 0") { client.connectionCount == 0 && client.loops[1].connectionCount == 0 }
            }
        }
        return nil
    }
}
