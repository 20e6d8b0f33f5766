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
            gracefully on SIGINT or SIGTERM. Default port 9000. With --idle-timeout, a \
            connection that neither sends nor receives for that long is closed. \
            The GNET_POLLER environment variable overrides --poller.
            """
    )

    @OptionGroup var server: ServerOptions

    func run() throws {
        try server.serve("gnet-echo", EchoHandler(), defaultPort: 9000)
    }
}
