/// Where responses go: the connection in the server, an array in tests.
public protocol HTTPOutput {
    /// Takes a copy of `bytes` (they are valid only during the call). Throws when the peer is
    /// gone; serving then stops.
    mutating func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// What a connection carries from one batch of input to the next: the part of a request
/// body that has not arrived yet. Idle (all zero) between requests, which is the usual case.
public struct HTTPConnectionState: Sendable, Hashable {
    /// Body bytes still to arrive and be dropped before the next request starts.
    public var bodyRemaining = 0
    /// Close once `bodyRemaining` reaches zero (the request asked for a close). Waiting for
    /// the body before closing keeps the kernel from resetting the connection over unread
    /// input, which could destroy the response in flight.
    public var closeAfterBody = false
    /// The server is shutting down (`onQuiesce`) while a request is arriving: answer it with
    /// `Connection: close`, then close.
    public var closeAfterNextResponse = false

    public init() {}

    public var isIdle: Bool { bodyRemaining == 0 && !closeAfterBody && !closeAfterNextResponse }

    /// The server is shutting down. Returns true when the connection may close at once (no
    /// request is arriving: `bufferedInput` is 0 and no body is owed); otherwise marks the
    /// request in flight as the last one, to be answered with `Connection: close` (or, when
    /// its answer has gone and only its body is owed, to close once that has arrived).
    public mutating func quiesce(bufferedInput: Int) -> Bool {
        if bodyRemaining > 0 {
            closeAfterBody = true
            return false
        }
        if bufferedInput == 0 { return true }
        closeAfterNextResponse = true
        return false
    }
}

/// What `HTTPSession.serve` did with a batch of input.
public struct HTTPServeResult: Sendable, Hashable {
    /// Bytes to drop from the front of the input; the rest is a request still arriving.
    public var consumed: Int
    /// Close the connection now that the responses written are sent.
    public var close: Bool
}

/// Answers every complete request at the front of a byte buffer, in order.
///
/// Pure: bytes in, responses to an `HTTPOutput`, a consumed count and a close flag out, with
/// the body still owed kept in `HTTPConnectionState`. The GNet handler is a thin shell over it,
/// and tests drive it with arrays.
public enum HTTPSession {
    public static func serve<Output: HTTPOutput>(
        _ input: UnsafeRawBufferPointer,
        state: inout HTTPConnectionState,
        responses: HTTPResponses,
        output: inout Output
    ) throws -> HTTPServeResult {
        var pos = 0
        if state.bodyRemaining > 0 {
            let k = min(state.bodyRemaining, input.count)
            pos = k
            state.bodyRemaining -= k
            if state.bodyRemaining > 0 { return HTTPServeResult(consumed: pos, close: false) }
        }
        if state.closeAfterBody {
            state.closeAfterBody = false
            return HTTPServeResult(consumed: pos, close: true)
        }
        while pos < input.count {
            let rest = UnsafeRawBufferPointer(rebasing: input[pos...])
            switch RequestScanner.scan(rest) {
            case .incomplete:
                return HTTPServeResult(consumed: pos, close: false)

            case .invalid:
                try output.write(responses.response(.badRequest, .close))
                return HTTPServeResult(consumed: input.count, close: true)

            case .complete(let head):
                let last = !head.keepAlive || state.closeAfterNextResponse
                let field: ConnectionField =
                    last ? .close : head.version == .http1_0 ? .keepAlive : .none
                let status = HTTPRoutes.status(for: head, in: rest)
                try output.write(responses.response(status, field, withBody: head.method != .head))
                pos += head.headLength
                // The body is not used: drop what is here, remember what is still to come.
                let here = min(head.contentLength, input.count - pos)
                pos += here
                if here < head.contentLength {
                    state.bodyRemaining = head.contentLength - here
                    state.closeAfterBody = last
                    state.closeAfterNextResponse = false
                    return HTTPServeResult(consumed: pos, close: false)
                }
                if last {
                    state.closeAfterNextResponse = false
                    return HTTPServeResult(consumed: pos, close: true)
                }
            }
        }
        return HTTPServeResult(consumed: pos, close: false)
    }
}

/// The routes: `GET` (or `HEAD`) `/plaintext` and `/` answer 200; everything else 404.
public enum HTTPRoutes {
    /// The status for a request whose head was scanned from `buf`. The query string, if any,
    /// is ignored.
    public static func status(for head: HTTPRequestHead, in buf: UnsafeRawBufferPointer) -> HTTPStatus {
        guard head.method == .get || head.method == .head else { return .notFound }
        let start = head.targetRange.lowerBound
        var end = start
        while end < head.targetRange.upperBound && buf[end] != 0x3F { end += 1 }  // up to "?"
        let path = start..<end
        return matches(buf, path, "/plaintext", ignoringCase: false) || matches(buf, path, "/", ignoringCase: false)
            ? .ok : .notFound
    }
}
