import GNetTLS
import Glibc
import Testing

/// Throwaway certificates from scripts/tls-certs.sh, made once per test process.
enum Certs {
    static let dir: String = {
        // This file is <root>/Tests/GNetTLSTests/TLSSessionTests.swift.
        let root = String(#filePath).split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/")
        let dir = "/tmp/gnet-tls-tests-\(getpid())"
        let rc = system("\(root)/scripts/tls-certs.sh \(dir) >/dev/null")
        precondition(rc == 0, "scripts/tls-certs.sh failed (is openssl installed?)")
        return dir
    }()
    static func path(_ name: String) -> String { "\(dir)/\(name)" }
    static func identity(_ name: String) -> TLSConfiguration.Identity {
        .init(certificateChain: path("\(name).pem"), privateKey: path("\(name).key"))
    }
    static var server: TLSConfiguration { .server(certificateChain: path("server.pem"), privateKey: path("server.key")) }
    static var client: TLSConfiguration { .client(trustRoots: .file(path("ca.pem"))) }
}

/// Two sessions joined in memory: what one sends, the other reads.
final class Link {
    let client: TLSSession
    let server: TLSSession
    var toServer: [UInt8] = []
    var toClient: [UInt8] = []

    init(_ client: TLSSession, _ server: TLSSession) {
        self.client = client
        self.server = server
        client.output = { [unowned self] in toServer += $0 }
        server.output = { [unowned self] in toClient += $0 }
    }

    /// Feeds `bytes` to `s` while `body` runs, keeping what it did not take.
    static func feed<R>(_ s: TLSSession, _ bytes: inout [UInt8], _ body: () throws -> R) rethrows -> R {
        let copy = bytes
        return try copy.withUnsafeBytes { raw in
            s.setInput(raw)
            defer { bytes = Array(raw.suffix(s.pendingInput)); s.setInput(UnsafeRawBufferPointer(start: nil, count: 0)) }
            return try body()
        }
    }

    /// Runs both handshakes to the end (or the first failure, thrown with its side).
    func handshake() throws {
        for _ in 0..<20 {
            let c = try Self.feed(client, &toClient) { try client.handshake() }
            let s = try Self.feed(server, &toServer) { try server.handshake() }
            // TLS 1.3 servers send session tickets after the handshake: they may stay queued.
            if c == .done && s == .done && toServer.isEmpty { return }
        }
        throw TLSError.handshakeFailed("no progress")
    }

    /// Reads everything `s` can decrypt from its pending input.
    static func drain(_ s: TLSSession, _ bytes: inout [UInt8]) throws -> (plaintext: [UInt8], closed: Bool) {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        var closed = false
        try feed(s, &bytes) {
            loop: while true {
                let r = try buffer.withUnsafeMutableBytes { try s.read(into: $0) }
                switch r {
                case .bytes(let n): out += buffer[..<n]
                case .wantsInput: break loop
                case .closed: closed = true; break loop
                }
            }
        }
        return (out, closed)
    }
}

@Suite(.serialized)
struct TLSSessionTests {
    func link(server: TLSConfiguration = Certs.server, client: TLSConfiguration = Certs.client, name: String? = "localhost",
              resuming: TLSResumption? = nil) throws -> Link {
        let s = try TLSSession(context: TLSContext(server))
        let c = try TLSSession(context: TLSContext(client), serverName: name, resuming: resuming)
        return Link(c, s)
    }

    @Test("TLS 1.3 handshake, data both ways, ALPN by the server's preference")
    func tls13() throws {
        var server = Certs.server
        server.alpnProtocols = ["h2", "http/1.1"]
        var client = Certs.client
        client.alpnProtocols = ["http/1.1", "h2"]
        let l = try link(server: server, client: client)
        try l.handshake()
        #expect(l.server.protocolVersion == "TLSv1.3")
        #expect(l.client.negotiatedProtocol == "h2")
        #expect(l.server.negotiatedProtocol == "h2")
        let message = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try message.withUnsafeBytes { try l.client.write($0) }
        let got = try Link.drain(l.server, &l.toServer)
        #expect(got.plaintext == message)
        try Array("back".utf8).withUnsafeBytes { try l.server.write($0) }
        #expect(try Link.drain(l.client, &l.toClient).plaintext == Array("back".utf8))
    }

    @Test("TLS 1.2 when the client offers no more")
    func tls12() throws {
        var client = Certs.client
        client.maximumVersion = .tls12
        let l = try link(client: client)
        try l.handshake()
        #expect(l.server.protocolVersion == "TLSv1.2")
        #expect(l.client.protocolVersion == "TLSv1.2")
    }

    @Test("SNI: the certificate of the name asked for; a name the default certificate lacks is rejected")
    func sni() throws {
        var server = Certs.server
        server.identitiesByServerName = ["Other.Test": Certs.identity("other")]
        let ok = try link(server: server, name: "other.test")
        try ok.handshake()
        #expect(ok.server.serverName == "other.test")
        let wrong = try link(server: Certs.server, name: "other.test")
        #expect(throws: TLSError.self) { try wrong.handshake() }
        do { try wrong.handshake() } catch let e as TLSError {
            guard case .certificateRejected = e else { Issue.record("got \(e)"); return }
        }
    }

    @Test("session tickets resume the next connection (TLS 1.3 and 1.2)", arguments: [TLSConfiguration.Version.tls13, .tls12])
    func resumption(_ version: TLSConfiguration.Version) throws {
        let serverContext = try TLSContext(Certs.server)
        var clientConfig = Certs.client
        clientConfig.maximumVersion = version
        let clientContext = try TLSContext(clientConfig)
        let first = Link(try TLSSession(context: clientContext, serverName: "localhost"), try TLSSession(context: serverContext))
        try first.handshake()
        #expect(!first.client.resumed)
        _ = try Link.drain(first.client, &first.toClient) // TLS 1.3: the tickets come after the handshake
        let ticket = try #require(first.client.resumption)
        let second = Link(try TLSSession(context: clientContext, serverName: "localhost", resuming: ticket),
                          try TLSSession(context: serverContext))
        try second.handshake()
        #expect(second.client.resumed)
        #expect(second.server.resumed)
    }

    @Test("client certificates: required and missing fails; present is verified and seen")
    func clientCertificates() throws {
        var server = Certs.server
        server.peerVerification = .required
        server.trustRoots = .file(Certs.path("ca.pem"))
        let missing = try link(server: server)
        #expect(throws: TLSError.self) { try missing.handshake() }
        var client = Certs.client
        client.identity = Certs.identity("client")
        let present = try link(server: server, client: client)
        try present.handshake()
        #expect(present.server.peerCertificateSubject?.contains("CN=gnet-client") == true)
    }

    @Test("an expired certificate is rejected with the reason")
    func expired() throws {
        let l = try link(server: .server(certificateChain: Certs.path("expired.pem"), privateKey: Certs.path("expired.key")))
        do {
            try l.handshake()
            Issue.record("an expired certificate was accepted")
        } catch let e as TLSError {
            guard case .certificateRejected(let reason) = e else { Issue.record("got \(e)"); return }
            #expect(reason.contains("expired"))
        }
    }

    @Test("garbage instead of a ClientHello fails the handshake with a typed error")
    func garbage() throws {
        let s = try TLSSession(context: TLSContext(Certs.server))
        var bytes = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        #expect(throws: TLSError.self) { try Link.feed(s, &bytes) { try s.handshake() } }
    }

    @Test("EOF without close_notify is truncation; with it, a clean end")
    func truncation() throws {
        let l = try link()
        try l.handshake()
        try Array("partial".utf8).withUnsafeBytes { try l.client.write($0) }
        l.server.peerClosedTCP()
        var buffer = [UInt8](repeating: 0, count: 1024)
        let got = try Link.feed(l.server, &l.toServer) { try buffer.withUnsafeMutableBytes { try l.server.read(into: $0) } }
        #expect(got == .bytes(7))
        #expect(throws: TLSError.truncated) {
            try Link.feed(l.server, &l.toServer) { _ = try buffer.withUnsafeMutableBytes { try l.server.read(into: $0) } }
        }
        let clean = try link()
        try clean.handshake()
        clean.client.close()
        #expect(try Link.drain(clean.server, &clean.toServer).closed)
    }

    @Test("reload: new sessions get the new certificate, a bad configuration keeps the old")
    func reload() throws {
        let context = try TLSContext(Certs.server)
        var renewed = Certs.server
        renewed.identity = Certs.identity("other")
        try context.reload(renewed)
        let l = Link(try TLSSession(context: TLSContext(Certs.client), serverName: "other.test"), try TLSSession(context: context))
        try l.handshake()
        #expect(throws: TLSError.self) { try context.reload(.server(certificateChain: "/nonexistent.pem", privateKey: "/nonexistent.key")) }
        let still = Link(try TLSSession(context: TLSContext(Certs.client), serverName: "other.test"), try TLSSession(context: context))
        try still.handshake()
    }

    @Test("an encrypted private key: loaded with its passphrase; a typed error without it or with a wrong one, never a prompt")
    func encryptedKey() throws {
        func server(_ passphrase: String?) -> TLSConfiguration {
            var c = TLSConfiguration(role: .server)
            c.identity = .init(certificateChain: Certs.path("server.pem"), privateKey: Certs.path("server-encrypted.key"),
                               privateKeyPassphrase: passphrase)
            return c
        }
        let good = try link(server: server("gnet-test-passphrase"))
        try good.handshake()
        func refusal(_ passphrase: String?) -> String {
            do { _ = try TLSContext(server(passphrase)) } catch { return "\(error)" }
            return "accepted"
        }
        // OpenSSL's default callback would read a passphrase from the terminal: with stdin not
        // a terminal it fails, on one it would wait — either way not this message.
        let missing = refusal(nil)
        #expect(missing.contains("is encrypted: give its passphrase"), "\(missing)")
        let wrong = refusal("not-the-passphrase")
        #expect(wrong.contains("wrong passphrase"), "\(wrong)")
        // A passphrase given for a key that has none is not needed and does no harm.
        var plain = Certs.server
        plain.identity?.privateKeyPassphrase = "unused"
        try link(server: plain).handshake()
    }

    @Test("idle sessions hold no record buffers unless releasesIdleBuffers is false",
          .enabled(if: heapInUse() != nil, "glibc's malloc is not the allocator (a sanitizer's is)"), arguments: [true, false])
    func idleBuffers(_ release: Bool) throws {
        var server = Certs.server
        server.releasesIdleBuffers = release
        var client = Certs.client
        client.releasesIdleBuffers = release
        let serverContext = try TLSContext(server)
        let clientContext = try TLSContext(client)
        var links: [Link] = []
        // Warm up (OpenSSL's one-time tables), then measure what 200 more idle pairs hold.
        for _ in 0..<20 { links.append(try exchangedOnce(clientContext, serverContext)) }
        let before = try #require(heapInUse())
        for _ in 0..<200 { links.append(try exchangedOnce(clientContext, serverContext)) }
        let perPair = (try #require(heapInUse()) - before) / 200
        // A pair is a client and a server session. Measured: 52.7 KB with buffers released,
        // 102.3 KB kept (about 25 KB of record buffers per session).
        if release {
            #expect(perPair < 75_000, "\(perPair) bytes per idle pair with buffers released")
        } else {
            #expect(perPair > 85_000, "\(perPair) bytes per idle pair with buffers kept")
        }
        withExtendedLifetime(links) {}
    }

    /// A handshaken pair that has echoed one message and is idle again.
    func exchangedOnce(_ clientContext: TLSContext, _ serverContext: TLSContext) throws -> Link {
        let l = Link(try TLSSession(context: clientContext, serverName: "localhost"), try TLSSession(context: serverContext))
        try l.handshake()
        try Array("ping".utf8).withUnsafeBytes { try l.client.write($0) }
        _ = try Link.drain(l.server, &l.toServer)
        _ = try Link.drain(l.client, &l.toClient)
        return l
    }

    @Test("unusable configurations are typed errors naming the problem")
    func invalid() throws {
        #expect(throws: TLSError.self) { try TLSContext(TLSConfiguration(role: .server)) }
        var message = "accepted"
        do {
            _ = try TLSContext(.server(certificateChain: Certs.path("server.pem"), privateKey: Certs.path("other.key")))
        } catch {
            message = "\(error)"
        }
        #expect(message.contains("does not match"), "a mismatched key: \(message)")
        var alpn = Certs.server
        alpn.alpnProtocols = [""]
        #expect(throws: TLSError.self) { try TLSContext(alpn) }
        for count in [-1, 17] {
            var tickets = Certs.server
            tickets.ticketsPerHandshake = count
            var said = "accepted"
            do { _ = try TLSContext(tickets) } catch { said = "\(error)" }
            #expect(said.contains("ticketsPerHandshake must be 0 to 16, got \(count)"), "\(count) tickets: \(said)")
        }
    }
}

/// The C heap in use across every malloc arena (glibc's `malloc_info` totals: memory taken
/// from the system less what is free), since the test threads allocate outside the main arena
/// `mallinfo` reports. Neither is in the Glibc module, so `malloc_info` is found with dlsym.
/// Nil where glibc's malloc is not the allocator (under a sanitizer).
func heapInUse() -> Int? {
    typealias MallocInfo = @convention(c) (Int32, UnsafeMutablePointer<FILE>?) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_info") else { return nil } // RTLD_DEFAULT
    var buffer: UnsafeMutablePointer<CChar>? = nil
    var length = 0
    guard let f = open_memstream(&buffer, &length) else { return nil }
    _ = unsafeBitCast(symbol, to: MallocInfo.self)(0, f)
    fclose(f)
    defer { free(buffer) }
    let xml = buffer.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self) } ?? ""
    // The totals follow the last </heap>: <total type="fast" … size="N"/>, <total type="rest" …>, <system type="current" size="N"/>.
    let totals = xml.ranges(of: "</heap>").last.map { xml[$0.upperBound...] } ?? xml[...]
    func size(of tag: String) -> Int? {
        guard let r = totals.firstRange(of: tag) else { return nil }
        let rest = totals[r.upperBound...]
        guard let s = rest.firstRange(of: "size=\"") else { return nil }
        return Int(rest[s.upperBound...].prefix(while: { $0.isNumber }))
    }
    guard let system = size(of: "<system type=\"current\""), system > 0,
          let fast = size(of: "<total type=\"fast\""), let rest = size(of: "<total type=\"rest\"") else { return nil }
    return system - fast - rest
}
