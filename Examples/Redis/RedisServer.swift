import ArgumentParser
import ExampleSupport
import GNet
import RedisCore

@main
struct RedisCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-redis",
        abstract: "A Redis-compatible (RESP2) in-memory key-value server on swift-gnet.",
        discussion: """
            Speaks enough of Redis for redis-cli and redis-benchmark: PING, ECHO, SET (EX, PX, NX, \
            XX, KEEPTTL), GET, DEL, EXISTS, INCR, DECR, INCRBY, DECRBY, MSET, MGET, TTL, PTTL, \
            DBSIZE, FLUSHDB, FLUSHALL, COMMAND, CONFIG GET, QUIT. Nothing is persisted. \
            Prints 'listening on tcp://HOST:PORT (poller=NAME, loops=N)' when ready and stops \
            gracefully on SIGINT or SIGTERM. The GNET_POLLER environment variable overrides --poller.
            """
    )

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one).")
    var port = 6380

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
            // The tick sweeps expired keys.
            options.ticker = true
            if let poller { options.poller = try PollerKind(name: poller) }
            let engine = try Engine(
                handler: RedisHandler(), addresses: [ExampleServer.address(host: host, port: port)], options: options)
            try ExampleServer.serve(engine)
        } catch {
            ExampleServer.printError("gnet-redis: \(error)")
            throw ExitCode.failure
        }
    }
}
