import COpenSSL
import GNetLocks

/// An OpenSSL `SSL_CTX` made from a `TLSConfiguration`: certificates, versions, ALPN, SNI,
/// verification and session-ticket keys. Make one per configuration and share it: every loop's
/// connections take their sessions from it. `reload(_:)` swaps in a new configuration
/// (renewed certificates, say) for connections made afterwards, without a restart; connections
/// already open keep theirs.
///
/// `Sendable`; any thread.
public final class TLSContext: Sendable {
    public let role: TLSConfiguration.Role
    private let current: Locked<ContextBox>

    public init(_ configuration: TLSConfiguration) throws(TLSError) {
        role = configuration.role
        current = Locked(try ContextBox(configuration))
    }

    /// Builds the new configuration's context, then uses it for every connection made from now
    /// on. Throws (keeping the old one) when the new configuration cannot be used. The role
    /// cannot change.
    public func reload(_ configuration: TLSConfiguration) throws(TLSError) {
        guard configuration.role == role else {
            throw .invalidConfiguration("reload cannot change a \(role) context into a \(configuration.role) one")
        }
        let box = try ContextBox(configuration)
        current.withLock { $0 = box }
    }

    /// The context for a new connection (kept by its session for its whole life).
    var box: ContextBox { current.withLock { $0 } }

    /// The handshake timeout of the current configuration.
    public var handshakeTimeout: Duration { box.configuration.handshakeTimeout }
}

/// One configuration's `SSL_CTX`s: the default one and one per SNI name. Immutable once made;
/// freed when the last session using it ends.
final class ContextBox: @unchecked Sendable {
    // The SSL_CTXs are only read after init; OpenSSL allows sessions to be made from one
    // context on many threads.
    let configuration: TLSConfiguration
    let ctx: OpaquePointer
    let byName: [String: OpaquePointer]
    /// ALPN protocols in wire format (length-prefixed), for the selection callback.
    let alpnWire: [UInt8]
    /// Clients with `clientSessionCacheSize` > 0: the sessions kept for later dials.
    let clientSessions: ClientSessionCache?

    init(_ c: TLSConfiguration) throws(TLSError) {
        configuration = c
        alpnWire = try Self.wireFormat(c.alpnProtocols)
        if c.role == .server && c.identity == nil {
            throw .invalidConfiguration("a server needs a certificate chain and private key (TLSConfiguration.identity)")
        }
        if c.minimumVersion > c.maximumVersion {
            throw .invalidConfiguration("minimumVersion \(c.minimumVersion) is above maximumVersion \(c.maximumVersion)")
        }
        guard c.role == .client || (0...16).contains(c.ticketsPerHandshake) else {
            throw .invalidConfiguration("ticketsPerHandshake must be 0 to 16, got \(c.ticketsPerHandshake)")
        }
        guard c.clientSessionCacheSize >= 0 else {
            throw .invalidConfiguration("clientSessionCacheSize must be 0 or more, got \(c.clientSessionCacheSize)")
        }
        clientSessions = c.role == .client && c.clientSessionCacheSize > 0 ? ClientSessionCache(capacity: c.clientSessionCacheSize) : nil
        let main = try Self.makeContext(c, identity: c.identity)
        var named: [String: OpaquePointer] = [:]
        do {
            for (name, identity) in c.identitiesByServerName {
                named[name.lowercased()] = try Self.makeContext(c, identity: identity)
            }
        } catch {
            SSL_CTX_free(main)
            for ctx in named.values { SSL_CTX_free(ctx) }
            throw error
        }
        ctx = main
        byName = named
        let me = Unmanaged.passUnretained(self).toOpaque()
        for context in [main] + Array(named.values) {
            if c.role == .server && !alpnWire.isEmpty {
                SSL_CTX_set_alpn_select_cb(context, selectALPN, me)
            }
        }
        if clientSessions != nil { SSL_CTX_sess_set_new_cb(main, newClientSession) }
        if c.role == .server && !named.isEmpty {
            cgnet_ssl_ctx_set_servername_callback(main, selectServerName)
            cgnet_ssl_ctx_set_servername_arg(main, me)
        }
    }

    deinit {
        SSL_CTX_free(ctx)
        for c in byName.values { SSL_CTX_free(c) }
    }

    private static func wireFormat(_ protocols: [String]) throws(TLSError) -> [UInt8] {
        var wire: [UInt8] = []
        for p in protocols {
            let bytes = Array(p.utf8)
            guard !bytes.isEmpty, bytes.count <= 255 else {
                throw .invalidConfiguration("ALPN protocol names must be 1 to 255 bytes, got '\(p)'")
            }
            wire.append(UInt8(bytes.count))
            wire += bytes
        }
        return wire
    }

    private static func makeContext(_ c: TLSConfiguration, identity: TLSConfiguration.Identity?) throws(TLSError) -> OpaquePointer {
        guard let ctx = SSL_CTX_new(c.role == .server ? TLS_server_method() : TLS_client_method()) else {
            throw .invalidConfiguration(TLSError.drainErrors("SSL_CTX_new failed"))
        }
        func fail(_ what: String) -> TLSError {
            SSL_CTX_free(ctx)
            return .invalidConfiguration("\(what): \(TLSError.drainErrors("no detail"))")
        }
        let version = { (v: TLSConfiguration.Version) -> Int32 in v == .tls12 ? cgnet_tls1_2_version() : cgnet_tls1_3_version() }
        guard cgnet_ssl_ctx_set_min_proto_version(ctx, version(c.minimumVersion)) == 1,
              cgnet_ssl_ctx_set_max_proto_version(ctx, version(c.maximumVersion)) == 1 else {
            throw fail("cannot set the protocol versions")
        }
        // Writes may be partial and the buffer may move between retries: the engine's cork does.
        let release = c.releasesIdleBuffers ? SSL_MODE_RELEASE_BUFFERS : 0
        _ = cgnet_ssl_ctx_set_mode(ctx, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | release))
        if c.role == .server {
            if c.sessionTickets {
                _ = SSL_CTX_set_num_tickets(ctx, c.ticketsPerHandshake)
            } else {
                // No stateless tickets, no stateful ones (TLS 1.3 sends those when tickets are
                // off), and no cache for TLS 1.2 session IDs: nothing to resume.
                SSL_CTX_set_options(ctx, cgnet_ssl_op_no_ticket())
                _ = SSL_CTX_set_num_tickets(ctx, 0)
                _ = cgnet_ssl_ctx_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
            }
        }
        if c.role == .client {
            // Clients keep sessions themselves (TLSSession.resumption); no internal cache.
            _ = cgnet_ssl_ctx_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_CLIENT))
        }
        if let identity {
            // OpenSSL's own passphrase callback reads the terminal: a server must never wait on
            // one. Ours hands over the configured passphrase, or none (decryption then fails).
            let passphrase = identity.privateKeyPassphrase.map { strdup($0) }
            SSL_CTX_set_default_passwd_cb(ctx, passphraseCallback)
            SSL_CTX_set_default_passwd_cb_userdata(ctx, passphrase.map { UnsafeMutableRawPointer($0) } ?? nil)
            defer {
                SSL_CTX_set_default_passwd_cb_userdata(ctx, nil)
                if let passphrase { free(passphrase) }
            }
            guard SSL_CTX_use_certificate_chain_file(ctx, identity.certificateChain) == 1 else {
                throw fail("cannot load the certificate chain \(identity.certificateChain)")
            }
            guard SSL_CTX_use_PrivateKey_file(ctx, identity.privateKey, SSL_FILETYPE_PEM) == 1 else {
                if Self.isEncrypted(identity.privateKey) {
                    throw fail(identity.privateKeyPassphrase == nil
                        ? "the private key \(identity.privateKey) is encrypted: give its passphrase (Identity.privateKeyPassphrase)"
                        : "cannot decrypt the private key \(identity.privateKey): wrong passphrase?")
                }
                throw fail("cannot load the private key \(identity.privateKey), or it does not match the certificate \(identity.certificateChain)")
            }
            guard SSL_CTX_check_private_key(ctx) == 1 else {
                throw fail("the private key \(identity.privateKey) does not match the certificate \(identity.certificateChain)")
            }
        }
        switch c.peerVerification {
        case .none:
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        case .optional, .required:
            switch c.trustRoots {
            case .system:
                guard SSL_CTX_set_default_verify_paths(ctx) == 1 else { throw fail("cannot load the system's trust roots") }
            case .file(let path):
                guard SSL_CTX_load_verify_locations(ctx, path, nil) == 1 else { throw fail("cannot load the trust roots \(path)") }
            }
            var mode = SSL_VERIFY_PEER
            if c.peerVerification == .required && c.role == .server { mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT }
            SSL_CTX_set_verify(ctx, mode, nil)
        }
        if c.role == .client && !c.alpnProtocols.isEmpty {
            let wire = (try? wireFormat(c.alpnProtocols)) ?? []
            guard wire.withUnsafeBufferPointer({ SSL_CTX_set_alpn_protos(ctx, $0.baseAddress, UInt32($0.count)) }) == 0 else {
                throw fail("cannot set the ALPN protocols")
            }
        }
        return ctx
    }

    /// Whether a PEM file holds an encrypted key (PKCS#8 or the traditional header).
    private static func isEncrypted(_ path: String) -> Bool {
        guard let f = fopen(path, "r") else { return false }
        defer { fclose(f) }
        var head = [UInt8](repeating: 0, count: 1 << 16)
        let n = fread(&head, 1, head.count, f)
        let text = String(decoding: head[..<n], as: UTF8.self)
        return text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED")
    }

    /// The SSL_CTX for an SNI name (the default when none matches).
    func context(forServerName name: String) -> OpaquePointer? { byName[name.lowercased()] }
}

/// PEM passphrases: the NUL-terminated one in `userdata`, or none (nil userdata), so loading
/// an encrypted key fails instead of prompting.
private func passphraseCallback(
    _ buffer: UnsafeMutablePointer<CChar>?, _ size: Int32, _ writing: Int32, _ userdata: UnsafeMutableRawPointer?
) -> Int32 {
    guard let buffer, let userdata, size > 0 else { return 0 }
    let passphrase = userdata.assumingMemoryBound(to: CChar.self)
    let n = min(strlen(passphrase), Int(size))
    memcpy(buffer, passphrase, n)
    return Int32(n)
}

/// ALPN selection (server): the first of our protocols the client offers.
private func selectALPN(
    _ ssl: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?, _ outlen: UnsafeMutablePointer<UInt8>?,
    _ input: UnsafePointer<UInt8>?, _ inlen: UInt32, _ arg: UnsafeMutableRawPointer?
) -> Int32 {
    guard let arg, let input, let out, let outlen else { return SSL_TLSEXT_ERR_NOACK }
    let box = Unmanaged<ContextBox>.fromOpaque(arg).takeUnretainedValue()
    let offered = UnsafeBufferPointer(start: input, count: Int(inlen))
    var ours = 0
    while ours < box.alpnWire.count {
        let n = Int(box.alpnWire[ours])
        let want = box.alpnWire[(ours + 1)..<(ours + 1 + n)]
        var i = 0
        while i < offered.count {
            let m = Int(offered[i])
            if i + 1 + m <= offered.count, m == n, offered[(i + 1)..<(i + 1 + m)].elementsEqual(want) {
                out.pointee = input + i + 1
                outlen.pointee = UInt8(m)
                return SSL_TLSEXT_ERR_OK
            }
            i += 1 + m
        }
        ours += 1 + n
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL // no protocol in common: refuse (RFC 7301)
}

/// SNI (server): switch the session to the context of the name asked for, if there is one.
private func selectServerName(_ ssl: OpaquePointer?, _ alert: UnsafeMutablePointer<Int32>?, _ arg: UnsafeMutableRawPointer?) -> Int32 {
    guard let ssl, let arg, let raw = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return SSL_TLSEXT_ERR_OK }
    let box = Unmanaged<ContextBox>.fromOpaque(arg).takeUnretainedValue()
    if let ctx = box.context(forServerName: String(cString: raw)) { SSL_set_SSL_CTX(ssl, ctx) }
    return SSL_TLSEXT_ERR_OK
}
