import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// The client (`Engine.dial`, `Engine.enroll`, `Client`): dialled connections get the same
/// callbacks, handles and flow control as accepted ones; failures are typed and prompt, a dial
/// to a black hole times out on time, and nothing leaks.
enum ClientScenarios {
    static let all: [Scenario] = [
        Scenario("client.dial-echo", .engine, run: dialEcho),
        Scenario("client.dial-unix", .engine, run: dialUnix),
        Scenario("client.dial-refused-at-once", .engine, run: dialRefused),
        Scenario("client.dial-black-hole-times-out", .engine, run: dialBlackHole),
        Scenario("client.dial-onto-chosen-loop", .engine, run: dialChosenLoop),
        Scenario("client.dial-from-8-threads", .engine, run: dialFromThreads),
        Scenario("client.dial-outside-the-engine-life", .engine, run: dialOutsideLife),
        Scenario("client.enroll", .engine, run: enroll),
        Scenario("client.server-dials-from-handler", .engine, run: serverDialsOut),
    ]

    /// A server that echoes what it reads.
    static func echoServer() -> ScriptedHandler {
        ScriptedHandler(onTraffic: { c, _ in
            c.withInbound { try? c.write($0) }
            c.discard(c.inboundBuffered)
            return .none
        })
    }

    /// A client handler keeping what each connection received, by its `context` (an Int).
    final class Collector: Sendable {
        let received = Locked<[Int: [UInt8]]>([:])
        let opened = Locked<[(context: Int, listener: SocketAddress?, remote: SocketAddress?, loop: Int)]>([])
        let handler: ScriptedHandler
        init() {
            let (received, opened) = (received, opened)
            handler = ScriptedHandler(
                onOpen: { c, _ in
                    let key = c.context as? Int ?? -1
                    opened.withLock { $0.append((key, c.listenerAddress, c.remoteAddress, c.loopIndex)) }
                    received.withLock { $0[key] = [] }
                    return (nil, .none)
                },
                onTraffic: { c, _ in
                    let key = c.context as? Int ?? -1
                    c.withUnsafeInboundBytes { bytes in received.withLock { $0[key, default: []] += bytes } }
                    c.discard(c.inboundBuffered)
                    return .none
                })
        }
        func bytes(_ key: Int) -> Int { received.withLock { $0[key]?.count ?? 0 } }
    }

    /// Runs a `Client` on `kind` around `body`, then stops it and checks its connections'
    /// lifecycle (each `onOpen` got one `onClose`) and that its loop threads ended.
    static func withClient(
        _ kind: PollerKind, _ handler: ScriptedHandler, configure: (inout Options) -> Void = { _ in },
        _ body: (Client) async throws -> Void
    ) async throws {
        var options = Options()
        options.poller = kind
        options.logger.logLevel = .warning
        configure(&options)
        let client = try Client(handler: handler, options: options)
        try client.start()
        try await stopping("client stop", stop: { client.stop() }, wait: { client.wait() }) { try await body(client) }
        try handler.checkLifecycle()
    }

    /// Expects `body` to throw `want` (compared by description's start, for errors with payloads).
    static func expectFailure(_ what: String, _ matches: (any Error) -> Bool, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch {
            try expect(matches(error), "\(what) failed with \(error), not the expected error")
            return
        }
        throw ConformanceFailure("\(what) succeeded; it should have failed")
    }

    /// Dial a TCP echo server: `onOpen` runs on the client's loop with the dial's context and no
    /// listener address, the handle's writes (1 MiB, past the watermarks) come back exactly,
    /// and closing the handle closes both sides.
    static func dialEcho(_ kind: PollerKind) async throws -> Trace? {
        let server = echoServer()
        let collector = Collector()
        try await withEngine(kind, server) { _, address in
            try await withClient(kind, collector.handler) { client in
                let handle = try await client.dial(address.description, context: 7)
                let opened = collector.opened.withLock { $0 }
                try expect(opened.count == 1 && opened[0].context == 7, "onOpen saw contexts \(opened.map(\.context)), not [7]")
                try expect(opened[0].listener == nil, "a dialled connection has listenerAddress \(String(describing: opened[0].listener))")
                try expect(opened[0].remote == address, "a dialled connection's remoteAddress is \(String(describing: opened[0].remote)), not \(address)")
                let payload = patternBytes(1 << 20, seed: 11)
                for chunk in stride(from: 0, to: payload.count, by: 64 << 10) {
                    try await handle.write(Array(payload[chunk..<min(chunk + (64 << 10), payload.count)]))
                }
                try await eventually("1 MiB echoed back", timeout: .seconds(20)) { collector.bytes(7) == payload.count }
                try expect(collector.received.withLock { $0[7]! } == payload, "the echo of 1 MiB differs from what was sent")
                try await handle.close()
                try await eventually("the server to see the close") { server.open == 0 }
            }
        }
        return nil
    }

    /// Dial a Unix-socket echo server by path.
    static func dialUnix(_ kind: PollerKind) async throws -> Trace? {
        let path = "/tmp/gnet-conf-dial-\(getpid()).sock"
        let collector = Collector()
        try await withEngine(kind, echoServer(), address: "unix://\(path)") { _, _ in
            try await withClient(kind, collector.handler) { client in
                let handle = try await client.dial("unix://\(path)", context: 1)
                try await handle.write(Array("over a unix socket".utf8))
                try await eventually("the echo") { collector.bytes(1) == 18 }
                try await handle.close()
            }
        }
        return nil
    }

    /// A port nobody listens on refuses at once with `GNetError.connectionRefused`, calling no
    /// handler method and leaving no descriptor behind; so does a Unix path with no socket.
    static func dialRefused(_ kind: PollerKind) async throws -> Trace? {
        let port = try closedPort()
        let collector = Collector()
        try await withEngine(kind, echoServer()) { _, _ in
            let before = openDescriptorCount()
            try await withClient(kind, collector.handler) { client in
                let start = ContinuousClock.now
                try await expectFailure("a dial to a closed port", {
                    if case GNetError.connectionRefused = $0 { return true } else { return false }
                }) { _ = try await client.dial("tcp://127.0.0.1:\(port)", timeout: .seconds(30)) }
                let took = ContinuousClock.now - start
                try expect(took < .seconds(1), "a refused dial took \(took) to fail")
                try await expectFailure("a dial to a missing Unix socket", {
                    if case GNetError.connectionRefused = $0 { return true } else { return false }
                }) { _ = try await client.dial("unix:///tmp/gnet-conf-nothing-\(getpid()).sock") }
                try await expectFailure("a dial to an unparsable address", {
                    if case GNetError.invalidAddress = $0 { return true } else { return false }
                }) { _ = try await client.dial("tcp://127.0.0.1:99999") }
            }
            try expect(collector.handler.opened == 0, "a failed dial called onOpen")
            try await eventually("descriptors back to \(before) after the client stopped") { openDescriptorCount() == before }
        }
        return nil
    }

    /// A listener that never accepts, its backlog full: a dial with a 300 ms timeout fails with
    /// `GNetError.connectTimeout` no earlier than 300 ms and well before a second.
    static func dialBlackHole(_ kind: PollerKind) async throws -> Trace? {
        let hole = try BlackHole()
        defer { hole.close() }
        let collector = Collector()
        try await withClient(kind, collector.handler) { client in
            let start = ContinuousClock.now
            try await expectFailure("a dial to a full backlog", {
                if case GNetError.connectTimeout(_, let t) = $0 { return t == .milliseconds(300) } else { return false }
            }) { _ = try await client.dial(hole.address, timeout: .milliseconds(300)) }
            let took = ContinuousClock.now - start
            try expect(took >= .milliseconds(300), "a 300 ms dial timeout fired after \(took)")
            try expect(took < .milliseconds(900), "a 300 ms dial timeout fired only after \(took)")
        }
        try expect(collector.handler.opened == 0, "a timed-out dial called onOpen")
        return nil
    }

    /// `on: loop` puts the connection on that loop; without it, dials take turns over the loops.
    static func dialChosenLoop(_ kind: PollerKind) async throws -> Trace? {
        let collector = Collector()
        try await withEngine(kind, echoServer()) { _, address in
            try await withClient(kind, collector.handler, configure: { $0.loops = 2 }) { client in
                var handles: [ConnectionHandle] = []
                for i in 0..<3 { handles.append(try await client.dial(address.description, on: client.loops[1], context: i)) }
                for i in 3..<7 { handles.append(try await client.dial(address.description, context: i)) }
                let loops = collector.opened.withLock { $0 }.sorted { $0.context < $1.context }.map(\.loop)
                try expect(loops.prefix(3).allSatisfy { $0 == 1 }, "dials onto loop 1 landed on loops \(loops.prefix(3))")
                try expect(Set(loops.suffix(4)) == [0, 1], "four balanced dials landed on loops \(loops.suffix(4)), not both")
                for h in handles { try await h.close() }
            }
        }
        return nil
    }

    /// 8 threads × 25 dials with callbacks, at once: every completion is called exactly once,
    /// with a handle; every connection echoes its own bytes.
    static func dialFromThreads(_ kind: PollerKind) async throws -> Trace? {
        let threads = 8, perThread = 25
        let collector = Collector()
        let results = Locked<(ok: [ConnectionHandle], failed: [String])>(([], []))
        try await withEngine(kind, echoServer(), configure: { $0.loops = 2 }) { _, address in
            try await withClient(kind, collector.handler, configure: { $0.loops = 2 }) { client in
                try await onThread(timeout: .seconds(30), "8 dialling threads") {
                    let workers = (0..<threads).map { t in
                        TestThread.start {
                            for i in 0..<perThread {
                                client.dial(address.description, context: t * perThread + i) { r in
                                    results.withLock { s in
                                        switch r {
                                        case .success(let h): s.ok.append(h)
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
                let failed = results.withLock { $0.failed }
                try expect(failed.isEmpty, "\(failed.count) dials failed: \(failed.prefix(3))")
                for (i, h) in results.withLock({ $0.ok }).enumerated() { h.write([UInt8(i & 0xff)], completion: nil) }
                try await eventually("every connection's echo", timeout: .seconds(20)) {
                    collector.received.withLock { $0.values.filter { $0.count == 1 }.count } == total
                }
                try await Task.sleep(for: .milliseconds(20))
                try await eventually("completions to settle") { results.withLock { $0.ok.count } == total }
            }
        }
        return nil
    }

    /// Before `start()`: `GNetError.engineState`. A dial in progress when the client stops
    /// fails with `GNetError.engineStopped` at once (not at its timeout); after the stop, dials
    /// fail with `engineStopped`; an enrolled descriptor is closed in every refusal.
    static func dialOutsideLife(_ kind: PollerKind) async throws -> Trace? {
        let hole = try BlackHole()
        defer { hole.close() }
        var options = Options()
        options.poller = kind
        options.logger.logLevel = .warning
        let before = openDescriptorCount()
        let handler = ScriptedHandler()
        let client = try Client(handler: handler, options: options)
        try await expectFailure("a dial before start", {
            if case GNetError.engineState = $0 { return true } else { return false }
        }) { _ = try await client.dial(hole.address) }
        try client.start()
        let pending = ResultBox<ConnectionHandle>()
        client.dial(hole.address, timeout: .seconds(60)) { pending.set($0) }
        try await Task.sleep(for: .milliseconds(50))
        let stopAt = ContinuousClock.now
        client.stop()
        try await eventually("the pending dial to fail at the stop") { pending.get() != nil }
        let took = ContinuousClock.now - stopAt
        try expect(took < .seconds(2), "the pending dial failed \(took) after the stop")
        guard case .failure(GNetError.engineStopped)? = pending.get() else {
            throw ConformanceFailure("the dial pending at the stop ended with \(String(describing: pending.get()))")
        }
        try await onThread(timeout: .seconds(10), "client stop") { client.wait() }
        try await expectFailure("a dial after stop", {
            if case GNetError.engineStopped = $0 { return true } else { return false }
        }) { _ = try await client.dial(hole.address) }
        let pair = try socketPair()
        try await expectFailure("an enroll after stop", {
            if case GNetError.engineStopped = $0 { return true } else { return false }
        }) { _ = try await client.enroll(pair.a) }
        try expect(fcntl(pair.a, F_GETFD) == -1, "a refused enroll left its descriptor open")
        Glibc.close(pair.b)
        try handler.checkLifecycle()
        try await eventually("descriptors back to \(before)") { openDescriptorCount() == before }
        return nil
    }

    /// A socket connected elsewhere, enrolled: served like a dialled connection (its input
    /// reaches `onTraffic`, its handle writes reach the peer). Enrolling what is not a
    /// connected stream socket fails with `GNetError.misuse` and closes the descriptor.
    static func enroll(_ kind: PollerKind) async throws -> Trace? {
        let collector = Collector()
        try await withClient(kind, collector.handler) { client in
            let pair = try socketPair()
            let handle = try await client.enroll(pair.a, context: 3)
            try send(pair.b, "to the enrolled end")
            try await eventually("the enrolled connection's input") { collector.bytes(3) == 19 }
            try await handle.write(Array("back".utf8))
            var buf = [UInt8](repeating: 0, count: 16)
            let n = recv(pair.b, &buf, 16, 0)
            try expect(n == 4 && Array(buf[..<4]) == Array("back".utf8), "the peer read \(n) bytes, not \"back\"")
            Glibc.close(pair.b)
            try await eventually("the enrolled connection to close at its peer's EOF") { collector.handler.open == 0 }

            var pipeFDs: [Int32] = [0, 0]
            try expect(pipe(&pipeFDs) == 0, "pipe() failed")
            defer { Glibc.close(pipeFDs[1]) }
            try await expectFailure("enrolling a pipe", {
                if case GNetError.misuse = $0 { return true } else { return false }
            }) { _ = try await client.enroll(pipeFDs[0]) }
            try expect(fcntl(pipeFDs[0], F_GETFD) == -1, "a refused enroll left the pipe open")

            let unconnected = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            try await expectFailure("enrolling an unconnected socket", {
                if case GNetError.misuse = $0 { return true } else { return false }
            }) { _ = try await client.enroll(unconnected) }
            try expect(fcntl(unconnected, F_GETFD) == -1, "a refused enroll left the socket open")
        }
        return nil
    }

    /// A server handler dials an upstream from `onTraffic` (a proxy's first step) onto its own
    /// loop, and relays the upstream's reply to its client.
    static func serverDialsOut(_ kind: PollerKind) async throws -> Trace? {
        // The upstream answers every read with "up:" and the bytes.
        let upstream = ScriptedHandler(onTraffic: { c, _ in
            var reply = Array("up:".utf8)
            c.withUnsafeInboundBytes { reply += $0 }
            c.discard(c.inboundBuffered)
            try? c.write(reply)
            return .none
        })
        try await withEngine(kind, upstream) { _, upstreamAddress in
            let relay = RelayHandler(upstream: upstreamAddress.description)
            var options = Options()
            options.poller = kind
            options.logger.logLevel = .warning
            let proxy = try Engine(handler: relay, addresses: ["tcp://127.0.0.1:0"], options: options)
            try proxy.start()
            relay.engine.withLock { $0 = proxy }
            defer {
                proxy.stop()
                proxy.wait()
            }
            let client = try TestClient(proxy.addresses[0])
            try client.send("hello")
            let reply = try client.receive(exactly: 8)
            try expect(reply == Array("up:hello".utf8), "the relayed reply was \(String(decoding: reply, as: UTF8.self))")
        }
        return nil
    }

    /// Answers each client by dialling the upstream (from the handler, onto the client's
    /// loop) and relaying its reply. The upstream connection's context is the client's handle.
    final class RelayHandler: EventHandler {
        let upstream: String
        let engine = Locked<Engine?>(nil)
        init(upstream: String) { self.upstream = upstream }

        func onTraffic(_ c: Connection) -> Action {
            if let client = c.context as? ConnectionHandle {
                // From the upstream: relay to the client.
                let bytes = c.next() ?? []
                client.write(bytes, completion: nil)
                return .none
            }
            guard let engine = engine.withLock({ $0 }), let request = c.next() else { return .close }
            let client = c.handle
            engine.dial(upstream, on: c.loop, context: client) { r in
                guard case .success(let up) = r else {
                    client.close(completion: nil)
                    return
                }
                up.write(request, completion: nil)
            }
            return .none
        }
    }

    /// A port with nothing listening on it (bound, then closed).
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        let any = SocketAddress(ipAddress: "127.0.0.1", port: 0)!
        try expect(any.withUnsafeSockaddr { Glibc.bind(fd, $0, $1) } == 0, "bind for a free port failed")
        guard let port = localPort(fd) else { throw ConformanceFailure("getsockname failed") }
        return port
    }

    static func localPort(_ fd: Int32) -> Int? {
        var sin = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return rc == 0 ? Int(UInt16(bigEndian: sin.sin_port)) : nil
    }
}

/// A loopback listener that never accepts, with its backlog filled: connects to it hang (the
/// kernel drops their SYNs), as to a black-holed address.
final class BlackHole: @unchecked Sendable {
    let listener: Int32
    private var fillers: [Int32] = []
    let address: String

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let any = SocketAddress(ipAddress: "127.0.0.1", port: 0)!
        guard any.withUnsafeSockaddr({ Glibc.bind(fd, $0, $1) }) == 0, Glibc.listen(fd, 0) == 0,
              let port = ClientScenarios.localPort(fd) else {
            Glibc.close(fd)
            throw ConformanceFailure("cannot make a listener")
        }
        listener = fd
        address = "tcp://127.0.0.1:\(port)"
        let target = SocketAddress(ipAddress: "127.0.0.1", port: port)!
        // A backlog of 0 holds one connection; a few more make sure the queue is full.
        for _ in 0..<3 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            _ = target.withUnsafeSockaddr { Glibc.connect(fd, $0, $1) }
            fillers.append(fd)
        }
        usleep(20_000) // let the handshakes that can complete do so
    }

    func close() {
        for fd in fillers { Glibc.close(fd) }
        fillers = []
        Glibc.close(listener)
    }
}
