import ArgumentParser
import ExampleSupport
import GNet
import HTTPCore

@main
struct HTTPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-http",
        abstract: "A plaintext HTTP/1.1 server on swift-gnet (TechEmpower-style).",
        discussion: """
            GET /plaintext and GET / answer 'Hello, World!'; anything else is a 404. Keep-alive, \
            pipelining and request bodies sized by Content-Length are supported; chunked request \
            bodies and malformed requests get a 400 and a close. Prints \
            'listening on tcp://HOST:PORT (poller=NAME, loops=N)' when ready and stops gracefully \
            on SIGINT or SIGTERM. The GNET_POLLER environment variable overrides --poller.
            """
    )

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one).")
    var port = 8080

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
                handler: HTTPHandler(), addresses: [ExampleServer.address(host: host, port: port)], options: options)
            try ExampleServer.serve(engine)
        } catch {
            ExampleServer.printError("gnet-http: \(error)")
            throw ExitCode.failure
        }
    }
}
