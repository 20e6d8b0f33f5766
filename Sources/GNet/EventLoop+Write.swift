import CGNetLinux
import Glibc
import Poller

/// The write path: the cork, direct sends, the connection's queue and its watermarks.
///
/// Inside a callback for `c`, writes gather in the loop's cork and go out with one send when
/// the callback returns (or when the cork passes `corkFlushThreshold`). Elsewhere a write is
/// sent at once. Whatever the socket does not take joins `c.outbound`, and from then on every
/// write queues behind it (never reordering), with write interest on until it drains.
extension EventLoop {
    /// The write path of `Connection.write`. The connection is open.
    @inline(__always)
    final func write(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        if let layer = c.layer, !c.belowLayer {
            writeThroughLayer(c, layer, bytes)
            return
        }
        sendBelowLayer(c, bytes)
    }

    /// The socket side of the write path: bytes as they go on the wire.
    @inline(__always)
    final func sendBelowLayer(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if !c.outbound.isEmpty {
            queue(c, bytes)
            return
        }
        if corkOwner === c {
            // A large write with nothing gathered before it goes to the socket as it is: the
            // cork saves system calls for small writes, and copying this one would cost more.
            // Not under a layer, whose records (up to 16 KiB each) are better gathered.
            if bytes.count >= corkBypassSize && cork.isEmpty && c.layer == nil {
                sendOrQueue(c, bytes)
                return
            }
            cork.append(bytes)
            if cork.count >= corkFlushThreshold { flushCork(c) }
            return
        }
        sendOrQueue(c, bytes)
    }

    /// The write path of `Connection.write(reservingCapacity:_:)`: render into the cork (inside a
    /// callback) or the connection's queue, then send as `write` would.
    final func writeInPlace(
        _ c: Connection, _ capacity: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws -> Int {
        if let layer = c.layer, !c.belowLayer {
            // Rendered into the loop's scratch buffer, then encoded by the layer.
            defer { layerScratch.reset(keepingCapacityUpTo: 1 << 20) }
            let n = try layerScratch.appendInPlace(reserving: capacity, body)
            writeThroughLayer(c, layer, layerScratch.readable)
            return n
        }
        if c.outbound.isEmpty && corkOwner === c {
            let n = try cork.appendInPlace(reserving: capacity, body)
            if cork.count >= corkFlushThreshold { flushCork(c) }
            return n
        }
        let wasEmpty = c.outbound.isEmpty
        let n = try c.outbound.appendInPlace(reserving: capacity, high: options.outboundHighWatermark, body)
        if wasEmpty && n > 0 { flush(c) }
        return n
    }

    /// Sends `bytes` now; what the socket does not take is queued, with write interest on.
    /// Nothing may be queued for `c` already (that would reorder the output).
    @inline(__always)
    final func sendOrQueue(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        let sent: Int
        do {
            sent = try Socket.send(c.fd, bytes)
        } catch {
            fail(c, error)
            return
        }
        if sent > 0 {
            c.lastWrite = clock
            stats.bytesWritten &+= sent
        }
        if sent < bytes.count {
            queue(c, UnsafeRawBufferPointer(rebasing: bytes[sent...]))
        }
    }

    /// Adds to `c`'s queue, with write interest on. A writability flip is told to the handler
    /// by `settle`, at the next point where no write is half done: the end of the callback, of
    /// the handle's write, or of the writable event.
    final func queue(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        c.outbound.append(bytes, high: options.outboundHighWatermark)
        if !c.interest.contains(.write) { updateInterest(c) }
    }

    /// The write path of `Connection.writev`: one gathering send when nothing is queued.
    final func writev(_ c: Connection, _ buffers: [[UInt8]]) {
        if !c.outbound.isEmpty || corkOwner === c || buffers.count > iovecCapacity || c.layer != nil {
            for b in buffers where c.state == .open { b.withUnsafeBytes { write(c, $0) } }
            return
        }
        var total = 0
        var n = 0
        // `buffers` is immutable and alive for this whole call, so each element's storage
        // stays where the iovecs point.
        for b in buffers where !b.isEmpty {
            b.withUnsafeBytes { raw in
                iovecs[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            }
            total += b.count
            n += 1
        }
        guard n > 0 else { return }
        var sent: Int
        do {
            sent = try Socket.sendv(c.fd, iovecs, n)
        } catch {
            fail(c, error)
            return
        }
        if sent > 0 {
            c.lastWrite = clock
            stats.bytesWritten &+= sent
        }
        guard sent < total else { return }
        for b in buffers where !b.isEmpty {
            if sent >= b.count { sent -= b.count; continue }
            b.withUnsafeBytes { queue(c, UnsafeRawBufferPointer(rebasing: $0[sent...])) }
            sent = 0
        }
    }

    /// Sends the cork for `c`; what the socket does not take moves to `c`'s own queue.
    final func flushCork(_ c: Connection) {
        guard !cork.isEmpty else { return }
        defer { cork.reset(keepingCapacityUpTo: 1 << 20) }
        guard c.state != .closed else { return }
        sendOrQueue(c, cork.readable)
    }

    /// Sends as much queued output as the socket takes. Returns the error if the socket failed
    /// (the connection is then closed, or will be when the current callback returns).
    @discardableResult
    final func flush(_ c: Connection) -> (any Error)? {
        if corkOwner === c { flushCork(c) }
        var progressed = false
        while !c.outbound.isEmpty {
            let sent: Int
            do {
                sent = try Socket.send(c.fd, c.outbound.readable)
            } catch {
                fail(c, error)
                return error
            }
            if sent == 0 { break }
            progressed = true
            stats.bytesWritten &+= sent
            c.outbound.consume(sent, low: options.outboundLowWatermark)
        }
        if progressed {
            c.lastWrite = clock
            if c.state == .draining { c.lastProgress = .now }
        }
        return nil
    }

    /// The socket takes output again.
    final func handleWritable(_ c: Connection) {
        flush(c)
        switch c.state {
        case .open:
            settle(c)
        case .draining:
            if c.outbound.isEmpty { finishClose(c) }
        case .lingering, .closed:
            break
        }
    }

    /// The cap on output handed over by other threads (`ConnectionHandle.write`): past it the
    /// write fails and the connection is aborted, so the stream never has a hole.
    final func takeAsyncWrite(_ c: Connection, _ buffers: [[UInt8]], bytes: Int) -> Result<Void, any Error> {
        if c.outboundBuffered + bytes > options.asyncWriteLimit {
            let error = GNetError.outboundLimitExceeded(limit: options.asyncWriteLimit)
            abort(c, error)
            return .failure(error)
        }
        if buffers.count == 1 { buffers[0].withUnsafeBytes { write(c, $0) } } else { writev(c, buffers) }
        guard c.state != .closed else { return .failure(GNetError.connectionClosed) }
        if c.state == .open && !c.inCallback { settle(c) }
        return .success(())
    }
}
