import HTTPCore
import Testing

@Suite("Request scanner")
struct RequestScannerTests {
    @Test("a simple GET: method, target, version, lengths")
    func simpleGet() throws {
        let text = "GET /plaintext?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\nNEXT"
        let h = try #require(head(text))
        let b = bytes(text)
        #expect(h.method == .get)
        #expect(String(decoding: b[h.methodRange], as: UTF8.self) == "GET")
        #expect(String(decoding: b[h.targetRange], as: UTF8.self) == "/plaintext?x=1")
        #expect(h.version == .http1_1)
        #expect(h.keepAlive)
        #expect(h.contentLength == 0)
        #expect(h.headLength == text.utf8.count - "NEXT".utf8.count)
    }

    @Test("methods", arguments: [("GET", HTTPMethod.get), ("HEAD", .head), ("POST", .other), ("get", .other), ("M-SEARCH", .other)])
    func methods(_ name: String, _ expected: HTTPMethod) throws {
        let h = try #require(head("\(name) / HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(h.method == expected)
    }

    struct KeepAliveCase: Sendable, CustomStringConvertible {
        var version: String
        var connection: [String]
        var keepAlive: Bool
        var description: String { "\(version) \(connection)" }
    }

    @Test("keep-alive by version and Connection options", arguments: [
        KeepAliveCase(version: "HTTP/1.1", connection: [], keepAlive: true),
        KeepAliveCase(version: "HTTP/1.1", connection: ["close"], keepAlive: false),
        KeepAliveCase(version: "HTTP/1.1", connection: ["Close"], keepAlive: false),
        KeepAliveCase(version: "HTTP/1.1", connection: ["Upgrade, CLOSE"], keepAlive: false),
        KeepAliveCase(version: "HTTP/1.1", connection: ["keep-alive"], keepAlive: true),
        KeepAliveCase(version: "HTTP/1.1", connection: ["keep-alive", "close"], keepAlive: false),
        KeepAliveCase(version: "HTTP/1.1", connection: ["closed"], keepAlive: true),
        KeepAliveCase(version: "HTTP/1.0", connection: [], keepAlive: false),
        KeepAliveCase(version: "HTTP/1.0", connection: ["keep-alive"], keepAlive: true),
        KeepAliveCase(version: "HTTP/1.0", connection: [" Keep-Alive \t"], keepAlive: true),
        KeepAliveCase(version: "HTTP/1.0", connection: ["keep-alive,close"], keepAlive: false),
        KeepAliveCase(version: "HTTP/1.0", connection: ["te, keep-alive"], keepAlive: true),
    ])
    func keepAlive(_ c: KeepAliveCase) throws {
        var text = "GET / \(c.version)\r\nHost: a\r\n"
        for v in c.connection { text += "Connection:\(v)\r\n" }
        text += "\r\n"
        let h = try #require(head(text))
        #expect(h.keepAlive == c.keepAlive)
        #expect(h.version == (c.version == "HTTP/1.0" ? .http1_0 : .http1_1))
    }

    @Test("header names are case-insensitive and values trimmed")
    func headerCase() throws {
        let h = try #require(head("POST /x HTTP/1.1\r\nhOsT: a\r\ncOnTeNt-LeNgTh: \t 42 \t\r\n\r\n"))
        #expect(h.contentLength == 42)
        #expect(h.method == .other)
    }

    @Test("Content-Length: repeated with the same value is accepted")
    func repeatedContentLength() throws {
        let h = try #require(head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"))
        #expect(h.contentLength == 5)
    }

    @Test("HTTP/1.0 needs no Host; empty lines before the request line are skipped")
    func leniencies() throws {
        let h = try #require(head("GET / HTTP/1.0\r\n\r\n"))
        #expect(h.version == .http1_0 && !h.keepAlive && h.headLength == 18)
        let request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        let h2 = try #require(head("\r\n\r\n" + request))
        #expect(h2.headLength == 4 + request.utf8.count)
        #expect(String(decoding: bytes("\r\n\r\n" + request)[h2.methodRange], as: UTF8.self) == "GET")
    }

    @Test("every proper prefix of a valid request is incomplete")
    func prefixes() {
        let b = bytes("\r\nPOST /a?b HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 3\r\nX-Y:  z \r\n\r\n")
        for k in 0..<b.count {
            #expect(scan(Array(b[..<k])) == .incomplete, "prefix of \(k) bytes")
        }
        guard case .complete(let h) = scan(b) else { Issue.record("not complete"); return }
        #expect(h.headLength == b.count && h.contentLength == 3 && h.keepAlive)
    }

    struct BadCase: Sendable, CustomStringConvertible {
        var name: String
        var text: String
        var error: HTTPParseError
        var description: String { name }
    }

    static let badCases: [BadCase] = [
        BadCase(name: "two spaces after the method", text: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "leading space", text: " GET / HTTP/1.1\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "method not a token", text: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "tab as separator", text: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "HTTP/0.9 line", text: "GET /\r\n\r\n", error: .badRequestLine),
        BadCase(name: "target with a control byte", text: "GET /a\u{1}b HTTP/1.1\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "target with a non-ASCII byte", text: "GET /é HTTP/1.1\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "space after the version", text: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "request line ends in bare LF", text: "GET / HTTP/1.1\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "stray CR before the request line", text: "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "HTTP/2.0", text: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", error: .badVersion),
        BadCase(name: "HTTP/1.2", text: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", error: .badVersion),
        BadCase(name: "lower-case version", text: "GET / http/1.1\r\nHost: a\r\n\r\n", error: .badVersion),
        BadCase(name: "HTTP/1.10", text: "GET / HTTP/1.10\r\nHost: a\r\n\r\n", error: .badRequestLine),
        BadCase(name: "no version", text: "GET / \r\nHost: a\r\n\r\n", error: .badVersion),
        BadCase(name: "header without colon", text: "GET / HTTP/1.1\r\nHost a\r\n\r\n", error: .badHeader),
        BadCase(name: "space before colon", text: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", error: .badHeader),
        BadCase(name: "empty field name", text: "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", error: .badHeader),
        BadCase(name: "obsolete line folding", text: "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", error: .badHeader),
        BadCase(name: "NUL in a value", text: "GET / HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n", error: .badHeader),
        BadCase(name: "DEL in a value", text: "GET / HTTP/1.1\r\nHost: a\u{7F}\r\n\r\n", error: .badHeader),
        BadCase(name: "header ends in bare LF", text: "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", error: .badHeader),
        BadCase(name: "header ends in CR CR LF", text: "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", error: .badHeader),
        BadCase(name: "head ends in CR without LF", text: "GET / HTTP/1.1\r\nHost: a\r\n\rX", error: .badHeader),
        BadCase(name: "Content-Length not a number", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", error: .badContentLength),
        BadCase(name: "Content-Length empty", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", error: .badContentLength),
        BadCase(name: "Content-Length negative", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", error: .badContentLength),
        BadCase(name: "Content-Length with sign", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", error: .badContentLength),
        BadCase(name: "Content-Length list", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", error: .badContentLength),
        BadCase(name: "Content-Length 19 digits", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n", error: .badContentLength),
        BadCase(name: "Content-Length twice, differing", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", error: .badContentLength),
        BadCase(name: "chunked body", text: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", error: .unsupportedTransferEncoding),
        BadCase(name: "chunked and Content-Length", text: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", error: .unsupportedTransferEncoding),
        BadCase(name: "HTTP/1.1 without Host", text: "GET / HTTP/1.1\r\n\r\n", error: .badHost),
        BadCase(name: "two Hosts", text: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", error: .badHost),
        BadCase(name: "HTTP/1.0 with two Hosts", text: "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", error: .badHost),
        BadCase(name: "TLS handshake", text: "\u{16}\u{3}\u{1}", error: .badRequestLine),
    ]

    @Test("malformed heads are rejected, with the reason", arguments: badCases)
    func malformed(_ c: BadCase) {
        #expect(scan(c.text) == .invalid(c.error))
    }

    @Test("a bad byte is caught as soon as it arrives, before the head ends")
    func earlyRejection() {
        #expect(scan("G(") == .invalid(.badRequestLine))
        #expect(scan("GET / HTTP/3") == .invalid(.badVersion))
        #expect(scan("GET / HTTP/1.1\r\nBad Name") == .invalid(.badHeader))
        #expect(scan("GET / HTTP/1.1\r\nX: \u{1}") == .invalid(.badHeader))
    }

    @Test("every byte value at every offset of a long target and a long field value")
    func byteClasses() {
        // The scanner checks eight bytes at a time where it can; a bad byte must be caught
        // wherever it falls in a word, and a good one must pass.
        for b in UInt8.min...UInt8.max where b != 0x20 {
            let targetOK = b > 0x20 && b < 0x7F
            let valueOK = b == 0x09 || (b >= 0x20 && b != 0x7F)
            for k in 0..<19 {
                let filler = [UInt8](repeating: 0x61, count: k)
                let tail = [UInt8](repeating: 0x62, count: 19 - k)
                let target = bytes("GET /") + filler + [b] + tail + bytes(" HTTP/1.1\r\nHost: a\r\n\r\n")
                let t = scan(target)
                if targetOK {
                    #expect(t != .incomplete && t != .invalid(.badRequestLine), "target byte \(b) at \(k)")
                } else {
                    #expect(t == .invalid(.badRequestLine), "target byte \(b) at \(k)")
                }
                let value = bytes("GET / HTTP/1.1\r\nHost: a\r\nX-Long: ") + filler + [b] + tail + bytes("\r\n\r\n")
                let v = scan(value)
                if valueOK {
                    if case .complete = v {} else { Issue.record("value byte \(b) at \(k): \(v)") }
                } else {
                    #expect(v == .invalid(.badHeader), "value byte \(b) at \(k)")
                }
            }
        }
    }

    /// A head of exactly `size` bytes: request line, Host, one padding field, blank line.
    static func headOfSize(_ size: Int) -> [UInt8] {
        let start = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: "
        let end = "\r\n\r\n"
        let pad = size - start.utf8.count - end.utf8.count
        return bytes(start + String(repeating: "p", count: pad) + end)
    }

    @Test("the head cap is 8 KiB, blank line included")
    func headerCap() {
        let cap = RequestScanner.maxHeadBytes
        #expect(cap == 8192)
        let exact = Self.headOfSize(cap)
        guard case .complete(let h) = scan(exact) else { Issue.record("8192-byte head refused"); return }
        #expect(h.headLength == cap)
        // One byte more: refused, whether or not its end has arrived.
        let over = Self.headOfSize(cap + 1)
        #expect(scan(over) == .invalid(.headerTooLarge))
        #expect(scan(Array(over[..<cap])) == .invalid(.headerTooLarge))
        #expect(scan(Array(over[..<(cap - 1)])) == .incomplete)
        // Bytes after a head within the cap (a body, the next request) do not count against it.
        #expect(scan(exact + [UInt8](repeating: 0x41, count: 10_000)) == .complete(h))
        // A request line that never ends.
        #expect(scan("GET /" + String(repeating: "a", count: cap)) == .invalid(.headerTooLarge))
    }
}
