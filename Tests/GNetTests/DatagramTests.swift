import GNet
import GNetConformance
import GNetLocks
import Glibc
import Testing

/// Datagram options and addresses the conformance suite does not cover: option checks, a
/// refused dial, and multicast (which needs an interface with multicast on, so it is skipped,
/// visibly, where there is none).
@Suite("Datagrams", .serialized)
struct DatagramTests {
    struct Echo: EventHandler {
        let seen: Locked<[SocketAddress?]>
        func onTraffic(_ c: Connection) -> Action {
            seen.withLock { $0.append(c.listenerAddress) }
            _ = try? c.next { try c.write($0) }
            return .none
        }
    }

    @Test("datagramBatchSize must be from 1 to 1024", arguments: [0, -1, 1025])
    func badBatchSize(_ n: Int) {
        var o = Options()
        o.datagramBatchSize = n
        #expect(throws: GNetError.invalidOption(name: "datagramBatchSize", reason: "must be from 1 to 1024, got \(n)")) {
            try o.validate()
        }
    }

    @Test func unknownMulticastInterfaceFailsTheStart() throws {
        var o = Options()
        o.multicastInterface = "no-such-interface0"
        let engine = try Engine(handler: Silent(), addresses: ["udp://127.0.0.1:0"], options: o)
        #expect(throws: GNetError.invalidOption(name: "multicastInterface", reason: "no network interface is called 'no-such-interface0'")) {
            try engine.start()
        }
    }

    /// A layer factory that is never used: the engine must refuse before any connection.
    struct UnusedLayers: ConnectionLayerFactory {
        func makeLayer(accepted: Bool, serverName: String?) throws -> any ConnectionLayer {
            throw GNetError.misuse("not for this test")
        }
    }

    @Test func tlsWithDatagramAddressesIsRefused() {
        var o = Options()
        o.layerFactory = UnusedLayers()
        #expect(throws: GNetError.self) { try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], options: o) }
        #expect(throws: Never.self) { try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"], options: o) }
    }

    /// A link-local group (`ff02::/16`) is joined on the interface its zone names, and the zone
    /// stays in the address's description. Loopback joins but cannot carry multicast traffic,
    /// so the membership is read from the kernel (`/proc/net/igmp6`) rather than echoed.
    @Test func linkLocalGroupJoinedOnItsZone() throws {
        let group = String(0x7000 + Int(getpid() % 0xfff), radix: 16)
        let engine = try Engine(handler: Silent(), addresses: ["udp6://[ff02::\(group)%lo]:0"])
        try engine.start()
        defer { engine.stop(); engine.wait() }
        #expect(engine.addresses[0].host == "ff02::\(group)%lo", "\(engine.addresses[0])")
        #expect(engine.addresses[0].scopeID == if_nametoindex("lo"))
        let f = try #require(fopen("/proc/net/igmp6", "r"))
        defer { fclose(f) }
        // "1    lo              ff0200000000000000000000000070ab     1 00000004 0"
        let hex = "ff02" + String(repeating: "0", count: 28 - group.count) + group
        var onLoopback = false
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), f) != nil {
            let fields = String(nulTerminated: line).split(separator: " ", omittingEmptySubsequences: true)
            if fields.count > 2 && fields[1] == "lo" && fields[2] == hex { onLoopback = true }
        }
        #expect(onLoopback, "no membership of ff02::\(group) on lo in /proc/net/igmp6")
    }

    /// Greets with a datagram too large for UDP (65,507 bytes at most), then records closes.
    final class OversizedGreeting: EventHandler {
        let closes = Locked(0)
        func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) { ([UInt8](repeating: 1, count: 70_000), .none) }
        func onClose(_ c: Connection, error: (any Error)?) -> Action {
            closes.withLock { $0 += 1 }
            return .none
        }
    }

    /// A dialled socket's `onOpen` output that the kernel refuses (EMSGSIZE) without the peer
    /// being gone is counted in `unsentDatagrams`, and the connection serves on.
    @Test func refusedOnOpenDatagramIsCounted() async throws {
        let handler = OversizedGreeting()
        let engine = try Engine(handler: handler, addresses: ["tcp://127.0.0.1:0"])
        try engine.start()
        defer { engine.stop(); engine.wait() }
        let handle = try await engine.dial("udp://127.0.0.1:9")
        #expect(engine.unsentDatagrams == 1)
        #expect(handler.closes.withLock { $0 } == 0)
        try await handle.close()
        #expect(handler.closes.withLock { $0 } == 1)
    }

    /// A dialled UDP socket connects at once (nothing need listen) and is a datagram
    /// connection; with a layer (TLS) the dial is refused: DTLS is not supported.
    @Test func diallingUDP() async throws {
        let engine = try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"])
        try engine.start()
        defer { engine.stop(); engine.wait() }
        let handle = try await engine.dial("udp://127.0.0.1:9")
        #expect(handle.isDatagram && handle.peer == SocketAddress(ipAddress: "127.0.0.1", port: 9))
        try await handle.close()
        let refused = Locked<Bool?>(nil)
        engine.dial("udp://127.0.0.1:9", timeout: .seconds(1), on: nil, context: nil, layer: UnusedLayers(), serverName: nil) { r in
            guard case .failure(let e) = r, case GNetError.invalidAddress = e else {
                refused.withLock { $0 = false }
                return
            }
            refused.withLock { $0 = true }
        }
        #expect(refused.withLock { $0 } == true) // refused at once, on the calling thread
    }

    /// With `Options.edgeTriggered` the datagram socket is still watched level-triggered: a
    /// burst larger than one batch is drained, readiness after readiness.
    @Test func edgeTriggeredEngineDrainsDatagramBursts() throws {
        var o = Options()
        o.poller = .epoll
        o.edgeTriggered = true
        o.datagramBatchSize = 2
        let engine = try Engine(handler: Echo(seen: Locked([])), addresses: ["udp://127.0.0.1:0"], options: o)
        try engine.start()
        defer { engine.stop(); engine.wait() }
        let client = try UDPClient()
        for round in 0..<10 {
            for i in 0..<16 { try client.send(patternBytes(10 + i, seed: UInt64(round)), to: engine.addresses[0]) }
            var sizes: [Int] = []
            for _ in 0..<16 { sizes.append(try client.receive("an echo of round \(round)").bytes.count) }
            #expect(sizes.sorted() == Array(10..<26), "round \(round): echo sizes \(sizes.sorted())")
        }
    }

    /// An interface that is up, has multicast on and is not loopback (`/sys/class/net`).
    static let multicastInterface: String? = {
        guard let d = opendir("/sys/class/net") else { return nil }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            guard !name.hasPrefix("."), name != "lo", let f = fopen("/sys/class/net/\(name)/flags", "r") else { continue }
            var buf = [CChar](repeating: 0, count: 32)
            fgets(&buf, 32, f)
            fclose(f)
            let text = String(nulTerminated: buf).filter(\.isHexDigit).dropFirst() // "0x1003" → "x1003" → "1003"
            guard let flags = Int(text, radix: 16) else { continue }
            let up = 0x1, multicast = 0x1000
            if flags & up != 0 && flags & multicast != 0 { return name }
        }
        return nil
    }()

    /// Whether `interface` has a global-scope IPv6 address (`/proc/net/if_inet6`, scope 00).
    static func hasGlobalIPv6(_ interface: String) -> Bool {
        guard let f = fopen("/proc/net/if_inet6", "r") else { return false }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 256)
        while fgets(&buf, 256, f) != nil {
            let fields = String(nulTerminated: buf).split(separator: " ")
            if fields.count >= 6, fields[3] == "00", fields[5].hasPrefix(interface) { return true }
        }
        return false
    }

    static let ipv6Multicast = multicastInterface.map(hasGlobalIPv6) ?? false

    /// A udp address that is a multicast group is joined on `Options.multicastInterface`: a
    /// datagram sent to the group (looped back by the sender's host) is echoed to its sender.
    @Test(.enabled(if: multicastInterface != nil, "needs an up, multicast-capable, non-loopback interface"))
    func ipv4MulticastGroupJoined() throws {
        try multicastEcho(group: "239.255.77.\(1 + getpid() % 200)", ipv6: false)
    }

    /// The same with an IPv6 group of site scope (ff15::/16, transient).
    @Test(.enabled(if: ipv6Multicast, "needs a multicast-capable interface with a global IPv6 address"))
    func ipv6MulticastGroupJoined() throws {
        try multicastEcho(group: "ff15::77:\(1 + getpid() % 200)", ipv6: true)
    }

    func multicastEcho(group: String, ipv6: Bool) throws {
        let interface = Self.multicastInterface!
        let ifindex = if_nametoindex(interface)
        let seen = Locked<[SocketAddress?]>([])
        var o = Options()
        o.multicastInterface = interface
        let url = ipv6 ? "udp6://[\(group)]:0" : "udp://\(group):0"
        let engine = try Engine(handler: Echo(seen: seen), addresses: [url], options: o)
        try engine.start()
        defer { engine.stop(); engine.wait() }
        let server = engine.addresses[0]
        #expect(server.host == group)

        let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var on: Int32 = 1
        if ipv6 {
            var index = Int32(ifindex)
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, &index, 4)
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_MULTICAST_LOOP, &on, 4)
        } else {
            var index = ip_mreqn()
            index.imr_ifindex = Int32(ifindex)
            setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &index, socklen_t(MemoryLayout<ip_mreqn>.size))
            setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, &on, 4)
        }
        var tv = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let message = Array("to the group".utf8)
        let sent = message.withUnsafeBytes { b in server.withUnsafeSockaddr { sendto(fd, b.baseAddress, b.count, 0, $0, $1) } }
        #expect(sent == message.count)
        var reply = [UInt8](repeating: 0, count: 100)
        let n = recv(fd, &reply, reply.count, 0)
        #expect(n == message.count && Array(reply[..<max(n, 0)]) == message, "no echo from the group \(group) (recv returned \(n))")
        #expect(seen.withLock { $0 } == [server], "listenerAddress should be the group address")
    }
}
