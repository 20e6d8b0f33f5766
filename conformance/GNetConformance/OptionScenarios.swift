import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// The rest of gnet's options and operations, read back from the kernel where they are socket
/// options: keep-alive interval and count, `SO_REUSEADDR`, `SO_BINDTODEVICE`, duplicated
/// descriptors, the thread-safe per-connection context, connections per loop.
enum OptionScenarios {
    static let all: [Scenario] = [
        Scenario("options.keepalive-interval-and-count", .engine, run: keepAlive),
        Scenario("options.reuseAddress-toggle", .engine, run: reuseAddress),
        Scenario("options.bindToDevice", .engine, run: bindToDevice),
        Scenario("options.duplicate-listener-and-connection", .engine, run: duplicates),
        Scenario("options.shared-context-across-threads", .engine, run: sharedContext),
        Scenario("options.connections-per-loop", .engine, run: connectionsPerLoop),
    ]

    /// Engine-wide keep-alive with interval and count, and the per-connection setter.
    static func keepAlive(_ kind: PollerKind) async throws -> Trace? {
        let keys = [("SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE), ("TCP_KEEPIDLE", Int32(IPPROTO_TCP), TCP_KEEPIDLE),
                    ("TCP_KEEPINTVL", Int32(IPPROTO_TCP), TCP_KEEPINTVL), ("TCP_KEEPCNT", Int32(IPPROTO_TCP), TCP_KEEPCNT)]
        let engineWide = try await SocketOptionScenarios.optionsOnAcceptedSocket(kind, configure: {
            $0.tcpKeepAlive = .seconds(37)
            $0.tcpKeepAliveInterval = .seconds(11)
            $0.tcpKeepAliveCount = 4
        }) { fd in
            var out: [String: Int32] = [:]
            for (name, level, opt) in keys { out[name] = try intOption(fd, level, opt) }
            return out
        }
        try expect(engineWide == ["SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 37, "TCP_KEEPINTVL": 11, "TCP_KEEPCNT": 4],
                   "tcpKeepAlive 37 s / interval 11 s / count 4 read back as \(engineWide)")
        let perConnection = try await SocketOptionScenarios.optionsOnAcceptedSocket(kind, configure: { _ in }) { fd, c in
            try c.setKeepAlive(.seconds(20), interval: .seconds(5), count: 3)
            var out: [String: Int32] = [:]
            for (name, level, opt) in keys { out[name] = try intOption(fd, level, opt) }
            return out
        }
        try expect(perConnection == ["SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 20, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3],
                   "setKeepAlive(20 s, interval: 5 s, count: 3) read back as \(perConnection)")
        var bad = Options()
        bad.tcpKeepAliveCount = 3
        do {
            try bad.validate()
            throw ConformanceFailure("tcpKeepAliveCount without tcpKeepAlive was accepted")
        } catch GNetError.invalidOption(let name, _) {
            try expect(name == "tcpKeepAlive", "the invalid option named is \(name)")
        }
        return nil
    }

    /// `SO_REUSEADDR` on the listener (read through `duplicateListener`): on by default, off
    /// with `reuseAddress = false`.
    static func reuseAddress(_ kind: PollerKind) async throws -> Trace? {
        for on in [true, false] {
            try await withEngine(kind, ScriptedHandler(), configure: { $0.reuseAddress = on }) { engine, _ in
                let dup = try engine.duplicateListener()
                defer { Glibc.close(dup) }
                let value = try intOption(dup, SOL_SOCKET, SO_REUSEADDR)
                try expect((value != 0) == on, "reuseAddress = \(on), but the listener has SO_REUSEADDR \(value)")
            }
        }
        return nil
    }

    /// `bindToDevice = "lo"`: the listener is bound to it (`SO_BINDTODEVICE` reads "lo"),
    /// loopback clients are served, and a client bound to "lo" dials out; an interface that does
    /// not exist fails `start()` with `GNetError.invalidOption`, leaving nothing open.
    static func bindToDevice(_ kind: PollerKind) async throws -> Trace? {
        let collector = ClientScenarios.Collector()
        try await withEngine(kind, ClientScenarios.echoServer(), configure: { $0.bindToDevice = "lo" }) { engine, address in
            let dup = try engine.duplicateListener()
            defer { Glibc.close(dup) }
            var name = [CChar](repeating: 0, count: 32)
            var len = socklen_t(name.count)
            try expect(getsockopt(dup, SOL_SOCKET, SO_BINDTODEVICE, &name, &len) == 0, "getsockopt(SO_BINDTODEVICE) failed: errno \(errno)")
            let device = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            try expect(device == "lo", "bindToDevice = lo, but the listener is bound to '\(device)'")
            let client = try TestClient(address)
            try client.send("on lo")
            try expect(try client.receive(exactly: 5) == Array("on lo".utf8), "the echo through a device-bound listener differs")
            try await ClientScenarios.withClient(kind, collector.handler, configure: { $0.bindToDevice = "lo" }) { c in
                let h = try await c.dial(address.description, context: 1)
                try await h.write(Array("dialled".utf8))
                try await eventually("the dialled echo") { collector.bytes(1) == 7 }
                try await h.close()
            }
        }
        try await warmUpRuntime()
        let before = openDescriptorCount()
        var options = Options()
        options.poller = kind
        options.bindToDevice = "gnetnosuch0"
        options.logger.logLevel = .critical
        let engine = try Engine(handler: ScriptedHandler(), addresses: ["tcp://127.0.0.1:0"], options: options)
        do {
            try engine.start()
            engine.stop()
            engine.wait()
            throw ConformanceFailure("an engine bound to a missing interface started")
        } catch GNetError.invalidOption(let name, let reason) {
            try expect(name == "bindToDevice" && reason.contains("gnetnosuch0"), "the error was \(name): \(reason)")
        }
        try expect(openDescriptorCount() == before, "a failed start left descriptors open")
        return nil
    }

    /// `Engine.duplicateListener` gives a second descriptor of the listening socket (same
    /// address, `SO_ACCEPTCONN`), refused once the engine stops; `Connection.duplicateDescriptor`
    /// gives one the peer can be written through, the engine serving the original on.
    static func duplicates(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler(onOpen: { c, _ in
            guard let dup = try? c.duplicateDescriptor() else { return (nil, .close) }
            _ = "through the duplicate;".withCString { Glibc.send(dup, $0, 22, Int32(MSG_NOSIGNAL)) }
            Glibc.close(dup)
            return (Array(" and the original".utf8), .none)
        })
        let kept = Locked<Engine?>(nil)
        try await withEngine(kind, handler) { engine, address in
            kept.withLock { $0 = engine }
            let dup = try engine.duplicateListener()
            defer { Glibc.close(dup) }
            try expect(try intOption(dup, SOL_SOCKET, SO_ACCEPTCONN) == 1, "the duplicated listener is not listening")
            var st = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(dup, $0, &len) } }
            let dupAddress = SocketAddress(storage: st, length: len)
            try expect(dupAddress == address, "the duplicate is bound to \(dupAddress), the listener to \(address)")
            do {
                _ = try engine.duplicateListener(3)
                throw ConformanceFailure("duplicateListener(3) of one address succeeded")
            } catch GNetError.invalidOption {}
            let client = try TestClient(address)
            let text = "through the duplicate; and the original"
            let got = try client.receive(exactly: text.utf8.count)
            try expect(got == Array(text.utf8), "the peer read \(String(decoding: got, as: UTF8.self))")
        } afterStop: {
            do {
                let fd = try kept.withLock { $0! }.duplicateListener()
                Glibc.close(fd)
                throw ConformanceFailure("duplicateListener after stop succeeded")
            } catch GNetError.engineState {}
        }
        return nil
    }

    /// `sharedContext`: set on the loop, changed by 4 other threads 1,000 times each, read
    /// back on the loop with every change seen.
    static func sharedContext(_ kind: PollerKind) async throws -> Trace? {
        let box = Locked<SharedContext?>(nil)
        let seen = Locked<Int?>(nil)
        let handler = ScriptedHandler(
            onOpen: { c, _ in
                c.sharedContext.value = 0
                let shared = c.sharedContext
                box.withLock { $0 = shared }
                return (nil, .none)
            },
            onTraffic: { c, _ in
                c.discard(c.inboundBuffered)
                let v = c.sharedContext.value as? Int
                seen.withLock { $0 = v }
                return .none
            })
        try await withEngine(kind, handler) { _, address in
            let client = try TestClient(address)
            try await eventually("onOpen") { box.withLock { $0 } != nil }
            let shared = box.withLock { $0! }
            try await onThread("4 threads changing the shared context") {
                let ts = (0..<4).map { _ in
                    TestThread.start {
                        for _ in 0..<1000 { shared.withLock { v in v = (v as? Int ?? 0) + 1 } }
                    }
                }
                for t in ts { t.join() }
            }
            try client.send("read it")
            try await eventually("onTraffic to read the context") { seen.withLock { $0 } != nil }
            try expect(seen.withLock { $0 } == 4000, "the loop read \(String(describing: seen.withLock { $0 })) from the shared context, not 4000")
        }
        return nil
    }

    /// `EventLoopHandle.connectionCount` counts each loop's connections.
    static func connectionsPerLoop(_ kind: PollerKind) async throws -> Trace? {
        try await withEngine(kind, ScriptedHandler(), configure: { $0.loops = 2; $0.loadBalancing = .roundRobin }) { engine, address in
            let clients = try (0..<6).map { _ in try TestClient(address) }
            try await eventually("6 connections over 2 loops") {
                engine.loops.map(\.connectionCount) == [3, 3]
            }
            _ = clients
        }
        return nil
    }
}
