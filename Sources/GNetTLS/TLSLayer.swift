import GNet

/// TLS as a connection layer: ciphertext from the socket in, plaintext to the handler out, and
/// the reverse for writes. Loop thread only.
final class TLSLayer: ConnectionLayer {
    let session: TLSSession
    let accepted: Bool
    let timeout: Duration
    /// Plaintext written before the handshake finished; encrypted as soon as it has.
    @exclusivity(unchecked) private var early: [UInt8] = []
    @exclusivity(unchecked) private var closed = false

    init(session: TLSSession, accepted: Bool, timeout: Duration) {
        self.session = session
        self.accepted = accepted
        self.timeout = timeout
    }

    func start(_ c: LayerContext) throws {
        session.output = { c.send($0) } // the context is the connection's for its whole life
        if !accepted { try advanceHandshake(c) } // a client speaks first
    }

    func received(_ bytes: UnsafeRawBufferPointer, _ c: LayerContext) throws {
        session.setInput(bytes)
        defer { session.setInput(UnsafeRawBufferPointer(start: nil, count: 0)) }
        if !session.handshakeComplete {
            try advanceHandshake(c)
            guard session.handshakeComplete else { return }
        }
        // Everything offered is decrypted now: the loop's read buffer is reused after this call.
        while true {
            var result = TLSSession.ReadResult.wantsInput
            try c.deliver(reserving: 16 * 1024) { buffer in
                result = try session.read(into: buffer)
                if case .bytes(let n) = result { return n }
                return 0
            }
            switch result {
            case .bytes: continue
            case .wantsInput: return
            case .closed:
                c.endOfInput()
                return
            }
        }
    }

    private func advanceHandshake(_ c: LayerContext) throws {
        guard try session.handshake() == .done else { return }
        if !early.isEmpty {
            let pending = early
            early = []
            try pending.withUnsafeBytes { try session.write($0) }
        }
    }

    func inputClosed(_ c: LayerContext) throws {
        session.peerClosedTCP()
        guard session.handshakeComplete else {
            throw TLSError.handshakeFailed("the peer closed the connection during the handshake")
        }
        throw TLSError.truncated // close_notify would have ended the input first
    }

    func write(_ bytes: UnsafeRawBufferPointer, _ c: LayerContext) throws {
        guard session.handshakeComplete else {
            early.append(contentsOf: bytes)
            return
        }
        try session.write(bytes)
    }

    func closing(_ c: LayerContext) {
        guard !closed, session.handshakeComplete else { return }
        closed = true
        session.close()
    }

    var readyTimeout: Duration? { timeout }

    var pendingFailure: (any Error)? {
        session.handshakeComplete ? nil : TLSError.handshakeTimeout(timeout)
    }
}

/// Makes a TLS layer per connection from one shared `TLSContext`.
struct TLSLayerFactory: ConnectionLayerFactory {
    let context: TLSContext
    var resuming: TLSResumption? = nil
    /// A dial's key in the client context's session cache.
    var cacheKey: String? = nil

    func makeLayer(accepted: Bool, serverName: String?) throws -> any ConnectionLayer {
        guard (context.role == .server) == accepted else {
            throw TLSError.invalidConfiguration(
                "a \(context.role) TLS context cannot serve \(accepted ? "an accepted" : "a dialled") connection; use a \(accepted ? "server" : "client") configuration")
        }
        let session = try TLSSession(context: context, serverName: accepted ? nil : serverName, resuming: resuming, cacheKey: cacheKey)
        return TLSLayer(session: session, accepted: accepted, timeout: context.handshakeTimeout)
    }
}

extension Options {
    /// Serve every accepted connection over TLS with this (server) context: the handler reads
    /// and writes plaintext, the socket carries TLS. nil (the default): plain TCP.
    public var tls: TLSContext? {
        get { (layerFactory as? TLSLayerFactory)?.context }
        set { layerFactory = newValue.map { TLSLayerFactory(context: $0) } }
    }
}

extension Connection {
    /// The connection's TLS session (negotiated protocol, ALPN, server name, peer certificate),
    /// nil for a plain connection. Loop thread only, like the connection.
    public var tls: TLSSession? { (connectionLayer as? TLSLayer)?.session }
}

extension Engine {
    /// Dials `address` over TLS with a client `context`, checking the server's certificate
    /// for `serverName` (default: the address's host; also sent as SNI), and resuming
    /// `resuming` if given — or, when the context keeps sessions (`clientSessionCacheSize`),
    /// one its earlier dials to the same address and name were given. The handler sees
    /// plaintext; otherwise as `dial`.
    public func dial(
        _ address: String, tls context: TLSContext, serverName: String? = nil, resuming: TLSResumption? = nil,
        timeout: Duration = Engine.defaultDialTimeout, on loop: EventLoopHandle? = nil, context userContext: (any Sendable)? = nil,
        completion: @escaping @Sendable (Result<ConnectionHandle, any Error>) -> Void
    ) {
        let key = ClientSessionCache.key(address: address, serverName: serverName)
        dial(address, timeout: timeout, on: loop, context: userContext,
             layer: TLSLayerFactory(context: context, resuming: resuming, cacheKey: key), serverName: serverName, completion: completion)
    }

    /// Dials over TLS and returns the connection's handle once TCP has connected (the
    /// handshake then proceeds; writes wait for it).
    public func dial(
        _ address: String, tls context: TLSContext, serverName: String? = nil, resuming: TLSResumption? = nil,
        timeout: Duration = Engine.defaultDialTimeout, on loop: EventLoopHandle? = nil, context userContext: (any Sendable)? = nil
    ) async throws -> ConnectionHandle {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<ConnectionHandle, any Error>) in
            dial(address, tls: context, serverName: serverName, resuming: resuming, timeout: timeout, on: loop,
                 context: userContext) { k.resume(with: $0) }
        }
    }
}
