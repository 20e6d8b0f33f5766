import GNet
import ServiceLifecycle

/// An engine as a swift-service-lifecycle `Service`, to run in a `ServiceGroup` beside the
/// rest of a server.
///
/// ```swift
/// let engine = try Engine(handler: Echo(), addresses: ["tcp://127.0.0.1:9000"])
/// let group = ServiceGroup(configuration: .init(
///     services: [EngineService(engine)],
///     gracefulShutdownSignals: [.sigterm, .sigint],
///     logger: logger))
/// try await group.run()
/// ```
///
/// - `run()` starts the engine (`Engine.start()`: binds, `onBoot`, serves) and returns once it
///   has stopped and `onShutdown` has returned. It throws only what `start()` throws.
/// - **Graceful shutdown** (the group's signals, `ServiceGroup.triggerGracefulShutdown()`)
///   is `Engine.stop()`: listeners close, each open connection's handler gets `onQuiesce`
///   (its default closes the connection once its output is sent; a protocol with a request
///   in flight finishes it, then closes), and what is still open at
///   `Options.shutdownTimeout` is aborted.
/// - **Cancellation** (the group's cancellation signals, its
///   `maximumGracefulShutdownDuration` passing, or the task being cancelled) is
///   `Engine.stop(.immediately)`: every connection is reset at once and the loops end.
///
/// The engine runs once: a service is not restarted. `run()` may be called from any task,
/// but not from one of the engine's handlers.
public struct EngineService: Service, CustomStringConvertible {
    /// The engine this service runs.
    public let engine: Engine
    private let onStarted: @Sendable (Engine) -> Void

    /// Runs `engine`, which must not have been started. `onStarted` is called once the engine
    /// serves (`start()` has returned: `engine.addresses` tells where), on the task running
    /// `run()`: to print a ready line, say, or to tell a supervisor.
    public init(_ engine: Engine, onStarted: @escaping @Sendable (Engine) -> Void = { _ in }) {
        self.engine = engine
        self.onStarted = onStarted
    }

    /// Creates the engine (see `Engine.init(handler:addresses:options:)`, which throws for an
    /// unparsable address or an invalid option).
    public init(
        handler: any EventHandler, addresses: [String], options: Options = Options(),
        onStarted: @escaping @Sendable (Engine) -> Void = { _ in }
    ) throws {
        self.init(try Engine(handler: handler, addresses: addresses, options: options), onStarted: onStarted)
    }

    public func run() async throws {
        // Started before the handlers are installed, so a shutdown or cancellation that came
        // earlier stops a started engine (installing a handler calls it at once then).
        try engine.start()
        onStarted(engine)
        let engine = self.engine
        await withGracefulShutdownHandler {
            await engine.stopped(onCancel: .immediately)
        } onGracefulShutdown: {
            engine.stop()
        }
    }

    public var description: String {
        "EngineService(\(engine.listenAddresses.map { "\($0)" }.joined(separator: " ")))"
    }
}
