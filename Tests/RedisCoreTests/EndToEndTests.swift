import GNet
import GNetConformance
import Glibc
import RedisCore
import Testing

/// The conformance suite's blocking client (receives time out rather than hang), with the
/// reads these tests need.
private typealias Client = TestClient

extension TestClient {
    fileprivate convenience init(port: Int) throws {
        try self.init(SocketAddress(ipAddress: "127.0.0.1", port: port)!)
    }

    /// Reads exactly `n` bytes.
    fileprivate func receive(_ n: Int) throws -> [UInt8] { try receive(exactly: n) }

    /// Reads the reply to a request whose reply is `expected`, as text.
    fileprivate func receive(like expected: String) throws -> String {
        String(decoding: try receive(expected.utf8.count), as: UTF8.self)
    }

    /// Reads one reply line, CRLF included.
    fileprivate func receiveLine() throws -> String {
        var line: [UInt8] = []
        while !(line.count >= 2 && line[line.count - 2] == 13 && line[line.count - 1] == 10) { line += try receive(1) }
        return String(decoding: line, as: UTF8.self)
    }

    /// Whether the server closed the connection (EOF or reset) with nothing more to read.
    fileprivate func isClosedByServer() -> Bool {
        (try? receiveSome(max: 1))?.isEmpty ?? false
    }
}

/// Serves the Redis handler on a free loopback port while `body` runs with the port.
private func withServer(loops: Int = 1, _ body: (Int) throws -> Void) throws {
    try serving(RedisHandler(), configure: {
        $0.loops = loops
        $0.ticker = true
    }) { address in try body(try #require(address.port)) }
}

@Suite("End to end, over TCP", .serialized)
struct EndToEndTests {
    @Test("pipelined commands get their replies in order, byte for byte")
    func pipelined() throws {
        try withServer { port in
            let c = try Client(port: port)
            let request = resp("SET", "greeting", "hello") + resp("GET", "greeting") + "PING\r\n"
                + resp("INCR", "n") + resp("INCRBY", "n", "9") + resp("MGET", "greeting", "missing")
                + resp("SET", "greeting", "again", "NX") + resp("DEL", "greeting", "n") + resp("EXISTS", "n")
                + resp("SET", "t", "x", "PX", "100000") + resp("ECHO", "bye")
            let expected = "+OK\r\n$5\r\nhello\r\n+PONG\r\n:1\r\n:10\r\n*2\r\n$5\r\nhello\r\n$-1\r\n$-1\r\n:2\r\n:0\r\n"
                + "+OK\r\n$3\r\nbye\r\n"
            try c.send(request)
            #expect(try c.receive(like: expected) == expected)
        }
    }

    @Test("a request sent one byte at a time is answered once it is complete")
    func byteByByte() throws {
        try withServer { port in
            let c = try Client(port: port)
            for b in Array((resp("SET", "k", "v") + "GET k\r\n").utf8) {
                try c.send([b])
                usleep(200)
            }
            #expect(try c.receive(like: "+OK\r\n$1\r\nv\r\n") == "+OK\r\n$1\r\nv\r\n")
        }
    }

    @Test("a 1 MiB value goes in and comes back out intact")
    func largeValue() throws {
        try withServer { port in
            let c = try Client(port: port)
            let value = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
            var request = Array("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$\(value.count)\r\n".utf8) + value + Array("\r\n".utf8)
            request += Array(resp("GET", "big").utf8)
            try c.send(request)
            #expect(try c.receive(like: "+OK\r\n") == "+OK\r\n")
            let header = Array("$\(value.count)\r\n".utf8)
            let reply = try c.receive(header.count + value.count + 2)
            #expect(Array(reply[..<header.count]) == header)
            #expect(Array(reply[header.count..<(header.count + value.count)]) == value)
            #expect(Array(reply.suffix(2)) == Array("\r\n".utf8))
        }
    }

    @Test("a protocol error is answered, then the connection closes")
    func protocolErrorCloses() throws {
        try withServer { port in
            let c = try Client(port: port)
            try c.send("PING\r\n*1\r\n$abc\r\n")
            let expected = "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
            #expect(try c.receive(like: expected) == expected)
            #expect(c.isClosedByServer())
        }
    }

    @Test("QUIT is answered, then the connection closes")
    func quitCloses() throws {
        try withServer { port in
            let c = try Client(port: port)
            try c.send(resp("QUIT") + resp("PING"))
            #expect(try c.receive(like: "+OK\r\n") == "+OK\r\n")
            #expect(c.isClosedByServer())
        }
    }

    @Test("clients on several loops share one keyspace")
    func sharedAcrossLoops() throws {
        try withServer(loops: 2) { port in
            let clients = try (0..<8).map { _ in try Client(port: port) }
            var seen = Set<String>()
            for _ in 0..<50 {
                for c in clients { try c.send(resp("INCR", "shared")) }
                for c in clients { seen.insert(try c.receiveLine()) }
            }
            // Every increment happened exactly once: each value from 1 to 400 was someone's reply.
            #expect(seen == Set((1...400).map { ":\($0)\r\n" }))
            let c = clients[0]
            try c.send(resp("GET", "shared"))
            #expect(try c.receive(like: "$3\r\n400\r\n") == "$3\r\n400\r\n")
        }
    }
}
