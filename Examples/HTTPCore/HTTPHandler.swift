import GNet

/// gnet-http's `EventHandler`: answers HTTP/1.1 requests (pipelined or not) with
/// `HTTPSession`, writing straight into the connection.
///
/// Per batch of input it fetches the loop thread's `HTTPResponses` (refreshing `Date` at most
/// once a second), answers every complete request, and consumes what it answered. A request
/// body still arriving is remembered in `Connection.context` as an `HTTPConnectionState`;
/// between requests the context stays nil, so the usual path touches no per-connection state
/// and allocates nothing.
///
/// ## Threads
/// Stateless and `Sendable`: one value serves every loop, each loop thread with its own
/// responses.
public struct HTTPHandler: EventHandler {
    public init() {}

    public func onTraffic(_ c: Connection) -> Action {
        let responses = HTTPResponses.forCurrentThread()
        var state = HTTPConnectionState()
        if let saved = c.context { state = saved as? HTTPConnectionState ?? state }
        var output = ConnectionOutput(connection: c)
        let result: HTTPServeResult
        do {
            result = try c.withUnsafeInboundBytes { input in
                try HTTPSession.serve(input, state: &state, responses: responses, output: &output)
            }
        } catch {
            return .close  // the connection is already closing
        }
        c.discard(result.consumed)
        if state.isIdle {
            if c.context != nil { c.context = nil }
        } else {
            c.context = state  // two words: stored inline in the existential, no allocation
        }
        return result.close ? .close : .none
    }
}

extension HTTPHandler {
    /// The server is shutting down: an idle keep-alive connection closes at once; one with a
    /// request arriving answers it with `Connection: close`, then closes.
    public func onQuiesce(_ c: Connection) -> Action {
        var state = HTTPConnectionState()
        if let saved = c.context { state = saved as? HTTPConnectionState ?? state }
        if state.quiesce(bufferedInput: c.inboundBuffered) { return .close }
        c.context = state
        return .none
    }
}

/// Writes responses into a connection. Inside `onTraffic` the engine gathers them and sends
/// them with one system call when the callback returns.
struct ConnectionOutput: HTTPOutput {
    let connection: Connection

    @inline(__always)
    mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
        try connection.write(bytes)
    }
}
