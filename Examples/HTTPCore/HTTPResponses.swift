import Glibc

/// The statuses this server answers with.
public enum HTTPStatus: Sendable, Hashable, CaseIterable {
    /// `200 OK`, body `Hello, World!`.
    case ok
    /// `404 Not Found`, body `Not Found`.
    case notFound
    /// `400 Bad Request`, body `Bad Request`; always sent with `Connection: close`.
    case badRequest
}

/// The `Connection` field a response carries.
public enum ConnectionField: Sendable, Hashable, CaseIterable {
    /// None: HTTP/1.1 keeps the connection by default.
    case none
    /// `Connection: keep-alive`, for an HTTP/1.0 client that asked to keep the connection.
    case keepAlive
    /// `Connection: close`: the server closes after this response.
    case close
}

/// Every response this server sends, rendered once, with the `Date` refreshed in place when
/// the second changes. Writing a response is then one copy of ready bytes, with nothing to
/// format or allocate per request.
///
/// ```
///  storage: one allocation, one template per (status, connection field)
///  +--------------------------------------------------------------------------------+
///  | HTTP/1.1 200 OK\r\n Server: gnet\r\n ... Date: [29 bytes] \r\n ... \r\n | body |
///  +--------------------------------------------------------------------------------+
///  ^ offset                                   ^ dateOffset           headLength ^  length ^
/// ```
///
/// ## Threads
/// Not thread-safe, by design: each loop thread keeps its own (`forCurrentThread()`), so the
/// hot path takes no lock and shares no cache line. Tests make their own with `init(now:)`.
public final class HTTPResponses {
    private struct Template {
        var offset: Int
        var dateOffset: Int
        var headLength: Int
        var length: Int
    }

    // MARK: Owning thread only

    private let storage: UnsafeMutableRawBufferPointer
    private let templates: UnsafeMutableBufferPointer<Template>
    /// The second (since the epoch) the rendered `Date` fields show.
    public private(set) var second: Int

    /// Renders every response with the date of `now` (seconds since the epoch).
    public init(now: Int) {
        let statuses = HTTPStatus.allCases
        let fields = ConnectionField.allCases
        var bytes: [UInt8] = []
        var table: [Template] = []
        for status in statuses {
            for field in fields {
                let (head, body) = Self.text(status, field)
                let dateOffset = bytes.count + head.utf8.count - (HTTPDate.length + Self.afterDate(field).utf8.count)
                table.append(Template(
                    offset: bytes.count, dateOffset: dateOffset,
                    headLength: head.utf8.count, length: head.utf8.count + body.utf8.count))
                bytes += head.utf8
                bytes += body.utf8
            }
        }
        storage = .allocate(byteCount: bytes.count, alignment: 16)
        storage.copyBytes(from: bytes)
        templates = .allocate(capacity: table.count)
        _ = templates.initialize(from: table)
        second = now
        renderDate(now)
    }

    deinit {
        storage.deallocate()
        templates.deallocate()
    }

    /// The bytes of a response; without the body for `HEAD`. Valid until the next
    /// `refresh(now:)` on this object, and only on its thread.
    @inline(__always)
    public func response(_ status: HTTPStatus, _ field: ConnectionField, withBody: Bool = true) -> UnsafeRawBufferPointer {
        let t = templates[Self.index(status, field)]
        return UnsafeRawBufferPointer(start: storage.baseAddress! + t.offset, count: withBody ? t.length : t.headLength)
    }

    /// Re-renders the `Date` fields if `now` is another second than the one they show.
    @inline(__always)
    public func refresh(now: Int) {
        if now != second {
            second = now
            renderDate(now)
        }
    }

    private func renderDate(_ now: Int) {
        for t in templates {
            HTTPDate.render(now, into: UnsafeMutableRawBufferPointer(
                rebasing: storage[t.dateOffset..<(t.dateOffset + HTTPDate.length)]))
        }
    }

    @inline(__always)
    private static func index(_ status: HTTPStatus, _ field: ConnectionField) -> Int {
        let row = switch status { case .ok: 0; case .notFound: 1; case .badRequest: 2 }
        let column = switch field { case .none: 0; case .keepAlive: 1; case .close: 2 }
        return row * 3 + column
    }

    /// The head (through the blank line) and body of a response. The date is a placeholder;
    /// `Date` comes last but for `Connection`, which `afterDate` spells.
    private static func text(_ status: HTTPStatus, _ field: ConnectionField) -> (head: String, body: String) {
        let (line, body) = switch status {
        case .ok: ("200 OK", "Hello, World!")
        case .notFound: ("404 Not Found", "Not Found")
        case .badRequest: ("400 Bad Request", "Bad Request")
        }
        let placeholder = String(repeating: "-", count: HTTPDate.length)
        let head = "HTTP/1.1 \(line)\r\nServer: gnet\r\nContent-Type: text/plain\r\n"
            + "Content-Length: \(body.utf8.count)\r\nDate: \(placeholder)" + afterDate(field)
        return (head, body)
    }

    private static func afterDate(_ field: ConnectionField) -> String {
        switch field {
        case .none: "\r\n\r\n"
        case .keepAlive: "\r\nConnection: keep-alive\r\n\r\n"
        case .close: "\r\nConnection: close\r\n\r\n"
        }
    }
}

@available(*, unavailable)
extension HTTPResponses: Sendable {}

// MARK: - One per thread

extension HTTPResponses {
    /// The calling thread's responses, made on first use and freed when the thread ends,
    /// with the `Date` brought up to the current second. Costs a thread-local lookup and a
    /// `time()` (a vDSO call on Linux), so call it once per batch of requests, not per request.
    public static func forCurrentThread() -> HTTPResponses {
        let now = Int(time(nil))
        if let existing = pthread_getspecific(threadKey) {
            let r = Unmanaged<HTTPResponses>.fromOpaque(existing).takeUnretainedValue()
            r.refresh(now: now)
            return r
        }
        let r = HTTPResponses(now: now)
        pthread_setspecific(threadKey, Unmanaged.passRetained(r).toOpaque())
        return r
    }
}

/// The thread-local slot of `forCurrentThread()`; its destructor drops the thread's instance.
private let threadKey: pthread_key_t = {
    var key = pthread_key_t()
    let rc = pthread_key_create(&key) { pointer in
        if let pointer { Unmanaged<HTTPResponses>.fromOpaque(pointer).release() }
    }
    precondition(rc == 0, "pthread_key_create failed: \(rc)")
    return key
}()
