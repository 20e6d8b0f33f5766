import GNet
import GNetAsync
import GNetConformance
import GNetLocks
import Glibc
import TestSupport
import Testing

@Suite(.serialized)
struct AsyncConnectionTests {
    static func options() -> Options {
        var o = Options()
        o.logger.logLevel = .critical
        return o
    }

    /// Runs an async echo server around `body`, then cancels it and waits for its end.
    func withEchoServer(
        _ asyncOptions: AsyncOptions = AsyncOptions(), _ options: Options = options(),
        handle: @escaping @Sendable (AsyncConnection) async throws -> Void = { c in
            try await c.executeThenClose { inbound, outbound in
                for try await chunk in inbound { try await outbound.write(chunk) }
            }
        },
        _ body: (SocketAddress) async throws -> Void
    ) async throws {
        let server = try AsyncServer(addresses: ["tcp://127.0.0.1:0"], options: options, asyncOptions: asyncOptions)
        let running = Task {
            try await server.run { connections in
                await withDiscardingTaskGroup { group in
                    for await c in connections { group.addTask { try? await handle(c) } }
                }
            }
        }
        defer { running.cancel() }
        var address: SocketAddress? = nil
        for _ in 0..<500 where address == nil {
            address = server.engine.addresses.first
            if address == nil { try await Task.sleep(for: .milliseconds(2)) }
        }
        try await body(try #require(address))
        running.cancel()
        try await running.value
    }

    @Test("10 clients each get 1 MiB echoed exactly through the async layer")
    func echo() async throws {
        try await withEchoServer { address in
            // Blocking clients on threads of their own: the cooperative pool serves the server.
            let results = Locked<[Bool]>([])
            try await onThread(timeout: .seconds(60), "10 echo clients") {
                let threads = (0..<10).map { seed in
                    TestThread.start {
                        let payload = patternBytes(1 << 20, seed: UInt64(seed + 1))
                        guard let client = try? TestClient(address) else { return results.withLock { $0.append(false) } }
                        let writer = TestThread.start { try? client.send(payload) }
                        let back = try? client.receive(exactly: payload.count)
                        writer.join()
                        results.withLock { $0.append(back == payload) }
                    }
                }
                for t in threads { t.join() }
            }
            #expect(results.withLock { $0 } == Array(repeating: true, count: 10))
        }
    }

    @Test("a slow reader holds input bounded: the loop stops reading, the peer is held back, every byte arrives")
    func slowConsumerBounded() async throws {
        var async = AsyncOptions()
        async.inboundHighWatermark = 64 * 1024
        async.inboundLowWatermark = 16 * 1024
        let peak = Locked(0)
        let received = Locked(0)
        let total = 16 << 20
        let checksum = Locked<UInt64>(0)
        try await withEchoServer(async, handle: { c in
            try await c.executeThenClose { inbound, _ in
                for try await chunk in inbound {
                    let buffered = c.bufferedInput
                    peak.withLock { $0 = max($0, buffered + chunk.count) }
                    received.withLock { $0 += chunk.count }
                    checksum.withLock { s in for b in chunk { s = s &* 31 &+ UInt64(b) } }
                    try await Task.sleep(for: .microseconds(200)) // a slow consumer
                }
            }
        }) { address in
            let payload = patternBytes(total, seed: 9)
            let client = try TestClient(address, timeout: .seconds(60))
            let writer = TestThread.start { try? client.send(payload); client.shutdownWrite() }
            defer { writer.join() }
            let deadline = ContinuousClock.now + .seconds(60)
            while received.withLock({ $0 }) < total && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            var expected: UInt64 = 0
            for b in payload { expected = expected &* 31 &+ UInt64(b) }
            #expect(received.withLock { $0 } == total)
            #expect(checksum.withLock { $0 } == expected, "the bytes arrived changed or out of order")
            // The high watermark plus one read (64 KiB) plus the chunk in hand.
            let bound = 3 * 64 * 1024
            let seen = peak.withLock { $0 }
            #expect(seen <= bound, "peak buffered \(seen)")
        }
    }

    @Test("writes wait for a peer that does not read, then complete when it does")
    func writerWaitsForSlowPeer() async throws {
        let written = Locked(0)
        let chunk = [UInt8](repeating: 7, count: 64 * 1024)
        let total = 64 << 20
        try await withEchoServer(handle: { c in
            try await c.executeThenClose { _, outbound in
                var sent = 0
                while sent < total {
                    try await outbound.write(chunk)
                    sent += chunk.count
                    written.withLock { $0 = sent }
                }
            }
        }) { address in
            let client = try TestClient(address, timeout: .seconds(60))
            // The writer must come to a stop (the kernel's buffers and the watermark full) and
            // stay there while the peer reads nothing.
            var last = -1
            var still = ContinuousClock.now
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now - still < .milliseconds(500) {
                let now = written.withLock { $0 }
                if now != last { last = now; still = .now }
                if ContinuousClock.now > deadline { Issue.record("the writer never stopped: \(now) bytes taken"); break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(last < 32 << 20, "\(last) bytes were taken for a peer that reads nothing")
            let got = try await onThread(timeout: .seconds(60), "reading") { try client.receiveUntilEOF(limit: total + 1) }
            #expect(got.count == total)
        }
    }

    @Test("executeThenClose closes when the body throws; the peer sees its reply, then EOF")
    func closesOnThrow() async throws {
        struct Refused: Error {}
        try await withEchoServer(handle: { c in
            try await c.executeThenClose { _, outbound in
                try await outbound.write("bye\n")
                throw Refused()
            }
        }) { address in
            let client = try TestClient(address)
            let got = try await onThread("reading") { try client.receiveUntilEOF() }
            #expect(got == Array("bye\n".utf8))
        }
    }

    @Test("AsyncClient dials a callback echo server and reads its answers")
    func client() async throws {
        struct Echo: EventHandler {
            func onTraffic(_ c: Connection) -> Action {
                c.withInbound { try? c.write($0) }
                c.discard(c.inboundBuffered)
                return .none
            }
        }
        let engine = try Engine(handler: Echo(), addresses: ["tcp://127.0.0.1:0"], options: Self.options())
        try engine.start()
        let client = try AsyncClient(options: Self.options())
        try client.start()
        let c = try await client.connect(engine.addresses[0].description)
        try await c.executeThenClose { inbound, outbound in
            try await outbound.write("ping")
            var got: [UInt8] = []
            for try await chunk in inbound {
                got += chunk
                if got.count >= 4 { break }
            }
            #expect(got == Array("ping".utf8))
        }
        await client.shutdown()
        engine.stop()
        await engine.waitUntilStopped()
    }

    @Test("cancelling run() stops the engine and ends the connection sequence")
    func cancellation() async throws {
        let server = try AsyncServer(addresses: ["tcp://127.0.0.1:0"], options: Self.options())
        let ended = Locked(false)
        let running = Task {
            try await server.run { connections in
                for await _ in connections {}
                ended.withLock { $0 = true }
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        running.cancel()
        try await running.value
        #expect(ended.withLock { $0 })
        #expect(!server.engine.isRunning)
    }

    @Test("datagram addresses are refused: there is no connection to hand over")
    func datagramAddressesRefused() async throws {
        #expect(throws: GNetError.self) { try AsyncServer(addresses: ["udp://127.0.0.1:0"]) }
        let client = try AsyncClient(options: Self.options())
        try client.start()
        for address in ["udp://127.0.0.1:9", "UDP6://[::1]:9", "unixgram:///tmp/gnet-async-nothing.sock"] {
            await #expect(throws: GNetError.self) { _ = try await client.connect(address) }
        }
        await client.shutdown()
    }
}
