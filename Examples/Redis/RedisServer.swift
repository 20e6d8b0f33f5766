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
            gracefully on SIGINT or SIGTERM. Default port 6380. \
            The GNET_POLLER environment variable overrides --poller.
            """
    )

    @OptionGroup var server: ServerOptions

    func run() throws {
        try server.serve("gnet-redis", RedisHandler(), defaultPort: 6380, configure: { options in
            // The tick sweeps expired keys.
            options.ticker = true
            // A command is parsed whole, so unconsumed input may grow to the largest request
            // Redis itself accepts (its client-query-buffer-limit); a client that sends and
            // never reads is still bounded by the output watermark, which pauses reading.
            options.inboundLimit = RequestLimits().maxRequestLength
        })
    }
}
