import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

// What the engine.lifecycle scenarios use besides the harness: a handler that checks the
// engine-level callback order, a descriptor and thread baseline, a port held by another socket,
// and a client that connects the moment a Unix socket listens.

/// A handler that records the engine-level callbacks and flags connection and tick callbacks
/// that run before `onBoot` has returned, and a second `onShutdown`.
final class LifecycleHandler: EventHandler {
    struct Counts: Sendable {
        var boots = 0
        var bootReturned = false
        var addressesAtBoot: [SocketAddress] = []
        var opens = 0
        var closes = 0
        var ticks = 0
        var shutdowns = 0
        var violations: [String] = []
    }

    private let boot: @Sendable (Engine) -> Action
    private let open: @Sendable (Connection) -> Action
    private let tick: @Sendable () -> (delay: Duration, action: Action)
    private let state = Locked(Counts())

    init(
        boot: @escaping @Sendable (Engine) -> Action = { _ in .none },
        open: @escaping @Sendable (Connection) -> Action = { _ in .none },
        tick: @escaping @Sendable () -> (delay: Duration, action: Action) = { (.seconds(1), .none) }
    ) {
        self.boot = boot
        self.open = open
        self.tick = tick
    }

    var counts: Counts { state.withLock { $0 } }

    func onBoot(_ engine: Engine) -> Action {
        let addresses = engine.addresses
        state.withLock { s in
            s.boots += 1
            s.addressesAtBoot = addresses
        }
        let action = boot(engine)
        state.withLock { $0.bootReturned = true }
        return action
    }

    func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        state.withLock { s in
            s.opens += 1
            if !s.bootReturned { s.violations.append("onOpen before onBoot returned") }
        }
        return (nil, open(c))
    }

    func onClose(_ c: Connection, error: (any Error)?) -> Action {
        state.withLock { $0.closes += 1 }
        return .none
    }

    func onTick() -> (delay: Duration, action: Action) {
        state.withLock { s in
            s.ticks += 1
            if !s.bootReturned { s.violations.append("onTick before onBoot returned") }
        }
        return tick()
    }

    func onShutdown(_ engine: Engine) {
        state.withLock { s in
            s.shutdowns += 1
            if s.shutdowns > 1 { s.violations.append("onShutdown called \(s.shutdowns) times") }
        }
    }
}

/// Threads the engine named (`gnet-…`), not counting those that took the name of a process
/// called `gnet-conformance` (a new thread starts with its creator's name).
func engineThreads() -> Int { threadsNamed("gnet-") - threadsNamed("gnet-conforman") }

/// The process's descriptors and loop threads at one moment, to check an engine left none.
struct Baseline {
    let count = openDescriptorCount()
    let list = openDescriptors()
    let loopThreads = threadsNamed("gnet-loop")

    func check(_ what: String) throws {
        let threads = threadsNamed("gnet-loop")
        try expect(threads == loopThreads, "\(what): \(threads - loopThreads) loop threads left")
        let now = openDescriptorCount()
        if now != count {
            let added = openDescriptors().filter { list[$0.key] != $0.value }.map { "\($0.key)→\($0.value)" }
            throw ConformanceFailure("\(what): \(count) descriptors before, \(now) after; new: \(added.sorted().joined(separator: ", "))")
        }
    }
}

/// A plain listening socket on a free loopback port, without `SO_REUSEPORT`, to make a port
/// "in use".
final class BlockingListener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        let any = SocketAddress(ipAddress: "127.0.0.1", port: 0)!
        guard any.withUnsafeSockaddr({ bind(fd, $0, $1) }) == 0, listen(fd, 8) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SystemError("bind/listen", errno: e)
        }
        self.fd = fd
        var st = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: st.sin_port))
    }

    func close() { Glibc.close(fd) }
}

/// Connects to a Unix socket path the moment something listens there, from its own thread.
final class EagerConnector: Sendable {
    private let path: String
    private let fd = Locked<Int32?>(nil)
    private let stop = Locked(false)
    private let finished = Locked(false)

    init(path: String) { self.path = path }

    func start() {
        TestThread.detach { [self] in
            let address = try! SocketAddress(unixPath: path)
            let deadline = ContinuousClock.now + .seconds(10)
            while !stop.withLock({ $0 }), ContinuousClock.now < deadline {
                let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                if s >= 0, address.withUnsafeSockaddr({ connect(s, $0, $1) }) == 0 {
                    fd.withLock { $0 = s }
                    break
                }
                if s >= 0 { Glibc.close(s) }
                usleep(20)
            }
            finished.withLock { $0 = true }
        }
    }

    /// Stops trying, closes the connection, and throws if it never connected.
    func finish() throws {
        stop.withLock { $0 = true }
        while !finished.withLock({ $0 }) { usleep(100) }
        let s = fd.withLock { $0 }
        if let s { Glibc.close(s) }
        try expect(s != nil, "the client never connected to \(path)")
    }
}
