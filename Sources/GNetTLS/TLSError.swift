import COpenSSL

/// What went wrong with TLS: each case says what and what to do. A connection that fails
/// with one closes, and its `onClose` gets the error.
public enum TLSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The configuration cannot be used (a missing or unreadable PEM file, a key that does not
    /// match its certificate, an empty ALPN name, ...), with OpenSSL's reason.
    case invalidConfiguration(String)
    /// The handshake failed: the peer is not speaking TLS, offers nothing this side accepts, or
    /// sent something malformed. OpenSSL's reason is given.
    case handshakeFailed(String)
    /// The peer's certificate was refused (expired, not trusted, not for this name, missing
    /// where required), with the verification's reason.
    case certificateRejected(String)
    /// The handshake did not finish within the configured timeout.
    case handshakeTimeout(Duration)
    /// The peer closed the TCP connection without TLS's close_notify: what arrived may be
    /// truncated by an attacker, and is not treated as a complete stream.
    case truncated
    /// A record could not be decrypted or parsed after the handshake, with OpenSSL's reason.
    case protocolError(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let r):
            return "invalid TLS configuration: \(r)"
        case .handshakeFailed(let r):
            return "TLS handshake failed: \(r); check that the peer speaks TLS with a common version, cipher and ALPN protocol"
        case .certificateRejected(let r):
            return "the peer's TLS certificate was rejected: \(r); check its validity dates, issuer, name and the trust roots"
        case .handshakeTimeout(let d):
            return "the TLS handshake did not finish within \(d); the peer stalled (raise TLSConfiguration.handshakeTimeout if it is only slow)"
        case .truncated:
            return "the peer closed the connection without TLS close_notify; the data may have been truncated"
        case .protocolError(let r):
            return "TLS protocol error: \(r)"
        }
    }

    /// OpenSSL's queued errors as text (and clears the queue); `fallback` when there are none.
    static func drainErrors(_ fallback: String) -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            parts.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? fallback : parts.joined(separator: "; ")
    }
}
