import GNet
import GNetLocks
import Glibc
import Poller

/// What the README promises about socket options and balancing, read back from the kernel:
/// each option in `Options` (and `Connection.setLinger`) as `getsockopt` sees it on the
/// server's accepted socket, and which loop each balancer gives each new connection.
///
/// Every scenario sets `reusePort = false` explicitly, so one shared acceptor does the
/// balancing whatever the default is.
enum SocketOptionScenarios {
    static let all: [Scenario] = [
        Scenario("socket-options.tcpNoDelay-on", .engine) { try await tcpNoDelay($0, on: true) },
        Scenario("socket-options.tcpNoDelay-off", .engine) { try await tcpNoDelay($0, on: false) },
        Scenario("socket-options.tcpKeepAlive", .engine, run: tcpKeepAlive),
        Scenario("socket-options.buffer-sizes", .engine, run: bufferSizes),
        Scenario("socket-options.setLinger", .engine, run: linger),
        Scenario("balancing.round-robin-alternates", .engine, run: roundRobin),
        Scenario("balancing.least-connections-fills-the-emptier-loop", .engine, run: leastConnections),
        Scenario("balancing.source-address-hash-is-stable", .engine, run: sourceAddressHash),
        Scenario("balancing.least-connections-burst", .engine, run: leastConnectionsBurst),
    ]

    // MARK: Options read back with getsockopt

    static func tcpNoDelay(_ kind: PollerKind, on: Bool) async throws -> Trace? {
        let seen = try await optionsOnAcceptedSocket(kind, configure: { $0.tcpNoDelay = on }) { fd in
            ["TCP_NODELAY": try intOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY)]
        }
        let value = try requireValue(seen["TCP_NODELAY"], "TCP_NODELAY")
        try expect((value != 0) == on, "tcpNoDelay = \(on), but the accepted socket has TCP_NODELAY \(value)")
        return nil
    }

    static func tcpKeepAlive(_ kind: PollerKind) async throws -> Trace? {
        // 37 s: not a default of the kernel's (7200 s idle, 75 s interval) nor of ours.
        let seen = try await optionsOnAcceptedSocket(kind, configure: { $0.tcpKeepAlive = .seconds(37) }) { fd in
            [
                "SO_KEEPALIVE": try intOption(fd, SOL_SOCKET, SO_KEEPALIVE),
                "TCP_KEEPIDLE": try intOption(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE),
                "TCP_KEEPINTVL": try intOption(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL),
            ]
        }
        try expect(seen["SO_KEEPALIVE"] == 1, "tcpKeepAlive = 37 s, but SO_KEEPALIVE is \(seen["SO_KEEPALIVE"] ?? -1)")
        try expect(seen["TCP_KEEPIDLE"] == 37, "tcpKeepAlive = 37 s, but TCP_KEEPIDLE is \(seen["TCP_KEEPIDLE"] ?? -1)")
        // As in gnet, the probe interval is the idle time.
        try expect(seen["TCP_KEEPINTVL"] == 37, "tcpKeepAlive = 37 s, but TCP_KEEPINTVL is \(seen["TCP_KEEPINTVL"] ?? -1)")

        let off = try await optionsOnAcceptedSocket(kind, configure: { $0.tcpKeepAlive = nil }) { fd in
            ["SO_KEEPALIVE": try intOption(fd, SOL_SOCKET, SO_KEEPALIVE)]
        }
        try expect(off["SO_KEEPALIVE"] == 0, "tcpKeepAlive = nil, but SO_KEEPALIVE is \(off["SO_KEEPALIVE"] ?? -1)")

        // The largest value Options.validate() lets through is one the kernel takes.
        let largest = try await optionsOnAcceptedSocket(kind, configure: { $0.tcpKeepAlive = .seconds(32_767) }) { fd in
            ["TCP_KEEPIDLE": try intOption(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE)]
        }
        try expect(largest["TCP_KEEPIDLE"] == 32_767,
                   "tcpKeepAlive = 32767 s (the largest accepted), but TCP_KEEPIDLE is \(largest["TCP_KEEPIDLE"] ?? -1)")
        return nil
    }

    static func bufferSizes(_ kind: PollerKind) async throws -> Trace? {
        let receive = 96 * 1024, send = 80 * 1024
        let seen = try await optionsOnAcceptedSocket(kind, configure: {
            $0.socketReceiveBuffer = receive
            $0.socketSendBuffer = send
        }) { fd in
            [
                "SO_RCVBUF": try intOption(fd, SOL_SOCKET, SO_RCVBUF),
                "SO_SNDBUF": try intOption(fd, SOL_SOCKET, SO_SNDBUF),
            ]
        }
        // socket(7): the kernel doubles the value set (for its bookkeeping), after capping it at
        // net.core.rmem_max / wmem_max.
        let rcv = 2 * min(receive, procSysValue("net/core/rmem_max") ?? receive)
        let snd = 2 * min(send, procSysValue("net/core/wmem_max") ?? send)
        try expect(seen["SO_RCVBUF"] == Int32(rcv),
                   "socketReceiveBuffer = \(receive): SO_RCVBUF should read \(rcv), reads \(seen["SO_RCVBUF"] ?? -1)")
        try expect(seen["SO_SNDBUF"] == Int32(snd),
                   "socketSendBuffer = \(send): SO_SNDBUF should read \(snd), reads \(seen["SO_SNDBUF"] ?? -1)")
        return nil
    }

    static func linger(_ kind: PollerKind) async throws -> Trace? {
        // Set and read back in onOpen; the last setting (nil) leaves the ordinary graceful close.
        let seen = try await optionsOnAcceptedSocket(kind, configure: { _ in }) { fd, c in
            var out: [String: Int32] = [:]
            for (label, timeout) in [("3s", Duration.seconds(3)), ("zero", .zero), ("nil", nil)] as [(String, Duration?)] {
                try c.setLinger(timeout)
                let l = try lingerOption(fd)
                out["\(label).onoff"] = l.l_onoff
                out["\(label).linger"] = l.l_linger
            }
            return out
        }
        let expected: [String: Int32] = [
            "3s.onoff": 1, "3s.linger": 3, "zero.onoff": 1, "zero.linger": 0, "nil.onoff": 0,
        ]
        for (key, value) in expected.sorted(by: { $0.key < $1.key }) {
            try expect(seen[key] == value, "setLinger: SO_LINGER \(key) should be \(value), is \(seen[key] ?? -1)")
        }
        return nil
    }

    /// Serves one connection on `kind` with `configure`d options, runs `read` on the accepted
    /// socket inside `onOpen`, and returns what it read (or throws what it failed with).
    static func optionsOnAcceptedSocket(
        _ kind: PollerKind,
        configure: @escaping (inout Options) -> Void,
        read: @escaping @Sendable (Int32) throws -> [String: Int32]
    ) async throws -> [String: Int32] {
        try await optionsOnAcceptedSocket(kind, configure: configure) { fd, _ in try read(fd) }
    }

    static func optionsOnAcceptedSocket(
        _ kind: PollerKind,
        configure: @escaping (inout Options) -> Void,
        read: @escaping @Sendable (Int32, Connection) throws -> [String: Int32]
    ) async throws -> [String: Int32] {
        let seen = Locked<Result<[String: Int32], any Error>?>(nil)
        let handler = ScriptedHandler(onOpen: { c, _ in
            let r = Result { try read(c.fd, c) }
            seen.withLock { $0 = r }
            return (nil, .none)
        })
        try await withEngine(kind, handler, configure: { o in
            o.reusePort = false
            configure(&o)
        }) { _, address in
            let client = try TestClient(address)
            try await eventually("onOpen") { seen.withLock { $0 } != nil }
            _ = client
        }
        return try requireValue(seen.withLock { $0 }, "what onOpen read").get()
    }

    // MARK: Balancing

    static func roundRobin(_ kind: PollerKind) async throws -> Trace? {
        let loops = 3
        let balancer = BalancingProbe(kind, loops: loops, .roundRobin)
        try await balancer.run { connect, _ in
            for _ in 0..<(3 * loops) { try await connect(nil) }
        }
        let order = balancer.loopsInOrder
        for (i, pair) in zip(order, order.dropFirst()).enumerated() {
            try expect(pair.1 == (pair.0 + 1) % loops,
                       "round robin over \(loops) loops: connection \(i + 1) went to loop \(pair.1) after loop \(pair.0); order \(order)")
        }
        for loop in 0..<loops {
            try expect(order.filter { $0 == loop }.count == 3, "round robin: loop \(loop) got \(order.filter { $0 == loop }.count) of 9; order \(order)")
        }
        return nil
    }

    static func leastConnections(_ kind: PollerKind) async throws -> Trace? {
        let balancer = BalancingProbe(kind, loops: 2, .leastConnections)
        try await balancer.run { connect, disconnect in
            // Two on each loop, opened one at a time.
            for _ in 0..<4 { try await connect(nil) }
            let first = balancer.loopsInOrder
            try expect(first.filter { $0 == 0 }.count == 2 && first.filter { $0 == 1 }.count == 2,
                       "least connections: four connections one at a time should split two and two, got \(first)")
            // Close both on loop 1: loop 0 holds two, loop 1 none. The next two must go to loop 1,
            // then the loops are even again.
            try await disconnect { $0 == 1 }
            for _ in 0..<2 { try await connect(nil) }
            let next = Array(balancer.loopsInOrder.suffix(2))
            try expect(next == [1, 1],
                       "least connections: with 2 open on loop 0 and 0 on loop 1, new connections went to loops \(next)")
        }
        return nil
    }

    /// Twenty clients connect at once: the acceptor must count a connection against its loop
    /// when it hands it over, not when that loop gets round to adopting it, or a burst all lands
    /// on one loop.
    static func leastConnectionsBurst(_ kind: PollerKind) async throws -> Trace? {
        let perLoop = Locked<[Int]>([0, 0])
        let handler = ScriptedHandler(onOpen: { c, _ in
            perLoop.withLock { $0[c.loopIndex] += 1 }
            return (nil, .none)
        })
        var clients: [TestClient] = []
        try await withEngine(kind, handler, configure: {
            $0.loops = 2
            $0.reusePort = false
            $0.loadBalancing = .leastConnections
        }) { _, address in
            for _ in 0..<20 { clients.append(try TestClient(address)) }
            try await eventually("20 connections") { handler.opened == 20 }
            let counts = perLoop.withLock { $0 }
            try expect(counts.allSatisfy { (8...12).contains($0) }, "least connections spread a burst of 20 as \(counts)")
            clients.removeAll()
            try await eventually("20 closes") { handler.closes == 20 }
        }
        return nil
    }

    static func sourceAddressHash(_ kind: PollerKind) async throws -> Trace? {
        // Loopback is all of 127/8 on Linux, so eight source addresses stand for eight clients.
        let hosts = (1...8).map { "127.0.0.\($0)" }
        let balancer = BalancingProbe(kind, loops: 3, .sourceAddressHash)
        try await balancer.run { connect, _ in
            for _ in 0..<3 {
                for host in hosts { try await connect(SocketAddress(ipAddress: host, port: 0)) }
            }
        }
        let order = balancer.loopsInOrder
        try expect(order.count == 3 * hosts.count, "expected \(3 * hosts.count) connections, saw \(order.count)")
        var loopOf: [String: Int] = [:]
        for (i, loop) in order.enumerated() {
            let host = hosts[i % hosts.count]
            if let earlier = loopOf[host] {
                try expect(loop == earlier, "source-address hash: \(host) went to loop \(earlier), then to loop \(loop)")
            }
            loopOf[host] = loop
        }
        try expect(Set(loopOf.values).count > 1,
                   "source-address hash: eight source addresses all went to one loop: \(loopOf.sorted { $0.key < $1.key })")
        return nil
    }
}

/// Opens connections one at a time to an engine with `loops` loops and a shared acceptor using
/// `balancing`, recording the loop (`Connection.loopIndex`) each one lands on.
final class BalancingProbe: Sendable {
    typealias Connect = (SocketAddress?) async throws -> Void
    typealias Disconnect = ((Int) -> Bool) async throws -> Void

    let kind: PollerKind
    let loops: Int
    let balancing: LoadBalancing
    /// Connection number (in `onOpen` order) to its loop.
    private let loopOfConnection = Locked<[Int: Int]>([:])

    init(_ kind: PollerKind, loops: Int, _ balancing: LoadBalancing) {
        self.kind = kind
        self.loops = loops
        self.balancing = balancing
    }

    /// The loop of each connection, in the order they were opened.
    var loopsInOrder: [Int] { loopOfConnection.withLock { $0 }.sorted { $0.key < $1.key }.map(\.value) }

    /// Runs `body` with `connect(source)`, which opens a connection (from `source`, when given)
    /// and waits for its `onOpen`, and `disconnect(where)`, which closes every open connection
    /// whose loop matches and waits for their `onClose`.
    func run(_ body: (Connect, Disconnect) async throws -> Void) async throws {
        let handler = ScriptedHandler(onOpen: { [loopOfConnection] c, id in
            loopOfConnection.withLock { $0[id] = c.loopIndex }
            return (nil, .none)
        })
        let (loops, balancing) = (self.loops, self.balancing)
        var clients: [(client: TestClient, loop: Int)] = []
        try await withEngine(kind, handler, configure: { o in
            o.loops = loops
            o.reusePort = false
            o.loadBalancing = balancing
        }) { _, address in
            let connect: Connect = { source in
                let n = handler.opened + 1
                let client = try TestClient(address, from: source)
                try await eventually("onOpen of connection \(n)") { handler.opened == n }
                clients.append((client, self.loopsInOrder[n - 1]))
            }
            let disconnect: Disconnect = { matches in
                let closing = clients.filter { matches($0.loop) }.count
                let closesBefore = handler.closes
                clients.removeAll { matches($0.loop) }
                try await eventually("\(closing) onClose") { handler.closes == closesBefore + closing }
            }
            try await body(connect, disconnect)
            clients.removeAll()
        }
    }
}

/// A socket option as `getsockopt` reads it into a `Value` (starting from `zero`).
func socketOption<Value: BitwiseCopyable>(_ fd: Int32, _ level: Int32, _ name: Int32, _ zero: Value) throws -> Value {
    var value = zero
    var length = socklen_t(MemoryLayout<Value>.size)
    guard getsockopt(fd, level, name, &value, &length) == 0 else {
        throw SystemError("getsockopt(level \(level), option \(name))", errno: errno)
    }
    return value
}

func intOption(_ fd: Int32, _ level: Int32, _ name: Int32) throws -> Int32 {
    try socketOption(fd, level, name, Int32(0))
}

func lingerOption(_ fd: Int32) throws -> linger {
    try socketOption(fd, SOL_SOCKET, SO_LINGER, linger())
}

/// A number from `/proc/sys/<path>`, or nil when it cannot be read.
func procSysValue(_ path: String) -> Int? {
    guard let f = fopen("/proc/sys/\(path)", "r") else { return nil }
    defer { fclose(f) }
    var buffer = [UInt8](repeating: 0, count: 64)
    let n = fread(&buffer, 1, buffer.count, f)
    return Int(String(decoding: buffer[..<n], as: UTF8.self).filter(\.isNumber))
}
