import CGNetLinux
import Glibc
import Poller

/// Socket system calls the engine needs, all through the one errno policy of `sysCall` and
/// `sysCallNonBlocking` (in `Poller/Syscall.swift`): EINTR retried, EAGAIN reported as
/// would-block, everything else a `SystemError` naming the call.
enum Socket {
    /// A non-blocking, close-on-exec listening socket bound to `address`.
    static func listen(_ address: ListenAddress, reusePort: Bool, backlog: Int, reuseAddress: Bool = true, device: String? = nil) throws -> Int32 {
        let family = address.address.sockaddrFamily
        let fd = try sysCall("socket") {
            Glibc.socket(family, Int32(SOCK_STREAM.rawValue) | CGNET_SOCK_NONBLOCK | CGNET_SOCK_CLOEXEC, 0)
        }
        do {
            if family != AF_UNIX {
                if reuseAddress { try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR") }
                if let device { try bindToDevice(fd, device, address.original) }
                if reusePort { try setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT") }
                if family == AF_INET6 && address.network == .tcp6 {
                    try setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1, "IPV6_V6ONLY")
                }
            } else {
                try removeStaleUnixSocket(address)
            }
            try bind(fd, address)
            _ = try sysCall("listen(\(address.original))") { Glibc.listen(fd, Int32(clamping: backlog)) }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Binds `fd` to `address`, translating the usual failures into errors that say what to fix.
    static func bind(_ fd: Int32, _ address: ListenAddress) throws {
        let rc = address.address.withUnsafeSockaddr { Glibc.bind(fd, $0, $1) }
        guard rc != 0 else { return }
        let e = errno
        if e == EADDRINUSE { throw GNetError.addressInUse(address.original) }
        if e == EADDRNOTAVAIL {
            throw GNetError.invalidAddress(address.original, reason: "no local interface has that address")
        }
        if e == EACCES {
            throw GNetError.invalidAddress(address.original, reason: "permission denied (ports below 1024 need privileges)")
        }
        throw SystemError("bind(\(address.original))", errno: e)
    }

    /// `SO_BINDTODEVICE`: only traffic through interface `device` reaches `fd`. An unknown
    /// interface is `GNetError.invalidOption` naming it.
    static func bindToDevice(_ fd: Int32, _ device: String, _ what: String) throws {
        let rc = device.withCString { setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) }
        guard rc != 0 else { return }
        let e = errno
        if e == ENODEV {
            throw GNetError.invalidOption(name: "bindToDevice", reason: "no network interface is called '\(device)' (for \(what))")
        }
        if e == EPERM {
            throw GNetError.invalidOption(name: "bindToDevice", reason: "binding to '\(device)' needs CAP_NET_RAW on this kernel (for \(what))")
        }
        throw SystemError("setsockopt(SO_BINDTODEVICE \(device))", errno: e)
    }

    /// A socket file left by a server that died is removed; a live one is an address in use.
    static func removeStaleUnixSocket(_ address: ListenAddress) throws {
        let path = address.address.host
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw GNetError.invalidAddress(address.original, reason: "\(path) exists and is not a socket")
        }
        // A probe of the same type: a live socket of the other type answers EPROTOTYPE, is left
        // alone, and the bind reports the address in use.
        let type = address.network.isDatagram ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue
        let probe = Glibc.socket(AF_UNIX, Int32(type) | CGNET_SOCK_CLOEXEC, 0)
        guard probe >= 0 else { return }
        defer { Glibc.close(probe) }
        let rc = address.address.withUnsafeSockaddr { Glibc.connect(probe, $0, $1) }
        if rc == 0 { throw GNetError.addressInUse(address.original) }
        if errno == ECONNREFUSED { unlink(path) }
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ what: String) throws {
        var v = value
        _ = try sysCall("setsockopt(\(what))") {
            setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    static func getOption(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32? {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, level, name, &v, &len) == 0 ? v : nil
    }

    /// The address the socket is bound to.
    static func localAddress(_ fd: Int32) -> SocketAddress? {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return rc == 0 ? SocketAddress(storage: st, length: len) : nil
    }

    /// The peer's address.
    static func remoteAddress(_ fd: Int32) -> SocketAddress? {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        return rc == 0 ? SocketAddress(storage: st, length: len) : nil
    }

    /// Sets `SO_LINGER` (`l_onoff` 1 with `l_linger` 0 makes `close` send a reset).
    static func setLinger(_ fd: Int32, _ l: inout linger) throws(SystemError) {
        _ = try sysCall("setsockopt(SO_LINGER)") {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        }
    }

    enum AcceptResult {
        case accepted(Int32, SocketAddress)
        case wouldBlock
        /// Out of descriptors or memory: back off, then retry.
        case exhausted(SystemError)
        /// This connection failed before it was taken (aborted, refused by a rule): try the next.
        case skipped(SystemError)
        /// The listener itself fails (a bug or a broken socket): back off, then retry.
        case failed(SystemError)
    }

    static func accept(_ listener: Int32) -> AcceptResult {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        do {
            let r = try sysCallNonBlocking("accept4") {
                withUnsafeMutablePointer(to: &st) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        cgnet_accept4(listener, $0, &len, CGNET_SOCK_NONBLOCK | CGNET_SOCK_CLOEXEC)
                    }
                }
            }
            guard case .done(let fd) = r else { return .wouldBlock }
            return .accepted(fd, SocketAddress(storage: st, length: len))
        } catch {
            switch error.errno {
            case EMFILE, ENFILE, ENOBUFS, ENOMEM: return .exhausted(error)
            case ECONNABORTED, EPROTO, EPERM, ENETDOWN, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH:
                return .skipped(error) // accept(2): errors of the new connection, passed on
            default: return .failed(error)
            }
        }
    }

    /// Sends without raising SIGPIPE. Returns bytes sent, 0 for would-block.
    @inline(__always)
    static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemError) -> Int {
        let r = try sysCallNonBlocking("send") { Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)) }
        guard case .done(let n) = r else { return 0 }
        return n
    }

    /// Gathers `iov` into one send without raising SIGPIPE. Returns bytes sent, 0 for would-block.
    static func sendv(_ fd: Int32, _ iov: UnsafeMutablePointer<iovec>, _ count: Int) throws(SystemError) -> Int {
        var msg = msghdr()
        msg.msg_iov = iov
        msg.msg_iovlen = count
        let r = try sysCallNonBlocking("sendmsg") { sendmsg(fd, &msg, Int32(MSG_NOSIGNAL)) }
        guard case .done(let n) = r else { return 0 }
        return n
    }

    /// Reads into `buffer`. Returns bytes read, 0 for EOF, nil for would-block.
    @inline(__always)
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) -> Int? {
        let r = try sysCallNonBlocking("read") { Glibc.read(fd, buffer, count) }
        guard case .done(let n) = r else { return nil }
        return n
    }
}

enum System {
    static var coreCount: Int {
        let n = Int(cgnet_cpu_count())
        return n > 0 ? n : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}
