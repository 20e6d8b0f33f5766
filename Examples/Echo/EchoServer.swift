import ArgumentParser
import ExampleSupport
import GNet
import GNetCodec
import GNetMetrics

/// `--metrics`: publishes the loops' statistics every second through swift-metrics (to the
/// bootstrapped `MetricsSystem`), from `onBoot`, when the loops exist.
func startMetrics(_ engine: Engine, _ on: Bool) {
    guard on else { return }
    EngineMetrics(engine: engine, interval: .seconds(1)).start() // kept alive by its timers
}

/// Echoes every byte back: the smallest useful server, and the one the benchmarks load. On a
/// `udp` address each datagram is echoed whole, as one datagram, to its sender.
struct EchoHandler: EventHandler {
    var metrics = false

    func onBoot(_ engine: Engine) -> Action {
        startMetrics(engine, metrics)
        return .none
    }

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

/// `--framed`: echoes frames of a length-prefixed protocol (a 4-byte big-endian length, then
/// the payload), each decoded in place and written back re-framed with one write — the codec
/// path the benchmarks compare with the plain echo.
struct FramedEchoHandler: EventHandler {
    /// Failing on an over-long frame (`.fail`), the length-field decoder keeps no state between
    /// reads (only `.discard` does), so each read decodes with a copy of it: nothing to keep per
    /// connection, no `context` cast per read.
    let codec = LengthFieldBasedFrameCodec(maxFrameLength: 1 << 20)
    var metrics = false

    func onBoot(_ engine: Engine) -> Action {
        startMetrics(engine, metrics)
        return .none
    }

    func onTraffic(_ c: Connection) -> Action {
        var decoder = codec
        do {
            try c.forEachFrame(using: &decoder) { frame in try c.writeFrame(frame, using: codec) }
        } catch {
            c.abort(error)
        }
        return .none
    }
}

@main
struct EchoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-echo",
        abstract: "A TCP, UDP and Unix-socket echo server on swift-gnet.",
        discussion: """
            Prints 'listening on tcp://HOST:PORT (poller=NAME, loops=N)' when ready (every \
            address, space-separated, with several --addr) and stops gracefully on SIGINT or \
            SIGTERM. Default: tcp://127.0.0.1:9000. Serve tcp, udp and unix at once with \
            --addr tcp://127.0.0.1:9000 --addr udp://127.0.0.1:9001 --addr unix:///tmp/e.sock. \
            With --idle-timeout, a \
            connection that neither sends nor receives for that long is closed. \
            The GNET_POLLER environment variable overrides --poller.
            """
    )

    @OptionGroup var server: ServerOptions

    @Flag(help: "Echo length-prefixed frames (4-byte big-endian length) through GNetCodec.")
    var framed = false

    @Flag(help: "Keep loop statistics with busy time (Options.measureLoopTime) and publish them every second through swift-metrics (GNetMetrics).")
    var metrics = false

    func validate() throws {
        if framed && server.addresses.contains(where: { $0.lowercased().hasPrefix("udp") || $0.lowercased().hasPrefix("unixgram") }) {
            throw ValidationError("--framed echoes frames of a stream; serve udp and unixgram addresses without it")
        }
    }

    func run() throws {
        let measure = metrics
        if framed {
            try server.serve("gnet-echo", FramedEchoHandler(metrics: metrics), defaultPort: 9000) { $0.measureLoopTime = measure }
        } else {
            try server.serve("gnet-echo", EchoHandler(metrics: metrics), defaultPort: 9000) { $0.measureLoopTime = measure }
        }
    }
}
