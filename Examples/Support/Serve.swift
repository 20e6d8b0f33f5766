import GNet
import GNetLocks
import GNetServiceLifecycle
import Glibc
import Logging
import ServiceLifecycle

/// What every example server shares: logging set-up, the one-line ready message the
/// benchmark scripts wait for, and running the engine in a `ServiceGroup` that shuts it down
/// gracefully on SIGINT or SIGTERM.
public enum ExampleServer {
    /// Logs at `level` and above to stderr (the engine's events are at info and debug; warnings
    /// are what an operator must act on). Call once, first.
    public static func bootstrapLogging(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }

    /// `tcp://HOST:PORT`, bracketing an IPv6 host.
    public static func address(host: String, port: Int) -> String {
        host.contains(":") ? "tcp://[\(host)]:\(port)" : "tcp://\(host):\(port)"
    }

    /// Blocks SIGINT and SIGTERM on the calling thread and returns that set. Threads started
    /// afterwards inherit the mask. The `ServiceGroup` that `serve` runs receives the signals
    /// through a libdispatch signal source, which on Linux reads them from a `signalfd`: that
    /// sees only signals blocked in every thread, and a thread not blocking them would take the
    /// signal's default action instead (ending the process without a graceful stop). `serve`
    /// calls it; a server that starts threads of its own before `serve` (a worker pool) calls
    /// it first. Idempotent.
    @discardableResult
    public static func blockStopSignals() -> sigset_t {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        return signals
    }

    /// Runs `engine` as the one service of a `ServiceGroup` with SIGTERM and SIGINT as graceful
    /// shutdown signals, printing `listening on tcp://HOST:PORT (poller=NAME, loops=N)` once it
    /// accepts connections (every address, space-separated, when it serves several:
    /// `tcp://… udp://… unix://…`), and returns once it has stopped. A graceful shutdown quiesces the
    /// handler (`onQuiesce`) and closes every connection within `shutdownTimeout`; if the engine
    /// has not stopped a second after that, the group cancels it, which aborts what is left.
    /// Blocks the calling thread (the group runs on the concurrency pool); rethrows what
    /// starting the engine throws.
    public static func serve(_ engine: Engine, shutdownTimeout: Duration, logger: Logger) throws {
        blockStopSignals()
        let service = EngineService(engine) { engine in
            let address = engine.boundAddresses.map(\.description).joined(separator: " ")
            printLine("listening on \(address) (poller=\(engine.poller.name), loops=\(engine.loopCount))")
        }
        var configuration = ServiceGroupConfiguration(
            services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = shutdownTimeout + .seconds(1)
        let group = ServiceGroup(configuration: configuration)
        let outcome = ConditionLocked<Result<Void, any Error>?>(nil, conditions: 1)
        Task {
            let result: Result<Void, any Error>
            do {
                try await group.run()
                result = .success(())
            } catch {
                result = .failure(error)
            }
            outcome.withLock { $0 = result }
            outcome.broadcast(0)
        }
        try outcome.withLock(waitingOn: 0, until: { $0 != nil }) { $0! }.get()
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
