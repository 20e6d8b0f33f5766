import ArgumentParser
import ExampleSupport
import GNet

/// Echoes every byte back: the smallest useful server, and the one the benchmarks load.
struct EchoHandler: EventHandler {
    func onTraffic(_ c: Connection) -> Action {
        do {
            // The input is lent straight from the loop's read buffer and written back without
            // an intermediate copy; `next` consumes it once the write has taken it.
            try c.next { try c.write($0) }
            return .none
        } catch {
            return .close
        }
    }
}

@main
struct EchoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-echo",
        abstract: "A TCP echo server on swift-gnet.",
        discussion: """
            Prints 'listening on tcp://HOST:PORT (poller=NAME, loops=N)' when ready and stops \
            gracefully on SIGINT or SIGTERM. The GNET_POLLER environment variable overrides --poller.
            """
    )

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one).")
    var port = 9000

    @Option(help: "Event loops (threads).")
    var loops = 1

    @Option(help: "Poller backend: \(PollerKind.validNames.joined(separator: ", ")). Default: the platform's.")
    var poller: String?

    @Flag(help: "Log engine events (boot, stop, trouble) to stderr.")
    var verbose = false

    func run() throws {
        ExampleServer.bootstrapLogging(verbose: verbose)
        do {
            var options = Options()
            options.loops = loops
            if let poller { options.poller = try PollerKind(name: poller) }
            let engine = try Engine(
                handler: EchoHandler(), addresses: [ExampleServer.address(host: host, port: port)], options: options)
            try ExampleServer.serve(engine)
        } catch {
            // Engine errors say what to fix; print them plainly rather than as a usage error.
            ExampleServer.printError("gnet-echo: \(error)")
            throw ExitCode.failure
        }
    }
}
