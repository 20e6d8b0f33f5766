import ArgumentParser
import ExampleSupport
import GNet
import GNetLocks

/// Each connection sends the message, waits for its echo (checking every byte), and repeats
/// `rounds` times, then closes. One handler serves every connection of the client; what each
/// has received so far lives in its `context`.
final class PingHandler: EventHandler {
    let message: [UInt8]
    let rounds: Int
    /// Connections finished (echoed every round and closed) and failed, with the first errors.
    let tally = Locked<(done: Int, failed: Int, errors: [String], slowest: Duration)>((0, 0, [], .zero))

    final class Progress {
        var round = 0
        var received = 0
        var sentAt = ContinuousClock.now
    }

    init(message: [UInt8], rounds: Int) {
        self.message = message
        self.rounds = rounds
    }

    func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        c.context = Progress()
        return (message, .none)
    }

    func onTraffic(_ c: Connection) -> Action {
        guard let p = c.context as? Progress else { return .close }
        let mismatch = c.withUnsafeInboundBytes { bytes -> Bool in
            for (i, b) in bytes.enumerated() where b != message[(p.received + i) % message.count] { return true }
            return false
        }
        if mismatch {
            c.abort(EchoMismatch(round: p.round))
            return .none
        }
        p.received += c.discard(c.inboundBuffered)
        while p.received >= message.count {
            p.received -= message.count
            p.round += 1
            let took = ContinuousClock.now - p.sentAt
            tally.withLock { $0.slowest = max($0.slowest, took) }
            guard p.round < rounds else { return .close }
            p.sentAt = .now
            do { try c.write(message) } catch { return .close }
        }
        return .none
    }

    func onClose(_ c: Connection, error: (any Error)?) -> Action {
        let complete = (c.context as? Progress)?.round == rounds
        tally.withLock { t in
            if complete && error == nil {
                t.done += 1
            } else {
                t.failed += 1
                if t.errors.count < 3 { t.errors.append(error.map { "\($0)" } ?? "closed by the server after \((c.context as? Progress)?.round ?? 0) of \(rounds) rounds") }
            }
        }
        return .none
    }
}

/// `d` in milliseconds with one decimal.
func milliseconds(_ d: Duration) -> String {
    let tenths = (d.components.seconds * 10_000) + d.components.attoseconds / 100_000_000_000_000
    return "\(tenths / 10).\(tenths % 10)"
}

struct EchoMismatch: Error, CustomStringConvertible {
    let round: Int
    var description: String { "the echo differed from what was sent in round \(round + 1)" }
}

@main
struct DialCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-dial",
        abstract: "An echo client on swift-gnet's Client: dials, pings, checks every byte.",
        discussion: """
            Dials ADDRESS (tcp://HOST:PORT, tcp6://[HOST]:PORT, unix:///PATH, or a datagram \
            address: udp://HOST:PORT, udp6://[HOST]:PORT, unixgram:///PATH) with --connections \
            connections spread over the client's loops; each sends --message and waits for its \
            echo, --rounds times, then closes. Prints a summary and exits 0 when every round of \
            every connection came back exactly; otherwise says what failed (refused, timed out, \
            a wrong echo) and exits 1. Over a datagram address each round is one datagram, and a \
            round with no echo within --timeout seconds (a lost datagram, or a port nobody \
            serves) fails the connection. Try it against gnet-echo --addr udp://127.0.0.1:9001.
            """
    )

    @Argument(help: "The server's address.")
    var address = "tcp://127.0.0.1:9000"

    @Option(help: "Connections to dial.")
    var connections = 1

    @Option(help: "Round trips per connection.")
    var rounds = 3

    @Option(help: "The message each round sends.")
    var message = "hello from gnet-dial"

    @Option(help: "Seconds a dial may take to connect.")
    var timeout = 5.0

    @Option(help: "Event loops (threads) of the client.")
    var loops = 1

    @Option(help: "Poller backend: \(PollerKind.validNames.joined(separator: ", ")). Default: the platform's.")
    var poller: String?

    func validate() throws {
        guard connections >= 1, connections <= 100_000 else { throw ValidationError("--connections must be from 1 to 100000") }
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1") }
        guard !message.isEmpty else { throw ValidationError("--message must not be empty") }
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be from 0 to 3600 seconds") }
    }

    func run() async throws {
        ExampleServer.bootstrapLogging(level: .warning)
        let handler = PingHandler(message: Array(message.utf8), rounds: rounds)
        var options = Options()
        options.loops = loops
        if let scheme = address.firstRange(of: "://").map({ address[..<$0.lowerBound].lowercased() }),
           Network(rawValue: scheme)?.isDatagram == true {
            // Datagrams are not retransmitted: a lost one must fail its connection, not stall it.
            options.readIdleTimeout = .seconds(timeout)
        }
        let client: Client
        do {
            if let poller { options.poller = try PollerKind(name: poller) }
            client = try Client(handler: handler, options: options)
            try client.start()
        } catch {
            ExampleServer.printError("gnet-dial: \(error)")
            throw ExitCode.failure
        }
        let start = ContinuousClock.now
        var dialFailures: [String] = []
        await withTaskGroup(of: String?.self) { group in
            for _ in 0..<connections {
                group.addTask {
                    do {
                        _ = try await client.dial(address, timeout: .seconds(timeout))
                        return nil
                    } catch {
                        return "\(error)"
                    }
                }
            }
            for await failure in group { if let failure { dialFailures.append(failure) } }
        }
        // Every dialled connection ends by itself: all rounds echoed, or a failure.
        let opened = connections - dialFailures.count
        while handler.tally.withLock({ $0.done + $0.failed }) < opened {
            try await Task.sleep(for: .milliseconds(5))
        }
        let took = ContinuousClock.now - start
        client.stop()
        client.wait()
        let t = handler.tally.withLock { $0 }
        ExampleServer.printLine(
            "\(t.done) of \(connections) connections echoed \(rounds) rounds exactly in \(milliseconds(took)) ms "
                + "(slowest round trip \(milliseconds(t.slowest)) ms)")
        let failures = dialFailures + t.errors
        guard failures.isEmpty && t.failed == 0 else {
            ExampleServer.printError("gnet-dial: \(dialFailures.count + t.failed) failed; first: \(failures.first ?? "?")")
            throw ExitCode.failure
        }
    }
}
