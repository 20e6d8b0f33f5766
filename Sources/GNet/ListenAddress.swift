import CGNetLinux
import Glibc

/// The network part of an address string.
public enum Network: String, Sendable, Hashable, CaseIterable {
    case tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram

    /// Whether the network carries datagrams (`udp`, `udp4`, `udp6`, `unixgram`) rather than a
    /// stream.
    public var isDatagram: Bool {
        switch self {
        case .udp, .udp4, .udp6, .unixgram: return true
        case .tcp, .tcp4, .tcp6, .unix: return false
        }
    }

    /// Whether the addresses are Unix-socket paths (`unix`, `unixgram`).
    public var isUnix: Bool { self == .unix || self == .unixgram }

    /// The address family the scheme asks for: AF_INET, AF_INET6, or AF_UNSPEC (either).
    var requiredFamily: Int32 {
        switch self {
        case .tcp4, .udp4: return AF_INET
        case .tcp6, .udp6: return AF_INET6
        case .tcp, .udp: return AF_UNSPEC
        case .unix, .unixgram: return AF_UNIX
        }
    }
}

/// A parsed address string such as `tcp://127.0.0.1:9000`, `tcp6://[::1]:0`,
/// `udp://127.0.0.1:9001`, `unix:///tmp/gnet.sock` or `unixgram:///tmp/gnet-dgram.sock`
/// (gnet's format), resolved to a socket address.
///
/// - `tcp://` and `udp://` take an IPv4 or IPv6 host (IPv6 in brackets), a host name, or
///   nothing (`tcp://:9000`, all interfaces). `tcp4://`, `tcp6://`, `udp4://` and `udp6://`
///   restrict the family. A `udp` host that is a multicast group (224.0.0.0/4, ff00::/8) is
///   bound and joined (`Options.multicastInterface`). An IPv6 host may carry a zone, the
///   interface a link-local address belongs to: `udp6://[ff02::1%eth0]:5353`.
/// - A string without a scheme is taken as `tcp://`.
/// - Port 0 asks the kernel for a free port; `Engine.addresses` tells which it chose.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var network: Network
    public var address: SocketAddress
    /// The string as given.
    public var original: String

    /// The address as a URL: a stream address as `SocketAddress` prints it
    /// (`tcp://127.0.0.1:9000`, `tcp6://[::1]:9000`, `unix:///tmp/s.sock`), a datagram one as
    /// `udp://127.0.0.1:9001`, `udp6://[::1]:9001` or `unixgram:///tmp/d.sock`.
    public var description: String {
        guard network.isDatagram else { return address.description }
        switch address.family {
        case .ipv6: return "udp6://[\(address.host)]:\(address.port ?? 0)"
        case .ipv4: return "udp://\(address.host):\(address.port ?? 0)"
        case .unix: return "unixgram://\(address.host)"
        }
    }

    /// `network` with `address` (a bound address, say), keeping `original`.
    package init(network: Network, address: SocketAddress, original: String) {
        self.network = network
        self.address = address
        self.original = original
    }

    /// Parses and resolves `string`. Throws `GNetError.invalidAddress` saying what was wrong,
    /// or `GNetError.unsupportedNetwork` for a known scheme this engine does not serve
    /// (`unixpacket`, `ip`).
    public init(parsing string: String) throws(GNetError) {
        original = string
        var scheme = "tcp"
        var rest = Substring(string)
        if let sep = Self.schemeSeparator(in: string) {
            scheme = String(string[..<sep]).lowercased()
            rest = string[string.utf8.index(sep, offsetBy: 3)...]
        }
        if ["unixpacket", "ip", "ip4", "ip6"].contains(scheme) { throw .unsupportedNetwork(scheme) }
        guard let network = Network(rawValue: scheme) else {
            throw .invalidAddress(string, reason: "unknown network '\(scheme)'")
        }
        self.network = network
        if network.isUnix {
            address = try SocketAddress(unixPath: String(rest))
            return
        }
        // host:port, with IPv6 hosts in brackets.
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw .invalidAddress(string, reason: "missing ']' after the IPv6 host")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { throw .invalidAddress(string, reason: "missing ':port' after the host") }
            portText = after.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else {
                throw .invalidAddress(string, reason: "missing ':port'")
            }
            host = rest[..<colon]
            if host.contains(":") {
                throw .invalidAddress(string, reason: "an IPv6 host must be written in brackets, e.g. [::1]:9000")
            }
            portText = rest[rest.index(after: colon)...]
        }
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(portText),
              port <= 65535 else {
            throw .invalidAddress(string, reason: "port '\(portText)' is not a number from 0 to 65535")
        }
        address = try Self.resolve(host: String(host), port: port, network: network, original: string)
    }

    /// Where "://" starts in `s`, if anywhere.
    private static func schemeSeparator(in s: String) -> String.Index? {
        var i = s.startIndex
        while i < s.endIndex {
            if s[i...].hasPrefix("://") { return i }
            i = s.index(after: i)
        }
        return nil
    }

    private static func resolve(host: String, port: Int, network: Network, original: String) throws(GNetError) -> SocketAddress {
        let wanted = network.requiredFamily
        if host.isEmpty {
            let any = wanted == AF_INET6 ? "::" : "0.0.0.0"
            return SocketAddress(ipAddress: any, port: port)!
        }
        if let numeric = SocketAddress(ipAddress: host, port: port) {
            if wanted != AF_UNSPEC && numeric.sockaddrFamily != wanted {
                throw .invalidAddress(original, reason: "host \(host) is not an \(wanted == AF_INET ? "IPv4" : "IPv6") address")
            }
            return numeric
        }
        var hints = addrinfo()
        hints.ai_family = wanted
        hints.ai_socktype = Int32(network.isDatagram ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            let why = rc != 0 ? String(cString: gai_strerror(rc)) : "no addresses"
            throw .invalidAddress(original, reason: "cannot resolve host '\(host)': \(why)")
        }
        defer { freeaddrinfo(result) }
        var st = sockaddr_storage()
        let len = min(Int(first.pointee.ai_addrlen), MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutableBytes(of: &st) { $0.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: len)) }
        return SocketAddress(storage: st, length: socklen_t(len))
    }
}
