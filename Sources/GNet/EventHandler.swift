/// The callbacks of a server, gnet's `EventHandler`. Every method has a no-op default, so a
/// handler implements only what it needs.
///
/// ## Threads
/// One handler serves every loop, so its methods run concurrently on the loop threads; hence
/// `Sendable`. Methods that receive a `Connection` run on that connection's loop thread, and the
/// connection may be used only there and only until the callback returns (keep a
/// `ConnectionHandle` to reach it later or from elsewhere).
///
/// ## Order, per connection
/// `onOpen` once, then `onTraffic` any number of times, then `onClose` once; nothing after
/// `onClose`, and the descriptor is closed only after `onClose` returns.
///
/// ## Datagrams
/// A `udp` socket the engine listens on gets neither `onOpen` nor `onClose`: `onTraffic` is
/// called once per datagram, with the socket's connection holding exactly that datagram as
/// input (`Connection.isDatagram`; see `Connection` for what writes do there). A dialled
/// datagram socket (`Engine.dial("udp://…")`) is a connection with `onOpen` and `onClose`,
/// and `onTraffic` once per datagram from its peer.
public protocol EventHandler: Sendable {
    /// The engine is listening (`engine.addresses` tells where) and its loops are ready; they
    /// start serving when this returns, so no other callback runs before it (connections that
    /// arrive meanwhile wait in the backlog). Called once, on the thread calling `start()`.
    /// `.shutdown` stops the engine before it serves anything; `onShutdown` still follows.
    func onBoot(_ engine: Engine) -> Action

    /// A connection was accepted or dialled. Return bytes to send first (a greeting; one
    /// datagram on a dialled datagram connection) and an action.
    /// Writing with `connection.write` here works too.
    func onOpen(_ connection: Connection) -> (output: [UInt8]?, action: Action)

    /// Bytes arrived (or `ConnectionHandle.wake()` was called). Read them with
    /// `connection.withInbound`, `next`, `peek` and `discard`; what the handler does not
    /// consume stays buffered for the next call. When the handler consumed some bytes and some
    /// remain, the engine calls again at once, so no complete message waits for more input.
    /// On a datagram connection (`udp`) it is called once per datagram instead, and what is left
    /// unconsumed is dropped when it returns.
    func onTraffic(_ connection: Connection) -> Action

    /// The connection closed: `error` is nil for an orderly close (either side), otherwise why.
    /// Bytes already received were delivered to `onTraffic` before this. Writes no longer work.
    func onClose(_ connection: Connection, error: (any Error)?) -> Action

    /// The connection's writability flipped (`connection.isWritable` tells which way): it
    /// turned false when queued output rose above `Options.outboundHighWatermark`, true when it
    /// drained to `outboundLowWatermark`. Called once per flip, alternating, on the loop thread.
    /// While unwritable the engine stops reading from the connection by itself; a handler that
    /// produces output on its own (streaming) should pause until the next call.
    func onWritabilityChanged(_ connection: Connection) -> Action

    /// With `Options.allowHalfClosure`, the peer shut down its sending side: no more input will
    /// come, and the connection stays writable until the handler (or a `ConnectionHandle`)
    /// closes it. Input already received was delivered first. Not called otherwise.
    func onInputClosed(_ connection: Connection) -> Action

    /// The connection's idle timeout of `kind` expired: no bytes were read (`.read`), sent
    /// (`.write`), or either (`.readWrite`) for that long (`Options.idleTimeout`,
    /// `Connection.setIdleTimeout` and their variants). The default returns `.close`: the
    /// connection closes the orderly way (queued output is sent first) and `onClose` gets
    /// `GNetError.idleTimeout(kind)`. Write a goodbye here and return `.close` to have the
    /// peer receive it before the EOF; return `.none` to keep the connection, and this is
    /// called again after another full period of that silence. On the connection's loop thread.
    func onIdle(_ connection: Connection, _ kind: IdleKind) -> Action

    /// The engine is stopping gracefully (`Engine.stop()`, `Action.shutdown`, a service's
    /// graceful shutdown): its listeners are closed, and each connection still open is asked,
    /// once, whether it may close now. The default returns `.close`: queued output is sent and
    /// the peer sees EOF after it. A protocol with a request in flight returns `.none`, finishes
    /// that request (an HTTP server answers it with `Connection: close`) and then closes the
    /// connection itself; what is still open at `Options.shutdownTimeout` is aborted with
    /// `GNetError.shutdownTimeout`. Not called for connections already closing, nor on
    /// `Engine.stop(.immediately)`. On the connection's loop thread.
    func onQuiesce(_ connection: Connection) -> Action

    /// A datagram of `length` bytes arrived on a `udp` socket but was larger than
    /// `Options.readBufferCapacity`, so only part of it could be received: it is dropped, not
    /// passed to `onTraffic`. `connection.remoteAddress` is its sender (its input is empty;
    /// writes answer the sender). The engine also counts it (`Engine.truncatedDatagrams`) and
    /// logs it, at most once per 10 s per socket. The default does nothing more.
    func onTruncatedDatagram(_ connection: Connection, length: Int) -> Action

    /// With `Options.ticker`, called periodically on the first loop's thread. Return the delay
    /// until the next tick and an action (`.shutdown` stops the engine).
    func onTick() -> (delay: Duration, action: Action)

    /// The engine stopped: every connection got its `onClose` and every loop thread ended.
    /// Called once, last, on the thread that ran `Engine.run()` / `wait()`.
    func onShutdown(_ engine: Engine)
}

extension EventHandler {
    public func onBoot(_ engine: Engine) -> Action { .none }
    public func onOpen(_ connection: Connection) -> (output: [UInt8]?, action: Action) { (nil, .none) }
    public func onTraffic(_ connection: Connection) -> Action { .none }
    public func onClose(_ connection: Connection, error: (any Error)?) -> Action { .none }
    public func onWritabilityChanged(_ connection: Connection) -> Action { .none }
    public func onInputClosed(_ connection: Connection) -> Action { .none }
    public func onIdle(_ connection: Connection, _ kind: IdleKind) -> Action { .close }
    public func onQuiesce(_ connection: Connection) -> Action { .close }
    public func onTruncatedDatagram(_ connection: Connection, length: Int) -> Action { .none }
    public func onTick() -> (delay: Duration, action: Action) { (.seconds(1), .none) }
    public func onShutdown(_ engine: Engine) {}
}
