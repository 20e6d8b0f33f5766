import CGNetLinux
import Glibc
import Poller

/// Datagram sockets: binding (with multicast membership), batched receives, sends to an address.
extension Socket {
    /// A non-blocking, close-on-exec datagram socket bound to `address`: UDP, or a Unix datagram
    /// socket (`unixgram`, whose path is removed first if a dead server left it).
    ///
    /// - `reusePort`: `SO_REUSEPORT`, so each loop can bind its own socket on the same port
    ///   (the kernel spreads datagrams over them by a hash of the sender).
    /// - A unicast address is bound without `SO_REUSEADDR`, so a second server on the same
    ///   port fails with `GNetError.addressInUse` instead of silently sharing it.
    /// - A multicast group is bound with `SO_REUSEADDR` (other receivers of the group on this
    ///   host may bind it too, as is usual) and joined on `interfaceIndex`, else on the
    ///   address's zone (`[ff02::1%eth0]`), else on the interface the kernel picks from its
    ///   routes.
    /// - `SO_RCVBUF` and `SO_SNDBUF` are set when given, and `SO_BINDTODEVICE` with `device`
    ///   (`Options.bindToDevice`); a refusal fails the bind.
    static func bindDatagram(
        _ address: ListenAddress, reusePort: Bool, interfaceIndex: UInt32, device: String?,
        receiveBuffer: Int?, sendBuffer: Int?
    ) throws -> Int32 {
        let family = address.address.sockaddrFamily
        let fd = try sysCall("socket") {
            Glibc.socket(family, Int32(SOCK_DGRAM.rawValue) | CGNET_SOCK_NONBLOCK | CGNET_SOCK_CLOEXEC, 0)
        }
        do {
            if family == AF_UNIX { try removeStaleUnixSocket(address) }
            let multicast = address.address.withUnsafeSockaddr { p, _ in cgnet_is_multicast(p) != 0 }
            if multicast { try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR") }
            if reusePort { try setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT") }
            if family == AF_INET6 && address.network == .udp6 {
                try setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1, "IPV6_V6ONLY")
            }
            if let b = receiveBuffer { try setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(clamping: b), "SO_RCVBUF") }
            if let b = sendBuffer { try setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(clamping: b), "SO_SNDBUF") }
            if let device, family != AF_UNIX { try bindToDevice(fd, device, address.original) }
            try bind(fd, address)
            if multicast {
                let interface = interfaceIndex != 0 ? interfaceIndex : address.address.scopeID
                let rc = address.address.withUnsafeSockaddr { p, _ in cgnet_join_multicast(fd, p, interface) }
                if rc != 0 {
                    let e = errno
                    throw GNetError.invalidAddress(
                        address.original,
                        reason: "cannot join the multicast group (\(SystemError("join", errno: e))); "
                            + "set Options.multicastInterface to an interface with multicast enabled")
                }
            }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// The index of the interface `name` (digits are taken as an index). Throws
    /// `GNetError.invalidOption` when no such interface exists.
    static func interfaceIndex(_ name: String) throws(GNetError) -> UInt32 {
        if let n = UInt32(name) { return n }
        let i = if_nametoindex(name)
        guard i != 0 else {
            throw .invalidOption(name: "multicastInterface", reason: "no network interface is called '\(name)'")
        }
        return i
    }

    /// Receives up to `count` datagrams into `msgs` (with `MSG_TRUNC`, so each `msg_len` is
    /// the datagram's real size, larger than its slot when it did not fit). Returns how many,
    /// 0 for would-block.
    @inline(__always)
    static func receiveBatch(_ fd: Int32, _ msgs: UnsafeMutablePointer<cgnet_mmsghdr>, _ count: Int) throws(SystemError) -> Int {
        let r = try sysCallNonBlocking("recvmmsg") {
            cgnet_recvmmsg(fd, msgs, UInt32(count), CGNET_MSG_DONTWAIT | CGNET_MSG_TRUNC)
        }
        guard case .done(let n) = r else { return 0 }
        return Int(n)
    }

    /// Sends one datagram of the gathered `iov` to `address` (nil: to the peer of a connected
    /// socket). Returns its size, nil for would-block (the socket's send buffer is full).
    @inline(__always)
    static func sendDatagram(
        _ fd: Int32, _ iov: UnsafeMutablePointer<iovec>, _ count: Int, to address: SocketAddress?
    ) throws(SystemError) -> Int? {
        var storage = address?.storage ?? sockaddr_storage()
        return try withUnsafeMutablePointer(to: &storage) { (name) throws(SystemError) -> Int? in
            var msg = msghdr()
            if let address {
                msg.msg_name = UnsafeMutableRawPointer(name)
                msg.msg_namelen = address.length
            }
            msg.msg_iov = iov
            msg.msg_iovlen = count
            let r = try sysCallNonBlocking(address.map { "sendmsg(\($0))" } ?? "send") {
                sendmsg(fd, &msg, Int32(MSG_NOSIGNAL) | CGNET_MSG_DONTWAIT)
            }
            guard case .done(let n) = r else { return nil }
            return n
        }
    }

    /// Binds a Unix datagram socket to an address the kernel picks (Linux's autobind: an
    /// abstract name of five hex digits), so that a server can answer what it sends. A dialled
    /// `unixgram` socket needs one: unbound, its datagrams arrive without a sender.
    static func autobind(_ fd: Int32) throws(SystemError) {
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        _ = try withUnsafePointer(to: &a) { p throws(SystemError) in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (s) throws(SystemError) in
                try sysCall("bind(autobind)") { Glibc.bind(fd, s, socklen_t(MemoryLayout<sa_family_t>.size)) }
            }
        }
    }
}
