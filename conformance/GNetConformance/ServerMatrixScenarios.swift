import GNet
import GNetLocks
import Glibc
import Poller
import Synchronization
import TestSupport

/// gnet's server matrix and lifecycle actions: how the handler writes (sync, writev, async
/// from another thread) × how many loops × how connections are spread, plus greetings,
/// actions returned from `onOpen`/`onTraffic`, and handles used after a connection is gone.
enum ServerMatrixScenarios {
    enum WriteMode: String, CaseIterable { case sync, writev, inPlace = "in-place", async }

    static var all: [Scenario] {
        var list: [Scenario] = []
        for mode in WriteMode.allCases {
            for loops in [1, 2] {
                list.append(Scenario("matrix.\(mode.rawValue)-write.\(loops)-loop\(loops > 1 ? "s" : "")", .engine) { kind in
                    try await echoMatrix(kind, mode: mode, loops: loops, configure: { _ in })
                })
            }
        }
        // With reusePort each loop has a listener of its own and the kernel spreads connections
        // (the default, reusePort off, makes the 2-loop rows above use the shared acceptor).
        for mode in WriteMode.allCases {
            list.append(Scenario("matrix.\(mode.rawValue)-write.2-loops-reuseport", .engine) { kind in
                try await echoMatrix(kind, mode: mode, loops: 2, configure: { $0.reusePort = true })
            })
        }
        for balancing in LoadBalancing.allCases {
            list.append(Scenario("matrix.acceptor-\(balancing.rawValue)", .engine) { kind in
                try await echoMatrix(kind, mode: .sync, loops: 2, configure: {
                    $0.reusePort = false
                    $0.loadBalancing = balancing
                })
            })
        }
        list += [
            Scenario("lifecycle.greeting-from-onOpen", .engine, run: greeting),
            Scenario("lifecycle.close-from-onOpen", .engine, run: closeFromOpen),
            Scenario("lifecycle.shutdown-from-onOpen", .engine, run: shutdownFromOpen),
            Scenario("lifecycle.shutdown-from-onTraffic", .engine, run: shutdownFromTraffic),
            Scenario("lifecycle.stop-with-100-clients", .engine, run: stopWith100Clients),
            Scenario("lifecycle.handle-after-close", .engine, run: handleAfterClose),
            Scenario("lifecycle.wake", .engine, run: wake),
            Scenario("lifecycle.unix-socket-echo", .engine, run: unixEcho),
            Scenario("lifecycle.tick", .engine, run: tick),
            Scenario("lifecycle.close-with-unread-input", .engine, run: closeWithUnreadInput),
        ]
        return list
    }

    /// 10 concurrent clients each echo 20 random payloads byte-exactly.
    static func echoMatrix(
        _ kind: PollerKind, mode: WriteMode, loops: Int, configure: @escaping (inout Options) -> Void
    ) async throws -> Trace? {
        let handler = ScriptedHandler(onTraffic: { c, _ in
            guard let bytes = c.next() else { return .none }
            do {
                switch mode {
                case .sync:
                    try c.write(bytes)
                case .writev:
                    let half = bytes.count / 2
                    try c.writev([Array(bytes[..<half]), [], Array(bytes[half...])])
                case .inPlace:
                    // Rendered in two pieces, the second reservation larger than it needs.
                    let half = bytes.count / 2
                    try c.write(reservingCapacity: half) { buf in
                        bytes.withUnsafeBytes { buf.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<half])) }
                        return half
                    }
                    try c.write(reservingCapacity: bytes.count) { buf in
                        bytes.withUnsafeBytes { buf.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[half...])) }
                        return bytes.count - half
                    }
                case .async:
                    let handle = c.handle
                    // From another thread, as a worker pool would answer.
                    TestThread.detach { handle.write(bytes) }
                }
            } catch {
                return .close
            }
            return .none
        })
        let perLoop = Locked<[Int: Int]>([:])
        try await withEngine(kind, handler, configure: { o in
            o.loops = loops
            configure(&o)
        }) { _, address in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<10 {
                    group.addTask {
                        try await onThread("client \(i)") {
                            let client = try TestClient(address)
                            for round in 0..<20 {
                                let n = 1 + (i * 7919 + round * 104_729) % 16_384
                                let msg = patternBytes(n, seed: UInt64(i << 8 | round))
                                try client.send(msg)
                                let back = try client.receive(exactly: n)
                                try expect(back == msg, "client \(i) round \(round) (\(mode) write): echo differs")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            _ = perLoop
        }
        return nil
    }

    static func greeting(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler(onOpen: { _, id in (Array("hello \(id)\r\n".utf8), .none) })
        try await withEngine(kind, handler) { _, address in
            let got = try await onThread("greeting") { try TestClient(address).receive(exactly: 9) }
            try expect(got == Array("hello 0\r\n".utf8), "greeting was \(String(decoding: got, as: UTF8.self))")
        }
        return handler.trace
    }

    static func closeFromOpen(_ kind: PollerKind) async throws -> Trace? {
        // The greeting is still delivered before the close.
        let handler = ScriptedHandler(onOpen: { _, _ in (Array("go away".utf8), .close) })
        try await withEngine(kind, handler) { _, address in
            let got = try await onThread("close from onOpen") { try TestClient(address).receiveUntilEOF() }
            try expect(got == Array("go away".utf8), "expected the greeting then EOF")
            try await eventually("onClose") { handler.closes == 1 }
        }
        return handler.trace
    }

    static func shutdownFromOpen(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler(onOpen: { _, _ in (nil, .shutdown) })
        try await withEngine(kind, handler) { engine, address in
            let client = try TestClient(address)
            try await eventually("the engine to stop itself") { !engine.isRunning }
            try expect(client.isClosedByPeer(), "the connection stayed open after a shutdown")
        }
        return handler.trace
    }

    static func shutdownFromTraffic(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler(onTraffic: { c, _ in
            try? c.write("ok")
            c.discard(c.inboundBuffered)
            return .shutdown
        })
        try await withEngine(kind, handler) { engine, address in
            let got = try await onThread("shutdown from onTraffic") {
                let client = try TestClient(address)
                try client.send("stop")
                return try client.receiveUntilEOF()
            }
            try expect(got == Array("ok".utf8), "the reply written before .shutdown was lost")
            try await eventually("the engine to stop itself") { !engine.isRunning }
        }
        return handler.trace
    }

    static func stopWith100Clients(_ kind: PollerKind) async throws -> Trace? {
        // Half the clients are mid-conversation with unread replies queued; all must be closed.
        let handler = EngineScenarios.echo()
        var clients: [TestClient] = []
        try await withEngine(kind, handler, configure: { $0.loops = 2; $0.lingerTimeout = .milliseconds(200) }) { _, address in
            for i in 0..<100 {
                let c = try TestClient(address)
                if i % 2 == 0 { try c.send(patternBytes(4096, seed: UInt64(i))) }
                clients.append(c)
            }
            try await eventually("100 connections opened") { handler.opened == 100 }
        } afterStop: {
            try expect(handler.closes == 100, "\(handler.closes) of 100 connections got onClose")
            let open = clients.filter { !$0.isClosedByPeer(within: .seconds(2)) }.count
            try expect(open == 0, "\(open) of 100 clients not disconnected by the stop")
            clients.removeAll()
        }
        return nil
    }

    static func handleAfterClose(_ kind: PollerKind) async throws -> Trace? {
        // A handle kept past onClose fails every operation exactly once with connectionClosed,
        // even after a new connection reuses the descriptor.
        let kept = Locked<ConnectionHandle?>(nil)
        let handler = ScriptedHandler(onOpen: { c, id in
            if id == 0 { kept.withLock { $0 = c.handle } }
            return (nil, .none)
        })
        try await withEngine(kind, handler) { _, address in
            do { _ = try TestClient(address) } // connect, then close at once
            try await eventually("the first connection to close") { handler.closes == 1 }
            let second = try TestClient(address) // most likely reuses the descriptor
            try await eventually("the second connection to open") { handler.opened == 2 }
            let handle = try requireValue(kept.withLock { $0 }, "handle")
            let results = Locked<[String]>([])
            handle.write(Array("stale".utf8)) { r in results.withLock { $0.append("write:\(r.isFailureClosed)") } }
            handle.wake { r in results.withLock { $0.append("wake:\(r.isFailureClosed)") } }
            handle.close { r in results.withLock { $0.append("close:\(r.isFailureClosed)") } }
            try await eventually("three completions") { results.withLock { $0.count } == 3 }
            try await Task.sleep(for: .milliseconds(20))
            let r = results.withLock { $0 }
            try expect(r.sorted() == ["close:true", "wake:true", "write:true"], "completions: \(r)")
            try expect(!second.isClosedByPeer(within: .milliseconds(50)), "a stale handle closed the new connection")
            try expect(handler.closes == 1, "a stale handle affected another connection")
        }
        return handler.trace
    }

    static func wake(_ kind: PollerKind) async throws -> Trace? {
        // wake() calls onTraffic with nothing buffered; the handler answers from it.
        let handleBox = Locked<ConnectionHandle?>(nil)
        let handler = ScriptedHandler(onOpen: { c, _ in
            handleBox.withLock { $0 = c.handle }
            return (nil, .none)
        }, onTraffic: { c, _ in
            if c.inboundBuffered == 0 { try? c.write("woken") }
            return .none
        })
        try await withEngine(kind, handler) { _, address in
            let client = try TestClient(address)
            try await eventually("onOpen") { handleBox.withLock { $0 } != nil }
            let done = Locked<Bool?>(nil)
            handleBox.withLock { $0 }!.wake { r in done.withLock { $0 = (try? r.get()) != nil } }
            let got = try await onThread("woken reply") { try client.receive(exactly: 5) }
            try expect(got == Array("woken".utf8), "wake did not reach onTraffic")
            try await eventually("wake completion") { done.withLock { $0 } != nil }
            try expect(done.withLock { $0 } == true, "wake on a live connection failed")
        }
        return handler.trace
    }

    static func unixEcho(_ kind: PollerKind) async throws -> Trace? {
        let path = "/tmp/gnet-conformance-\(getpid())-\(kind.name).sock"
        let handler = EngineScenarios.echo()
        try await withEngine(kind, handler, address: "unix://\(path)") { _, address in
            let msg = patternBytes(200_000, seed: 9)
            let got = try await onThread("unix echo") {
                let client = try TestClient(address)
                let sender = ResultBox<Void>()
                TestThread.detach { sender.set(Result { try client.send(msg) }) }
                return try client.receive(exactly: msg.count)
            }
            try expect(got == msg, "unix socket echo differs")
        }
        try expect(access(path, F_OK) != 0, "the socket file was left after stop")
        return nil
    }

    static func tick(_ kind: PollerKind) async throws -> Trace? {
        let ticks = TickCounter()
        try await withEngine(kind, ScriptedHandler(), configure: { _ in }) { _, _ in }
        let engine = try Engine(handler: ticks, addresses: ["tcp://127.0.0.1:0"], options: {
            var o = Options()
            o.poller = kind
            o.ticker = true
            o.logger.logLevel = .warning
            return o
        }())
        try engine.start()
        try await onThread("engine stopped by onTick") { engine.wait() }
        try expect(ticks.count == 5, "onTick returned .shutdown on its 5th call but ran \(ticks.count) times")
        return nil
    }
}

/// Ticks every 10 ms and shuts the engine down on the fifth tick.
final class TickCounter: EventHandler {
    private let n = Atomic(0)
    var count: Int { n.load(ordering: .relaxed) }
    func onTick() -> (delay: Duration, action: Action) {
        let k = n.add(1, ordering: .relaxed).newValue
        return (.milliseconds(10), k >= 5 ? .shutdown : .none)
    }
}

extension Result where Failure == any Error {
    /// True when this failed with `GNetError.connectionClosed`.
    var isFailureClosed: Bool {
        if case .failure(let e) = self, let g = e as? GNetError, g == .connectionClosed { return true }
        return false
    }
}

/// Unwraps or fails the scenario.
func requireValue<T>(_ v: T?, _ what: String = "value") throws -> T {
    guard let v else { throw ConformanceFailure("missing \(what)") }
    return v
}

extension ServerMatrixScenarios {
    /// The handler answers the first bytes with a large reply and closes without reading the
    /// rest of what the client sent. The client must get the whole reply and then EOF — not a
    /// reset, which is what closing a socket with unread input would send.
    static func closeWithUnreadInput(_ kind: PollerKind) async throws -> Trace? {
        let reply = patternBytes(300_000, seed: 11)
        let handler = ScriptedHandler(onTraffic: { c, _ in
            try? c.write(reply)
            return .close
        })
        try await withEngine(kind, handler) { _, address in
            let got = try await onThread("reply before close") {
                let client = try TestClient(address)
                try client.send(patternBytes(64 * 1024, seed: 12))
                usleep(20_000)
                try client.send(patternBytes(64 * 1024, seed: 13)) // arrives after the close began
                let got = try client.receive(exactly: reply.count)
                try expect(client.isClosedByPeer(within: .seconds(3)), "no EOF after the reply")
                return got
            }
            try expect(got == reply, "the reply was cut or changed by the close")
            try await eventually("onClose") { handler.closes == 1 }
        }
        return nil
    }
}
