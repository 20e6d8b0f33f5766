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
