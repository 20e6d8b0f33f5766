import GNet
import GNetLocks
import Glibc
import Poller

/// A blocking UDP socket for scenarios, bound to loopback (port 0), with a receive timeout and
/// a large receive buffer (so bursts of echoes are not dropped by this side). Every receive
/// fails (throws) rather than hangs, and a datagram larger than the receive buffer is a failure,
/// never taken as whole. One thread may send while another receives.
public final class UDPClient: @unchecked Sendable {
    public let fd: Int32
    public let localAddress: SocketAddress

    public init(ipv6: Bool = false, timeout: Duration = .seconds(3), receiveBuffer: Int32 = 4 << 20) throws {
        let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        var size = receiveBuffer
        // SO_RCVBUFFORCE passes rmem_max when privileged; SO_RCVBUF is clamped to it otherwise.
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4)
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4)
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let local = SocketAddress(ipAddress: ipv6 ? "::1" : "127.0.0.1", port: 0)!
        guard local.withUnsafeSockaddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SystemError("bind", errno: e)
        }
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        localAddress = SocketAddress(storage: st, length: len)
    }

    deinit { Glibc.close(fd) }

    /// Sends one datagram to `address`.
    public func send(_ bytes: [UInt8], to address: SocketAddress) throws {
        let n = bytes.withUnsafeBytes { b in
            address.withUnsafeSockaddr { sendto(fd, b.baseAddress, b.count, 0, $0, $1) }
        }
        guard n == bytes.count else { throw SystemError("sendto(\(bytes.count) bytes)", errno: errno) }
    }

    public func send(_ s: String, to address: SocketAddress) throws { try send(Array(s.utf8), to: address) }

    /// Receives one datagram, with its sender. Throws on timeout ("lost"), and when the datagram
    /// was larger than 64 KiB + 1 (it could not be compared whole).
    public func receive(_ what: @autoclosure () -> String = "a datagram") throws -> (bytes: [UInt8], from: SocketAddress) {
        var buf = [UInt8](repeating: 0, count: 65_536 + 1)
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let n = buf.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &st) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        recvfrom(fd, b.baseAddress, b.count, Int32(MSG_TRUNC), $0, &len)
                    }
                }
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw ConformanceFailure("timed out waiting for \(what())") }
                throw ConformanceFailure("receiving \(what()): \(SystemError("recvfrom", errno: errno))")
            }
            guard n <= buf.count else { throw ConformanceFailure("\(what()): a datagram of \(n) bytes, larger than any sent") }
            return (Array(buf[..<n]), SocketAddress(storage: st, length: len))
        }
    }

    /// Whether a datagram arrives within `timeout` (consuming it).
    public func receivesAny(within timeout: Duration) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        guard poll(&p, 1, ms) == 1 else { return false }
        var b: UInt8 = 0
        return recv(fd, &b, 1, Int32(MSG_DONTWAIT)) >= 0
    }
}

/// A handler for datagram scenarios: `traffic` decides per datagram (or stream input), and it
/// counts what no datagram may cause (`onOpen`, `onClose` of a datagram connection) and
/// records truncation reports.
final class DatagramHandler: EventHandler {
    private let traffic: @Sendable (Connection) -> Action
    private struct State {
        var opens = 0
        var closes = 0
        var datagramLifecycleCalls = 0
        var truncated: [(length: Int, from: SocketAddress?)] = []
    }
    private let state = Locked(State())

    init(_ traffic: @escaping @Sendable (Connection) -> Action) { self.traffic = traffic }

    func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        state.withLock {
            $0.opens += 1
            if c.isDatagram { $0.datagramLifecycleCalls += 1 }
        }
        return (nil, .none)
    }

    func onTraffic(_ c: Connection) -> Action { traffic(c) }

    func onClose(_ c: Connection, error: (any Error)?) -> Action {
        state.withLock {
            $0.closes += 1
            if c.isDatagram { $0.datagramLifecycleCalls += 1 }
        }
        return .none
    }

    func onTruncatedDatagram(_ c: Connection, length: Int) -> Action {
        let from = c.remoteAddress
        let empty = c.inboundBuffered == 0
        state.withLock {
            $0.truncated.append((length, from))
            if !empty || !c.isDatagram { $0.datagramLifecycleCalls += 1 }
        }
        return .none
    }

    var opens: Int { state.withLock { $0.opens } }
    var closes: Int { state.withLock { $0.closes } }
    var truncated: [(length: Int, from: SocketAddress?)] { state.withLock { $0.truncated } }

    func checkNoDatagramLifecycle() throws {
        let n = state.withLock { $0.datagramLifecycleCalls }
        try expect(n == 0, "\(n) onOpen/onClose calls (or non-empty truncation reports) for a datagram connection")
    }
}

/// Starts an engine on `kind` serving `addresses`, runs `body`, stops it, runs `afterStop`,
/// and checks what every stop must leave: the engine ended within the deadline, no datagram
/// connection got `onOpen`/`onClose`, no loop thread is left, and the process's
/// open-descriptor count is back where it started (clients must be gone by then).
func withDatagramEngine(
    _ kind: PollerKind,
    _ handler: DatagramHandler,
    addresses: [String] = ["udp://127.0.0.1:0"],
    configure: (inout Options) -> Void = { _ in },
    _ body: (Engine) async throws -> Void,
    afterStop: () async throws -> Void = {}
) async throws {
    try await warmUpRuntime()
    let descriptorsBefore = openDescriptorCount()
    let listBefore = openDescriptors()
    var options = Options()
    options.poller = kind
    options.logger.logLevel = .error
    configure(&options)
    let engine = try Engine(handler: handler, addresses: addresses, options: options)
    try engine.start()
    try await stopping(engine) { try await body(engine) }
    try await afterStop()
    try handler.checkNoDatagramLifecycle()
    try checkEngineLeftNothing(descriptorsBefore: descriptorsBefore, listBefore: listBefore)
}

/// Whether two byte arrays are equal (memcmp: the conformance target is often built for
/// debugging, where an element loop over megabytes is slow).
func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in a.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
}

/// A blocking Unix datagram socket for scenarios, bound to `path` (or unbound: then it has no
/// address to be answered at), with a receive timeout. Its path is removed when it goes.
public final class UnixDatagramClient: @unchecked Sendable {
    public let fd: Int32
    public let address: SocketAddress?

    public init(path: String?, timeout: Duration = .seconds(3)) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        if let path {
            unlink(path)
            let a = try SocketAddress(unixPath: path)
            guard a.withUnsafeSockaddr({ Glibc.bind(fd, $0, $1) }) == 0 else {
                let e = errno
                Glibc.close(fd)
                throw SystemError("bind(\(path))", errno: e)
            }
            address = a
        } else {
            address = nil
        }
    }

    deinit {
        Glibc.close(fd)
        if let address { unlink(address.host) }
    }

    public func send(_ bytes: [UInt8], to address: SocketAddress) throws {
        let n = bytes.withUnsafeBytes { b in address.withUnsafeSockaddr { sendto(fd, b.baseAddress, b.count, 0, $0, $1) } }
        guard n == bytes.count else { throw SystemError("sendto(\(address))", errno: errno) }
    }

    /// One datagram; throws on timeout.
    public func receive(_ what: @autoclosure () -> String) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: 1 << 17)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { throw ConformanceFailure("waiting for \(what()): \(SystemError("recv", errno: errno))") }
        return Array(buf[..<n])
    }
}
