import GNet
import GNetLocks
import Glibc
import Poller
import Synchronization
import TestSupport

/// How a stream read to its end ended: the peer's clean EOF, or a reset.
public enum StreamEnd: Sendable, Equatable { case eof, reset }

extension TestClient {
    /// Reads until EOF or reset, sleeping `pause` after each read of at most `chunk` bytes (a
    /// slow reader). Throws on timeout.
    public func readToEnd(chunk: Int = 65536, pause: Duration = .zero, limit: Int = 256 << 20) throws -> (bytes: [UInt8], end: StreamEnd) {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: chunk)
        while out.count < limit {
            let r = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress!, $0.count, 0) }
            if r < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { return (out, .reset) }
                throw ConformanceFailure("reading to the end: \(SystemError("recv", errno: errno)) after \(out.count) bytes")
            }
            if r == 0 { return (out, .eof) }
            out += buf[..<r]
            if pause > .zero { sleep(for: pause) }
        }
        throw ConformanceFailure("reading to the end: more than \(limit) bytes")
    }

    /// Sends `bytes` on a new thread; the box holds the outcome when it is done.
    func sendInBackground(_ bytes: [UInt8]) -> ResultBox<Void> {
        let box = ResultBox<Void>()
        TestThread.detach { box.set(Result { try self.send(bytes) }) }
        return box
    }

    /// Sets the client's receive buffer (small values keep the kernel from absorbing a reply,
    /// so the server's own queue is what is tested).
    public func setReceiveBuffer(_ bytes: Int32) {
        var v = bytes
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Closes the socket with a reset (`SO_LINGER` 0), as a peer that dies mid-conversation.
    /// The descriptor number stays taken (by /dev/null) until the client is released.
    public func reset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if null >= 0 {
            dup2(null, fd) // closes the socket: with SO_LINGER 0 that sends the reset
            Glibc.close(null)
        }
    }
}

/// Sleeps the calling thread.
public func sleep(for d: Duration) {
    let c = d.components
    var ts = timespec(tv_sec: Int(c.seconds), tv_nsec: Int(c.attoseconds / 1_000_000_000))
    var left = timespec()
    while nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
}

/// CPU time used so far by this process's threads whose name starts with `prefix`.
public func cpuTime(ofThreadsNamed prefix: String) -> Duration {
    var ticks = 0
    for tid in threadIDs(named: prefix) ?? [] {
        // "pid (comm) state ppid ... utime stime": utime and stime are the 12th and 13th
        // fields after the closing parenthesis (the name may hold spaces).
        guard let stat = readSmallFile("/proc/self/task/\(tid)/stat"), let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 12, let u = Int(fields[11]), let s = Int(fields[12]) { ticks += u + s }
    }
    let hz = sysconf(Int32(_SC_CLK_TCK))
    return .milliseconds(ticks * 1000 / max(hz, 1))
}

private func readSmallFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var buf = [CChar](repeating: 0, count: 1024)
    guard fgets(&buf, 1024, f) != nil else { return nil }
    return String(nulTerminated: buf)
}

/// A value shared between a handler and a scenario.
public final class Shared<T: Sendable>: Sendable {
    private let value: Locked<T>
    public init(_ v: T) { value = Locked(v) }
    public var get: T { value.withLock { $0 } }
    public func update<R>(_ body: (inout T) -> R) -> R { value.withLock { body(&$0) } }
}
