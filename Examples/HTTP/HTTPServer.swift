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
            on SIGINT or SIGTERM (default port 8080). The GNET_POLLER environment variable overrides --poller.
            """
    )

    @OptionGroup var server: ServerOptions

    func run() throws {
        try server.serve("gnet-http", HTTPHandler(), defaultPort: 8080)
    }
}
