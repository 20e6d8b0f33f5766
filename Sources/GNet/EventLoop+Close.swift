import Glibc
import Poller

/// Where a connection is in its life. Every transition is in `EventLoop+Close.swift`.
///
/// ```
///            close (orderly)             output sent:                peer's EOF,
///   open ───────────────────▶ draining ──shutdown(SHUT_WR)──▶ lingering ──or lingerTimeout──▶ closed
///     │  nothing queued ─────────────────────────▲                                              ▲
///     │  socket failed, peer reset ──────────────┼──────────────────────────────────────────────┤
///     └─ abandoned (no progress for closeTimeout, asyncWriteLimit, abort()): reset ─────────────┘
/// ```
///
/// - `draining`: reads are off; queued output is sent as the peer takes it. The deadline is
///   `closeTimeout` without progress, so a slow reader gets every byte.
/// - `lingering`: the write side is shut down (the peer sees EOF after the last byte); input is
///   read and discarded until the peer's EOF, because closing over unread input makes the
///   kernel send a reset that destroys the reply still in flight. Skipped when the peer's EOF
///   was already read.
/// - Abandoning output always ends in a reset, so a peer never mistakes a truncated stream
///   for a complete one, and `onClose` gets the reason.
enum ConnectionState: Equatable {
    case open, draining, lingering, closed
}

/// Why a connection closes: what `onClose` will be told, and how the socket is closed.
enum CloseCause {
    /// Asked for (`close()`, `.close`, a handle, a stop, the peer's EOF): send what is queued,
    /// then close gracefully. `onClose` gets nil.
    case orderly
    /// The socket failed (a send or read error, a reset by the peer): close now. `onClose`
    /// gets the error.
    case failed(any Error)
    /// Output is abandoned: close with a reset. `onClose` gets the error.
    case abandoned(any Error)

    /// When two closes are asked for during one callback, the one with an error wins (a
    /// failure is never hidden behind an orderly close), the first error first.
    func merged(with later: CloseCause) -> CloseCause {
        if case .orderly = self { return later }
        return self
    }
}

extension EventLoop {
    /// A failure of `c`'s socket: close it with `error`, after the current callback if one runs.
    final func fail(_ c: Connection, _ error: any Error) {
        requestClose(c, .failed(error))
    }

    /// Closes `c` for `cause`; inside a callback for `c`, once it returns. A connection already
    /// closing accepts only a harder close (a failure or an abort).
    final func requestClose(_ c: Connection, _ cause: CloseCause) {
        guard c.state != .closed else { return }
        if c.inCallback {
            c.pendingClose = c.pendingClose?.merged(with: cause) ?? cause
            return
        }
        if c.connectedDatagram {
            // Nothing is ever queued, and there is no stream to shut down: close now.
            switch cause {
            case .orderly: closeNow(c, error: nil)
            case .failed(let error), .abandoned(let error): closeNow(c, error: error)
            }
            return
        }
        switch cause {
        case .orderly:
            guard c.state == .open else { return }
            beginDraining(c)
        case .failed(let error):
            closeNow(c, error: error)
        case .abandoned(let error):
            abort(c, error)
        }
    }

    /// An orderly close: send what is queued now, then either finish or wait in `draining`.
    private final func beginDraining(_ c: Connection) {
        if let layer = c.layer {
            c.belowLayer = true
            layer.closing(layerContext(c))
            c.belowLayer = false
        }
        flush(c)
        guard c.state == .open else { return } // the flush failed and closed it
        if c.outbound.isEmpty {
            finishClose(c)
            return
        }
        c.state = .draining
        c.lastProgress = .now
        updateInterest(c)
        schedule(after: options.closeTimeout, .drainDeadline(c.fd, c.generation))
    }

    /// Output is sent: shut down the write side and linger for the peer's EOF, or close at
    /// once when the peer's EOF was already read.
    final func finishClose(_ c: Connection) {
        if c.inputClosed {
            closeNow(c, error: nil)
            return
        }
        if Glibc.shutdown(c.fd, Int32(SHUT_WR)) != 0 {
            // Not connected any more: the peer reset, and may have lost what was sent.
            closeNow(c, error: SystemError("shutdown(SHUT_WR)", errno: errno))
            return
        }
        c.state = .lingering
        c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
        c.inbound.release()
        updateInterest(c)
        schedule(after: options.lingerTimeout, .lingerDeadline(c.fd, c.generation))
    }

    /// A lingering connection is readable: discard input until the peer's EOF, then close.
    final func discardLingering(_ c: Connection) {
        for _ in 0..<16 {
            let n: Int?
            do {
                n = try Socket.read(c.fd, readBuffer.baseAddress!, readBuffer.count)
            } catch {
                closeNow(c, error: nil) // everything was sent before; the peer went away
                return
            }
            guard let n else { return }
            if n == 0 {
                closeNow(c, error: nil)
                return
            }
        }
        if trigger == .edge { queueEdgeRetry(c) } // input may be left, and no edge will tell
    }

    /// The drain deadline came: abort if output made no progress for `closeTimeout`, else
    /// look again `closeTimeout` after the last progress.
    final func drainDeadlinePassed(_ c: Connection) {
        guard c.state == .draining else { return }
        let due = c.lastProgress + options.closeTimeout
        if due > .now {
            schedule(at: due, .drainDeadline(c.fd, c.generation))
            return
        }
        abort(c, GNetError.closeTimeout(unsent: c.outbound.count))
    }

    /// The linger deadline came without the peer's EOF: everything was sent, so close; read
    /// away what arrived first so the close is not a reset.
    final func lingerDeadlinePassed(_ c: Connection) {
        guard c.state == .lingering else { return }
        discardLingering(c)
        if c.state != .closed { closeNow(c, error: nil) }
    }

    /// Closes with a reset (`SO_LINGER` 0): the peer sees `ECONNRESET`, not a clean EOF after
    /// whatever part of the output it got.
    final func abort(_ c: Connection, _ error: any Error) {
        guard c.state != .closed else { return }
        if !c.isDatagram {
            var l = linger(l_onoff: 1, l_linger: 0)
            try? Socket.setLinger(c.fd, &l) // fails only if the socket is already gone: nothing to reset
        }
        closeNow(c, error: error)
    }

    /// Deregisters, calls `onClose`, then closes the descriptor and completes the handles'
    /// close requests. Exactly once per connection.
    final func closeNow(_ c: Connection, error: (any Error)?) {
        guard c.state != .closed else { return }
        c.state = .closed
        c.pendingClose = nil
        if corkOwner === c { corkOwner = nil; cork.reset(keepingCapacityUpTo: 1 << 20) }
        do {
            try poller.deregister(c.fd, interest: c.interest)
        } catch {
            var metadata = connectionMetadata(c)
            metadata["error"] = "\(error)"
            logger.debug("deregistering a closing connection failed", metadata: metadata)
        }
        connections[Int(c.fd)] = nil
        connectionCount -= 1
        inbox.connectionCount.subtract(1, ordering: .relaxed)
        c.inCallback = true
        let reason = error ?? c.idle?.closeReason
        countClose(reason)
        let action = handler.onClose(c, error: reason)
        c.inCallback = false
        _ = closeDescriptor(c.fd)
        c.layer = nil
        c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
        c.inbound.release()
        _ = c.outbound.abandon()
        if !c.closeWaiters.isEmpty {
            let waiters = c.closeWaiters
            c.closeWaiters = []
            for w in waiters { w(.success(())) }
        }
        if action == .shutdown { engine.stop() }
    }
}
