import GNet
import GNetLocks
import Glibc
import Poller
import Synchronization
import TestSupport

/// Checks of the engine's behaviour on each backend: echo exactness, concurrency, the
/// connection lifecycle, closing and stopping.
enum EngineScenarios {
    static let all: [Scenario] = [
        Scenario("engine.echo-1MiB", .engine, run: echoOneMiB),
        Scenario("engine.100-concurrent-clients", .engine, run: concurrentClients),
        Scenario("engine.pipelined-small-messages", .engine, run: pipelinedMessages),
        Scenario("engine.partial-consume-reoffered", .engine, run: partialConsume),
        Scenario("engine.peer-writes-then-closes", .engine, run: peerWritesThenCloses),
        Scenario("engine.server-close-from-onTraffic", .engine, run: serverCloseFromTraffic),
        Scenario("engine.stop-with-open-connections", .engine, run: stopWithOpenConnections),
    ]

    /// Echoes whatever arrives.
    static func echo() -> ScriptedHandler {
        ScriptedHandler(onTraffic: { c, _ in
            do { try c.next { try c.write($0) } } catch { return .close }
            return .none
        })
    }

    static func echoOneMiB(_ kind: PollerKind) async throws -> Trace? {
        let handler = echo()
        try await withEngine(kind, handler) { _, address in
            let payload = patternBytes(1 << 20, seed: 1)
            let got = try await onThread("1 MiB echo") {
                let client = try TestClient(address)
                // Send from one thread while reading on another: neither side may stall.
                let sender = ResultBox<Void>()
                TestThread.detach { sender.set(Result { try client.send(payload) }) }
                let got = try client.receive(exactly: payload.count)
                for _ in 0..<500 where sender.get() == nil { usleep(2000) }
                try sender.get()?.get()
                return got
            }
            try expect(got == payload, "echoed bytes differ from those sent (first difference at byte \(firstDifference(got, payload)))")
        }
        return nil
    }

    static func concurrentClients(_ kind: PollerKind) async throws -> Trace? {
        let handler = echo()
        try await withEngine(kind, handler, configure: { $0.loops = 2 }) { engine, address in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<100 {
                    group.addTask {
                        try await onThread("client \(i)") {
                            let client = try TestClient(address)
                            for round in 0..<5 {
                                let msg = patternBytes(512 + i, seed: UInt64(i * 10 + round))
                                try client.send(msg)
                                let back = try client.receive(exactly: msg.count)
                                try expect(back == msg, "client \(i) round \(round): echo differs")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            try expect(handler.opened == 100, "100 clients connected but onOpen ran \(handler.opened) times")
        }
        return nil
    }

    static func pipelinedMessages(_ kind: PollerKind) async throws -> Trace? {
        // A length-prefixed protocol: the handler answers each complete frame and leaves a
        // partial one buffered. 10,000 frames are written in one burst.
        let handler = ScriptedHandler(onTraffic: { c, _ in
            while let len = c.peek(2, { Int($0.unsafeLoad(fromByteOffset: 0, as: UInt8.self)) << 8 | Int($0.unsafeLoad(fromByteOffset: 1, as: UInt8.self)) }),
                  c.inboundBuffered >= 2 + len {
                c.discard(2)
                do { try c.next(len) { try c.write($0) } } catch { return .close }
            }
            return .none
        })
        try await withEngine(kind, handler) { _, address in
            var frames: [UInt8] = []
            var expected: [UInt8] = []
            for i in 0..<10_000 {
                let body = patternBytes(1 + i % 61, seed: UInt64(i))
                frames += [UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
                expected += body
            }
            let framesToSend = frames
            let expectedCount = expected.count
            let got = try await onThread("pipelined frames") {
                let client = try TestClient(address)
                let sender = ResultBox<Void>()
                TestThread.detach { sender.set(Result { try client.send(framesToSend) }) }
                return try client.receive(exactly: expectedCount)
            }
            try expect(got == expected, "answers to pipelined frames differ from the frames' bodies")
        }
        return nil
    }

    static func partialConsume(_ kind: PollerKind) async throws -> Trace? {
        // The handler takes one line per call. Three lines arrive in one write; all three must
        // be answered without the client sending anything more.
        let handler = ScriptedHandler(onTraffic: { c, _ in
            let line: Int? = c.withInbound { span in
                for i in 0..<span.byteCount where span.unsafeLoad(fromByteOffset: i, as: UInt8.self) == 10 { return i + 1 }
                return nil
            }
            guard let line, let bytes = c.next(line) else { return .none }
            try? c.write(bytes)
            return .none
        })
        try await withEngine(kind, handler) { _, address in
            let got = try await onThread("three lines") {
                let client = try TestClient(address, timeout: .seconds(3))
                try client.send("one\ntwo\nthree\n")
                return try client.receive(exactly: 14)
            }
            try expect(got == Array("one\ntwo\nthree\n".utf8), "lines not all answered: \(String(decoding: got, as: UTF8.self))")
        }
        return nil
    }

    static func peerWritesThenCloses(_ kind: PollerKind) async throws -> Trace? {
        // Bytes written just before the peer's FIN reach onTraffic before onClose.
        let received = Locked(0)
        let handler = ScriptedHandler(onTraffic: { c, _ in
            received.withLock { $0 += c.inboundBuffered }
            c.discard(c.inboundBuffered)
            return .none
        })
        try await withEngine(kind, handler) { _, address in
            try await onThread("write then close") {
                let client = try TestClient(address)
                try client.send(patternBytes(100_000, seed: 3))
            }
            try await eventually("onClose after the peer closed") { handler.closes == 1 }
        }
        try expect(received.withLock { $0 } == 100_000, "onTraffic saw \(received.withLock { $0 }) of 100000 bytes sent before FIN")
        return handler.trace
    }

    static func serverCloseFromTraffic(_ kind: PollerKind) async throws -> Trace? {
        // The handler answers "bye" and returns .close: the answer is sent, then the close.
        let handler = ScriptedHandler(onTraffic: { c, _ in
            c.discard(c.inboundBuffered)
            try? c.write("bye")
            return .close
        })
        try await withEngine(kind, handler) { _, address in
            let got = try await onThread("server close") {
                let client = try TestClient(address)
                try client.send("hi")
                return try client.receiveUntilEOF()
            }
            try expect(got == Array("bye".utf8), "expected 'bye' then EOF, got \(got.count) bytes")
            try await eventually("onClose") { handler.closes == 1 }
        }
        return handler.trace
    }

    static func stopWithOpenConnections(_ kind: PollerKind) async throws -> Trace? {
        let handler = echo()
        var clients: [TestClient] = []
        // The clients never close: each connection lingers (write side shut down) until
        // lingerTimeout, kept short here.
        try await withEngine(kind, handler, configure: { $0.loops = 2; $0.lingerTimeout = .milliseconds(200) }) { engine, address in
            for _ in 0..<20 { clients.append(try TestClient(address)) }
            try await eventually("20 connections opened") { handler.opened == 20 }
            // Stop with every connection open (withEngine checks onClose, threads, descriptors).
        } afterStop: {
            try expect(handler.closes == 20, "\(handler.closes) of 20 connections got onClose")
            let stillOpen = clients.filter { !$0.isClosedByPeer(within: .seconds(2)) }.count
            try expect(stillOpen == 0, "\(stillOpen) clients were not disconnected by the stop")
            clients.removeAll()
        }
        return nil
    }
}

/// The index of the first byte where `a` and `b` differ (the shorter length if one is a prefix).
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
    for i in 0..<min(a.count, b.count) where a[i] != b[i] { return i }
    return min(a.count, b.count)
}
