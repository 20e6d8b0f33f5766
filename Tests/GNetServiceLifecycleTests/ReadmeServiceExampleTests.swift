import GNet
import GNetConformance
import GNetServiceLifecycle
import Glibc
import Logging
import ServiceLifecycle
import Testing

// README.md's "Service lifecycle" sample, verbatim: a doc sample is code, so it is built and run.
struct Lines: EventHandler {
    final class Quiescing {}

    func onTraffic(_ c: Connection) -> Action {
        // Echo each complete line; once quiescing, that answer is the connection's last.
        guard let end = c.withUnsafeInboundBytes({ $0.firstIndex(of: UInt8(ascii: "\n")) }),
              let line = c.next(end + 1) else { return .none }
        try? c.write(line)
        return c.context is Quiescing ? .close : .none
    }

    func onQuiesce(_ c: Connection) -> Action {
        if c.inboundBuffered == 0 { return .close }  // idle: close now
        c.context = Quiescing()  // half a line is here: answer it, then close
        return .none
    }
}

/// The server as a ServiceGroup: SIGTERM or SIGINT shut it down gracefully.
func lineServer(_ address: String, logger: Logger) throws -> ServiceGroup {
    var options = Options()
    options.logger = logger  // the engine's messages, with loop, fd and remote metadata
    let engine = try Engine(handler: Lines(), addresses: [address], options: options)
    return ServiceGroup(configuration: .init(
        services: [EngineService(engine)],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
}

// try await lineServer("tcp://127.0.0.1:7000", logger: Logger(label: "lines")).run()

@Suite(.serialized)
struct ReadmeServiceExampleTests {
    @Test func aLineInFlightIsAnsweredThenTheServerStops() async throws {
        let path = "/tmp/gnet-readme-service-\(getpid()).sock"
        var logger = Logger(label: "lines")
        logger.logLevel = .warning
        let group = try lineServer("unix://" + path, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await eventually("the socket") { access(path, F_OK) == 0 }
            let client = try TestClient(try SocketAddress(unixPath: path))
            try client.send("one\ntw")
            #expect(try client.receive(exactly: 4) == Array("one\n".utf8))
            try await Task.sleep(for: .milliseconds(20))  // "tw" has arrived
            await group.triggerGracefulShutdown()
            try await Task.sleep(for: .milliseconds(20))
            try client.send("o\n")
            let end = try await onThread("the last line") { try client.readToEnd() }
            #expect(end.bytes == Array("two\n".utf8) && end.end == .eof)
            client.shutdownWrite()
            try await tasks.next()
        }
        #expect(access(path, F_OK) != 0, "the socket file was left behind")
    }
}
