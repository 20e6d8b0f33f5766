/// TLS settings for a server or a client. A plain value: build it anywhere, then make a
/// `TLSContext` from it (once, shared by every loop).
///
/// ```swift
/// var tls = TLSConfiguration.server(certificateChain: "cert.pem", privateKey: "key.pem")
/// tls.alpnProtocols = ["h2", "http/1.1"]
/// let context = try TLSContext(tls)
/// ```
public struct TLSConfiguration: Sendable, Hashable {
    /// Which side of the handshake.
    public enum Role: Sendable, Hashable { case server, client }

    /// Protocol versions.
    public enum Version: Sendable, Hashable, Comparable {
        case tls12, tls13
    }

    /// Whether and how the peer's certificate is checked.
    public enum PeerVerification: Sendable, Hashable {
        /// Not asked for (servers), or not checked (clients: only for tests).
        case none
        /// Checked when the peer sends one (servers); a missing one is accepted.
        case optional
        /// Required and checked against `trustRoots`.
        case required
    }

    /// Where trusted certificate authorities come from.
    public enum TrustRoots: Sendable, Hashable {
        /// The system's store (OpenSSL's default paths).
        case system
        /// The certificates in a PEM file.
        case file(String)
    }

    /// A certificate chain and its private key, both PEM files; the key may be encrypted
    /// (`openssl pkey -aes256`), with `privateKeyPassphrase` to decrypt it. A passphrase is
    /// never asked for on a terminal: an encrypted key without one is a typed error.
    public struct Identity: Sendable, Hashable {
        public var certificateChain: String
        public var privateKey: String
        /// The passphrase of an encrypted `privateKey` (nil: the key is not encrypted).
        public var privateKeyPassphrase: String?
        public init(certificateChain: String, privateKey: String, privateKeyPassphrase: String? = nil) {
            self.certificateChain = certificateChain
            self.privateKey = privateKey
            self.privateKeyPassphrase = privateKeyPassphrase
        }
    }

    public var role: Role
    /// This side's certificate: required for a server, optional for a client (client
    /// certificates).
    public var identity: Identity?
    /// Servers: a certificate per name the client asks for with SNI; names not listed get
    /// `identity`. Matching is exact and case-insensitive.
    public var identitiesByServerName: [String: Identity] = [:]
    public var minimumVersion: Version = .tls12
    public var maximumVersion: Version = .tls13
    /// ALPN protocols in preference order (servers pick the first they share with the client).
    /// Empty: no ALPN.
    public var alpnProtocols: [String] = []
    /// Servers: `.none` (default) does not ask clients for certificates. Clients: `.required`
    /// (default) checks the server's certificate and name.
    public var peerVerification: PeerVerification
    public var trustRoots: TrustRoots = .system
    /// Servers: let clients resume sessions with tickets (default true). The ticket keys
    /// belong to the `TLSContext`, shared by every loop, so a ticket from one loop resumes on
    /// any other; a new context (a reload) starts with new keys. False: no tickets and no
    /// server-side session cache, so every handshake is a full one.
    public var sessionTickets: Bool = true
    /// Servers, TLS 1.3: how many tickets to send after each full handshake (default 2, as
    /// OpenSSL and BoringSSL do, so a client can open two resumed connections at once; TLS 1.2
    /// sends one). Each ticket is an encrypted copy of the session made on the loop: about a
    /// tenth of a full handshake's server CPU with OpenSSL 3.0, so 1 is cheaper where clients
    /// resume one connection at a time. 0 to 16; ignored when `sessionTickets` is false.
    public var ticketsPerHandshake: Int = 2
    /// Free a connection's OpenSSL record buffers (about 25 KB: a record in, a record out)
    /// whenever they are empty (default true), so an idle connection does not hold them, as
    /// with BoringSSL. False keeps them for the connection's life: about 10% fewer instructions
    /// per small message for busy connections (no allocation and free per record), at that
    /// memory cost per connection.
    public var releasesIdleBuffers: Bool = true
    /// Clients: how many servers' sessions the context keeps so that later dials to them
    /// resume by themselves (a server is the address as dialled with the name checked). 0, the
    /// default: none kept, as resumption lets a server link a client's connections; a dial then
    /// resumes only the `TLSResumption` it is given. Each kept ticket is used once.
    public var clientSessionCacheSize: Int = 0
    /// How long a handshake may take before the connection is closed with
    /// `TLSError.handshakeTimeout`. Default 10 s.
    public var handshakeTimeout: Duration = .seconds(10)

    public init(role: Role) {
        self.role = role
        self.peerVerification = role == .server ? .none : .required
    }

    /// A server with one certificate chain and key (PEM files).
    public static func server(certificateChain: String, privateKey: String) -> TLSConfiguration {
        var c = TLSConfiguration(role: .server)
        c.identity = Identity(certificateChain: certificateChain, privateKey: privateKey)
        return c
    }

    /// A client checking servers against `trustRoots`.
    public static func client(trustRoots: TrustRoots = .system) -> TLSConfiguration {
        var c = TLSConfiguration(role: .client)
        c.trustRoots = trustRoots
        return c
    }
}
