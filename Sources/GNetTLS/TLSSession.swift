import COpenSSL

/// One side of one TLS connection: an OpenSSL `SSL` whose I/O goes through a BIO over the
/// engine's own buffers — ciphertext is read straight from the buffer the loop read into, and
/// written straight into the output sink (the connection's cork) — so no memory BIO pair and
/// no extra copy of ciphertext.
///
/// Loop-confined, like the connection it serves: one thread at a time, no locks.
///
/// The driver feeds it with `setInput` and drains it with `handshake`, `read` and `write`;
/// every call sends what TLS produces (handshake messages, records, alerts) through `output`.
public final class TLSSession {
    let ssl: OpaquePointer
    /// The configuration's contexts, kept alive for the session's life (a reload may replace
    /// them for new sessions meanwhile).
    let box: ContextBox
    /// Ciphertext not yet taken by OpenSSL (the BIO reads from here). The session's state is
    /// confined to one thread at a time (see above): no dynamic exclusivity checks on it.
    @exclusivity(unchecked) var input = UnsafeRawBufferPointer(start: nil, count: 0)
    /// The peer's TCP EOF was seen: the BIO reports end of input.
    @exclusivity(unchecked) public private(set) var peerClosed = false
    /// Where TLS output goes; set by the driver before each call that may produce some.
    @exclusivity(unchecked) public var output: (UnsafeRawBufferPointer) -> Void = { _ in }
    @exclusivity(unchecked) public private(set) var handshakeComplete = false

    /// Where a client's new sessions go in its context's cache (`clientSessionCacheSize`).
    let cacheKey: String?

    /// A session for a new connection from `context`. A client may name the server (SNI, and
    /// the name its certificate must carry) and resume an earlier session.
    public convenience init(context: TLSContext, serverName: String? = nil, resuming: TLSResumption? = nil) throws(TLSError) {
        try self.init(context: context, serverName: serverName, resuming: resuming, cacheKey: nil)
    }

    /// A client session also keeping its server's tickets under `cacheKey` in the context's
    /// session cache, and, without `resuming`, resuming one kept there.
    init(context: TLSContext, serverName: String?, resuming: TLSResumption?, cacheKey: String?) throws(TLSError) {
        box = context.box
        self.cacheKey = box.clientSessions == nil ? nil : cacheKey
        guard let ssl = SSL_new(box.ctx) else { throw .invalidConfiguration(TLSError.drainErrors("SSL_new failed")) }
        self.ssl = ssl
        guard let bio = BIO_new(bioMethod) else {
            SSL_free(ssl)
            throw .invalidConfiguration(TLSError.drainErrors("BIO_new failed"))
        }
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
        SSL_set_bio(ssl, bio, bio) // the SSL owns the BIO
        if context.role == .server {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            if let serverName {
                _ = cgnet_ssl_set_host_name(ssl, serverName)
                if box.configuration.peerVerification != .none { SSL_set1_host(ssl, serverName) }
            }
            if let resuming {
                SSL_set_session(ssl, resuming.session)
            } else if let cacheKey = self.cacheKey, let kept = box.clientSessions?.take(cacheKey) {
                SSL_set_session(ssl, kept) // takes its own reference
                SSL_SESSION_free(kept)
            }
        }
    }

    deinit { SSL_free(ssl) }

    /// Offers ciphertext read from the socket; the next calls consume it. What OpenSSL has not
    /// taken when they return is left in `pendingInput` (nothing, after a `read` that wanted more).
    public func setInput(_ ciphertext: UnsafeRawBufferPointer) { input = ciphertext }

    /// Ciphertext offered and not yet taken.
    public var pendingInput: Int { input.count }

    /// The peer closed its side of the TCP connection: no more ciphertext will come.
    public func peerClosedTCP() { peerClosed = true }

    public enum Step: Equatable {
        /// Done: the handshake finished, or plaintext was read.
        case done
        /// Needs more ciphertext from the peer.
        case wantsInput
    }

    /// Advances the handshake with the input offered. Throws when it fails.
    public func handshake() throws(TLSError) -> Step {
        guard !handshakeComplete else { return .done }
        clearErrors()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            handshakeComplete = true
            return .done
        }
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            if peerClosed && input.count == 0 { throw .handshakeFailed("the peer closed the connection during the handshake") }
            return .wantsInput
        default:
            throw handshakeError()
        }
    }

    private func handshakeError() -> TLSError {
        let verify = SSL_get_verify_result(ssl)
        if verify != Int(X509_V_OK) {
            let reason = X509_verify_cert_error_string(verify).map { String(cString: $0) } ?? "verification error \(verify)"
            _ = TLSError.drainErrors("")
            return .certificateRejected(reason)
        }
        return .handshakeFailed(TLSError.drainErrors(peerClosed ? "the peer closed the connection" : "no detail from OpenSSL"))
    }

    public enum ReadResult: Equatable {
        /// `n` bytes of plaintext were written into the buffer.
        case bytes(Int)
        /// No complete record: more ciphertext is needed.
        case wantsInput
        /// The peer sent close_notify: the stream ended cleanly.
        case closed
    }

    /// Decrypts plaintext into `buffer`. Throws `TLSError.truncated` when the TCP connection
    /// ended without close_notify, `.protocolError` for a bad record.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(TLSError) -> ReadResult {
        clearErrors()
        let n = SSL_read(ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        if n > 0 { return .bytes(Int(n)) }
        switch SSL_get_error(ssl, n) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            if peerClosed && input.count == 0 { throw .truncated }
            return .wantsInput
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        case SSL_ERROR_SSL where peerClosed && input.count == 0:
            _ = TLSError.drainErrors("")
            throw .truncated // OpenSSL 3 reports an EOF without close_notify this way
        default:
            throw .protocolError(TLSError.drainErrors("SSL_read failed"))
        }
    }

    /// Encrypts `plaintext` whole into records sent through `output`.
    public func write(_ plaintext: UnsafeRawBufferPointer) throws(TLSError) {
        var offset = 0
        while offset < plaintext.count {
            clearErrors()
            let n = SSL_write(ssl, plaintext.baseAddress! + offset, Int32(clamping: plaintext.count - offset))
            guard n > 0 else { throw .protocolError(TLSError.drainErrors("SSL_write failed")) }
            offset += Int(n)
        }
    }

    /// Sends close_notify (once).
    public func close() {
        clearErrors()
        if SSL_shutdown(ssl) < 0 { _ = TLSError.drainErrors("") }
    }

    /// The ALPN protocol agreed on, if any.
    public var negotiatedProtocol: String? {
        var data: UnsafePointer<UInt8>? = nil
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// The server name the client asked for (SNI).
    public var serverName: String? {
        SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) }
    }

    /// "TLSv1.2" or "TLSv1.3".
    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// Whether the handshake resumed an earlier session (a ticket).
    public var resumed: Bool { SSL_session_reused(ssl) == 1 }

    /// The peer certificate's subject, one line, when it sent one.
    public var peerCertificateSubject: String? {
        guard let cert = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(cert) }
        guard let name = X509_get_subject_name(cert), let line = X509_NAME_oneline(name, nil, 0) else { return nil }
        defer { CRYPTO_free(line, #fileID, #line) }
        return String(cString: line)
    }

    /// A client's session, to resume the next connection to the same server (after the
    /// handshake; with TLS 1.3, after the server's ticket has been read).
    public var resumption: TLSResumption? {
        guard let s = SSL_get1_session(ssl) else { return nil }
        guard SSL_SESSION_is_resumable(s) == 1 else {
            SSL_SESSION_free(s)
            return nil
        }
        return TLSResumption(s)
    }
}

/// A TLS session a client can resume. `Sendable` (OpenSSL sessions are reference counted and
/// thread-safe to share).
public final class TLSResumption: @unchecked Sendable {
    let session: OpaquePointer
    init(_ session: OpaquePointer) { self.session = session }
    deinit { SSL_SESSION_free(session) }
}

// MARK: - The BIO over the engine's buffers

/// Made once; OpenSSL keeps it for the process's life.
nonisolated(unsafe) private let bioMethod: OpaquePointer = {
    let m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gnet")!
    BIO_meth_set_write(m, bioWrite)
    BIO_meth_set_read(m, bioRead)
    BIO_meth_set_ctrl(m, bioCtrl)
    BIO_meth_set_create(m, { bio in
        BIO_set_init(bio, 1)
        return 1
    })
    BIO_meth_set_destroy(m, { _ in 1 })
    return m
}()

private func session(_ bio: OpaquePointer?) -> TLSSession {
    Unmanaged<TLSSession>.fromOpaque(BIO_get_data(bio)!).takeUnretainedValue()
}

private func bioRead(_ bio: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ length: Int32) -> Int32 {
    let s = session(bio)
    cgnet_bio_clear_retry_flags(bio)
    guard s.input.count > 0 else {
        if s.peerClosed { return 0 }
        cgnet_bio_set_retry_read(bio)
        return -1
    }
    let n = min(Int(length), s.input.count)
    UnsafeMutableRawPointer(buffer!).copyMemory(from: s.input.baseAddress!, byteCount: n)
    s.input = UnsafeRawBufferPointer(rebasing: s.input[n...])
    return Int32(n)
}

private func bioWrite(_ bio: OpaquePointer?, _ buffer: UnsafePointer<CChar>?, _ length: Int32) -> Int32 {
    cgnet_bio_clear_retry_flags(bio)
    guard length > 0 else { return 0 }
    session(bio).output(UnsafeRawBufferPointer(start: buffer, count: Int(length)))
    return length
}

private func bioCtrl(_ bio: OpaquePointer?, _ command: Int32, _ larg: Int, _ parg: UnsafeMutableRawPointer?) -> Int {
    switch command {
    case BIO_CTRL_FLUSH: return 1
    case BIO_CTRL_EOF: return session(bio).peerClosed && session(bio).input.count == 0 ? 1 : 0
    case BIO_CTRL_PENDING, BIO_CTRL_WPENDING: return 0
    default: return 0
    }
}

/// Empties this thread's OpenSSL error queue before a call whose outcome `SSL_get_error` reads
/// (an error left by other code on the thread would be taken for the call's). Only looks when
/// the queue is empty, the usual case: clearing it walks every slot.
@inline(__always)
private func clearErrors() {
    if ERR_peek_error() != 0 { ERR_clear_error() }
}
