import GNet
import GNetLocks
import Glibc
import Logging
import Poller
import TestSupport

/// Accepting under pressure: running out of descriptors backs off (no spin, no log flood) and
/// recovers by itself.
enum AcceptScenarios {
    static let all: [Scenario] = [
        Scenario("accept.descriptor-exhaustion-backs-off", .engine, run: descriptorExhaustion),
    ]

    /// With `RLIMIT_NOFILE` lowered so that only a couple more descriptors can be opened, 20
    /// clients connect: the loop pauses accepting instead of spinning on a listener that stays
    /// readable, warns once (not every 100 ms), and takes every connection once descriptors
    /// are available again.
    static func descriptorExhaustion(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler()
        let log = CapturedLog()
        var clients: [RawClient] = []
        try await withEngine(kind, handler, configure: {
            $0.logger = Logger(label: "gnet", factory: { _ in log })
            $0.logger.logLevel = .info
        }) { _, address in
            // Sockets first, while descriptors are plentiful; connecting needs none.
            for _ in 0..<20 { clients.append(try RawClient(family: address)) }
            var limit = rlimit()
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            let saved = limit
            // Exactly two descriptor numbers stay free below the limit (holes count too).
            let open = openDescriptors()
            let free = (0...).lazy.filter { open[Int32($0)] == nil }.prefix(3)
            limit.rlim_cur = rlim_t(Array(free)[2])
            guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else {
                throw SystemError("setrlimit(RLIMIT_NOFILE)", errno: errno)
            }
            var restored = false
            defer {
                if !restored {
                    var s = saved
                    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &s)
                }
            }
            for c in clients { try c.connect(address) }
            try await eventually("the first connections") { handler.opened >= 1 }
            let cpuBefore = cpuTime(ofThreadsNamed: "gnet-loop")
            try await Task.sleep(for: .milliseconds(600))
            let used = cpuTime(ofThreadsNamed: "gnet-loop") - cpuBefore
            let opened = handler.opened
            var s = saved
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &s)
            restored = true
            try expect(opened < 20, "all 20 connections were accepted although descriptors ran out (opened \(opened))")
            try expect(used < .milliseconds(150), "the loop used \(used) of CPU in 600 ms while out of descriptors")
            let warnings = log.messages(at: .warning)
            try expect(warnings.count == 1, "expected one rate-limited warning, got \(warnings.count): \(warnings.prefix(3))")
            try expect(warnings.first?.contains("accepting paused") == true, "warning: \(warnings.first ?? "")")
            try await eventually("every connection once descriptors are back", timeout: .seconds(3)) { handler.opened == 20 }
            clients.removeAll()
            try await eventually("20 closes") { handler.closes == 20 }
        }
        return nil
    }
}

/// A socket created now and connected later (so creating it and connecting can happen under
/// different descriptor limits).
final class RawClient {
    let fd: Int32
    init(family address: SocketAddress) throws {
        let family: Int32 = address.family == .ipv4 ? AF_INET : address.family == .ipv6 ? AF_INET6 : AF_UNIX
        fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
    }
    func connect(_ address: SocketAddress) throws {
        let rc = address.withUnsafeSockaddr { Glibc.connect(fd, $0, $1) }
        guard rc == 0 else { throw SystemError("connect(\(address))", errno: errno) }
    }
    deinit { Glibc.close(fd) }
}

/// A log handler that keeps every message, for checking what the engine logs.
final class CapturedLog: LogHandler, @unchecked Sendable {
    // LogHandler's stored settings are set once, before the engine starts; `lines` is locked.
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    private let lines = Locked<[(Logger.Level, String)]>([])

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lines.withLock { $0.append((event.level, "\(event.message)")) }
    }

    func messages(at level: Logger.Level) -> [String] {
        lines.withLock { $0.filter { $0.0 == level }.map(\.1) }
    }
}
