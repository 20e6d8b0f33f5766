import COpenSSL
import GNetLocks

/// A client context's sessions, kept to resume later dials of the same server by themselves
/// (`TLSConfiguration.clientSessionCacheSize`): the sessions the servers' tickets made, at most
/// two per server (TLS 1.3 servers send two, each meant to be used once), for the most
/// recently dialled `capacity` servers. A server is its address as dialled and the name
/// checked (SNI). Taking a TLS 1.3 session removes it, so no ticket is offered twice; a TLS
/// 1.2 one stays (it may be resumed again, and a resumption makes no new one).
///
/// Shared by every loop's connections: `Sendable`, locked.
final class ClientSessionCache: @unchecked Sendable {
    private struct Entry {
        var sessions: [OpaquePointer]
        var lastUse: UInt64
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var clock: UInt64 = 0
    }
    static let sessionsPerServer = 2
    let capacity: Int
    private let state = Locked(State())

    init(capacity: Int) { self.capacity = capacity }

    deinit {
        state.withLock { s in
            for e in s.entries.values { e.sessions.forEach { SSL_SESSION_free($0) } }
            s.entries = [:]
        }
    }

    /// The key of a dial: the address as dialled and the server name.
    static func key(address: String, serverName: String?) -> String { "\(address)|\(serverName ?? "")" }

    /// Keeps `session` (taking over its reference) for `key`; the oldest server's sessions go
    /// when there are more than `capacity` servers, the oldest session of `key` when it has
    /// more than two.
    func put(_ session: OpaquePointer, for key: String) {
        var dropped: [OpaquePointer] = []
        state.withLock { s in
            s.clock &+= 1
            var e = s.entries[key] ?? Entry(sessions: [], lastUse: s.clock)
            e.sessions.append(session)
            if e.sessions.count > Self.sessionsPerServer { dropped.append(e.sessions.removeFirst()) }
            e.lastUse = s.clock
            s.entries[key] = e
            if s.entries.count > capacity, let oldest = s.entries.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
                dropped += s.entries.removeValue(forKey: oldest)?.sessions ?? []
            }
        }
        dropped.forEach { SSL_SESSION_free($0) } // outside the lock
    }

    /// The newest resumable session for `key`, removed from the cache (the caller owns it).
    func take(_ key: String) -> OpaquePointer? {
        var stale: [OpaquePointer] = []
        let found: OpaquePointer? = state.withLock { s in
            guard var e = s.entries[key] else { return nil }
            var result: OpaquePointer? = nil
            while let last = e.sessions.popLast() {
                guard SSL_SESSION_is_resumable(last) == 1 else {
                    stale.append(last)
                    continue
                }
                if SSL_SESSION_get_protocol_version(last) != cgnet_tls1_3_version() {
                    // A TLS 1.2 session may be resumed again, and resuming it makes no new one
                    // (no callback): it stays, and the caller gets a reference of its own.
                    _ = SSL_SESSION_up_ref(last)
                    e.sessions.append(last)
                }
                result = last
                break
            }
            if e.sessions.isEmpty { s.entries[key] = nil } else { s.entries[key] = e }
            return result
        }
        stale.forEach { SSL_SESSION_free($0) }
        return found
    }
}

/// OpenSSL's new-session callback (clients with a cache): a ticket arrived (TLS 1.3) or the
/// handshake made a session (TLS 1.2). Keeps it under the session's dial key; returning 1
/// tells OpenSSL the reference is ours.
func newClientSession(_ ssl: OpaquePointer?, _ session: OpaquePointer?) -> Int32 {
    guard let ssl, let session, let bio = SSL_get_rbio(ssl), let data = BIO_get_data(bio) else { return 0 }
    let owner = Unmanaged<TLSSession>.fromOpaque(data).takeUnretainedValue()
    guard let cache = owner.box.clientSessions, let key = owner.cacheKey,
          SSL_SESSION_is_resumable(session) == 1 else { return 0 }
    cache.put(session, for: key)
    return 1
}
