import GNet
import GNetConformance
import Glibc
import Testing

// The handler from README.md's "Using it", verbatim: a doc sample is code, so it is built and run.
struct Echo: EventHandler {
    func onTraffic(_ c: Connection) -> Action {
        do {
            // The input is lent from the loop's read buffer (a RawSpan that cannot escape the
            // closure), written back, then consumed.
            try c.next { try c.write($0) }
            return .none
        } catch {
            return .close
        }
    }
}

@Suite("README example", .serialized)
struct ReadmeExampleTests {
    @Test func echoesOverTCPAndUnix() throws {
        let path = "/tmp/gnet-readme-\(getpid()).sock"
        var options = Options()
        options.loops = Options.coreCount
        let engine = try Engine(handler: Echo(), addresses: ["tcp://127.0.0.1:0", "unix://\(path)"], options: options)
        try engine.start()
        defer { engine.stop(); engine.wait() }
        for address in engine.addresses {
            let client = try TestClient(address)
            let msg = patternBytes(10_000, seed: 5)
            try client.send(msg)
            #expect(try client.receive(exactly: msg.count) == msg, "echo over \(address)")
        }
    }
}

// The handler from README.md's "Datagrams (UDP)", verbatim.
struct Answer: EventHandler {
    func onTraffic(_ c: Connection) -> Action {
        // Called once per datagram: the input is exactly that datagram, c.remoteAddress its sender.
        let request = c.next() ?? []
        try? c.write("\(c.network) got \(request.count) bytes")  // one datagram back to the sender
        return .none
    }

    func onTruncatedDatagram(_ c: Connection, length: Int) -> Action {
        // Larger than Options.readBufferCapacity: dropped, never passed on cut short.
        try? c.write("too large: \(length) bytes")
        return .none
    }
}

@Suite("README datagram example", .serialized)
struct ReadmeDatagramExampleTests {
    @Test func answersOverUDPAndTCP() throws {
        var options = Options()
        options.readBufferCapacity = 1024
        let engine = try Engine(handler: Answer(), addresses: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"], options: options)
        try engine.start()
        defer { engine.stop(); engine.wait() }
        let client = try UDPClient()
        try client.send(patternBytes(100, seed: 1), to: engine.addresses[0])
        #expect(try client.receive().bytes == Array("udp got 100 bytes".utf8))
        try client.send(patternBytes(2000, seed: 2), to: engine.addresses[0])
        #expect(try client.receive().bytes == Array("too large: 2000 bytes".utf8))
        let stream = try TestClient(engine.addresses[1])
        try stream.send("hello")
        #expect(try stream.receive(exactly: 15) == Array("tcp got 5 bytes".utf8))
    }
}
