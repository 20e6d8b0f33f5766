import GNet
import GNetConformance
import GNetLocks
import Glibc
import Logging
import Testing

/// What a `LogHandler` received: every message, with its level and merged metadata.
final class LogCapture: Sendable {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let records = Locked<[Record]>([])

    /// A logger at `level` whose messages land here, carrying `metadata` of its own.
    func logger(level: Logger.Level, metadata: Logger.Metadata = [:]) -> Logger {
        var logger = Logger(label: "test") { _ in Handler(capture: self) }
        logger.logLevel = level
        for (k, v) in metadata { logger[metadataKey: k] = v }
        return logger
    }

    var all: [Record] { records.withLock { $0 } }

    func named(_ message: String) -> [Record] { all.filter { $0.message == message } }

    fileprivate func append(_ r: Record) { records.withLock { $0.append(r) } }

    private struct Handler: LogHandler {
        let capture: LogCapture
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var merged = metadata
            for (k, v) in event.metadata ?? [:] { merged[k] = v }
            capture.append(Record(
                level: event.level, message: "\(event.message)",
                metadata: merged.mapValues { "\($0)" }))
        }
    }
}

@Suite("Logging", .serialized)
struct LoggingTests {
    @Test("engine start and stop at info, loop messages with loop metadata, a connection's with fd and remote; the user's metadata kept")
    func metadata() async throws {
        let capture = LogCapture()
        // Keeps its connection past quiescing, so the shutdown deadline aborts it and says so.
        let handler = ScriptedHandler(onQuiesce: { _, _ in .none })
        var options = Options()
        options.loops = 2
        options.shutdownTimeout = .milliseconds(100)
        options.logger = capture.logger(level: .debug, metadata: ["service": "tests"])
        let engine = try Engine(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: options)
        try engine.start()
        let address = engine.addresses[0]
        let client = try TestClient(address)
        let local = try #require(clientAddress(client.fd))
        try await eventually("the connection") { handler.opened == 1 }
        engine.stop()
        try await onThread("the stop") { engine.wait() }

        let started = try #require(capture.named("gnet engine started").first)
        #expect(started.level == .info)
        #expect(started.metadata["poller"] == engine.poller.name)
        #expect(started.metadata["loops"] == "2")
        #expect(started.metadata["addresses"] == "\(address)")
        #expect(started.metadata["service"] == "tests")
        #expect(capture.named("gnet engine stopped").first?.level == .info)

        let loops = capture.named("loop stopping gracefully")
        #expect(loops.map(\.level) == [.debug, .debug])
        #expect(Set(loops.compactMap { $0.metadata["loop"] }) == ["0", "1"])
        #expect(loops.allSatisfy { $0.metadata["service"] == "tests" })

        let aborted = try #require(capture.named("connection aborted at the shutdown deadline").first)
        #expect(aborted.level == .debug)
        #expect(aborted.metadata["remote"] == local)
        #expect(aborted.metadata["fd"] != nil)
        #expect(["0", "1"].contains(aborted.metadata["loop"] ?? "none"))
        #expect(capture.named("shutdown deadline passed; connections aborted").first?.metadata["aborted"] == "1")
        _ = client
    }

    @Test("serving logs nothing, even at trace: no message per connection or per read and write")
    func nothingWhileServing() async throws {
        let capture = LogCapture()
        let echo = ScriptedHandler(onTraffic: { c, _ in
            c.withUnsafeInboundBytes { try? c.write($0) }
            _ = c.discard(c.inboundBuffered)
            return .none
        })
        var options = Options()
        options.logger = capture.logger(level: .trace)
        try serving(echo, configure: { $0 = options }) { address in
            let before = capture.all.count
            for _ in 0..<10 {
                let client = try TestClient(address)
                for _ in 0..<20 {
                    try client.send("ping")
                    #expect(try client.receive(exactly: 4) == Array("ping".utf8))
                }
            }
            #expect(capture.all.count == before, "logged while serving: \(capture.all.dropFirst(before).map(\.message))")
        }
    }
}

/// The client socket's own end (`ip:port`), which the server sees as `remote`.
func clientAddress(_ fd: Int32) -> String? {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let rc = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return rc == 0 ? "\(SocketAddress(storage: storage, length: length))" : nil
}
