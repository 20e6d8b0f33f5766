import CGNetLinux
import Glibc

/// A socket address: IPv4, IPv6 or a Unix-domain path. Values print as URLs in gnet's format
/// (`tcp://127.0.0.1:9000`, `tcp6://[::1]:9000`, `unix:///tmp/s.sock`).
///
/// Immutable and `Sendable`; usable from any thread.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address family.
    public enum Family: Sendable, Hashable { case ipv4, ipv6, unix }

    @usableFromInline var storage: sockaddr_storage
    @usableFromInline var length: socklen_t

    /// Wraps raw `sockaddr` bytes as the kernel returned them.
    package init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    public var family: Family {
        switch Int32(storage.ss_family) {
        case AF_INET: return .ipv4
        case AF_INET6: return .ipv6
        default: return .unix
        }
    }

    /// The port, or nil for Unix-domain addresses.
    public var port: Int? {
        withUnsafeSockaddr { p, _ -> Int? in
            switch Int32(p.pointee.sa_family) {
            case AF_INET:
                return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            case AF_INET6:
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            default: return nil
            }
        }
    }

    /// The numeric host (`127.0.0.1`, `::1`) or the socket path.
    public var host: String {
        withUnsafeSockaddr { p, len -> String in
            switch Int32(p.pointee.sa_family) {
            case AF_INET:
                return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    return Self.ntop(AF_INET, &a)
                }
            case AF_INET6:
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var a = sin6.pointee.sin6_addr
                    let zone = sin6.pointee.sin6_scope_id
                    guard zone != 0 else { return Self.ntop(AF_INET6, &a) }
                    return Self.ntop(AF_INET6, &a) + "%" + Self.interfaceName(zone)
                }
            case AF_UNIX:
                let pathOffset = MemoryLayout<sa_family_t>.size
                let n = Int(len) - pathOffset
                guard n > 0 else { return "" }
                let bytes = UnsafeRawPointer(p).advanced(by: pathOffset).assumingMemoryBound(to: UInt8.self)
                let buf = UnsafeBufferPointer(start: bytes, count: n)
                let end = buf.firstIndex(of: 0) ?? n
                return String(decoding: UnsafeBufferPointer(rebasing: buf[..<end]), as: UTF8.self)
            default:
                return "?"
            }
        }
    }

    public var description: String {
        switch family {
        case .ipv4: return "tcp://\(host):\(port ?? 0)"
        case .ipv6: return "tcp6://[\(host)]:\(port ?? 0)"
        case .unix: return "unix://\(host)"
        }
    }

    /// An IPv6 address's zone (`sin6_scope_id`: the interface a link-local address belongs
    /// to, written `%eth0`); 0 for other addresses and families.
    public var scopeID: UInt32 {
        withUnsafeSockaddr { p, _ in
            guard Int32(p.pointee.sa_family) == AF_INET6 else { return 0 }
            return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_scope_id }
        }
    }

    /// The name of interface `index`, or the index itself when it has none.
    private static func interfaceName(_ index: UInt32) -> String {
        var buf = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
        guard if_indextoname(index, &buf) != nil else { return String(index) }
        return String(nulTerminated: buf)
    }

    private static func ntop(_ af: Int32, _ src: UnsafeRawPointer) -> String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        guard inet_ntop(af, src, &buf, socklen_t(buf.count)) != nil else { return "?" }
        return String(nulTerminated: buf)
    }

    /// Lends the address as a `sockaddr` pointer and length, for system calls (`connect`, `bind`).
    public func withUnsafeSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var s = storage
        return try withUnsafePointer(to: &s) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
        }
    }

    package var sockaddrFamily: Int32 { Int32(storage.ss_family) }

    /// The same address with another port (for binding every loop's listener to the port the
    /// first one got).
    package func withPort(_ port: Int) -> SocketAddress {
        var copy = self
        withUnsafeMutablePointer(to: &copy.storage) { p in
            switch Int32(p.pointee.ss_family) {
            case AF_INET:
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port = UInt16(port).bigEndian }
            case AF_INET6:
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port = UInt16(port).bigEndian }
            default: break
            }
        }
        return copy
    }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.length == b.length && a.bytes == b.bytes
    }

    public func hash(into h: inout Hasher) { h.combine(bytes) }

    private var bytes: [UInt8] {
        var s = storage
        return withUnsafeBytes(of: &s) { Array($0.prefix(Int(length))) }
    }

    // MARK: Making addresses

    /// An IPv4 or IPv6 address from a numeric host (`127.0.0.1`, `::1`) and a port.
    /// Returns nil when `host` is not a numeric address of either family.
    public init?(ipAddress host: String, port: Int) {
        guard (0...65535).contains(port) else { return nil }
        var st = sockaddr_storage()
        var sin = sockaddr_in()
        if inet_pton(AF_INET, host, &sin.sin_addr) == 1 {
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = UInt16(port).bigEndian
            withUnsafeMutableBytes(of: &st) { dst in withUnsafeBytes(of: &sin) { dst.copyMemory(from: $0) } }
            self.init(storage: st, length: socklen_t(MemoryLayout<sockaddr_in>.size))
            return
        }
        var sin6 = sockaddr_in6()
        if inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1 {
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = UInt16(port).bigEndian
            withUnsafeMutableBytes(of: &st) { dst in withUnsafeBytes(of: &sin6) { dst.copyMemory(from: $0) } }
            self.init(storage: st, length: socklen_t(MemoryLayout<sockaddr_in6>.size))
            return
        }
        return nil
    }

    /// A Unix-domain socket address. Throws when the path is empty or too long for `sun_path`.
    public init(unixPath path: String) throws(GNetError) {
        let capacity = Int(cgnet_sun_path_capacity())
        let utf8 = Array(path.utf8)
        guard !utf8.isEmpty else { throw .invalidAddress("unix://", reason: "the socket path is empty") }
        guard utf8.count < capacity else {
            throw .invalidAddress("unix://\(path)", reason: "the socket path is \(utf8.count) bytes; at most \(capacity - 1) fit")
        }
        guard !utf8.contains(0) else { throw .invalidAddress("unix://\(path)", reason: "the socket path contains a NUL byte") }
        var st = sockaddr_storage()
        let len = withUnsafeMutableBytes(of: &st) { raw -> Int in
            raw.storeBytes(of: sa_family_t(AF_UNIX), as: sa_family_t.self)
            let off = MemoryLayout<sa_family_t>.size
            for (i, b) in utf8.enumerated() { raw[off + i] = b }
            raw[off + utf8.count] = 0
            return off + utf8.count + 1
        }
        self.init(storage: st, length: socklen_t(len))
    }
}

extension String {
    /// The text of a C buffer up to its first NUL (all of it when there is none), decoded as
    /// UTF-8 (invalid bytes repaired).
    package init(nulTerminated buffer: [CChar]) {
        let end = buffer.firstIndex(of: 0) ?? buffer.count
        self = String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
