import GNet
import GNetLocks
import Glibc
import Poller
import Synchronization
import TestSupport

/// Closing that never loses data silently: slow readers get every byte, abandoned output ends
/// in a reset with a reason, half-closed peers, lingering on stop, and the close-path defects.
enum ClosingScenarios {
    static let all: [Scenario] = [
        Scenario("close.slow-reader-gets-everything", .engine, run: slowReaderGetsEverything),
        Scenario("close.half-closed-slow-reader", .engine, run: halfClosedSlowReader),
        Scenario("close.non-reader-aborted-with-reset", .engine, run: nonReaderAborted),
        Scenario("close.half-closed-non-reader-no-spin", .engine, run: halfClosedNonReaderNoSpin),
        Scenario("close.failed-send-then-close-has-error", .engine, run: failedSendThenClose),
        Scenario("close.linger-timeout", .engine, run: lingerTimeout),
        Scenario("close.half-closure-option", .engine, run: halfClosure),
        Scenario("close.handle-close-waits-for-onClose", .engine, run: handleCloseWaits),
        Scenario("close.socket-options-after-close", .engine, run: socketOptionsAfterClose),
        Scenario("stop.lingers-no-reset", .engine, run: stopLingers),
        Scenario("stop.shutdown-timeout-resets", .engine, run: shutdownTimeoutResets),
    ]

    /// Writes `total` pattern bytes on the first input, then closes.
    static func replier(total: Int, seed: UInt64) -> ScriptedHandler {
        let reply = patternBytes(total, seed: seed)
        return ScriptedHandler(onTraffic: { c, _ in
            c.discard(c.inboundBuffered)
            do { try c.write(reply) } catch { return .close }
            return .close
        })
    }

    /// `closeTimeout` bounds lack of progress: a reader slower than the timeout allows for the
    /// whole reply still gets all of it, then a clean EOF.
    static func slowReaderGetsEverything(_ kind: PollerKind) async throws -> Trace? {
        let total = 3 << 20
        let handler = replier(total: total, seed: 21)
        try await withEngine(kind, handler, configure: {
            $0.closeTimeout = .milliseconds(250)
            $0.socketSendBuffer = 32 * 1024
        }) { _, address in
            let got = try await onThread("slow reader") {
                let client = try TestClient(address)
                client.setReceiveBuffer(32 * 1024)
                try client.send("go")
                // About 1 s in all, far beyond closeTimeout, with no pause near it.
                return try client.readToEnd(chunk: 16 * 1024, pause: .milliseconds(5))
            }
            try expect(got.end == .eof, "reset after \(got.bytes.count) of \(total) bytes")
            try expect(got.bytes == patternBytes(total, seed: 21), "got \(got.bytes.count) of \(total) bytes, or different ones")
            try await eventually("onClose") { handler.closes == 1 }
            try expect(handler.closeErrors.isEmpty, "onClose got \(handler.closeErrors)")
        }
        return nil
    }

    /// The peer sends everything, half-closes, and reads the echo slowly: it gets every byte,
    /// then EOF (not a truncated stream ending in a clean EOF).
    static func halfClosedSlowReader(_ kind: PollerKind) async throws -> Trace? {
        let handler = EngineScenarios.echo()
        let payload = patternBytes(3 << 20, seed: 23)
        try await withEngine(kind, handler, configure: {
            $0.closeTimeout = .milliseconds(250)
            $0.socketSendBuffer = 32 * 1024
        }) { _, address in
            let got = try await onThread("half-closed slow reader") {
                let client = try TestClient(address, timeout: .seconds(20))
                client.setReceiveBuffer(32 * 1024)
                let sender = ResultBox<Void>()
                TestThread.detach {
                    sender.set(Result { try client.send(payload) })
                    client.shutdownWrite()
                }
                return try client.readToEnd(chunk: 16 * 1024, pause: .milliseconds(5))
            }
            try expect(got.end == .eof, "reset after \(got.bytes.count) of \(payload.count) bytes")
            try expect(got.bytes == payload, "got \(got.bytes.count) of \(payload.count) bytes, or different ones")
        }
        return nil
    }

    /// A peer that stops reading while the server closes: after `closeTimeout` without progress
    /// the output is abandoned with a reset, and `onClose` says so.
    static func nonReaderAborted(_ kind: PollerKind) async throws -> Trace? {
        let handler = replier(total: 8 << 20, seed: 25)
        try await withEngine(kind, handler, configure: {
            $0.closeTimeout = .milliseconds(200)
            $0.socketSendBuffer = 32 * 1024
        }) { _, address in
            let client = try TestClient(address)
            client.setReceiveBuffer(32 * 1024)
            try client.send("go")
            try await eventually("onClose after closeTimeout") { handler.closes == 1 }
            try expect(handler.closeErrors[0]?.contains("closeTimeout") == true, "onClose got \(handler.closeErrors[0] ?? "no error")")
            let got = try await onThread("reading what was sent") { try client.readToEnd() }
            try expect(got.end == .reset, "a truncated reply (\(got.bytes.count) of \(8 << 20) bytes) ended in a clean EOF")
        }
        return nil
    }

    /// A closing connection whose peer sent FIN and stopped reading must not spin the loop
    /// while it waits for the close deadline.
    static func halfClosedNonReaderNoSpin(_ kind: PollerKind) async throws -> Trace? {
        let handler = replier(total: 8 << 20, seed: 27)
        try await withEngine(kind, handler, configure: {
            $0.closeTimeout = .seconds(2)
            $0.socketSendBuffer = 32 * 1024
        }) { _, address in
            let client = try TestClient(address)
            client.setReceiveBuffer(32 * 1024)
            try client.send("go")
            client.shutdownWrite()
            try await eventually("the reply to be queued") { handler.trafficBytesSeen > 0 }
            try await Task.sleep(for: .milliseconds(100))
            let before = cpuTime(ofThreadsNamed: "gnet-loop")
            try await Task.sleep(for: .milliseconds(600))
            let used = cpuTime(ofThreadsNamed: "gnet-loop") - before
            try expect(used < .milliseconds(150), "the loop used \(used) of CPU in 600 ms while a half-closed peer did not read")
            try expect(handler.closes == 0, "closed before closeTimeout passed")
            client.reset()
            try await eventually("onClose") { handler.closes == 1 }
        }
        return nil
    }

    /// A send that failed, then `.close` from the same callback: `onClose` gets the send's error.
    static func failedSendThenClose(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler(onTraffic: { c, _ in
            c.discard(c.inboundBuffered)
            sleep(for: .milliseconds(100)) // the peer resets meanwhile
            for _ in 0..<3 { try? c.write([UInt8](repeating: 1, count: 1024)); try? c.flush() }
            return .close
        })
        try await withEngine(kind, handler) { _, address in
            let client = try TestClient(address)
            try client.send("x")
            client.reset()
            try await eventually("onClose") { handler.closes == 1 }
            try expect(handler.closeErrors[0] != nil, "onClose got no error although the send failed")
        }
        return nil
    }

    /// A closed connection whose peer never closes: the linger ends at `lingerTimeout` with a
    /// clean close (everything was sent), and the peer sees the reply then EOF.
    static func lingerTimeout(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler(onTraffic: { c, _ in
            c.discard(c.inboundBuffered)
            try? c.write("bye")
            return .close
        })
        try await withEngine(kind, handler, configure: { $0.lingerTimeout = .milliseconds(150); $0.closeTimeout = .seconds(5) }) { _, address in
            let client = try TestClient(address)
            try client.send("x")
            let start = ContinuousClock.now
            try await Task.sleep(for: .milliseconds(30))
            try client.send("more input the server must read and drop, not answer with a reset")
            try await eventually("onClose at lingerTimeout") { handler.closes == 1 }
            let took = ContinuousClock.now - start
            try expect(took >= .milliseconds(100), "closed after \(took), before lingerTimeout")
            try expect(handler.closeErrors.isEmpty, "onClose got \(handler.closeErrors)")
            let got = try await onThread("reading") { try client.readToEnd() }
            try expect(got.bytes == Array("bye".utf8) && got.end == .eof, "got \(got.bytes.count) bytes ending in \(got.end)")
        }
        return nil
    }

    /// With `allowHalfClosure`, the peer's EOF leaves the connection writable: the handler is
    /// told, answers later from another thread, and closes.
    static func halfClosure(_ kind: PollerKind) async throws -> Trace? {
        let inputClosed = Shared(0)
        let handler = ScriptedHandler(onTraffic: { c, _ in
            do { try c.next { try c.write($0) } } catch { return .close }
            return .none
        }, onInputClosed: { c, _ in
            inputClosed.update { $0 += 1 }
            let h = c.handle
            TestThread.detach {
                sleep(for: .milliseconds(50))
                h.write(Array(" and goodbye".utf8))
                h.close()
            }
            return .none
        })
        try await withEngine(kind, handler, configure: { $0.allowHalfClosure = true }) { _, address in
            let got = try await onThread("half-close") {
                let client = try TestClient(address)
                try client.send("hello")
                client.shutdownWrite()
                return try client.readToEnd()
            }
            try expect(String(decoding: got.bytes, as: UTF8.self) == "hello and goodbye" && got.end == .eof,
                       "got '\(String(decoding: got.bytes, as: UTF8.self))' ending in \(got.end)")
            try expect(inputClosed.get == 1, "onInputClosed ran \(inputClosed.get) times")
            try await eventually("onClose") { handler.closes == 1 }
            try expect(handler.closeErrors.isEmpty, "onClose got \(handler.closeErrors)")
        }
        return nil
    }

    /// `ConnectionHandle.close` completes only once the connection has closed, even when its
    /// output takes a while to drain.
    static func handleCloseWaits(_ kind: PollerKind) async throws -> Trace? {
        let big = patternBytes(4 << 20, seed: 29)
        let handler = ScriptedHandler(onOpen: { _, _ in (big, .none) })
        try await withEngine(kind, handler, configure: {
            $0.socketSendBuffer = 32 * 1024
            $0.lingerTimeout = .milliseconds(100)
        }) { _, address in
            let client = try TestClient(address)
            client.setReceiveBuffer(32 * 1024)
            try await eventually("the connection") { handler.opened == 1 }
            let handle = try handler.firstHandle
            let closesAtCompletion = Shared(-1)
            handle.close { _ in closesAtCompletion.update { $0 = handler.closes } }
            try await Task.sleep(for: .milliseconds(50))
            try expect(closesAtCompletion.get == -1, "close completed while output was still draining")
            let got = try await onThread("reading") { try client.readToEnd() }
            try expect(got.bytes.count == big.count && got.end == .eof, "got \(got.bytes.count) bytes ending in \(got.end)")
            try await eventually("the close completion") { closesAtCompletion.get != -1 }
            try expect(closesAtCompletion.get == 1, "close completed before onClose")
        }
        return nil
    }

    /// Socket-option setters on a closed connection throw instead of acting on whatever socket
    /// got its descriptor number.
    static func socketOptionsAfterClose(_ kind: PollerKind) async throws -> Trace? {
        let outcome = Shared<String?>(nil)
        let handler = ScriptedHandler(onClose: { c, _, _ in
            do {
                try c.setNoDelay(true)
                outcome.update { $0 = "setNoDelay worked on a closed connection" }
            } catch {
                outcome.update { $0 = "\(error)" }
            }
        })
        try await withEngine(kind, handler) { _, address in
            do { _ = try TestClient(address) }
            // The handler counts the close before its body runs: wait for the body's outcome.
            try await eventually("onClose") { handler.closes == 1 && outcome.get != nil }
            try expect(outcome.get == "\(GNetError.connectionClosed)", "setNoDelay in onClose: \(outcome.get ?? "not called")")
        }
        return nil
    }

    /// A graceful stop closes like `close()`: a peer that keeps sending while it reads a large
    /// reply gets all of it, then EOF — not a reset, which the kernel would send in answer to
    /// input arriving at a closed socket, destroying the part of the reply still in flight.
    static func stopLingers(_ kind: PollerKind) async throws -> Trace? {
        let reply = patternBytes(2 << 20, seed: 31)
        let handler = ScriptedHandler(onTraffic: { c, _ in
            c.discard(c.inboundBuffered)
            if c.context == nil {
                c.context = true
                try? c.write(reply)
            }
            return .none
        })
        try await withEngine(kind, handler, configure: { $0.lingerTimeout = .seconds(5) }) { engine, address in
            let client = try TestClient(address)
            client.setReceiveBuffer(32 * 1024)
            try client.send("x")
            try await eventually("the reply") { handler.trafficBytesSeen > 0 }
            engine.stop()
            // Keep sending for a while, as a pipelining client would, while reading slowly.
            TestThread.detach {
                for _ in 0..<30 {
                    sleep(for: .milliseconds(10))
                    guard (try? client.send("more input after the stop")) != nil else { return }
                }
            }
            let got = try await onThread("reading") { try client.readToEnd(chunk: 16 * 1024, pause: .milliseconds(2)) }
            try expect(got.end == .eof && got.bytes == reply, "got \(got.bytes.count) of \(reply.count) bytes ending in \(got.end)")
        }
        return nil
    }

    /// A stop with output that cannot drain ends at `shutdownTimeout`: the output is abandoned
    /// with a reset and `onClose` says why.
    static func shutdownTimeoutResets(_ kind: PollerKind) async throws -> Trace? {
        let big = patternBytes(8 << 20, seed: 33)
        let handler = ScriptedHandler(onOpen: { _, _ in (big, .none) })
        var client: TestClient?
        try await withEngine(kind, handler, configure: {
            $0.shutdownTimeout = .milliseconds(200)
            $0.closeTimeout = .seconds(10)
            $0.socketSendBuffer = 32 * 1024
        }) { engine, address in
            client = try TestClient(address)
            client?.setReceiveBuffer(32 * 1024)
            try await eventually("the connection") { handler.opened == 1 }
            let start = ContinuousClock.now
            engine.stop()
            try await onThread(timeout: .seconds(5), "stop") { engine.wait() }
            try expect(ContinuousClock.now - start < .seconds(2), "the stop took \(ContinuousClock.now - start)")
        } afterStop: {
            try expect(handler.closeErrors[0]?.contains("shutdown") == true, "onClose got \(handler.closeErrors[0] ?? "no error")")
            let got = try client!.readToEnd()
            try expect(got.end == .reset, "abandoned output ended in a clean EOF after \(got.bytes.count) bytes")
            client = nil
        }
        return nil
    }
}
