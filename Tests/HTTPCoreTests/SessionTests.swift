import HTTPCore
import Testing

@Suite("Serving requests (no sockets)")
struct SessionTests {
    static let get = "GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"

    static let ok = "HTTP/1.1 200 OK\r\nServer: gnet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
        + "Date: \(fixedDate)\r\n\r\nHello, World!"
    static let okClose = "HTTP/1.1 200 OK\r\nServer: gnet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
        + "Date: \(fixedDate)\r\nConnection: close\r\n\r\nHello, World!"
    static let okKeepAlive = "HTTP/1.1 200 OK\r\nServer: gnet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
        + "Date: \(fixedDate)\r\nConnection: keep-alive\r\n\r\nHello, World!"
    static let notFound = "HTTP/1.1 404 Not Found\r\nServer: gnet\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
        + "Date: \(fixedDate)\r\n\r\nNot Found"
    static let badRequest = "HTTP/1.1 400 Bad Request\r\nServer: gnet\r\nContent-Type: text/plain\r\n"
        + "Content-Length: 11\r\nDate: \(fixedDate)\r\nConnection: close\r\n\r\nBad Request"

    @Test("one request, byte for byte")
    func oneRequest() throws {
        var f = Feeder()
        try f.feed(Self.get)
        #expect(f.text == Self.ok)
        #expect(!f.closed && f.pending.isEmpty && f.state.isIdle)
    }

    @Test("routes", arguments: [
        ("GET / HTTP/1.1", 200), ("GET /plaintext HTTP/1.1", 200), ("GET /?a=b HTTP/1.1", 200),
        ("GET /plaintext?x HTTP/1.1", 200), ("GET /plaintext/ HTTP/1.1", 404), ("GET /Plaintext HTTP/1.1", 404),
        ("GET /json HTTP/1.1", 404), ("POST / HTTP/1.1", 404), ("OPTIONS * HTTP/1.1", 404),
        ("GET http://a/plaintext HTTP/1.1", 404),
    ])
    func routes(_ line: String, _ status: Int) throws {
        var f = Feeder()
        try f.feed("\(line)\r\nHost: a\r\n\r\n")
        let parsed = parseResponses(f.output.bytes)
        #expect(parsed.leftover == 0)
        #expect(parsed.responses.map(\.status) == [status])
        #expect(!f.closed)
        if status == 404 { #expect(f.text == Self.notFound) }
    }

    @Test("HEAD: the GET response without its body")
    func head() throws {
        var f = Feeder()
        try f.feed("HEAD / HTTP/1.1\r\nHost: a\r\n\r\nHEAD /nope HTTP/1.1\r\nHost: a\r\n\r\n")
        let okHead = String(Self.ok.dropLast("Hello, World!".count))
        let notFoundHead = String(Self.notFound.dropLast("Not Found".count))
        #expect(f.text == okHead + notFoundHead)
    }

    @Test("16 pipelined requests in one buffer: 16 responses in order, one call")
    func pipelined() throws {
        var text = ""
        for i in 0..<16 { text += i % 3 == 2 ? "GET /missing/\(i) HTTP/1.1\r\nHost: a\r\n\r\n" : Self.get }
        var f = Feeder()
        try f.feed(text)
        let statuses = parseResponses(f.output.bytes).responses.map(\.status)
        #expect(statuses == (0..<16).map { $0 % 3 == 2 ? 404 : 200 })
        #expect(f.pending.isEmpty && !f.closed)
    }

    /// A conversation that exercises everything the session keeps between calls: pipelining,
    /// bodies, HEAD, HTTP/1.0 keep-alive, and a close at the end.
    static let conversation = Self.get
        + "POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        + "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
        + "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
        + "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        + "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nGET / HTTP/1"  // a body that looks like a request
        + "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"

    static let conversationReply = Self.ok
        + Self.notFound  // POST /plaintext: only GET and HEAD are routed
        + Self.notFound
        + String(Self.ok.dropLast(13))
        + Self.okKeepAlive
        + Self.notFound  // POST /
        + Self.okClose

    @Test("a conversation fed whole")
    func conversationWhole() throws {
        var f = Feeder()
        try f.feed(Self.conversation)
        #expect(f.text == Self.conversationReply)
        #expect(f.closed)
    }

    @Test("a conversation split in two at every byte position")
    func conversationSplit() throws {
        let whole = bytes(Self.conversation)
        for k in 0...whole.count {
            var f = Feeder()
            try f.feed(Array(whole[..<k]))
            if !f.closed { try f.feed(Array(whole[k...])) }
            #expect(f.text == Self.conversationReply, "split at \(k)")
            #expect(f.closed, "split at \(k)")
        }
    }

    @Test("a conversation fed one byte at a time")
    func conversationBytewise() throws {
        var f = Feeder()
        for b in bytes(Self.conversation) {
            let before = f.output.bytes.count
            try f.feed([b])
            // Nothing is answered before the byte that completes a head.
            if f.output.bytes.count > before { #expect(b == 0x0A) }
        }
        #expect(f.text == Self.conversationReply)
        #expect(f.closed)
    }

    @Test("a body is dropped as it arrives, never buffered")
    func longBody() throws {
        var f = Feeder()
        try f.feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        #expect(parseResponses(f.output.bytes).responses.map(\.status) == [404])
        for _ in 0..<99 {
            try f.feed([UInt8](repeating: 0x7A, count: 1000))
            #expect(f.pending.isEmpty)
        }
        #expect(f.state.bodyRemaining == 1000)
        try f.feed([UInt8](repeating: 0x7A, count: 1000) + bytes(Self.get))
        #expect(f.state.isIdle && f.pending.isEmpty && !f.closed)
        #expect(parseResponses(f.output.bytes).responses.map(\.status) == [404, 200])
    }

    @Test("Connection: close with a body still arriving: answered at once, closed after the body")
    func closeAfterBody() throws {
        var f = Feeder()
        try f.feed("POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 10\r\n\r\n01234")
        #expect(!f.closed && f.state.bodyRemaining == 5 && f.state.closeAfterBody)
        #expect(parseResponses(f.output.bytes).responses.first?.header("Connection") == "close")
        try f.feed("56789")
        #expect(f.closed && f.state.isIdle)
    }

    @Test("quiescing: idle closes at once; half a request is answered with Connection: close, then closes")
    func quiescing() throws {
        var idle = Feeder()
        try idle.feed(Self.get)
        let idleMayClose = idle.state.quiesce(bufferedInput: 0)
        #expect(idleMayClose)

        var f = Feeder()
        try f.feed(String(Self.get.prefix(20)))
        let mayClose = f.state.quiesce(bufferedInput: f.pending.count)
        #expect(!mayClose && !f.state.isIdle)
        try f.feed(String(Self.get.dropFirst(20)))
        #expect(f.text == Self.okClose)
        #expect(f.closed && f.pending.isEmpty)
    }

    @Test("quiescing with a body owed: closed once it has arrived")
    func quiescingBodyOwed() throws {
        var f = Feeder()
        try f.feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        let mayClose = f.state.quiesce(bufferedInput: 0)
        #expect(!mayClose && f.state.closeAfterBody)
        try f.feed("56789")
        #expect(f.closed && f.state.isIdle)
        #expect(parseResponses(f.output.bytes).responses.map(\.status) == [404])
    }

    @Test("HTTP/1.0: closes unless keep-alive was asked for")
    func http10() throws {
        var f = Feeder()
        try f.feed("GET / HTTP/1.0\r\n\r\n" + Self.get)
        #expect(f.text == Self.okClose)
        #expect(f.closed)
        #expect(!f.pending.isEmpty)  // the request after the close is not answered

        var g = Feeder()
        try g.feed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        #expect(g.text == Self.okKeepAlive && !g.closed)
    }

    @Test("Connection: close answers, then closes; later pipelined requests are not answered")
    func connectionClose() throws {
        var f = Feeder()
        try f.feed(Self.get + "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + Self.get)
        #expect(f.text == Self.ok + Self.okClose)
        #expect(f.closed)
    }

    @Test("every malformed request: 400 with Connection: close, then close", arguments: RequestScannerTests.badCases)
    func malformed(_ c: RequestScannerTests.BadCase) throws {
        var f = Feeder()
        try f.feed(Self.get + c.text)
        #expect(f.text == Self.ok + Self.badRequest)
        #expect(f.closed)
    }

    @Test("a head over 8 KiB: 400 and close, even before its end arrives")
    func oversizedHead() throws {
        var f = Feeder()
        try f.feed("GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in 0..<8 where !f.closed { try f.feed(String(repeating: "b", count: 1024)) }
        #expect(f.text == Self.badRequest)
        #expect(f.closed)
    }

    @Test("the Date field follows the clock, once per second")
    func dateRefresh() throws {
        let r = HTTPResponses(now: fixedSecond)
        var out = ArrayOutput()
        var state = HTTPConnectionState()
        let request = bytes(Self.get)
        _ = try request.withUnsafeBytes { try HTTPSession.serve($0, state: &state, responses: r, output: &out) }
        r.refresh(now: fixedSecond + 1)
        _ = try request.withUnsafeBytes { try HTTPSession.serve($0, state: &state, responses: r, output: &out) }
        let dates = parseResponses(out.bytes).responses.map { $0.header("Date") }
        #expect(dates == [fixedDate, "Sun, 06 Nov 1994 08:49:38 GMT"])
    }

    @Test("an output that fails stops serving with its error")
    func failingOutput() {
        struct Gone: Error {}
        struct FailingOutput: HTTPOutput {
            mutating func write(_ bytes: UnsafeRawBufferPointer) throws { throw Gone() }
        }
        var out = FailingOutput()
        var state = HTTPConnectionState()
        #expect(throws: Gone.self) {
            _ = try bytes(Self.get).withUnsafeBytes {
                try HTTPSession.serve($0, state: &state, responses: HTTPResponses(now: 0), output: &out)
            }
        }
    }
}
