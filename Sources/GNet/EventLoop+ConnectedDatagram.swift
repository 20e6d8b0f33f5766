import Glibc
import Poller

/// Dialled datagram sockets (`Engine.dial("udp://…")`, `udp4`, `udp6`, `unixgram`): a socket
/// connected to one peer, served as a connection of its loop.
///
/// It lives in `connections` like a dialled TCP socket (counted, balanced, idle timeouts,
/// `onOpen` … `onClose`), but reads and writes the datagram way: each readiness takes one
/// `recvmmsg` batch into the loop's `DatagramBatch` and lends the datagrams one by one
/// (`handOver`, shared with the listeners' sockets), and what the handler writes meanwhile
/// leaves with one `sendmmsg`. Its socket is always watched level-triggered, as a listener's
/// datagram socket is. There is nothing to drain and no half-close: closing is immediate
/// (`requestClose`).
///
/// ## Errors: the peer going away
/// A connected UDP socket gets the ICMP errors of what it sent, as the errno of its next send
/// or receive, or as `SO_ERROR` with an error readiness (Linux reports only the hard ones on a
/// connected socket: port unreachable, prohibited, unknown host; not a transient "host
/// unreachable"). A connected Unix datagram socket gets `ECONNREFUSED` once its peer's socket
/// has closed. Which close the connection:
/// - `ECONNREFUSED` (nothing receives at the port or path): `GNetError.connectionRefused`;
/// - `EHOSTUNREACH`, `ENETUNREACH`, `EHOSTDOWN`, `ENETDOWN`: `GNetError.unreachable`;
/// - `ECONNRESET`, `ENOTCONN`, `EPIPE`, `EDESTADDRREQ` (the peer or the association is gone):
///   the `SystemError`.
/// Anything else (`EMSGSIZE` after a "fragmentation needed", a full buffer, a firewall's
/// `EPERM`) cost one datagram, not the peer: it is logged rate-limited and the socket serves on.
///
/// SwiftNIO's datagram channel reports `ECONNREFUSED` through `errorCaught` and stays open, and
/// gnet logs it and keeps the socket; this engine has no error callback besides `onClose`, and
/// a connected client whose only peer refuses has nothing left to do but learn it and dial
/// again, so the refusal closes the connection with a typed reason.
extension EventLoop {
    /// Readiness of a dialled datagram socket: a reported error, then one receive batch.
    final func handleConnectedDatagram(_ c: Connection, _ events: IOEvents) {
        guard c.state == .open else { return }
        if !events.isDisjoint(with: [.error, .reset]) {
            takeDatagramSocketError(c)
            guard c.state == .open else { return }
        }
        guard events.contains(.read), c.interest.contains(.read), let batch = datagramBatch else { return }
        let n = receiveDatagrams(c, into: batch)
        guard n > 0 else { return }
        c.lastRead = clock
        handOver(c, batch, count: n, listener: nil)
        guard c.state == .open else { return }
        if let cause = c.pendingClose {
            c.pendingClose = nil
            requestClose(c, cause)
        } else {
            settle(c) // a pauseReading() during the batch
        }
    }

    /// A datagram of a dialled socket that the kernel refused outside any call that could
    /// throw it to the handler (`onOpen`'s output), the connection serving on: counted in
    /// `Engine.unsentDatagrams`, as a batch's refusals are, and logged rate-limited.
    final func datagramNotSent(_ c: Connection, _ error: any Error) {
        stats.datagramsUnsent &+= 1
        inbox.unsentDatagrams.add(1, ordering: .relaxed)
        if let n = connectedDatagramTrouble.occurrence() {
            var metadata = connectionMetadata(c)
            metadata["error"] = "\(error)"
            metadata["occurrences"] = "\(n)"
            logger.info("a datagram written by onOpen was not sent; the socket keeps serving", metadata: metadata)
        }
    }

    /// An error of `c`'s socket, from the poller, a receive or a send: closes the connection
    /// when it means the peer is gone (see the extension's notes), else logs it. Returns the
    /// error to report: the typed one the connection closes with, or `error` as it was.
    @discardableResult
    final func connectedDatagramFailed(_ c: Connection, _ error: any Error) -> any Error {
        guard let e = (error as? SystemError)?.errno else {
            fail(c, error)
            return error
        }
        let peer = c.remoteAddress.map { "\(ListenAddress(network: c.network, address: $0, original: ""))" } ?? "\(c.network) peer"
        let reason: any Error
        switch e {
        case ECONNREFUSED:
            reason = GNetError.connectionRefused(peer)
        case EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENETDOWN:
            reason = GNetError.unreachable(peer, SystemError("datagram socket", errno: e))
        case ECONNRESET, ENOTCONN, EPIPE, EDESTADDRREQ:
            reason = error
        default:
            if let n = connectedDatagramTrouble.occurrence() {
                var metadata = connectionMetadata(c)
                metadata["error"] = "\(error)"
                metadata["occurrences"] = "\(n)"
                logger.info("a dialled datagram socket reported an error; it keeps serving", metadata: metadata)
            }
            return error
        }
        fail(c, reason)
        return reason
    }
}
