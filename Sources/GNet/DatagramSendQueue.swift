import CGNetLinux
import Glibc
import Poller

/// The datagrams a loop's handler writes while it handles one receive batch, sent together
/// with one `sendmmsg` when the batch's callbacks are done (or earlier, when this fills up).
///
/// Each queued datagram is a message header, one iovec and a destination address, in arrays
/// made once per loop. Its bytes are either
/// - still in the receive batch's slots (an echo of the input, the common case): the iovec
///   points there, nothing is copied — the slots are not reused before the flush, which comes
///   before the next `recvmmsg`; or
/// - copied into `arena` (anything else: other buffers, `writev`, in-place rendering); the
///   iovec is set from its offset at the flush, since the arena may move while it grows.
///
/// Loop thread only.
final class DatagramSendQueue {
    let capacity: Int
    private let msgs: UnsafeMutablePointer<cgnet_mmsghdr>
    private let iovecs: UnsafeMutablePointer<iovec>
    private let names: UnsafeMutablePointer<sockaddr_storage>
    /// Per message: its offset in `arena`, or -1 when its iovec points into the receive slots.
    private let arenaOffsets: UnsafeMutablePointer<Int>
    var arena = ByteQueue()
    private(set) var count = 0
    /// Flush before the arena holds more than this.
    static let arenaLimit = 1 << 20

    init(capacity: Int) {
        self.capacity = capacity
        (msgs, iovecs, names) = linkedMessageHeaders(capacity)
        arenaOffsets = .allocate(capacity: capacity)
    }

    deinit {
        msgs.deallocate()
        iovecs.deallocate()
        names.deallocate()
        arenaOffsets.deallocate()
    }

    var isFull: Bool { count == capacity || arena.count > Self.arenaLimit }

    /// Queues a datagram whose bytes stay where they are until the flush.
    @inline(__always)
    func queue(inPlace bytes: UnsafeRawBufferPointer, to address: SocketAddress?) {
        iovecs[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        arenaOffsets[count] = -1
        setAddress(address)
    }

    /// Queues a datagram of the `length` bytes at `offset` in the arena (already appended).
    @inline(__always)
    func queue(arenaOffset offset: Int, length: Int, to address: SocketAddress?) {
        iovecs[count] = iovec(iov_base: nil, iov_len: length)
        arenaOffsets[count] = offset
        setAddress(address)
    }

    /// The destination of the datagram being queued; nil (no address: a connected socket's
    /// peer) leaves its name empty, which the kernel takes as no address.
    @inline(__always)
    private func setAddress(_ address: SocketAddress?) {
        if let address {
            names[count] = address.storage
            msgs[count].msg_hdr.msg_namelen = address.length
        } else {
            msgs[count].msg_hdr.msg_namelen = 0
        }
        count += 1
    }

    /// Sends every queued datagram from `fd`, with as few `sendmmsg` calls as the kernel
    /// allows, and empties the queue. A datagram the kernel refuses (a full send buffer, an
    /// ICMP error queued on the socket, one too large) is skipped, not retried: returns how
    /// many were, with the last error, and how many were sent with how many bytes.
    func flush(_ fd: Int32) -> (sent: Int, bytes: Int, unsent: Int, error: SystemError?) {
        guard count > 0 else { return (0, 0, 0, nil) }
        if let base = arena.readable.baseAddress {
            for i in 0..<count where arenaOffsets[i] >= 0 {
                iovecs[i].iov_base = UnsafeMutableRawPointer(mutating: base + arenaOffsets[i])
            }
        }
        var start = 0
        var unsent = 0
        var bytes = 0
        var lastError: SystemError? = nil
        while start < count {
            let r = cgnet_sendmmsg(fd, msgs + start, UInt32(count - start), Int32(MSG_NOSIGNAL) | CGNET_MSG_DONTWAIT)
            if r > 0 {
                for i in start..<start + Int(r) { bytes += Int(msgs[i].msg_len) }
                start += Int(r)
                continue
            }
            let e = errno
            if r < 0 && e == EINTR { continue }
            // sendmmsg reports an error only for the first message it could not send.
            lastError = SystemError("sendmmsg", errno: r < 0 ? e : EAGAIN)
            unsent += 1
            start += 1
        }
        let sent = count - unsent
        count = 0
        arena.reset(keepingCapacityUpTo: Self.arenaLimit)
        return (sent, bytes, unsent, lastError)
    }

    /// Drops what is queued (the socket is closing).
    func discard() {
        count = 0
        arena.reset(keepingCapacityUpTo: Self.arenaLimit)
    }
}

/// `capacity` message headers for `recvmmsg`/`sendmmsg`, each pointing at its own iovec (empty)
/// and address slot: the arrays a batch works on, allocated once. The caller deallocates all three.
func linkedMessageHeaders(_ capacity: Int) -> (
    UnsafeMutablePointer<cgnet_mmsghdr>, UnsafeMutablePointer<iovec>, UnsafeMutablePointer<sockaddr_storage>
) {
    let msgs = UnsafeMutablePointer<cgnet_mmsghdr>.allocate(capacity: capacity)
    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: capacity)
    let names = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: capacity)
    for i in 0..<capacity {
        names[i] = sockaddr_storage()
        iovecs[i] = iovec()
        var m = cgnet_mmsghdr()
        m.msg_hdr.msg_iov = iovecs + i
        m.msg_hdr.msg_iovlen = 1
        m.msg_hdr.msg_name = UnsafeMutableRawPointer(names + i)
        msgs[i] = m
    }
    return (msgs, iovecs, names)
}
