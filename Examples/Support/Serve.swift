import GNet
import Glibc
import Logging

/// What every example server shares: logging set-up, the one-line ready message the
/// benchmark scripts wait for, and a graceful stop on SIGINT or SIGTERM.
public enum ExampleServer {
    /// Logs warnings (or, when `verbose`, engine events too) to stderr. Call once, first.
    public static func bootstrapLogging(verbose: Bool) {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = verbose ? .info : .warning
            return h
        }
    }

    /// `tcp://HOST:PORT`, bracketing an IPv6 host.
    public static func address(host: String, port: Int) -> String {
        host.contains(":") ? "tcp://[\(host)]:\(port)" : "tcp://\(host):\(port)"
    }

    /// Blocks SIGINT and SIGTERM on the calling thread and returns that set. Threads started
    /// afterwards inherit the mask, so only `serve`'s waiter thread receives the signals.
    /// `serve` calls it; a server that starts threads of its own before `serve` (a worker
    /// pool) calls it first, or a stop signal may land on one of those threads and be lost
    /// (or, with the default action, kill the process without a graceful stop). Idempotent.
    @discardableResult
    public static func blockStopSignals() -> sigset_t {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        return signals
    }

    /// Runs `engine` until SIGINT or SIGTERM, printing
    /// `listening on tcp://HOST:PORT (poller=NAME, loops=N)` once it accepts connections (every
    /// address, space-separated, when it serves several: `tcp://… udp://… unix://…`).
    public static func serve(_ engine: Engine) throws {
        let signals = blockStopSignals()
        try engine.start()
        let address = engine.boundAddresses.map(\.description).joined(separator: " ")
        printLine("listening on \(address) (poller=\(engine.poller.name), loops=\(engine.loopCount))")
        let waiter = SignalWaiter(signals: signals, engine: engine)
        var thread = pthread_t()
        pthread_create(&thread, nil, { arg in
            let w = Unmanaged<SignalWaiter>.fromOpaque(arg!).takeRetainedValue()
            var set = w.signals
            var received: Int32 = 0
            sigwait(&set, &received)
            w.engine.stop()
            return nil
        }, Unmanaged.passRetained(waiter).toOpaque())
        engine.wait()
    }

    /// Writes a line to stdout at once (unbuffered, so a script reading the pipe sees it).
    public static func printLine(_ s: String) { writeAll(1, s + "\n") }

    /// Writes a line to stderr.
    public static func printError(_ s: String) { writeAll(2, s + "\n") }

    private static func writeAll(_ fd: Int32, _ s: String) {
        var s = s
        s.withUTF8 { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
                if n <= 0 { if errno == EINTR { continue } else { return } }
                off += n
            }
        }
    }
}

private final class SignalWaiter: @unchecked Sendable {
    // Immutable after init; handed to exactly one thread.
    let signals: sigset_t
    let engine: Engine
    init(signals: sigset_t, engine: Engine) { self.signals = signals; self.engine = engine }
}
