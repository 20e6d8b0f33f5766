import Glibc
import Poller

/// The read path, the handler callbacks around it, and the one place that decides a
/// connection's interest.
extension EventLoop {
    /// One read, then `onTraffic`. Level-triggered pollers report again if more is waiting.
    @inline(__always)
    final func handleReadable(_ c: Connection) {
        if trigger == .edge {
            readEdge(c)
            return
        }
        let n: Int?
        do {
            n = try Socket.read(c.fd, readBuffer.baseAddress!, readBuffer.count)
        } catch {
            fail(c, error)
            return
        }
        guard let n else { return } // spurious readiness
        if n == 0 {
            inputClosed(c)
            return
        }
        deliver(c, count: n)
    }

    /// Edge-triggered: reads and delivers until the kernel has no more, the connection stops
    /// wanting input (flow control, a close), or the turn's budget is spent. Reading turned
    /// off and on again re-arms the edge (the interest change), so only a spent budget needs
    /// the loop to come back by itself (`edgeRetry`).
    final func readEdge(_ c: Connection) {
        var budget = edgeReadBudget
        while budget > 0 {
            let n: Int?
            do {
                n = try Socket.read(c.fd, readBuffer.baseAddress!, readBuffer.count)
            } catch {
                fail(c, error)
                return
            }
            guard let n else { return } // drained: the next edge tells of more
            if n == 0 {
                inputClosed(c)
                return
            }
            deliver(c, count: n)
            guard c.state == .open, c.interest.contains(.read) else { return }
            budget -= n
        }
        queueEdgeRetry(c)
    }

    final func queueEdgeRetry(_ c: Connection) {
        guard !c.edgeRetryQueued else { return }
        c.edgeRetryQueued = true
        edgeRetry.append(c)
    }

    /// Reads on, for a turn, the connections that spent their budget in the last one.
    final func retryEdgeReads() {
        let due = edgeRetry
        edgeRetry = []
        for c in due {
            c.edgeRetryQueued = false
            switch c.state {
            case .open: if c.interest.contains(.read) { readEdge(c) }
            case .lingering: discardLingering(c)
            case .draining, .closed: break
            }
        }
    }

    /// Reads until the socket is drained (or fails), delivering each chunk: what arrived
    /// before a reset is still the handler's.
    final func drainReads(_ c: Connection) {
        while c.state == .open && !c.inputClosed {
            // A read error ends the draining; the caller closes with the socket's error.
            guard let n = try? Socket.read(c.fd, readBuffer.baseAddress!, readBuffer.count), n > 0 else { return }
            deliver(c, count: n)
        }
    }

    /// The peer's EOF was read. By default the connection closes (after its queued output);
    /// with `allowHalfClosure` the handler decides, and only reading stops.
    final func inputClosed(_ c: Connection) {
        if let layer = c.layer, !c.layerEnded {
            c.belowLayer = true
            do {
                try layer.inputClosed(layerContext(c))
            } catch {
                c.belowLayer = false
                c.inputClosed = true
                fail(c, error)
                return
            }
            c.belowLayer = false
        }
        c.inputClosed = true
        guard options.allowHalfClosure else {
            requestClose(c, .orderly)
            return
        }
        beginCallback(c)
        let action = handler.onInputClosed(c)
        endCallback(c, action)
    }

    /// Lends `count` fresh bytes (with any kept ones) to `onTraffic`.
    @inline(__always)
    final func deliver(_ c: Connection, count: Int) {
        let fresh = UnsafeRawBufferPointer(start: readBuffer.baseAddress, count: count)
        c.lastRead = clock
        stats.bytesRead &+= count
        if let layer = c.layer {
            receiveThroughLayer(c, layer, fresh)
            return
        }
        if c.inbound.isEmpty {
            c.lent = fresh
        } else {
            c.inbound.append(fresh)
        }
        runTraffic(c)
    }

    /// Calls `onTraffic`, again while it makes progress and input remains (unless output has
    /// backed up: then the rest waits until the connection is writable), then keeps what is
    /// left, flushes what was written, and applies the action.
    final func runTraffic(_ c: Connection) {
        c.trafficDeferred = false
        beginCallback(c)
        var action = Action.none
        while true {
            let before = c.inboundBuffered
            action = handler.onTraffic(c)
            if action != .none || c.state != .open || c.pendingClose != nil { break }
            let after = c.inboundBuffered
            if after == 0 || after >= before { break }
            if !c.outbound.isWritable || c.readingPaused {
                c.trafficDeferred = true
                break
            }
        }
        if c.lent.count > 0 {
            c.inbound.append(c.lent)
        } else if c.inbound.isEmpty && c.inbound.capacity > 0 {
            c.inbound.release()
        }
        c.lent = UnsafeRawBufferPointer(start: nil, count: 0)
        endCallback(c, action)
    }

    @inline(__always)
    final func beginCallback(_ c: Connection) {
        c.inCallback = true
        corkOwner = c
    }

    /// Sends the cork, then carries out the callback's action and any close asked for during
    /// it, or settles the connection's interest and writability.
    @inline(__always)
    final func endCallback(_ c: Connection, _ action: Action) {
        if corkOwner === c {
            corkOwner = nil
            flushCork(c)
        }
        c.inCallback = false
        switch action {
        case .none: break
        case .close: c.pendingClose = c.pendingClose?.merged(with: .orderly) ?? .orderly
        case .shutdown: engine.stop()
        }
        if let cause = c.pendingClose {
            c.pendingClose = nil
            requestClose(c, cause)
            return
        }
        if c.state == .open { settle(c) }
    }

    /// Brings an open connection, outside any callback, in line with its state: tells the
    /// handler of a writability flip, sets the poller interest, and re-offers input that was
    /// left waiting for output to drain.
    final func settle(_ c: Connection) {
        guard c.state == .open, !c.inCallback else { return }
        if c.notifiedWritable != c.outbound.isWritable {
            c.notifiedWritable = c.outbound.isWritable
            beginCallback(c)
            let action = handler.onWritabilityChanged(c)
            endCallback(c, action) // settles again
            return
        }
        updateInterest(c)
        if c.trafficDeferred && c.outbound.isWritable && !c.readingPaused && c.inboundBuffered > 0 {
            runTraffic(c)
        }
    }

    /// Whether the loop reads from `c` now: open, input not closed, not paused by the handler,
    /// output not backed up, and unconsumed input under `inboundLimit`.
    @inline(__always)
    final func wantsRead(_ c: Connection) -> Bool {
        !c.inputClosed && !c.readingPaused && c.outbound.isWritable && c.inbound.count < options.inboundLimit
    }

    /// Sets the poller interest `c`'s state calls for (a system call only when it changes).
    @inline(__always)
    final func updateInterest(_ c: Connection) {
        var want: IOEvents
        switch c.state {
        case .open:
            want = wantsRead(c) ? .read : []
            if !c.outbound.isEmpty { want.insert(.write) }
        case .draining:
            want = .write
        case .lingering:
            want = .read
        case .closed:
            return
        }
        guard want != c.interest else { return }
        do {
            try poller.modify(c.fd, from: c.interest, to: want, token: PollToken(fd: c.fd, generation: c.generation))
            c.interest = want
        } catch {
            fail(c, error)
        }
    }
}
