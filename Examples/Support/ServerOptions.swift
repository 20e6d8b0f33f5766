import ArgumentParser
import GNet
import GNetTLS
import Logging

/// The command line every example server takes:
/// `[--host 127.0.0.1] [--port N] [--addr URL ...] [--loops N] [--reuse-port] [--lb NAME] [--poller NAME]
/// [--edge-triggered] [--idle-timeout SECONDS] [--log-level LEVEL] [--verbose]`.
public struct ServerOptions: ParsableArguments {
    @Option(help: "The address to listen on.")
    public var host = "127.0.0.1"

    @Option(help: "The port to listen on (0 picks a free one). Default: the server's own port.")
    public var port: Int?

    @Option(name: .customLong("addr"), help: ArgumentHelp("""
        An address to serve, as a URL: tcp://HOST:PORT, tcp6://[HOST]:PORT, udp://HOST:PORT, \
        unix:///PATH, unixgram:///PATH. Repeat it to serve several at once (say tcp, udp and unix). Replaces \
        --host and --port.
        """, valueName: "url"))
    public var addresses: [String] = []

    @Option(help: "Event loops (threads).")
    public var loops = 1

    @Flag(name: [.customLong("reuse-port"), .customLong("reuseport")], help: """
        With several loops, give each its own listener (SO_REUSEPORT) and let the kernel spread \
        connections. Another server that sets it too may then share the port. Default: one \
        acceptor balances connections over the loops.
        """)
    public var reusePort = false

    @Option(name: .customLong("lb"), help: "How the acceptor spreads connections over the loops: round-robin, least-connections or source-addr-hash.")
    public var loadBalancing: Balancer = .roundRobin

    @Option(help: "Poller backend: \(PollerKind.validNames.joined(separator: ", ")). Default: the platform's.")
    public var poller: String?

    @Flag(help: "Edge-triggered I/O (epoll, or libevent on epoll); other pollers refuse it at start.")
    public var edgeTriggered = false

    @Option(help: "Close a connection that neither sends nor receives for this many seconds (fractions allowed). Default: never.")
    public var idleTimeout: Double?

    @Option(help: "Serve TLS with this PEM certificate chain (with --tls-key). Make a throwaway one with scripts/tls-certs.sh.")
    public var tlsCert: String?

    @Option(help: "The PEM private key of --tls-cert.")
    public var tlsKey: String?

    @Option(help: ArgumentHelp(
        "TLS 1.3 session tickets sent after each full handshake, 0 to 16 (default 2); 0 turns resumption off.",
        valueName: "count"))
    public var tlsTickets: Int?

    @Option(help: ArgumentHelp(
        "Close a connection whose TLS handshake takes longer than this many seconds (default 10).",
        valueName: "seconds"))
    public var tlsHandshakeTimeout: Double?

    @Option(help: ArgumentHelp(
        "Log messages at this level and above to stderr. Default: warning (what an operator must act on); info adds the engine's start and stop, debug each loop's.",
        valueName: "level"))
    public var logLevel: Logger.Level?

    @Flag(help: "The same as --log-level info.")
    public var verbose = false

    public init() {}

    public func validate() throws {
        if !addresses.isEmpty && port != nil {
            throw ValidationError("--port applies only without --addr; put the port in each --addr URL")
        }
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if let n = tlsTickets {
            guard tlsCert != nil else { throw ValidationError("--tls-tickets applies only with --tls-cert and --tls-key") }
            guard (0...16).contains(n) else { throw ValidationError("--tls-tickets must be 0 to 16, got \(n)") }
        }
        if let t = tlsHandshakeTimeout {
            guard tlsCert != nil else { throw ValidationError("--tls-handshake-timeout applies only with --tls-cert and --tls-key") }
            guard t > 0 && t <= 3600 else { throw ValidationError("--tls-handshake-timeout must be a positive number of seconds (up to 3600), got \(t)") }
        }
        if let t = idleTimeout, !(t > 0 && t <= 1e9) {
            throw ValidationError("--idle-timeout must be a positive number of seconds (up to 1e9), got \(t)")
        }
    }

    /// Serves `handler` on these options until SIGINT or SIGTERM (see `ExampleServer.serve`),
    /// logging through a `Logger` labelled `name` at `--log-level`.
    /// An engine error (bad address, port in use, unknown poller, bad option) is printed as
    /// `NAME: what to fix` and exits with status 1, rather than as a usage error.
    public func serve(
        _ name: String, _ handler: some EventHandler, defaultPort: Int,
        configure: (inout Options) -> Void = { _ in }
    ) throws {
        ExampleServer.bootstrapLogging(level: logLevel ?? (verbose ? .info : .warning))
        do {
            var options = Options()
            options.logger = Logger(label: name)
            options.loops = loops
            options.reusePort = reusePort
            options.loadBalancing = loadBalancing.value
            options.edgeTriggered = edgeTriggered
            if let idleTimeout { options.idleTimeout = .seconds(idleTimeout) }
            if let tlsCert, let tlsKey {
                var tls = TLSConfiguration.server(certificateChain: tlsCert, privateKey: tlsKey)
                if let tlsTickets {
                    tls.sessionTickets = tlsTickets > 0
                    tls.ticketsPerHandshake = tlsTickets
                }
                if let tlsHandshakeTimeout { tls.handshakeTimeout = .milliseconds(Int64(tlsHandshakeTimeout * 1000)) }
                options.tls = try TLSContext(tls)
            }
            configure(&options)
            if let poller { options.poller = try PollerKind(name: poller) }
            let addresses = self.addresses.isEmpty ? [ExampleServer.address(host: host, port: port ?? defaultPort)] : self.addresses
            try ExampleServer.serve(
                Engine(handler: handler, addresses: addresses, options: options),
                shutdownTimeout: options.shutdownTimeout, logger: options.logger)
        } catch {
            ExampleServer.printError("\(name): \(error)")
            throw ExitCode.failure
        }
    }
}

/// `--lb`, in gnet's names.
public enum Balancer: String, ExpressibleByArgument, CaseIterable, Sendable {
    case roundRobin = "round-robin"
    case leastConnections = "least-connections"
    case sourceAddrHash = "source-addr-hash"

    var value: LoadBalancing {
        switch self {
        case .roundRobin: return .roundRobin
        case .leastConnections: return .leastConnections
        case .sourceAddrHash: return .sourceAddressHash
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
