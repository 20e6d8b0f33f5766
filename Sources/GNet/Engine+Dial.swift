import Glibc
import Synchronization

/// Outbound connections: dial an address, or enroll a socket connected elsewhere, onto the
/// engine's loops (gnet's `Client.Dial` and `Client.Enroll`). A `Client` is an engine without
/// listeners; a server dials the same way (a proxy dialling its upstream).
///
/// A dialled connection is like an accepted one in every way but its `listenerAddress` (nil):
/// the same `onOpen`, `onTraffic`, `onClose` of the engine's handler, on the loop it was dialled
/// onto, with the same flow control, idle timeouts and closing rules. `onOpen` runs once the
/// socket has connected; the dial completes (with the connection's handle) after `onOpen`
/// returns. A dial that fails never calls the handler: its completion gets the error.
///
/// ## Datagram addresses
/// `udp://`, `udp4://`, `udp6://` and `unixgram://` dial a datagram socket connected to that
/// one peer. The connect is immediate (nothing is sent: the dial succeeds whether or not
/// anything serves there; `timeout` does not apply), and a `unixgram` socket is first bound
/// to an address the kernel picks (autobind) so the server can answer. The connection gets
/// `onOpen`, one `onTraffic` per datagram from the peer, `onClose`; each write is one datagram
/// to the peer; `close()` is immediate (no half-close, nothing queued). See `Connection`.
///
/// The peer going away shows as an ICMP error on a later send or receive, and closes the
/// connection: `ECONNREFUSED` (nothing at the port, or the `unixgram` peer closed) with
/// `GNetError.connectionRefused` in `onClose`, `EHOSTUNREACH` and kin with `.unreachable`; a
/// write that meets it throws (or completes with) the same error. SwiftNIO keeps a datagram
/// channel open on `ECONNREFUSED` (reporting it to `errorCaught`) and gnet logs it; here
/// `onClose` is the one place a handler learns of an error, and a client whose only peer
/// refuses must learn it to dial again. Other errors (`EMSGSIZE`, a full buffer) lose one
/// datagram: logged, and the socket serves on. On the `dispatch` backend the refusal is
/// noticed at the next send (its read source does not fire for a socket error alone).
///
/// ## Errors
/// `GNetError.connectionRefused` (nothing listens there), `.unreachable` (no route),
/// `.connectTimeout` (no answer within the timeout, or a full backlog), `.invalidAddress`
/// (also a datagram address dialled with TLS: DTLS is not supported),
/// `.engineState` (the engine is not started), `.engineStopped` (it stopped before the dial
/// completed), or a `SystemError` naming the call (out of descriptors, for one).
///
/// ## Threads
/// Any thread, a handler's included. Completions run on the connection's loop thread (or on
/// the calling thread when the dial fails before reaching a loop). A host name in the address
/// is resolved on the calling thread, blocking it; from a handler, dial numeric addresses.
extension Engine {
    /// The default time a dial may take to connect: 10 s.
    public static let defaultDialTimeout: Duration = .seconds(10)

    /// Dials `address` (`tcp://host:port`, `tcp4://`, `tcp6://`, `unix:///path`, or a datagram
    /// address: `udp://host:port`, `udp4://`, `udp6://`, `unixgram:///path`) onto a loop:
    /// `loop`, or the one `Options.loadBalancing` picks. `context` becomes the connection's
    /// `context` before `onOpen`. `completion` gets the connection's handle once it is open, or
    /// the error; it is called exactly once.
    public func dial(
        _ address: String, timeout: Duration = Engine.defaultDialTimeout, on loop: EventLoopHandle? = nil,
        context: (any Sendable)? = nil, completion: @escaping @Sendable (Result<ConnectionHandle, any Error>) -> Void
    ) {
        dial(address, timeout: timeout, on: loop, context: context, layer: nil, serverName: nil, completion: completion)
    }

    /// `dial` with a layer (GNetTLS's TLS) for the connection, made for `serverName` (nil: the
    /// address's host).
    package func dial(
        _ address: String, timeout: Duration, on loop: EventLoopHandle?, context: (any Sendable)?,
        layer: (any ConnectionLayerFactory)?, serverName: String?,
        completion: @escaping @Sendable (Result<ConnectionHandle, any Error>) -> Void
    ) {
        let target: ListenAddress
        do {
            target = try ListenAddress(parsing: address)
        } catch {
            completion(.failure(error))
            return
        }
        if target.network.isDatagram && layer != nil {
            completion(.failure(GNetError.invalidAddress(address, reason: "TLS needs a stream (DTLS is not supported); dial tcp://, tcp4://, tcp6:// or unix://")))
            return
        }
        guard timeout > .zero else {
            completion(.failure(GNetError.invalidOption(name: "timeout", reason: "a dial timeout must be positive, got \(timeout)")))
            return
        }
        var request = DialRequest(target: .connect(target, timeout: timeout), context: context, completion: completion)
        request.layer = layer
        request.serverName = serverName ?? Self.host(of: address)
        hand(request, remote: target.address, loop: loop)
    }

    /// The host part of an address string (`tcp://host:port`, `[v6]:port`), for a layer's server name.
    static func host(of address: String) -> String? {
        var rest = Substring(address)
        if let r = address.firstRange(of: "://") { rest = address[r.upperBound...] }
        if rest.hasPrefix("[") { return rest.dropFirst().split(separator: "]").first.map(String.init) }
        guard let colon = rest.lastIndex(of: ":") else { return nil }
        let host = rest[..<colon]
        return host.isEmpty ? nil : String(host)
    }

    /// Dials `address` and returns the open connection's handle (see `dial(_:timeout:on:context:completion:)`).
    public func dial(
        _ address: String, timeout: Duration = Engine.defaultDialTimeout, on loop: EventLoopHandle? = nil,
        context: (any Sendable)? = nil
    ) async throws -> ConnectionHandle {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<ConnectionHandle, any Error>) in
            dial(address, timeout: timeout, on: loop, context: context) { k.resume(with: $0) }
        }
    }

    /// Takes over `fd`, a connected TCP or Unix stream socket made elsewhere (gnet's `Enroll`):
    /// the engine owns it from this call on, makes it non-blocking, and serves it like a dialled
    /// connection. On failure (not a connected stream socket, engine not running) the
    /// descriptor is closed and `completion` gets the error.
    public func enroll(
        _ fd: Int32, on loop: EventLoopHandle? = nil, context: (any Sendable)? = nil,
        completion: @escaping @Sendable (Result<ConnectionHandle, any Error>) -> Void
    ) {
        let remote = Socket.remoteAddress(fd) ?? SocketAddress(ipAddress: "0.0.0.0", port: 0)!
        hand(DialRequest(target: .enroll(fd), context: context, completion: completion), remote: remote, loop: loop)
    }

    /// Takes over `fd` and returns the connection's handle (see `enroll(_:on:context:completion:)`).
    public func enroll(_ fd: Int32, on loop: EventLoopHandle? = nil, context: (any Sendable)? = nil) async throws -> ConnectionHandle {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<ConnectionHandle, any Error>) in
            enroll(fd, on: loop, context: context) { k.resume(with: $0) }
        }
    }

    /// Hands a dial to `loop` or to the balancer's pick, counted there from now on (as an
    /// accepted connection is), so a burst of dials spreads over the loops.
    private func hand(_ request: DialRequest, remote: SocketAddress, loop: EventLoopHandle?) {
        let (inboxes, stopped) = dialTargets()
        guard !inboxes.isEmpty else {
            request.abandon(stopped ? GNetError.engineStopped
                : GNetError.engineState("dial and enroll need a started engine; call start() first"))
            return
        }
        let target: LoopInbox
        if let loop {
            guard let i = inboxes.firstIndex(where: { $0 === loop.inbox }) else {
                request.abandon(GNetError.misuse("the loop given to dial or enroll belongs to another engine"))
                return
            }
            target = inboxes[i]
        } else {
            let i = options.loadBalancing.pick(among: inboxes, for: remote) {
                dialTurn.wrappingAdd(1, ordering: .relaxed).oldValue % inboxes.count
            }
            target = inboxes[i]
        }
        target.connectionCount.add(1, ordering: .relaxed)
        if !target.enqueue(.dial(request)) {
            target.connectionCount.subtract(1, ordering: .relaxed) // abandoned by the closed inbox
        }
    }
}

/// A client: an engine without listeners, for dialling out (gnet's `Client`).
///
/// ```swift
/// let client = try Client(handler: MyProtocol())
/// try client.start()
/// let server = try await client.dial("tcp://127.0.0.1:9000")
/// server.write(Array("PING\r\n".utf8))
/// // … replies arrive in MyProtocol.onTraffic, on the connection's loop …
/// client.stop()
/// client.wait()
/// ```
///
/// Everything of `Engine` applies: `Options` (loops, flow control, timeouts, poller), the
/// handler's callbacks, the lifecycle (`start`, `stop`, `wait`, `run() async`). Any thread.
public final class Client: Sendable {
    /// The engine the client's connections run on.
    public let engine: Engine

    /// Checks `options` (see `Engine.init`); nothing runs until `start()`.
    public init(handler: any EventHandler, options: Options = Options()) throws {
        engine = try Engine(handler: handler, listening: [], options: options)
    }

    /// Starts the loops (calling `onBoot`); dials work from then on.
    public func start() throws { try engine.start() }

    /// Stops gracefully: dials in progress fail with `GNetError.engineStopped`, connections
    /// close the orderly way within `Options.shutdownTimeout`.
    public func stop() { engine.stop() }

    /// Blocks until stopped (see `Engine.wait`).
    public func wait() { engine.wait() }

    /// See `Engine.dial(_:timeout:on:context:completion:)`.
    public func dial(
        _ address: String, timeout: Duration = Engine.defaultDialTimeout, on loop: EventLoopHandle? = nil,
        context: (any Sendable)? = nil, completion: @escaping @Sendable (Result<ConnectionHandle, any Error>) -> Void
    ) {
        engine.dial(address, timeout: timeout, on: loop, context: context, completion: completion)
    }

    /// See `Engine.dial(_:timeout:on:context:)`.
    public func dial(
        _ address: String, timeout: Duration = Engine.defaultDialTimeout, on loop: EventLoopHandle? = nil,
        context: (any Sendable)? = nil
    ) async throws -> ConnectionHandle {
        try await engine.dial(address, timeout: timeout, on: loop, context: context)
    }

    /// See `Engine.enroll(_:on:context:completion:)`.
    public func enroll(
        _ fd: Int32, on loop: EventLoopHandle? = nil, context: (any Sendable)? = nil,
        completion: @escaping @Sendable (Result<ConnectionHandle, any Error>) -> Void
    ) {
        engine.enroll(fd, on: loop, context: context, completion: completion)
    }

    /// See `Engine.enroll(_:on:context:)`.
    public func enroll(_ fd: Int32, on loop: EventLoopHandle? = nil, context: (any Sendable)? = nil) async throws -> ConnectionHandle {
        try await engine.enroll(fd, on: loop, context: context)
    }

    /// The client's loops (see `Engine.loops`).
    public var loops: [EventLoopHandle] { engine.loops }

    /// Open connections across the loops.
    public var connectionCount: Int { engine.connectionCount }
}
