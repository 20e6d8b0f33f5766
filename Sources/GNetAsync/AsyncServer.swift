import GNet
import GNetLocks

/// Settings of the async layer, on top of the engine's `Options`.
public struct AsyncOptions: Sendable {
    /// Input waiting for a connection's reader above which the loop stops reading it.
    /// Default 256 KiB.
    public var inboundHighWatermark = 256 * 1024
    /// Input waiting for the reader at or below which reading resumes. Default 64 KiB.
    public var inboundLowWatermark = 64 * 1024

    public init() {}

    func validate() throws {
        guard inboundHighWatermark >= 1, inboundLowWatermark >= 0, inboundLowWatermark <= inboundHighWatermark else {
            throw GNetError.invalidOption(
                name: "inboundLowWatermark",
                reason: "must be from 0 to inboundHighWatermark (\(inboundHighWatermark)), which must be positive; got \(inboundLowWatermark)")
        }
    }
}

/// The engine's handler for async connections: fills each connection's `ConnectionState` on
/// its loop and hands new connections to whoever awaits them.
final class AsyncBridge: EventHandler {
    let options: AsyncOptions
    /// Accepted connections, for `AsyncServer.connections`.
    let accepted: AsyncStream<AsyncConnection>.Continuation

    init(options: AsyncOptions, accepted: AsyncStream<AsyncConnection>.Continuation) {
        self.options = options
        self.accepted = accepted
    }

    /// Where a dial's connection is left for `AsyncClient.connect` (the dial's context).
    final class DialSlot: Sendable {
        let connection = Locked<AsyncConnection?>(nil)
    }

    func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        let handle = c.handle
        let state = ConnectionState(high: options.inboundHighWatermark, low: options.inboundLowWatermark) {
            handle.wake() // onTraffic, on the loop, resumes reading
        }
        let connection = AsyncConnection(state: state, handle: handle, remote: c.remoteAddress,
                                         listener: c.listenerAddress, loop: c.loop)
        if let slot = c.context as? DialSlot {
            slot.connection.withLock { $0 = connection }
        } else if case .terminated = accepted.yield(connection) {
            return (nil, .close) // nobody takes connections any more
        }
        c.context = state
        return (nil, .none)
    }

    func onTraffic(_ c: Connection) -> Action {
        guard let state = c.context as? ConnectionState else { return .close }
        if c.isReadingPaused && !state.wantsPause { c.resumeReading() }
        if c.inboundBuffered > 0, let chunk = c.next() {
            if state.received(chunk) { c.pauseReading() }
        }
        return .none
    }

    func onWritabilityChanged(_ c: Connection) -> Action {
        (c.context as? ConnectionState)?.writabilityChanged(c.isWritable)
        return .none
    }

    func onInputClosed(_ c: Connection) -> Action {
        (c.context as? ConnectionState)?.inputEnded(nil)
        return .none
    }

    func onClose(_ c: Connection, error: (any Error)?) -> Action {
        (c.context as? ConnectionState)?.closed(error)
        return .none
    }

    func onShutdown(_ engine: Engine) {
        accepted.finish()
    }
}

/// A server for `async` code: accepted connections as an `AsyncSequence` of `AsyncConnection`s.
///
/// ```swift
/// let server = try AsyncServer(addresses: ["tcp://127.0.0.1:9000"])
/// try await server.run { connections in
///     try await withThrowingDiscardingTaskGroup { group in
///         for await connection in connections {
///             group.addTask {
///                 try await connection.executeThenClose { inbound, outbound in
///                     for try await chunk in inbound { try await outbound.write(chunk) }
///                 }
///             }
///         }
///     }
/// }
/// ```
///
/// The engine underneath is the callback engine with its loops, flow control and closing
/// rules; connections are handed over as they are accepted. `Sendable`; any thread.
public final class AsyncServer: Sendable {
    /// The engine serving the connections (addresses, loops, stop).
    public let engine: Engine
    /// Accepted connections, in order; ends when the engine stops. One consumer.
    public let connections: AsyncStream<AsyncConnection>

    /// Serves `addresses` (stream networks) with `options`, `allowHalfClosure` always on (see
    /// `AsyncConnection.Outbound.finish()`).
    public init(addresses: [String], options: Options = Options(), asyncOptions: AsyncOptions = AsyncOptions()) throws {
        try asyncOptions.validate()
        let (stream, continuation) = AsyncStream.makeStream(of: AsyncConnection.self)
        connections = stream
        // The peer's EOF must not close the connection under a task still writing its answer
        // (the callback API writes before the loop reads the EOF; a task may write after):
        // the input ends, and `executeThenClose` closes once the task is done.
        var options = options
        options.allowHalfClosure = true
        engine = try Engine(handler: AsyncBridge(options: asyncOptions, accepted: continuation), addresses: addresses, options: options)
        // Datagrams have no connection to hand over: refuse them rather than drop them unseen.
        if let datagram = engine.listenAddresses.first(where: \.network.isDatagram) {
            throw GNetError.invalidAddress(
                datagram.original, reason: "AsyncServer serves stream connections; serve udp and unixgram with an EventHandler")
        }
    }

    /// Starts the engine, runs `body` with the accepted connections, then stops the engine
    /// gracefully and returns once it has stopped. Cancelling the task stops the engine (the
    /// connection sequence ends, so `body` can return).
    public func run(_ body: (AsyncStream<AsyncConnection>) async throws -> Void) async throws {
        try engine.start()
        let engine = self.engine
        // However the engine stops (stop(), a handler's .shutdown, a signal), the connection
        // sequence ends once it has, so `body` can return.
        let watcher = Task { await engine.waitUntilStopped() }
        let result: Result<Void, any Error>
        do {
            result = .success(try await withTaskCancellationHandler {
                try await body(connections)
            } onCancel: {
                engine.stop()
            })
        } catch {
            result = .failure(error)
        }
        engine.stop()
        await watcher.value
        try result.get()
    }
}

/// A client for `async` code: `connect` returns an `AsyncConnection`.
public final class AsyncClient: Sendable {
    public let client: Client

    public init(options: Options = Options(), asyncOptions: AsyncOptions = AsyncOptions()) throws {
        try asyncOptions.validate()
        let (_, continuation) = AsyncStream.makeStream(of: AsyncConnection.self)
        var options = options
        options.allowHalfClosure = true // as in AsyncServer: the peer's EOF ends the input only
        client = try Client(handler: AsyncBridge(options: asyncOptions, accepted: continuation), options: options)
    }

    public func start() throws { try client.start() }

    /// Stops the client's loops gracefully (open connections close) and returns once stopped.
    public func shutdown() async {
        client.stop()
        await client.engine.waitUntilStopped()
    }

    /// Dials `address` (a stream address: see `Engine.dial`) and returns the open connection.
    /// A datagram address (`udp`, `unixgram`) throws `GNetError.invalidAddress`, as in `AsyncServer`.
    public func connect(_ address: String, timeout: Duration = Engine.defaultDialTimeout) async throws -> AsyncConnection {
        // An AsyncConnection is a byte stream: datagram boundaries would be lost in it.
        if let scheme = address.firstRange(of: "://").map({ address[..<$0.lowerBound].lowercased() }),
           Network(rawValue: scheme)?.isDatagram == true {
            throw GNetError.invalidAddress(address, reason: "AsyncClient connects stream connections; dial udp and unixgram with an EventHandler (Client)")
        }
        let slot = AsyncBridge.DialSlot()
        _ = try await client.dial(address, timeout: timeout, context: slot)
        guard let connection = slot.connection.withLock({ $0 }) else { throw GNetError.connectionClosed }
        return connection
    }
}
