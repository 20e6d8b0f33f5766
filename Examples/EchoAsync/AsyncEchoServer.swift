import ArgumentParser
import ExampleSupport
import GNet
import GNetAsync
import Dispatch
import GNetLocks
import Glibc

/// The echo server written against `GNetAsync`: a task per connection, reading chunks and
/// writing them back with backpressure. The benchmark suite runs it beside the callback echo.
@main
struct AsyncEchoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-echo-async",
        abstract: "A TCP echo server on swift-gnet's async layer (GNetAsync).",
        discussion: """
            Prints 'listening on tcp://HOST:PORT (poller=NAME, loops=N)' when ready and stops \
            gracefully on SIGINT or SIGTERM. Default port 9001.
            """
    )

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one).")
    var port = 9001

    @Option(help: "Event loops (threads).")
    var loops = 1

    @Option(help: "Poller backend: \(PollerKind.validNames.joined(separator: ", ")). Default: the platform's.")
    var poller: String?

    func run() async throws {
        var options = Options()
        options.loops = loops
        let server: AsyncServer
        do {
            if let poller { options.poller = try PollerKind(name: poller) }
            server = try AsyncServer(addresses: [ExampleServer.address(host: host, port: port)], options: options)
        } catch {
            ExampleServer.printError("gnet-echo-async: \(error)")
            throw ExitCode.failure
        }
        let stopOnSignal = SignalStopper(engine: server.engine)
        do {
            try await server.run { connections in
                let engine = server.engine
                ExampleServer.printLine(
                    "listening on \(engine.addresses.map(\.description).joined(separator: " ")) (poller=\(engine.poller.name), loops=\(engine.loopCount))")
                stopOnSignal.start()
                await withDiscardingTaskGroup { group in
                    for await connection in connections {
                        group.addTask {
                            try? await connection.executeThenClose { inbound, outbound in
                                for try await chunk in inbound { try await outbound.write(chunk) }
                            }
                        }
                    }
                }
            }
        } catch {
            ExampleServer.printError("gnet-echo-async: \(error)")
            throw ExitCode.failure
        }
    }
}

/// Stops the engine on SIGINT or SIGTERM (their default actions ignored, so a signal landing
/// on any thread is seen here).
final class SignalStopper: Sendable {
    let engine: Engine
    private let sources = Locked<[any DispatchSourceSignal]>([])
    init(engine: Engine) { self.engine = engine }

    func start() {
        let engine = self.engine
        let made = [SIGINT, SIGTERM].map { sig -> any DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { engine.stop() }
            source.resume()
            return source
        }
        sources.withLock { $0 = made }
    }
}
