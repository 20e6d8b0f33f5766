import GNet
import Testing

@Suite("Address parsing")
struct AddressTests {
    @Test("valid addresses", arguments: [
        ("tcp://127.0.0.1:9000", "tcp://127.0.0.1:9000"),
        ("tcp4://127.0.0.1:0", "tcp://127.0.0.1:0"),
        ("tcp6://[::1]:9000", "tcp6://[::1]:9000"),
        ("tcp://[::1]:80", "tcp6://[::1]:80"),
        ("tcp://:9000", "tcp://0.0.0.0:9000"),
        ("tcp6://:9000", "tcp6://[::]:9000"),
        ("127.0.0.1:65535", "tcp://127.0.0.1:65535"),
        ("TCP://localhost:1234", "tcp://127.0.0.1:1234"),
        ("unix:///tmp/gnet-test.sock", "unix:///tmp/gnet-test.sock"),
    ])
    func valid(_ input: String, _ expected: String) throws {
        let a = try ListenAddress(parsing: input)
        #expect(a.description == expected)
    }

    @Test("invalid addresses say what is wrong", arguments: [
        ("tcp://127.0.0.1", "missing ':port'"),
        ("tcp://127.0.0.1:", "port '' is not a number"),
        ("tcp://127.0.0.1:65536", "port '65536'"),
        ("tcp://127.0.0.1:-1", "port '-1'"),
        ("tcp://127.0.0.1:9x", "port '9x'"),
        ("tcp://::1:9000", "IPv6 host must be written in brackets"),
        ("tcp://[::1:9000", "missing ']'"),
        ("tcp4://[::1]:9000", "not an IPv4 address"),
        ("tcp6://127.0.0.1:9000", "not an IPv6 address"),
        ("sctp://127.0.0.1:9000", "unknown network 'sctp'"),
        ("tcp://no-such-host.invalid:9000", "cannot resolve host"),
        ("unix://", "socket path is empty"),
    ])
    func invalid(_ input: String, _ fragment: String) {
        do {
            _ = try ListenAddress(parsing: input)
            Issue.record("\(input) parsed")
        } catch {
            #expect(error.description.contains(fragment), "\(input): \(error)")
            if case .invalidAddress = error {} else { Issue.record("\(input): \(error) is not invalidAddress") }
        }
    }

    @Test func unixPathTooLong() {
        let path = "/tmp/" + String(repeating: "x", count: 200)
        #expect(throws: GNetError.self) { try ListenAddress(parsing: "unix://\(path)") }
    }

    @Test func udpAddresses() throws {
        let v4 = try ListenAddress(parsing: "udp://127.0.0.1:9001")
        #expect(v4.network == .udp && v4.network.isDatagram && v4.address.port == 9001 && v4.address.family == .ipv4)
        #expect(v4.description == "udp://127.0.0.1:9001")
        let v6 = try ListenAddress(parsing: "udp6://[::1]:0")
        #expect(v6.network == .udp6 && v6.address.family == .ipv6 && v6.description == "udp6://[::1]:0")
        let any4 = try ListenAddress(parsing: "udp4://:53")
        #expect(any4.address.host == "0.0.0.0" && any4.address.port == 53)
        #expect(throws: GNetError.self) { try ListenAddress(parsing: "udp4://[::1]:9000") }
        #expect(throws: GNetError.self) { try ListenAddress(parsing: "udp6://127.0.0.1:9000") }
        #expect(!Network.tcp.isDatagram && !Network.unix.isDatagram)
    }

    @Test func unixDatagramAddresses() throws {
        let a = try ListenAddress(parsing: "unixgram:///tmp/g.sock")
        #expect(a.network == .unixgram && a.network.isDatagram && a.network.isUnix && a.address.host == "/tmp/g.sock")
        #expect(a.description == "unixgram:///tmp/g.sock")
        #expect(throws: GNetError.unsupportedNetwork("unixpacket")) { try ListenAddress(parsing: "unixpacket:///tmp/p.sock") }
    }

    @Test func socketAddressParts() throws {
        let v4 = try #require(SocketAddress(ipAddress: "10.1.2.3", port: 443))
        #expect(v4.family == .ipv4 && v4.host == "10.1.2.3" && v4.port == 443)
        let v6 = try #require(SocketAddress(ipAddress: "fe80::1", port: 8))
        #expect(v6.family == .ipv6 && v6.host == "fe80::1" && v6.port == 8)
        #expect(SocketAddress(ipAddress: "not an ip", port: 1) == nil)
        #expect(SocketAddress(ipAddress: "127.0.0.1", port: 70000) == nil)
        #expect(v4 == SocketAddress(ipAddress: "10.1.2.3", port: 443))
        #expect(v4 != SocketAddress(ipAddress: "10.1.2.3", port: 444))
    }
}
