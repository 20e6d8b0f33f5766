/// A transform between a connection's socket and its handler — GNetTLS's TLS: the engine hands
/// it the bytes it reads and the bytes the handler writes, and it gives back the handler's
/// input and the socket's output through a `LayerContext`. The handler sees only the layer's
/// side (plaintext); flow control, watermarks and closing work on the socket's side
/// (ciphertext), as for any connection.
///
/// Package-internal: the products of this package plug in through it (`Options.tls` in
/// GNetTLS, say); users never implement it. Loop thread only, like the connection.
package protocol ConnectionLayer: AnyObject {
    /// The connection is registered and `onOpen` is about to run: begin (a client sends its
    /// hello). Writes made in `onOpen` reach `write` afterwards; a layer not yet ready to
    /// encode them keeps them until it is.
    func start(_ c: LayerContext) throws
    /// Bytes read from the socket (valid during the call only).
    func received(_ bytes: UnsafeRawBufferPointer, _ c: LayerContext) throws
    /// The socket's peer ended its side (TCP EOF). Throw when that ends the stream early
    /// (TLS without close_notify).
    func inputClosed(_ c: LayerContext) throws
    /// Bytes the handler wrote: encode them and `send` the result (now or once ready).
    func write(_ bytes: UnsafeRawBufferPointer, _ c: LayerContext) throws
    /// An orderly close begins: `send` what ends the stream (close_notify). Not called for an
    /// abort, which resets the connection.
    func closing(_ c: LayerContext)
    /// How long the layer may take to be ready (the handshake), measured from `start`; when it
    /// passes and `pendingFailure` is not nil, the connection is aborted with that error.
    var readyTimeout: Duration? { get }
    /// The error to abort with when `readyTimeout` passes (nil once ready).
    var pendingFailure: (any Error)? { get }
}

/// Makes a layer for each new connection (Sendable: shared by every loop).
package protocol ConnectionLayerFactory: Sendable {
    /// A layer for an accepted connection, or for one dialled to `serverName`'s host.
    func makeLayer(accepted: Bool, serverName: String?) throws -> any ConnectionLayer
}

/// What a layer may do with its connection, during a layer call, on the loop thread.
package struct LayerContext {
    unowned(unsafe) let loop: EventLoop
    unowned(unsafe) let connection: Connection

    /// Sends `bytes` on the socket (below the layer): gathered into the callback's single send
    /// when inside one, else sent or queued at once.
    package func send(_ bytes: UnsafeRawBufferPointer) {
        guard connection.state != .closed else { return }
        loop.sendBelowLayer(connection, bytes)
    }

    /// Appends the handler's input: `body` fills up to `capacity` bytes of the connection's
    /// input buffer and returns how many; `onTraffic` is offered them when the layer call
    /// returns.
    @discardableResult
    package func deliver(reserving capacity: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int) rethrows -> Int {
        try connection.inbound.appendInPlace(reserving: capacity, body)
    }

    /// The stream ended cleanly above the socket (TLS close_notify): as the peer's EOF.
    package func endOfInput() {
        connection.layerEnded = true
    }

    /// Unconsumed input of the handler: a layer stops decoding above the engine's limit.
    package var inputBuffered: Int { connection.inbound.count }
}

extension Options {
    /// The layer of every accepted connection (GNetTLS sets it through `Options.tls`).
    package var layerFactory: (any ConnectionLayerFactory)? {
        get { acceptedLayer }
        set { acceptedLayer = newValue }
    }
}

extension Connection {
    /// The connection's layer (TLS), if any: for the products of this package to reach it.
    package var connectionLayer: (any ConnectionLayer)? { layer }
}

extension EventLoop {
    @inline(__always)
    final func layerContext(_ c: Connection) -> LayerContext { LayerContext(loop: self, connection: c) }

    /// Starts `c`'s layer (before `onOpen`) and arms its ready deadline. A failure closes the
    /// connection with its error once `onOpen` has returned.
    final func startLayer(_ c: Connection, _ layer: any ConnectionLayer) {
        c.layer = layer
        c.belowLayer = true
        defer { c.belowLayer = false }
        do {
            try layer.start(layerContext(c))
        } catch {
            c.pendingClose = .failed(error) // after `onOpen`, which the lifecycle promises first
        }
        if let timeout = layer.readyTimeout { schedule(after: timeout, .layerDeadline(c.fd, c.generation)) }
    }

    /// Bytes read from the socket of a connection with a layer.
    ///
    /// When the connection keeps no input, the layer decodes into the loop's `layerInput`
    /// instead of the connection's own buffer, and the result is lent to `onTraffic` as a plain
    /// read is: only what the handler leaves is copied into the connection. So an idle
    /// connection holds no input buffer, and a busy one does not allocate and free one per read.
    final func receiveThroughLayer(_ c: Connection, _ layer: any ConnectionLayer, _ bytes: UnsafeRawBufferPointer) {
        let lending = c.inbound.isEmpty
        if lending { swap(&c.inbound, &layerInput) } // the layer's `deliver` appends to c.inbound
        c.belowLayer = true
        do {
            try layer.received(bytes, layerContext(c))
        } catch {
            c.belowLayer = false
            if lending {
                swap(&c.inbound, &layerInput)
                c.inbound.append(layerInput.readable) // decoded before the failure: still the handler's
                layerInput.reset(keepingCapacityUpTo: Self.layerInputKept)
            }
            fail(c, error)
            return
        }
        c.belowLayer = false
        if lending {
            swap(&c.inbound, &layerInput)
            if !layerInput.isEmpty { c.lent = layerInput.readable }
        }
        if c.state == .open && c.inboundBuffered > 0 {
            runTraffic(c) // keeps what is left of `lent` in c.inbound, and clears it
        } else {
            if c.lent.count > 0 { c.inbound.append(c.lent) }
            c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
            if c.state == .open { settle(c) }
        }
        if lending { layerInput.reset(keepingCapacityUpTo: Self.layerInputKept) }
        if c.layerEnded && !c.inputClosed && c.state == .open { inputClosed(c) }
    }

    /// The most `layerInput` keeps between reads (a larger one is freed).
    static let layerInputKept = 1 << 20

    /// Bytes the handler wrote on a connection with a layer: encoded by it.
    final func writeThroughLayer(_ c: Connection, _ layer: any ConnectionLayer, _ bytes: UnsafeRawBufferPointer) {
        c.belowLayer = true
        defer { c.belowLayer = false }
        do {
            try layer.write(bytes, layerContext(c))
        } catch {
            fail(c, error)
        }
    }

    /// The layer's ready deadline passed.
    final func layerDeadlinePassed(_ c: Connection) {
        guard c.state == .open || c.state == .draining, let error = c.layer?.pendingFailure else { return }
        abort(c, error)
    }
}
