#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Poller

// Connected socket pairs and the raw reads and writes tests drive them with. Any thread may call
// these; a descriptor is only as shared as the test makes it.

/// A connected pair of `AF_UNIX` stream sockets, both non-blocking, as raw descriptors the
/// caller closes (`closeAll(a, b)`).
public func socketPair() throws(SystemError) -> (a: Int32, b: Int32) {
    var fds: [Int32] = [-1, -1]
    #if os(Linux)
    let type = Int32(SOCK_STREAM.rawValue)
    #else
    let type = SOCK_STREAM
    #endif
    guard socketpair(AF_UNIX, type, 0, &fds) == 0 else { throw SystemError("socketpair", errno: errno) }
    for fd in fds where fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 {
        let e = errno
        closeAll(fds[0], fds[1])
        throw SystemError("fcntl(O_NONBLOCK)", errno: e)
    }
    return (fds[0], fds[1])
}

/// A `socketPair()` held by reference, for tests that close one end early, put another socket
/// under an end's number (`dup2`) or hand the pair to a closure. `close()` closes what is still
/// open and marks it -1; nothing is closed implicitly, so keep the pair until then
/// (`defer { pair.close() }`).
public final class SocketPair {
    /// The end a test usually watches; -1 once closed.
    public var a: Int32
    /// The peer end a test usually writes from; -1 once closed.
    public var b: Int32

    public init() throws(SystemError) {
        (a, b) = try socketPair()
    }

    public func close() {
        if a >= 0 { closeAll(a); a = -1 }
        if b >= 0 { closeAll(b); b = -1 }
    }
}

public func closeAll(_ fds: Int32...) {
    for fd in fds { _ = close(fd) }
}

/// Writes all of `bytes` to `fd` in one `write(2)`; throws if it fails or writes less (a full
/// non-blocking socket: `EAGAIN`).
public func send(_ fd: Int32, _ bytes: [UInt8]) throws(SystemError) {
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    if n < 0 { throw SystemError("write(fd \(fd))", errno: errno) }
    if n < bytes.count { throw SystemError("write(fd \(fd)): \(n) of \(bytes.count) bytes", errno: EAGAIN) }
}

public func send(_ fd: Int32, _ text: String) throws(SystemError) {
    try send(fd, Array(text.utf8))
}

/// One `read(2)` of up to `max` bytes: how many arrived, 0 at the end of the stream, -1 when
/// nothing is there (`EAGAIN`). Any other failure throws.
public func receive(_ fd: Int32, max: Int) throws(SystemError) -> Int {
    var buffer = [UInt8](repeating: 0, count: max)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, max) }
    if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK { throw SystemError("read(fd \(fd))", errno: errno) }
    return n
}

/// Reads until `EAGAIN` or the end of the stream; returns how many bytes.
@discardableResult
public func drain(_ fd: Int32) -> Int {
    var total = 0
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { return total }
        total += n
    }
}
