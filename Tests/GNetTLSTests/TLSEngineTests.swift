import GNet
import GNetLocks
import GNetTLS
import Glibc
import Testing

/// Runs a shell command, returning its exit status and standard output (bounded by `timeout`).
func shell(_ command: String, timeout seconds: Int = 30) -> (status: Int32, output: String) {
    guard let p = popen("timeout \(seconds) sh -c '\(command.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''"))' 2>&1", "r") else { return (-1, "") }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buffer, 1, buffer.count, p)
        if n <= 0 { break }
        out += buffer[..<n]
    }
    let status = pclose(p)
    return ((status >> 8) & 0xff, String(decoding: out, as: UTF8.self))
}

/// Echoes plaintext; records each connection's close error and TLS facts.
final class TLSEcho: EventHandler {
    struct Closed: Sendable { var error: String?; var alpn: String?; var version: String?; var serverName: String?; var resumed: Bool }
    let closed = Locked<[Closed]>([])
    func onTraffic(_ c: Connection) -> Action {
        c.withInbound { try? c.write($0) }
        c.discard(c.inboundBuffered)
        return .none
    }
    func onClose(_ c: Connection, error: (any Error)?) -> Action {
        let t = c.tls
        let entry = Closed(error: error.map { "\($0)" }, alpn: t?.negotiatedProtocol, version: t?.protocolVersion,
                           serverName: t?.serverName, resumed: t?.resumed ?? false)
        closed.withLock { $0.append(entry) }
        return .none
    }
}

/// A client handler keeping every plaintext byte it receives.
final class Collect: EventHandler {
    let received: Locked<[UInt8]>
    init(_ r: Locked<[UInt8]>) { received = r }
    func onTraffic(_ c: Connection) -> Action {
        c.withUnsafeInboundBytes { b in received.withLock { $0 += b } }
        c.discard(c.inboundBuffered)
        return .none
    }
}

@Suite(.serialized)
struct TLSEngineTests {
    static let python = """
        import socket, ssl, sys, os
        port, mode = int(sys.argv[1]), sys.argv[2]
        ctx = ssl.create_default_context(cafile=sys.argv[3])
        if mode.startswith("tls12"): ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1", "h2"])
        data = os.urandom(1 << 20)
        def once(session=None):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with ctx.wrap_socket(raw, server_hostname=sys.argv[4], session=session) as s:
                    s.sendall(data)
                    got = b""
                    while len(got) < len(data):
                        chunk = s.recv(1 << 16)
                        if not chunk: break
                        got += chunk
                    assert got == data, f"echo differs: {len(got)} of {len(data)}"
                    print(s.version(), s.selected_alpn_protocol(), "resumed" if s.session_reused else "new")
                    session = s.session
                    s.unwrap()
                    return session
        first = once()
        if mode.endswith("resume"): once(first)
        """

    func server(_ configure: (inout TLSConfiguration) -> Void = { _ in }, _ handler: TLSEcho = TLSEcho()) throws -> (Engine, Int) {
        var tls = Certs.server
        tls.alpnProtocols = ["h2", "http/1.1"]
        tls.identitiesByServerName = ["other.test": Certs.identity("other")]
        configure(&tls)
        var options = Options()
        options.tls = try TLSContext(tls)
        options.logger.logLevel = .critical
        let engine = try Engine(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: options)
        try engine.start()
        return (engine, engine.addresses[0].port!)
    }

    func eventually(_ what: String, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() {
            if ContinuousClock.now > deadline { Issue.record("timed out waiting for \(what)"); return }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test("Python's ssl module: 1 MiB echoed exactly over TLS 1.3 and 1.2, ALPN, SNI, resumption",
          arguments: [("tls13", "localhost"), ("tls12", "localhost"), ("resume", "localhost"), ("tls13", "other.test")])
    func python(_ mode: String, _ name: String) async throws {
        let handler = TLSEcho()
        let (engine, port) = try server({ _ in }, handler)
        defer { engine.stop(); engine.wait() }
        let script = "/tmp/gnet-tls-client-\(getpid()).py"
        let f = fopen(script, "w")
        fputs(Self.python, f)
        fclose(f)
        let r = shell("python3 \(script) \(port) \(mode) \(Certs.path("ca.pem")) \(name)", timeout: 60)
        #expect(r.status == 0, "python client: \(r.output)")
        let lines = r.output.split(separator: "\n")
        #expect(lines.first?.hasPrefix(mode == "tls12" ? "TLSv1.2 h2" : "TLSv1.3 h2") == true, "\(r.output)")
        if mode == "resume" { #expect(lines.last?.hasSuffix("resumed") == true, "\(r.output)") }
        try await eventually("the server's closes") { handler.closed.withLock { $0.count } == (mode == "resume" ? 2 : 1) }
        for c in handler.closed.withLock({ $0 }) {
            #expect(c.error == nil, "a clean TLS close (close_notify) closes without error, got \(c.error ?? "")")
            #expect(c.alpn == "h2")
            if name == "other.test" { #expect(c.serverName == "other.test") }
        }
        if mode == "resume" { #expect(handler.closed.withLock { $0.last?.resumed } == true) }
    }

    @Test("tickets per handshake: openssl s_client gets as many as configured; none, and no resumption, with tickets off",
          arguments: [(true, 1), (true, 2), (true, 3), (false, 2)])
    func ticketsPerHandshake(_ tickets: Bool, _ count: Int) async throws {
        let handler = TLSEcho()
        let (engine, port) = try server({ $0.sessionTickets = tickets; $0.ticketsPerHandshake = count }, handler)
        defer { engine.stop(); engine.wait() }
        // -msg prints each handshake message as it is decrypted; tickets come after the handshake.
        let r = shell("(echo hi; sleep 1) | openssl s_client -connect 127.0.0.1:\(port) -servername localhost -CAfile \(Certs.path("ca.pem")) -tls1_3 -msg 2>&1", timeout: 20)
        let seen = r.output.split(separator: "\n").filter { $0.hasPrefix("<<<") && $0.contains("NewSessionTicket") }.count
        #expect(seen == (tickets ? count : 0), "s_client saw \(seen) NewSessionTicket messages:\n\(r.output.suffix(3000))")
        if !tickets {
            // Python offers the first connection's session on the second: a full handshake again.
            let script = "/tmp/gnet-tls-client-\(getpid()).py"
            let f = fopen(script, "w")
            fputs(Self.python, f)
            fclose(f)
            for mode in ["resume", "tls12-resume"] {
                let py = shell("python3 \(script) \(port) \(mode) \(Certs.path("ca.pem")) localhost", timeout: 60)
                #expect(py.status == 0, "python client: \(py.output)")
                #expect(py.output.split(separator: "\n").last?.hasSuffix(" new") == true, "\(mode): \(py.output)")
            }
        }
    }

    @Test("openssl s_client talks to the server; our client talks to openssl s_server")
    func opensslTools() async throws {
        let (engine, port) = try server()
        defer { engine.stop(); engine.wait() }
        let r = shell("(echo hello-openssl; sleep 1) | openssl s_client -connect 127.0.0.1:\(port) -servername localhost -CAfile \(Certs.path("ca.pem")) -alpn http/1.1 -quiet -no_ign_eof -verify_return_error 2>/dev/null", timeout: 20)
        #expect(r.output.contains("hello-openssl"), "s_client: \(r.output)")

        // Our client against s_server (which echoes what it gets with -rev? no: plain -quiet prints it).
        let sPort = 20000 + Int(getpid() % 20000)
        let logFile = "/tmp/gnet-s_server-\(getpid()).log"
        _ = shell("(openssl s_server -accept \(sPort) -cert \(Certs.path("server.pem")) -key \(Certs.path("server.key")) -rev -quiet > \(logFile) 2>&1 &) ; sleep 0.5")
        defer { _ = shell("pkill -f 's_server -accept \(sPort)'") }
        let received = Locked<[UInt8]>([])
        var o = Options()
        o.logger.logLevel = .critical
        let client = try Client(handler: Collect(received), options: o)
        try client.start()
        defer { client.stop(); client.wait() }
        let h = try await client.engine.dial("tcp://127.0.0.1:\(sPort)", tls: TLSContext(Certs.client), serverName: "localhost")
        try await h.write(Array("gnet\n".utf8))
        try await eventually("s_server's reversed line") { String(decoding: received.withLock { $0 }, as: UTF8.self).contains("teng") }
    }

    @Test("our client and server: 1 MiB both ways exactly, on every backend", arguments: PollerKind.allAvailable.map(\.name))
    func ourClient(_ poller: String) async throws {
        var tls = Certs.server
        tls.alpnProtocols = ["h2"]
        var options = Options()
        options.poller = try PollerKind(name: poller)
        options.tls = try TLSContext(tls)
        options.logger.logLevel = .critical
        let server = try Engine(handler: TLSEcho(), addresses: ["tcp://127.0.0.1:0"], options: options)
        try server.start()
        defer { server.stop(); server.wait() }
        let received = Locked<[UInt8]>([])
        var clientOptions = Options()
        clientOptions.poller = options.poller
        clientOptions.logger.logLevel = .critical
        let client = try Client(handler: Collect(received), options: clientOptions)
        try client.start()
        defer { client.stop(); client.wait() }
        var clientTLS = Certs.client
        clientTLS.alpnProtocols = ["h2"]
        let h = try await client.engine.dial(server.addresses[0].description, tls: TLSContext(clientTLS), serverName: "localhost")
        var payload = [UInt8](repeating: 0, count: 1 << 20)
        for i in payload.indices { payload[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 7) }
        for start in stride(from: 0, to: payload.count, by: 64 << 10) {
            try await h.write(Array(payload[start..<min(start + (64 << 10), payload.count)]))
        }
        try await eventually("1 MiB back") { received.withLock { $0.count } >= payload.count }
        #expect(received.withLock { $0 } == payload)
    }

    /// Records, per connection, whether its TLS handshake resumed a session (at its first input).
    final class ResumeProbe: EventHandler {
        let resumed = Locked<[Bool]>([])
        func onTraffic(_ c: Connection) -> Action {
            c.discard(c.inboundBuffered)
            resumed.withLock { $0.append(c.tls?.resumed ?? false) }
            return .close
        }
    }

    /// Dials each of `ports` in turn from one client context (`Certs.client`, then
    /// `configure`), echoing a message on each, and says which handshakes resumed.
    func resumedPerDial(_ ports: [Int], _ configure: (inout TLSConfiguration) -> Void) async throws -> [Bool] {
        var o = Options()
        o.logger.logLevel = .critical
        let probe = ResumeProbe()
        let client = try Client(handler: probe, options: o)
        try client.start()
        defer { client.stop(); client.wait() }
        var tls = Certs.client
        configure(&tls)
        let context = try TLSContext(tls)
        for (i, port) in ports.enumerated() {
            let h = try await client.engine.dial("tcp://127.0.0.1:\(port)", tls: context, serverName: "localhost")
            try await h.write(Array("ping \(i + 1)".utf8))
            // The echo comes after the server's tickets (TLS 1.3): once it is read, they are kept.
            try await eventually("echo \(i + 1)") { probe.resumed.withLock { $0.count } == i + 1 }
        }
        return probe.resumed.withLock { $0 }
    }

    @Test("a client context with a session cache resumes later dials by itself (TLS 1.3 and 1.2); without one it does not",
          arguments: [(TLSConfiguration.Version.tls13, 4), (.tls12, 4), (.tls13, 0)])
    func clientSessionCache(_ version: TLSConfiguration.Version, _ cacheSize: Int) async throws {
        let serverHandler = TLSEcho()
        let (server, port) = try server({ $0.alpnProtocols = [] }, serverHandler)
        defer { server.stop(); server.wait() }
        let seen = try await resumedPerDial([port, port, port]) {
            $0.maximumVersion = version
            $0.clientSessionCacheSize = cacheSize
        }
        if cacheSize > 0 {
            #expect(seen == [false, true, true], "resumed per dial: \(seen)")
            try await eventually("the server's closes") { serverHandler.closed.withLock { $0.count } == 3 }
            #expect(serverHandler.closed.withLock { $0.map(\.resumed) } == [false, true, true])
        } else {
            #expect(seen == [false, false, false], "resumed per dial: \(seen)")
        }
    }

    @Test("a client session cache of one server keeps only the last server dialled")
    func clientSessionCacheCapacity() async throws {
        let (a, portA) = try server()
        defer { a.stop(); a.wait() }
        let (b, portB) = try server()
        defer { b.stop(); b.wait() }
        // A, B (A's sessions go), A again (full), A again (resumed from the third dial's ticket).
        let seen = try await resumedPerDial([portA, portB, portA, portA]) { $0.clientSessionCacheSize = 1 }
        #expect(seen == [false, false, false, true])
    }

    @Test("bad input: garbage, a stalled handshake, a truncated stream — each a typed error in onClose, nothing leaked")
    func badInput() async throws {
        let handler = TLSEcho()
        let (engine, port) = try server({ $0.handshakeTimeout = .milliseconds(300) }, handler)
        defer { engine.stop(); engine.wait() }
        // Garbage instead of a ClientHello.
        _ = shell("printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' | timeout 3 nc -q 2 127.0.0.1 \(port)", timeout: 10)
        try await eventually("the garbage connection's close") { handler.closed.withLock { $0.count } >= 1 }
        #expect(handler.closed.withLock { $0[0].error?.contains("handshake failed") } == true, "\(handler.closed.withLock { $0 })")
        // A client that connects and says nothing: closed at the handshake timeout.
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sin = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: in_port_t(UInt16(port).bigEndian), sin_addr: in_addr(s_addr: UInt32(0x7f000001).bigEndian), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        let rc = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(rc == 0)
        let start = ContinuousClock.now
        try await eventually("the stalled handshake's close") { handler.closed.withLock { $0.count } >= 2 }
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(handler.closed.withLock { $0[1].error?.contains("did not finish within") } == true, "\(handler.closed.withLock { $0 })")
        close(s)
        // Data, then TCP closed without close_notify: truncation, not a clean end.
        let script = "/tmp/gnet-tls-truncate-\(getpid()).py"
        let f = fopen(script, "w")
        fputs("""
            import socket, ssl, sys
            ctx = ssl.create_default_context(cafile=sys.argv[2])
            raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(b"x" * 1000)
            got = b""
            while len(got) < 1000: got += s.recv(4096)  # and the tickets: nothing unread to reset
            s.shutdown(socket.SHUT_RDWR)  # TCP ends; SSLSocket.shutdown sends no close_notify
            s.close()
            """, f)
        fclose(f)
        let r = shell("python3 \(script) \(port) \(Certs.path("ca.pem"))", timeout: 20)
        #expect(r.status == 0, "truncating client: \(r.output)")
        try await eventually("the truncated connection's close") { handler.closed.withLock { $0.count } >= 3 }
        #expect(handler.closed.withLock { $0[2].error?.contains("without TLS close_notify") } == true, "\(handler.closed.withLock { $0.map { $0.error ?? "nil" } })")
        #expect(engine.connectionCount == 0)
    }

    @Test("a client refuses an expired server certificate: its connection closes with the reason")
    func expiredServer() async throws {
        var tls = TLSConfiguration.server(certificateChain: Certs.path("expired.pem"), privateKey: Certs.path("expired.key"))
        tls.handshakeTimeout = .seconds(5)
        var options = Options()
        options.tls = try TLSContext(tls)
        options.logger.logLevel = .critical
        let server = try Engine(handler: TLSEcho(), addresses: ["tcp://127.0.0.1:0"], options: options)
        try server.start()
        defer { server.stop(); server.wait() }
        let clientHandler = TLSEcho()
        var co = Options()
        co.logger.logLevel = .critical
        let client = try Client(handler: clientHandler, options: co)
        try client.start()
        defer { client.stop(); client.wait() }
        _ = try await client.engine.dial(server.addresses[0].description, tls: TLSContext(Certs.client), serverName: "localhost")
        try await eventually("the client's close") { clientHandler.closed.withLock { $0.count } == 1 }
        #expect(clientHandler.closed.withLock { $0[0].error?.contains("expired") } == true, "\(clientHandler.closed.withLock { $0 })")
    }
}
