import GNet
import GNetConformance
import Glibc
import HTTPCore
import Testing

/// `HTTPHandler` on a real engine, driven over loopback sockets.
@Suite("gnet-http over TCP")
struct EndToEndTests {
    /// Runs `body` against an engine serving `HTTPHandler` on a free loopback port.
    func withServer(poller: PollerKind? = nil, loops: Int = 1, _ body: (SocketAddress) throws -> Void) throws {
        try serving(HTTPHandler(), configure: {
            $0.loops = loops
            $0.poller = poller
        }, body)
    }

    @Test("16 pipelined requests in one write: 16 responses, in order; the connection stays open",
          arguments: PollerKind.allAvailable)
    func pipelined(_ poller: PollerKind) throws {
        try withServer(poller: poller) { address in
            let client = try Client(address)
            var batch = ""
            for i in 0..<16 {
                // A 404 every fourth request makes the order visible.
                let path = i % 4 == 3 ? "/missing-\(i)" : (i % 2 == 0 ? "/plaintext" : "/")
                batch += "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            }
            try client.send(batch)
            let responses = try client.receive(responses: 16)
            #expect(responses.map(\.status) == (0..<16).map { $0 % 4 == 3 ? 404 : 200 })
            #expect(responses.allSatisfy { $0.header("Connection") == nil && $0.header("Server") == "gnet" })
            #expect(responses.filter { $0.status == 200 }.allSatisfy { $0.body == "Hello, World!" })
            // The Date is the real clock's.
            let date = try #require(responses.first?.header("Date"))
            let now = Int(time(nil))
            #expect([HTTPDate.string(now - 1), HTTPDate.string(now)].contains(date))

            // Still open: one more request, split across two writes.
            try client.send("GET /plaintext HTTP/1.1\r\nHo")
            usleep(20_000)
            try client.send("st: a\r\n\r\n")
            #expect(try client.receive(responses: 1).map(\.status) == [200])
        }
    }

    @Test("garbage: 400 with Connection: close, then the server closes", arguments: PollerKind.allAvailable)
    func garbage(_ poller: PollerKind) throws {
        try withServer(poller: poller) { address in
            let client = try Client(address)
            try client.send("GET / HTTP/1.1\r\nHost: a\r\n\r\nthis is not HTTP\r\n\r\n")
            let all = try client.receiveUntilEOF()
            let parsed = parseResponses(all)
            #expect(parsed.leftover == 0)
            #expect(parsed.responses.map(\.status) == [200, 400])
            #expect(parsed.responses.last?.header("Connection") == "close")
            #expect(parsed.responses.last?.body == "Bad Request")
        }
    }

    @Test("Connection: close and HTTP/1.0: answered, then closed")
    func closing() throws {
        try withServer { address in
            for request in [
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                "GET /plaintext HTTP/1.0\r\n\r\n",
            ] {
                let client = try Client(address)
                try client.send(request)
                let parsed = parseResponses(try client.receiveUntilEOF())
                #expect(parsed.responses.map(\.status) == [200], "\(request.debugDescription)")
                #expect(parsed.responses.first?.header("Connection") == "close")
            }
        }
    }

    @Test("stopping: an idle keep-alive connection closes at once; a request arriving is answered with Connection: close, then closed",
          arguments: PollerKind.allAvailable)
    func quiescing(_ poller: PollerKind) async throws {
        var options = Options()
        options.poller = poller
        options.logger.logLevel = .warning
        let engine = try Engine(handler: HTTPHandler(), addresses: ["tcp://127.0.0.1:0"], options: options)
        try engine.start()
        let address = engine.addresses[0]
        let idle = try Client(address)
        let busy = try Client(address)
        let bodyOwed = try Client(address)
        try idle.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try idle.receive(responses: 1).first?.header("Connection") == nil)
        try busy.send("GET /plaintext HTTP/1.1\r\nHost: a\r\n")  // half a head
        try bodyOwed.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")  // answered, body owed
        #expect(try bodyOwed.receive(responses: 1).map(\.status) == [404])
        try await Task.sleep(for: .milliseconds(50))  // the half head has reached the server
        engine.stop()
        #expect(try idle.receiveUntilEOF().isEmpty)
        try busy.send("\r\n")
        let answered = parseResponses(try busy.receiveUntilEOF())
        #expect(answered.responses.map(\.status) == [200])
        #expect(answered.responses.first?.header("Connection") == "close")
        try bodyOwed.send("56789")
        #expect(try bodyOwed.receiveUntilEOF().isEmpty)
        for c in [idle, busy, bodyOwed] { c.shutdownWrite() }
        try await onThread(timeout: .seconds(5), "the engine's stop") { engine.wait() }
    }

    @Test("two loops, several keep-alive clients, each with its own responses cache")
    func severalLoops() throws {
        try withServer(loops: 2) { address in
            let clients = try (0..<6).map { _ in try Client(address) }
            for round in 0..<3 {
                for c in clients { try c.send(String(repeating: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", count: round + 1)) }
                for c in clients { #expect(try c.receive(responses: round + 1).map(\.status) == Array(repeating: 200, count: round + 1)) }
            }
        }
    }
}

/// A loopback client that parses what it receives into responses (over the conformance
/// suite's `TestClient`, whose receives time out rather than hang).
final class Client {
    private let socket: TestClient
    private var buffered: [UInt8] = []

    init(_ address: SocketAddress) throws { socket = try TestClient(address) }

    func send(_ s: String) throws { try socket.send(s) }

    func shutdownWrite() { socket.shutdownWrite() }

    /// Reads until `count` whole responses have arrived. Throws on EOF or timeout first.
    func receive(responses count: Int) throws -> [ParsedResponse] {
        while true {
            let parsed = parseResponses(buffered)
            if parsed.responses.count >= count {
                #expect(parsed.responses.count == count && parsed.leftover == 0, "more than asked for")
                buffered.removeAll()
                return parsed.responses
            }
            guard try readSome() else { throw ClientError("EOF after \(parsed.responses.count) of \(count) responses") }
        }
    }

    /// Reads until the server closes; returns everything not yet returned.
    func receiveUntilEOF() throws -> [UInt8] {
        while try readSome() {}
        defer { buffered.removeAll() }
        return buffered
    }

    /// One receive into `buffered`; false at EOF (or a reset).
    private func readSome() throws -> Bool {
        let chunk = try socket.receiveSome()
        buffered += chunk
        return !chunk.isEmpty
    }
}

struct ClientError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
