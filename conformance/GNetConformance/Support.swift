import GNet
import GNetLocks
import Glibc
import Poller
import TestSupport

/// A blocking loopback client with timeouts, for driving servers in scenarios.
/// Every call fails (throws) rather than hangs: receives and sends time out after `timeout`.
/// One thread may send while another receives (the descriptor is immutable and the kernel
/// serialises each direction), hence `@unchecked Sendable`.
public final class TestClient: @unchecked Sendable {
    public let fd: Int32

    /// Connects to `address`, from `source` when given (a local address to bind first, such as
    /// `127.0.0.2` with port 0, so one machine can play several clients).
    public init(_ address: SocketAddress, from source: SocketAddress? = nil, timeout: Duration = .seconds(10)) throws {
        let family: Int32 = address.family == .ipv4 ? AF_INET : address.family == .ipv6 ? AF_INET6 : AF_UNIX
        fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        if let source, source.withUnsafeSockaddr({ Glibc.bind(fd, $0, $1) }) != 0 {
            let e = errno
            Glibc.close(fd)
            throw SystemError("bind(\(source))", errno: e)
        }
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var rc: Int32 = -1
        for _ in 0..<50 {
            rc = address.withUnsafeSockaddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 || (errno != EAGAIN && errno != ECONNREFUSED) { break }
            usleep(20_000) // the listen backlog is momentarily full
        }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            throw SystemError("connect(\(address))", errno: e)
        }
    }

    deinit { Glibc.close(fd) }

    public func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("send", errno: errno)
            }
            off += n
        }
    }

    public func send(_ s: String) throws { try send(Array(s.utf8)) }

    /// Reads exactly `n` bytes. Throws on EOF or timeout before that.
    public func receive(exactly n: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            let r = out.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + got, n - got, 0) }
            if r < 0 {
                if errno == EINTR { continue }
                throw ConformanceFailure("receive: \(SystemError("recv", errno: errno)) after \(got) of \(n) bytes")
            }
            if r == 0 { throw ConformanceFailure("receive: EOF after \(got) of \(n) bytes") }
            got += r
        }
        return out
    }

    /// Reads whatever has arrived (waiting for at least one byte), up to `max` bytes; empty at
    /// EOF or on a reset. Throws on timeout.
    public func receiveSome(max: Int = 65536) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: max)
        while true {
            let r = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress!, $0.count, 0) }
            if r >= 0 { return Array(buf[..<r]) }
            if errno == EINTR { continue }
            if errno == ECONNRESET { return [] }
            throw ConformanceFailure("receive: \(SystemError("recv", errno: errno))")
        }
    }

    /// Reads until the server closes. Throws on timeout; a reset counts as the end.
    public func receiveUntilEOF(limit: Int = 64 << 20) throws -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let r = buf.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress!, $0.count, 0) }
            if r < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { return out }
                throw ConformanceFailure("waiting for EOF: \(SystemError("recv", errno: errno)) after \(out.count) bytes")
            }
            if r == 0 { return out }
            out += buf[..<r]
        }
        return out
    }

    /// Whether the server closed the connection within `timeout` (true on EOF or reset).
    /// Bytes still in flight before the close are read and dropped.
    public func isClosedByPeer(within timeout: Duration = .seconds(5)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000) + 1
            guard poll(&p, 1, ms) == 1 else { return false }
            let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
            if r == 0 || (r < 0 && errno == ECONNRESET) { return true }
        }
    }

    /// Half-closes: the server sees EOF, this side can still read.
    public func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }
}

/// Reproducible pseudo-random bytes (xorshift), so a failure can be rerun exactly.
public func patternBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8](repeating: 0, count: n)
    for i in 0..<n {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        out[i] = UInt8(truncatingIfNeeded: x)
    }
    return out
}

/// The process's open descriptors.
public func openDescriptorCount() -> Int {
    guard let d = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(d) }
    var n = 0
    while readdir(d) != nil { n += 1 }
    return n - 3 // ".", ".." and the directory's own descriptor
}

/// The process's open descriptors and what each refers to (`socket:[123]`, `anon_inode:[eventfd]`).
public func openDescriptors() -> [Int32: String] {
    guard let d = opendir("/proc/self/fd") else { return [:] }
    defer { closedir(d) }
    var out: [Int32: String] = [:]
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard let fd = Int32(name) else { continue }
        var buf = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(name)", &buf, 255)
        out[fd] = n > 0 ? String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }
    return out
}

/// Threads of this process whose name starts with `prefix`.
public func threadsNamed(_ prefix: String) -> Int {
    threadIDs(named: prefix)?.count ?? -1
}

/// The thread ids (as `/proc/self/task` names them) of this process's threads whose name
/// starts with `prefix`; nil when `/proc` cannot be read.
func threadIDs(named prefix: String) -> [String]? {
    guard let d = opendir("/proc/self/task") else { return nil }
    defer { closedir(d) }
    var ids: [String] = []
    while let e = readdir(d) {
        let tid = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        guard tid.first?.isNumber == true else { continue }
        guard let f = fopen("/proc/self/task/\(tid)/comm", "r") else { continue }
        var buf = [CChar](repeating: 0, count: 64)
        fgets(&buf, 64, f)
        fclose(f)
        if String(nulTerminated: buf).hasPrefix(prefix) { ids.append(tid) }
    }
    return ids
}

/// Runs `body` on a new thread and waits up to `timeout` for it, so a blocking call that hangs
/// fails the scenario instead of the whole run.
public func onThread<T: Sendable>(
    timeout: Duration = .seconds(30), _ what: String, _ body: @escaping @Sendable () throws -> T
) async throws -> T {
    let box = ResultBox<T>()
    TestThread.detach { box.set(Result { try body() }) }
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if let r = box.get() { return try r.get() }
        try await Task.sleep(for: .milliseconds(2))
    }
    throw ConformanceFailure("\(what) did not finish within \(timeout)")
}

import Synchronization

final class ResultBox<T: Sendable>: Sendable {
    private let value = Locked<Result<T, any Error>?>(nil)
    func set(_ r: Result<T, any Error>) { value.withLock { $0 = r } }
    func get() -> Result<T, any Error>? { value.withLock { $0 } }
}
