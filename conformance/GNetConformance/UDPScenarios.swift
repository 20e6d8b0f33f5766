import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// Datagram sockets (`udp://`) on each backend: one `onTraffic` per datagram, never split or
/// merged, replies and `sendTo`, truncation reported, several loops, mixed listeners, errors
/// that must not break the socket, and stopping while datagrams flow.
enum UDPScenarios {
    static let all: [Scenario] = [
        Scenario("udp.echo-10000-random-sizes", .engine, run: echoRandomSizes),
        Scenario("udp.sender-and-listener-address", .engine, run: senderAndListener),
        Scenario("udp.each-write-one-datagram", .engine, run: eachWriteOneDatagram),
        Scenario("udp.truncated-reported", .engine, run: truncatedReported),
        Scenario("udp.mixed-tcp-udp-unix", .engine, run: mixedListeners),
        Scenario("udp.two-loops-reuseport", .engine, run: twoLoops),
        Scenario("udp.refused-replies-keep-serving", .engine, run: refusedReplies),
        Scenario("udp.oversized-sends-counted", .engine, run: oversizedSends),
        Scenario("udp.handle", .engine, run: handles),
        Scenario("udp.stop-while-flowing", .engine, run: stopWhileFlowing),
        Scenario("udp.batch-of-one-drains-bursts", .engine, run: batchOfOne),
        Scenario("udp.flood-does-not-starve-tcp", .engine, run: floodDoesNotStarve),
        Scenario("udp.pause-reading", .engine, run: pauseReading),
        Scenario("unixgram.echo-senders-and-path", .engine, run: unixDatagrams),
    ]

    /// Echoes every datagram whole.
    static func echo() -> DatagramHandler {
        DatagramHandler { c in
            _ = try? c.next { try c.write($0) }
            return .none
        }
    }

    /// Datagram `i` of the echo scenario: a slice of a random pool, its first bytes the index.
    /// Sizes: 0 for every 97th, up to 60,000 for every 10th, up to 1,500 otherwise.
    struct Datagrams {
        let pool = patternBytes(1 << 17, seed: 42)
        var sizes: [Int] = []

        init(count: Int) {
            var x: UInt64 = 0x9e37_79b9_7f4a_7c15
            for i in 0..<count {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                sizes.append(i % 97 == 0 ? 0 : i % 10 == 0 ? Int(x % 60_001) : Int(x % 1_501))
            }
        }

        func bytes(_ i: Int) -> [UInt8] {
            let offset = (i &* 7919) % (1 << 16)
            var b = Array(pool[offset..<offset + sizes[i]])
            for k in 0..<min(4, b.count) { b[k] = UInt8(truncatingIfNeeded: i >> (8 * k)) }
            return b
        }
    }

    static func echoRandomSizes(_ kind: PollerKind) async throws -> Trace? {
        let receiveBuffer = Locked<Int32?>(nil)
        let handler = DatagramHandler { c in
            if receiveBuffer.withLock({ $0 }) == nil {
                var v: Int32 = 0
                var len = socklen_t(4)
                getsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &v, &len)
                receiveBuffer.withLock { $0 = v }
            }
            _ = try? c.next { try c.write($0) }
            return .none
        }
        // A large server receive buffer (the kernel clamps it to net.core.rmem_max), so a burst
        // waits in it rather than being dropped while the loop is busy answering.
        try await withDatagramEngine(kind, handler, configure: { $0.socketReceiveBuffer = 4 << 20 }) { engine in
            let server = engine.addresses[0]
            let dropsBefore = udpReceiveBufferErrors()
            let lost: @Sendable () -> String = { "\(udpReceiveBufferErrors() - dropsBefore) datagrams dropped by full receive buffers on this host meanwhile" }
            try await onThread(timeout: .seconds(120), "10,000 datagrams") {
                let d = Datagrams(count: 10_000)
                let client = try UDPClient()
                // One by one.
                for i in 0..<5_000 {
                    let sent = d.bytes(i)
                    try client.send(sent, to: server)
                    let (got, from) = try client.receive("the echo of datagram \(i) (\(sent.count) bytes; \(lost()))")
                    try expect(from == server, "datagram \(i)'s echo came from \(from), not \(server)")
                    try expect(sameBytes(got, sent),
                        "datagram \(i): sent \(sent.count) bytes, got back \(got.count) (merged, split or corrupted; first difference at \(firstDifference(got, sent)))")
                }
                // In bursts: up to 32 datagrams or 128 KiB in flight, which loopback buffers hold.
                var i = 5_000
                while i < 10_000 {
                    var outstanding: [Int] = []
                    var bytes = 0
                    while i < 10_000 && outstanding.count < 32 && bytes < 128 << 10 {
                        try client.send(d.bytes(i), to: server)
                        outstanding.append(i)
                        bytes += d.sizes[i]
                        i += 1
                    }
                    let burst = outstanding
                    for _ in burst {
                        let (got, _) = try client.receive(
                            "an echo of the burst \(burst.first!)...\(burst.last!) (\(outstanding.count) still missing; \(lost()))")
                        guard let k = outstanding.firstIndex(where: { d.sizes[$0] == got.count && sameBytes(d.bytes($0), got) }) else {
                            throw ConformanceFailure("an echo of \(got.count) bytes in the burst \(burst.first!)...\(burst.last!) matches no datagram sent (merged, split or corrupted)")
                        }
                        outstanding.remove(at: k)
                    }
                }
            }
            try expect(handler.opens == 0 && handler.closes == 0, "datagrams caused onOpen/onClose")
            let rcvbuf = receiveBuffer.withLock { $0 } ?? 0
            try expect(rcvbuf > 212_992 * 2 || rcvbuf == Int32(clamping: 2 * readRmemMax()),
                       "SO_RCVBUF of the udp socket is \(rcvbuf): Options.socketReceiveBuffer was not applied")
        }
        return nil
    }

    /// `RcvbufErrors` of /proc/net/snmp: datagrams the host dropped for a full receive buffer.
    static func udpReceiveBufferErrors() -> Int {
        guard let f = fopen("/proc/net/snmp", "r") else { return 0 }
        defer { fclose(f) }
        var lines: [[Substring]] = []
        var buf = [CChar](repeating: 0, count: 1024)
        while fgets(&buf, 1024, f) != nil {
            let line = String(nulTerminated: buf)
            if line.hasPrefix("Udp:") { lines.append(line.split(separator: " ")) }
        }
        guard lines.count >= 2, let k = lines[0].firstIndex(of: "RcvbufErrors"), k < lines[1].count else { return 0 }
        return Int(String(lines[1][k].filter(\.isNumber))) ?? 0
    }

    /// net.core.rmem_max, the most SO_RCVBUF grants an unprivileged socket.
    static func readRmemMax() -> Int {
        guard let f = fopen("/proc/sys/net/core/rmem_max", "r") else { return 0 }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 64)
        fgets(&buf, 64, f)
        return Int(String(String(nulTerminated: buf).filter(\.isNumber))) ?? 0
    }

    static func senderAndListener(_ kind: PollerKind) async throws -> Trace? {
        struct Seen: Sendable {
            var bytes: Int
            var remote: SocketAddress?
            var listener: SocketAddress?
            var network: Network
            var isDatagram: Bool
            var idleMisuse: Bool
        }
        let seen = Locked<[Seen]>([])
        // Consumes one byte and answers it: the rest of the datagram is dropped, not kept.
        let handler = DatagramHandler { c in
            var idleMisuse = false
            do { try c.setIdleTimeout(.seconds(1)) } catch GNetError.misuse { idleMisuse = true } catch {}
            seen.withLock {
                $0.append(Seen(bytes: c.inboundBuffered, remote: c.remoteAddress, listener: c.listenerAddress,
                               network: c.network, isDatagram: c.isDatagram, idleMisuse: idleMisuse))
            }
            _ = try? c.next(1) { try c.write($0) }
            return .none
        }
        for (address, ipv6) in [("udp://127.0.0.1:0", false), ("udp6://[::1]:0", true)] {
            seen.withLock { $0 = [] }
            try await withDatagramEngine(kind, handler, addresses: [address]) { engine in
                let server = engine.addresses[0]
                let bound = engine.boundAddresses[0]
                try expect(bound.network == (ipv6 ? .udp6 : .udp) && bound.description.hasPrefix(ipv6 ? "udp6://[::1]:" : "udp://127.0.0.1:"),
                           "bound address reads \(bound)")
                try await onThread("sender and listener") {
                    let client = try UDPClient(ipv6: ipv6)
                    try client.send("hello", to: server)
                    let (a, fromA) = try client.receive("the answer to 'hello'")
                    try client.send("xyz", to: server)
                    let (b, _) = try client.receive("the answer to 'xyz'")
                    try expect(a == Array("h".utf8) && b == Array("x".utf8), "answers \(a) \(b), expected 'h' then 'x'")
                    try expect(fromA == server, "answer came from \(fromA), not the server's \(server)")
                    let s = seen.withLock { $0 }
                    try expect(s.map(\.bytes) == [5, 3], "onTraffic saw \(s.map(\.bytes)) bytes; expected [5, 3] (one datagram each, the unconsumed rest dropped)")
                    for x in s {
                        try expect(x.remote == client.localAddress, "remoteAddress \(x.remote.map(\.description) ?? "nil"), the sender is \(client.localAddress)")
                        try expect(x.listener == server, "listenerAddress \(x.listener.map(\.description) ?? "nil"), the socket is \(server)")
                        try expect(x.network == bound.network && x.isDatagram, "network \(x.network), isDatagram \(x.isDatagram)")
                        try expect(x.idleMisuse, "setIdleTimeout on a datagram connection did not throw GNetError.misuse")
                    }
                }
                // The port is taken: a second engine (one loop, no SO_REUSEPORT) must not share it.
                let second = try Engine(handler: echo(), addresses: [bound.description])
                do {
                    try second.start()
                    second.stop()
                    second.wait()
                    throw ConformanceFailure("a second engine started on \(bound), which is in use")
                } catch GNetError.addressInUse {}
            }
        }
        return nil
    }

    static func eachWriteOneDatagram(_ kind: PollerKind) async throws -> Trace? {
        let third = Locked<SocketAddress?>(nil)
        // Per datagram: five writes of each kind, then sendTo a third socket.
        let handler = DatagramHandler { c in
            c.discard(c.inboundBuffered)
            do {
                try c.write("a")
                try c.write([UInt8]("bb".utf8))
                try c.write([UInt8]())
                try c.writev([[99], [99, 99]])
                try c.write(reservingCapacity: 100) { buf in
                    for k in 0..<4 { buf[k] = 100 }
                    return 4
                }
                if let t = third.withLock({ $0 }) { try c.sendTo("e".utf8, address: t) }
            } catch {
                return .none
            }
            return .none
        }
        try await withDatagramEngine(kind, handler) { engine in
            let server = engine.addresses[0]
            try await onThread("writes") {
                let client = try UDPClient()
                let other = try UDPClient()
                third.withLock { $0 = other.localAddress }
                for round in 0..<3 {
                    try client.send("go", to: server)
                    var got: [String] = []
                    for _ in 0..<5 { got.append(String(decoding: try client.receive("round \(round)'s answers").bytes, as: UTF8.self)) }
                    try expect(got == ["a", "bb", "", "ccc", "dddd"], "round \(round): datagrams \(got); expected a, bb, (empty), ccc, dddd")
                    let (e, from) = try other.receive("the datagram sent to the third socket")
                    try expect(e == Array("e".utf8) && from == server, "third socket got \(e) from \(from)")
                }
            }
        }
        return nil
    }

    static func truncatedReported(_ kind: PollerKind) async throws -> Trace? {
        let delivered = Locked<[Int]>([])
        let handler = DatagramHandler { c in
            delivered.withLock { $0.append(c.inboundBuffered) }
            _ = try? c.next { try c.write($0) }
            return .none
        }
        try await withDatagramEngine(kind, handler, configure: { $0.readBufferCapacity = 1024 }) { engine in
            let server = engine.addresses[0]
            let client = try UDPClient()
            var truncatedSoFar = 0
            for size in [1024, 1025, 10, 2000, 65_000, 512] {
                let payload = patternBytes(size, seed: UInt64(size))
                try await onThread("send \(size)") { try client.send(payload, to: server) }
                if size <= 1024 {
                    let (got, _) = try await onThread("echo of \(size)") { try client.receive("the echo of \(size) bytes") }
                    try expect(sameBytes(got, payload), "\(size) bytes fit the 1024-byte slot but came back as \(got.count)")
                } else {
                    truncatedSoFar += 1
                    let want = truncatedSoFar
                    try await eventually("the \(size)-byte datagram reported truncated") { handler.truncated.count == want }
                }
            }
            let reports = handler.truncated
            try expect(reports.map(\.length) == [1025, 2000, 65_000], "truncation reports \(reports.map(\.length)); expected [1025, 2000, 65000]")
            try expect(reports.allSatisfy { $0.from == client.localAddress }, "a truncation report names another sender")
            try expect(engine.truncatedDatagrams == 3, "engine.truncatedDatagrams is \(engine.truncatedDatagrams), expected 3")
            try expect(delivered.withLock { $0 } == [1024, 10, 512], "onTraffic saw \(delivered.withLock { $0 }); truncated datagrams must not reach it")
            try expect(!client.receivesAny(within: .milliseconds(50)), "something was sent back for a truncated datagram")
        }
        return nil
    }

    static func mixedListeners(_ kind: PollerKind) async throws -> Trace? {
        let path = "/tmp/gnet-conformance-udp-\(getpid()).sock"
        // Answers "network|listener|" and the input.
        let handler = DatagramHandler { c in
            var reply = Array("\(c.network)|\(c.listenerAddress.map(\.description) ?? "?")|".utf8)
            if !c.isDatagram {
                do { try c.sendTo("x".utf8, address: c.listenerAddress!) } catch GNetError.misuse {} catch { reply += "sendTo-not-misuse|".utf8 }
            }
            c.withInbound { span in span.withUnsafeBytes { reply += $0 } }
            c.discard(c.inboundBuffered)
            try? c.write(reply)
            return .none
        }
        try await withDatagramEngine(kind, handler, addresses: ["tcp://127.0.0.1:0", "udp://127.0.0.1:0", "unix://\(path)"]) { engine in
            let (tcp, udp, unix) = (engine.addresses[0], engine.addresses[1], engine.addresses[2])
            try expect(engine.boundAddresses.map(\.network) == [.tcp, .udp, .unix], "bound networks \(engine.boundAddresses)")
            try await onThread("three listeners at once") {
                let t = try TestClient(tcp)
                let u = try UDPClient()
                let x = try TestClient(unix)
                for round in 0..<5 {
                    try t.send("t\(round)")
                    try u.send("u\(round)", to: udp)
                    try x.send("x\(round)")
                    let wantT = "tcp|\(tcp)|t\(round)", wantU = "udp|\(udp)|u\(round)", wantX = "unix|\(unix)|x\(round)"
                    let gotT = String(decoding: try t.receive(exactly: wantT.utf8.count), as: UTF8.self)
                    let gotU = String(decoding: try u.receive("the udp answer").bytes, as: UTF8.self)
                    let gotX = String(decoding: try x.receive(exactly: wantX.utf8.count), as: UTF8.self)
                    try expect(gotT == wantT && gotU == wantU && gotX == wantX, "answers [\(gotT)] [\(gotU)] [\(gotX)]; expected [\(wantT)] [\(wantU)] [\(wantX)]")
                }
            }
            try await eventually("both stream connections closed") { handler.closes == 2 }
            try expect(handler.opens == 2, "onOpen ran \(handler.opens) times; only the tcp and unix connections open")
        }
        return nil
    }

    static func twoLoops(_ kind: PollerKind) async throws -> Trace? {
        let loopsSeen = Locked<Set<Int>>([])
        let handler = DatagramHandler { c in
            loopsSeen.withLock { _ = $0.insert(c.loopIndex) }
            _ = try? c.next { try c.write($0) }
            return .none
        }
        try await withDatagramEngine(kind, handler, configure: { $0.loops = 2 }) { engine in
            let server = engine.addresses[0]
            try await onThread("64 senders") {
                // SO_REUSEPORT spreads datagrams by a hash of the sender: 64 senders all landing
                // on one loop has a chance of 2^-63.
                for i in 0..<64 {
                    let client = try UDPClient()
                    let msg = patternBytes(100 + i, seed: UInt64(i))
                    try client.send(msg, to: server)
                    let (got, from) = try client.receive("the echo for sender \(i)")
                    try expect(sameBytes(got, msg) && from == server, "sender \(i): echo differs or came from \(from)")
                }
            }
            let seen = loopsSeen.withLock { $0 }
            try expect(seen == [0, 1], "datagrams were served by loops \(seen.sorted()); with two loops both must serve")
        }
        return nil
    }

    static func refusedReplies(_ kind: PollerKind) async throws -> Trace? {
        // A port with nothing behind it: bound, then closed.
        let closedPort: SocketAddress = try {
            let probe = try UDPClient()
            return probe.localAddress
        }()
        let handler = DatagramHandler { c in
            try? c.sendTo("to nobody".utf8, address: closedPort) // ICMP port unreachable comes back
            _ = try? c.next { try c.write($0) }
            return .none
        }
        try await withDatagramEngine(kind, handler) { engine in
            let server = engine.addresses[0]
            try await onThread("replies to closed ports") {
                for i in 0..<20 {
                    let gone = try UDPClient()
                    try gone.send("bye \(i)", to: server) // the echo meets a closed port
                }
            }
            try await Task.sleep(for: .milliseconds(100))
            let before = cpuTime(ofThreadsNamed: "gnet-loop")
            try await Task.sleep(for: .milliseconds(300))
            let used = cpuTime(ofThreadsNamed: "gnet-loop") - before
            try expect(used < .milliseconds(100), "the loop used \(used) of CPU in 300 ms after refused replies (spinning?)")
            try await onThread("echo after refusals") {
                let client = try UDPClient()
                for i in 0..<50 {
                    let msg = patternBytes(200, seed: UInt64(i))
                    try client.send(msg, to: server)
                    let (got, _) = try client.receive("echo \(i) after refused replies")
                    try expect(sameBytes(got, msg), "echo \(i) differs after refused replies")
                }
            }
        }
        return nil
    }

    static func oversizedSends(_ kind: PollerKind) async throws -> Trace? {
        // Per datagram: a 70,000-byte answer (more than UDP carries: EMSGSIZE), then the echo.
        let handler = DatagramHandler { c in
            _ = try? c.write(reservingCapacity: 70_000) { $0.count }
            _ = try? c.next { try c.write($0) }
            return .none
        }
        let kept = Locked<ConnectionHandle?>(nil)
        let handleHandler = DatagramHandler { c in
            kept.withLock { $0 = c.handle }
            c.discard(c.inboundBuffered)
            return .none
        }
        try await withDatagramEngine(kind, handler) { engine in
            let server = engine.addresses[0]
            try await onThread("oversized answers") {
                let client = try UDPClient()
                for i in 0..<10 {
                    try client.send("n\(i)", to: server)
                    let (got, _) = try client.receive("the echo \(i) after an oversized answer")
                    try expect(got == Array("n\(i)".utf8), "echo \(i) was \(got)")
                }
            }
            try await eventually("10 unsent datagrams counted") { engine.unsentDatagrams == 10 }
        }
        // Outside a batch the refusal is the write's own error.
        try await withDatagramEngine(kind, handleHandler) { engine in
            let client = try UDPClient()
            try await onThread("one datagram") { try client.send("x", to: engine.addresses[0]) }
            try await eventually("the handle") { kept.withLock { $0 } != nil }
            let outcome = Locked<String?>(nil)
            kept.withLock { $0 }!.write([UInt8](repeating: 1, count: 70_000)) { r in
                let text: String
                if case .failure(let e as SystemError) = r, e.errno == EMSGSIZE { text = "EMSGSIZE" } else { text = "\(r)" }
                outcome.withLock { $0 = text }
            }
            try await eventually("the oversized handle write's completion") { outcome.withLock { $0 } != nil }
            try expect(outcome.withLock { $0 } == "EMSGSIZE", "a 70,000-byte handle write completed with \(outcome.withLock { $0 } ?? "")")
            try expect(engine.unsentDatagrams == 0, "a refused write outside a batch was counted as unsent")
        }
        return nil
    }

    static func handles(_ kind: PollerKind) async throws -> Trace? {
        let kept = Locked<ConnectionHandle?>(nil)
        let handler = DatagramHandler { c in
            kept.withLock { $0 = c.handle }
            let text = String(decoding: c.next() ?? [], as: UTF8.self)
            c.close() // nothing to close: the socket serves on
            try? c.write("re:\(text)")
            return .close // likewise
        }
        let lateHandle = Locked<ConnectionHandle?>(nil)
        try await withDatagramEngine(kind, handler) { engine in
            let server = engine.addresses[0]
            let client = try UDPClient()
            try await onThread("first") {
                for word in ["one", "two"] {
                    try client.send(word, to: server)
                    let got = try client.receive("re:\(word)").bytes
                    try expect(got == Array("re:\(word)".utf8), "no answer to '\(word)' (close() and .close must not stop the socket)")
                }
            }
            guard let h = kept.withLock({ $0 }) else { throw ConformanceFailure("no handle kept") }
            try expect(h.isDatagram, "the handle of a datagram connection says isDatagram false")
            try expect(h.peer == client.localAddress, "the handle's peer is \(h.peer.map(\.description) ?? "nil"), not the sender \(client.localAddress)")
            try await checkHandle(h, client)
            lateHandle.withLock { $0 = h }
        } afterStop: {
            try await checkHandleAfterStop(lateHandle.withLock { $0 })
        }
        return nil
    }

    /// A datagram handle from another thread: write and writev send one datagram each to the
    /// peer; wake and close are misuse.
    static func checkHandle(_ h: ConnectionHandle, _ client: UDPClient) async throws {
        let results = Locked<[String: Result<Void, any Error>]>([:])
        h.write(Array("late".utf8)) { r in results.withLock { $0["write"] = r } }
        h.writev([Array("la".utf8), Array("ter".utf8)]) { r in results.withLock { $0["writev"] = r } }
        h.wake { r in results.withLock { $0["wake"] = r } }
        h.close { r in results.withLock { $0["close"] = r } }
        try await eventually("the handle's completions") { results.withLock { $0.count } == 4 }
        try await onThread("handle writes") {
            let first = try client.receive("the handle's write").bytes
            let second = try client.receive("the handle's writev").bytes
            try expect(first == Array("late".utf8), "handle write did not arrive as one datagram: \(first)")
            try expect(second == Array("later".utf8), "handle writev did not arrive as one datagram: \(second)")
        }
        let r = results.withLock { $0 }
        for op in ["write", "writev"] {
            if case .failure(let e)? = r[op] { throw ConformanceFailure("handle \(op) failed: \(e)") }
        }
        for op in ["wake", "close"] {
            guard case .failure(GNetError.misuse)? = r[op] else {
                throw ConformanceFailure("handle \(op) on a datagram connection: \(String(describing: r[op])), expected GNetError.misuse")
            }
        }
    }

    static func checkHandleAfterStop(_ h: ConnectionHandle?) async throws {
        guard let h else { throw ConformanceFailure("no handle kept") }
        let after = Locked<String?>(nil)
        h.write([1]) { r in
            let outcome: String
            if case .failure(GNetError.connectionClosed) = r { outcome = "connectionClosed" } else { outcome = "\(r)" }
            after.withLock { $0 = outcome }
        }
        try await eventually("the completion of a write after stop") { after.withLock { $0 }.map { _ in true } ?? false }
        let outcome = after.withLock { $0 } ?? ""
        try expect(outcome == "connectionClosed", "a handle write after stop completed with \(outcome), expected connectionClosed")
    }

    static func batchOfOne(_ kind: PollerKind) async throws -> Trace? {
        // One datagram per readiness: a burst of 32 is drained only if the backend reports the
        // socket again while datagrams wait (level-triggered).
        let handler = echo()
        try await withDatagramEngine(kind, handler, configure: { $0.datagramBatchSize = 1 }) { engine in
            let server = engine.addresses[0]
            try await onThread("bursts with batches of one") {
                let client = try UDPClient()
                for round in 0..<20 {
                    for i in 0..<32 { try client.send(patternBytes(64 + i, seed: UInt64(round * 32 + i)), to: server) }
                    var sizes: [Int] = []
                    for _ in 0..<32 { sizes.append(try client.receive("an echo of round \(round) (\(sizes.count) of 32 so far)").bytes.count) }
                    try expect(sizes.sorted() == Array(64..<96), "round \(round): echo sizes \(sizes.sorted())")
                }
            }
        }
        return nil
    }

    static func floodDoesNotStarve(_ kind: PollerKind) async throws -> Trace? {
        // One loop; a thread floods the udp socket (never reading its echoes) while a tcp client
        // on the same loop does round trips: each must come back promptly.
        let handler = echo()
        let flooding = Locked(true)
        let flooded = Locked(0)
        try await withDatagramEngine(kind, handler, addresses: ["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]) { engine in
            let (udp, tcp) = (engine.addresses[0], engine.addresses[1])
            let done = ResultBox<Void>()
            TestThread.detach {
                done.set(Result {
                    let client = try UDPClient(receiveBuffer: 1 << 16)
                    let msg = patternBytes(1_000, seed: 9)
                    while flooding.withLock({ $0 }) {
                        try client.send(msg, to: udp)
                        flooded.withLock { $0 += 1 }
                    }
                })
            }
            defer { flooding.withLock { $0 = false } }
            try await eventually("the flood under way") { flooded.withLock { $0 } > 2_000 }
            let slowest = try await onThread("tcp round trips during the flood") { () -> Duration in
                let client = try TestClient(tcp, timeout: .seconds(5))
                var slowest = Duration.zero
                for i in 0..<100 {
                    let msg = patternBytes(100, seed: UInt64(i))
                    let start = ContinuousClock.now
                    try client.send(msg)
                    let back = try client.receive(exactly: msg.count)
                    slowest = max(slowest, ContinuousClock.now - start)
                    try expect(back == msg, "tcp round trip \(i) differs")
                }
                return slowest
            }
            flooding.withLock { $0 = false }
            try await eventually("the flood stopped") { done.get() != nil }
            try expect(slowest < .milliseconds(500), "the slowest tcp round trip during the udp flood took \(slowest)")
        }
        return nil
    }

    /// A connection reached from a task on its own loop (tests only: the loop is its thread).
    final class LoopBound: @unchecked Sendable {
        let connection: Connection
        init(_ c: Connection) { connection = c }
    }

    static func pauseReading(_ kind: PollerKind) async throws -> Trace? {
        // "pause" pauses reading and schedules a resume 300 ms later on the loop.
        let handler = DatagramHandler { c in
            let text = String(decoding: c.next() ?? [], as: UTF8.self)
            if text == "pause" {
                c.pauseReading()
                let bound = LoopBound(c)
                _ = c.loop.schedule(after: .milliseconds(300)) { bound.connection.resumeReading() }
            }
            try? c.write(text)
            return .none
        }
        try await withDatagramEngine(kind, handler) { engine in
            let server = engine.addresses[0]
            try await onThread("pause and resume") {
                let client = try UDPClient()
                try client.send("pause", to: server)
                _ = try client.receive("the answer to pause")
                let paused = ContinuousClock.now
                try client.send("after", to: server)
                let (got, _) = try client.receive("the answer once reading resumed")
                let waited = ContinuousClock.now - paused
                try expect(got == Array("after".utf8), "got \(got)")
                try expect(waited >= .milliseconds(200), "answered \(waited) after the pause: the socket was still read")
            }
        }
        return nil
    }

    static func unixDatagrams(_ kind: PollerKind) async throws -> Trace? {
        let path = "/tmp/gnet-conformance-dgram-\(getpid()).sock"
        let clientPath = "/tmp/gnet-conformance-dgram-client-\(getpid()).sock"
        struct Seen: Sendable { var network: Network; var listener: SocketAddress?; var remote: SocketAddress?; var misuse: Bool }
        let seen = Locked<[Seen]>([])
        let handler = DatagramHandler { c in
            var misuse = false
            do { try c.next { try c.write($0) } } catch GNetError.misuse { misuse = true } catch {}
            seen.withLock { $0.append(Seen(network: c.network, listener: c.listenerAddress, remote: c.remoteAddress, misuse: misuse)) }
            return .none
        }
        // A socket file left by a dead server: removed at start, not taken for an address in use.
        unlink(path)
        let leftover = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        let bound = try SocketAddress(unixPath: path).withUnsafeSockaddr { Glibc.bind(leftover, $0, $1) }
        close(leftover)
        try expect(bound == 0 && access(path, F_OK) == 0, "could not leave a dead socket file at \(path)")
        try await withDatagramEngine(kind, handler, addresses: ["unixgram://\(path)", "udp://127.0.0.1:0"], configure: { $0.loops = 2 }) { engine in
            let server = engine.addresses[0]
            try expect(engine.boundAddresses[0].description == "unixgram://\(path)", "bound \(engine.boundAddresses[0])")
            try await onThread("unixgram echo") {
                let client = try UnixDatagramClient(path: clientPath)
                for i in 0..<20 {
                    let msg = patternBytes(1 + i * 3_000, seed: UInt64(i))
                    try client.send(msg, to: server)
                    let back = try client.receive("the echo of \(msg.count) bytes")
                    try expect(sameBytes(back, msg), "unixgram echo \(i): sent \(msg.count) bytes, got \(back.count)")
                }
                let unnamed = try UnixDatagramClient(path: nil)
                try unnamed.send(Array("anyone?".utf8), to: server)
            }
            try await eventually("the unnamed sender's datagram") { seen.withLock { $0.count } == 21 }
            let s = seen.withLock { $0 }
            try expect(s.dropLast().allSatisfy { $0.network == .unixgram && $0.listener == server && $0.remote?.host == clientPath && !$0.misuse },
                       "unixgram datagrams: \(s.dropLast().map { "\($0.network) \($0.listener.map(\.description) ?? "nil") \($0.remote.map(\.description) ?? "nil")" })")
            try expect(s.last!.remote == nil && s.last!.misuse, "an unbound sender: remoteAddress \(s.last!.remote.map(\.description) ?? "nil"), write misuse \(s.last!.misuse)")
            // The path is taken while the engine runs.
            let second = try Engine(handler: echo(), addresses: ["unixgram://\(path)"])
            do {
                try second.start()
                second.stop()
                second.wait()
                throw ConformanceFailure("a second engine started on unixgram://\(path), which is in use")
            } catch GNetError.addressInUse {}
        } afterStop: {
            try expect(access(path, F_OK) != 0, "\(path) is still there after the engine stopped")
        }
        return nil
    }

    static func stopWhileFlowing(_ kind: PollerKind) async throws -> Trace? {
        let handler = echo()
        let sending = Locked(true)
        let sent = Locked(0)
        try await withDatagramEngine(kind, handler, configure: { $0.loops = 2 }) { engine in
            let server = engine.addresses[0]
            let done = ResultBox<Void>()
            TestThread.detach {
                done.set(Result {
                    let client = try UDPClient(receiveBuffer: 1 << 16) // never reads: its echoes overflow and drop
                    let msg = patternBytes(700, seed: 5)
                    while sending.withLock({ $0 }) {
                        try client.send(msg, to: server)
                        sent.withLock { $0 += 1 }
                    }
                })
            }
            try await eventually("datagrams flowing") { sent.withLock { $0 } > 1000 }
            engine.stop()
            try await onThread(timeout: .seconds(10), "stop while datagrams flow") { engine.wait() }
            sending.withLock { $0 = false }
            try await eventually("the sender stopped") { done.get() != nil }
            // Sends to a closed port may fail (ECONNREFUSED); that is the sender's business.
        }
        return nil
    }
}
