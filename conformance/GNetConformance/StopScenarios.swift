import GNet
import Glibc
import Poller
import TestSupport

/// The two ways an engine stops, seen from its clients: a graceful stop lets a handler finish
/// the request in flight (`onQuiesce`) and closes idle connections at once, and aborts what is
/// still open at `Options.shutdownTimeout`; `stop(.immediately)` resets every connection at
/// once, also one that a graceful stop was waiting for.
enum StopScenarios {
    static let all: [Scenario] = [
        Scenario("stop.quiesce-finishes-request-in-flight", .engine, run: quiesceFinishesRequestInFlight),
        Scenario("stop.quiesce-deadline-aborts", .engine, run: quiesceDeadlineAborts),
        Scenario("stop.immediately-resets-every-connection", .engine, run: immediatelyResetsEvery),
        Scenario("stop.immediately-cuts-a-graceful-stop-short", .engine, run: immediatelyCutsGracefulShort),
    ]

    /// A line protocol: each complete line is answered with `ok <line>\n`. Once quiescing
    /// (`c.context` set by `onQuiesce`), the answer to the request in flight is the last one.
    static func lineHandler() -> ScriptedHandler {
        ScriptedHandler(onTraffic: { c, _ in
            let line = c.withUnsafeInboundBytes { Array($0) }
            guard let end = line.firstIndex(of: 0x0A) else { return .none }
            _ = c.discard(end + 1)
            try? c.write(Array("ok ".utf8) + line[..<end] + [0x0A])
            return c.context != nil ? .close : .none
        }, onQuiesce: { c, _ in
            guard c.inboundBuffered > 0 else { return .close }  // idle: close at once
            c.context = true  // a request is half here: answer it, then close
            return .none
        })
    }

    static func quiesceFinishesRequestInFlight(_ kind: PollerKind) async throws -> Trace? {
        let handler = lineHandler()
        var idle: TestClient?
        var busy: TestClient?
        try await withEngine(kind, handler, configure: { $0.loops = 2 }) { engine, address in
            let idleClient = try TestClient(address)
            let busyClient = try TestClient(address)
            (idle, busy) = (idleClient, busyClient)
            try idleClient.send("first\n")
            try expect(try idleClient.receive(exactly: 9) == Array("ok first\n".utf8), "the idle client's first answer")
            try busyClient.send("half of a req")
            try await eventually("the partial request to arrive") { handler.trafficBytesSeen >= 6 + 13 }
            engine.stop()
            // The idle connection closes at once, with nothing more sent.
            let idleEnd = try await onThread("the idle client's EOF") { try idleClient.readToEnd() }
            try expect(idleEnd.bytes.isEmpty && idleEnd.end == .eof, "the idle client got \(idleEnd.bytes.count) bytes, then \(idleEnd.end)")
            idleClient.shutdownWrite()  // ends the server's lingering close
            // New connections are refused: the listener is closed. It is loop 0's (the shared
            // acceptor), and work queued there after stop() runs after loop 0 began stopping.
            try await engine.loops[0].submit {}
            try expect(connectRefused(address), "a connection was accepted after the stop began")
            // The request in flight is finished and answered, then EOF.
            try busyClient.send("uest\n")
            let busyEnd = try await onThread("the busy client's reply") { try busyClient.readToEnd() }
            try expect(busyEnd.bytes == Array("ok half of a request\n".utf8) && busyEnd.end == .eof,
                       "the busy client got \(String(decoding: busyEnd.bytes, as: UTF8.self).debugDescription), then \(busyEnd.end)")
            busyClient.shutdownWrite()
            try await onThread(timeout: .seconds(5), "stop") { engine.wait() }
        } afterStop: {
            try expect(handler.quiesced.sorted() == [0, 1], "onQuiesce ran for \(handler.quiesced)")
            try expect(handler.closeErrors.isEmpty, "onClose got errors: \(handler.closeErrors)")
            withExtendedLifetime((idle, busy)) {} // the clients' sockets stay open until the engine has stopped
            idle = nil
            busy = nil
        }
        return nil
    }

    static func quiesceDeadlineAborts(_ kind: PollerKind) async throws -> Trace? {
        // The handler keeps every connection past quiescing and never closes it.
        let handler = ScriptedHandler(onQuiesce: { _, _ in .none })
        var client: TestClient?
        try await withEngine(kind, handler, configure: { $0.shutdownTimeout = .milliseconds(200) }) { engine, address in
            client = try TestClient(address)
            try await eventually("the connection") { handler.opened == 1 }
            let start = ContinuousClock.now
            engine.stop()
            try await onThread(timeout: .seconds(5), "stop") { engine.wait() }
            let took = ContinuousClock.now - start
            try expect(took >= .milliseconds(150) && took < .seconds(2), "the stop took \(took), not about shutdownTimeout (200 ms)")
        } afterStop: {
            try expect(handler.quiesced == [0], "onQuiesce ran for \(handler.quiesced)")
            try expect(handler.closeErrors[0] == "\(GNetError.shutdownTimeout)", "onClose got \(handler.closeErrors[0] ?? "no error")")
            let got = try client!.readToEnd()
            try expect(got.end == .reset, "a connection still open at the deadline ended in \(got.end), not a reset")
            client = nil
        }
        return nil
    }

    static func immediatelyResetsEvery(_ kind: PollerKind) async throws -> Trace? {
        // One connection has megabytes of output queued that its client does not read; the
        // others are idle. None is asked to quiesce, and every one is reset.
        let big = patternBytes(8 << 20, seed: 41)
        let handler = ScriptedHandler(onOpen: { _, id in (id == 0 ? big : nil, .none) })
        var clients: [TestClient] = []
        try await withEngine(kind, handler, configure: {
            $0.loops = 2
            $0.shutdownTimeout = .seconds(30)
            $0.closeTimeout = .seconds(30)
            $0.socketSendBuffer = 32 * 1024
        }) { engine, address in
            let first = try TestClient(address)
            first.setReceiveBuffer(32 * 1024)
            clients.append(first)
            try await eventually("the first connection") { handler.opened == 1 }
            for _ in 0..<3 { clients.append(try TestClient(address)) }
            try await eventually("four connections") { handler.opened == 4 }
            let start = ContinuousClock.now
            engine.stop(.immediately)
            try await onThread(timeout: .seconds(5), "stop") { engine.wait() }
            try expect(ContinuousClock.now - start < .seconds(1), "the stop took \(ContinuousClock.now - start)")
        } afterStop: {
            try expect(handler.quiesced.isEmpty, "onQuiesce ran on an immediate stop, for \(handler.quiesced)")
            let expected = "\(GNetError.stoppedImmediately)"
            try expect(handler.closeErrors.count == 4 && handler.closeErrors.values.allSatisfy { $0 == expected },
                       "onClose errors: \(handler.closeErrors)")
            for (i, c) in clients.enumerated() {
                let got = try c.readToEnd()
                try expect(got.end == .reset, "client \(i) saw \(got.end) after \(got.bytes.count) bytes, not a reset")
            }
            clients = []
        }
        return nil
    }

    static func immediatelyCutsGracefulShort(_ kind: PollerKind) async throws -> Trace? {
        // A graceful stop waits for a handler that keeps its connection; an immediate stop
        // then ends it long before shutdownTimeout.
        let handler = ScriptedHandler(onQuiesce: { _, _ in .none })
        var client: TestClient?
        try await withEngine(kind, handler, configure: { $0.shutdownTimeout = .seconds(30) }) { engine, address in
            client = try TestClient(address)
            try await eventually("the connection") { handler.opened == 1 }
            engine.stop()
            try await eventually("onQuiesce") { handler.quiesced == [0] }
            try expect(handler.open == 1, "the quiesced connection closed although its handler kept it")
            let start = ContinuousClock.now
            engine.stop(.immediately)
            try await onThread(timeout: .seconds(5), "stop") { engine.wait() }
            try expect(ContinuousClock.now - start < .seconds(1), "the stop took \(ContinuousClock.now - start)")
        } afterStop: {
            try expect(handler.closeErrors[0] == "\(GNetError.stoppedImmediately)", "onClose got \(handler.closeErrors[0] ?? "no error")")
            let got = try client!.readToEnd()
            try expect(got.end == .reset, "the connection ended in \(got.end), not a reset")
            client = nil
        }
        return nil
    }
}

/// Whether one attempt to connect to `address` is refused (nothing listens there).
func connectRefused(_ address: SocketAddress) -> Bool {
    let fd = socket(address.family == .ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    let rc = address.withUnsafeSockaddr { Glibc.connect(fd, $0, $1) }
    return rc != 0 && errno == ECONNREFUSED
}
