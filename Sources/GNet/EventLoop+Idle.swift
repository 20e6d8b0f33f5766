/// Which silence an idle timeout measures.
public enum IdleKind: Sendable, Hashable, CustomStringConvertible {
    /// No bytes either way: nothing read from the peer and nothing sent to it
    /// (`Options.idleTimeout`, `Connection.setIdleTimeout`).
    case readWrite
    /// Nothing read from the peer (`Options.readIdleTimeout`, `setReadIdleTimeout`).
    case read
    /// Nothing sent to the peer (`Options.writeIdleTimeout`, `setWriteIdleTimeout`).
    case write

    public var description: String {
        switch self {
        case .readWrite: return "idle"
        case .read: return "read-idle"
        case .write: return "write-idle"
        }
    }
}

/// A connection's idle state, allocated when it first gets a timeout.
final class IdleState {
    var settings = IdleTimeouts()
    /// The deadline of the connection's current idle timer (others are stale).
    var timerDue: ContinuousClock.Instant? = nil
    /// The error `onClose` gets when `onIdle` closed the connection.
    var closeReason: (any Error)? = nil
}

/// A connection's idle timeouts (nil: off).
struct IdleTimeouts: Equatable {
    var readWrite: Duration? = nil
    var read: Duration? = nil
    var write: Duration? = nil

    init(readWrite: Duration? = nil, read: Duration? = nil, write: Duration? = nil) {
        self.readWrite = readWrite
        self.read = read
        self.write = write
    }

    init(_ options: Options) {
        self.init(readWrite: options.idleTimeout, read: options.readIdleTimeout, write: options.writeIdleTimeout)
    }

    var isOff: Bool { readWrite == nil && read == nil && write == nil }
}

// MARK: - How idle timeouts work
//
// Resetting a timeout costs no timer operation: the read and write paths store the loop's
// clock (`EventLoop.clock`, read once per loop iteration, and only once some connection on the
// loop has a timeout) in `Connection.lastRead` / `lastWrite`. Each connection with a timeout
// has one timer in the loop's heap, armed for the earliest instant at which one of its
// timeouts could expire. When it fires it looks at the stamps: if there was activity since,
// it re-arms for the new earliest instant (a busy connection costs one heap operation per
// timeout period, none per message); otherwise `onIdle` is called. So a timeout fires on
// time, not after a sweep period, and no timer is ever cancelled: a timer that is no longer
// the connection's current one (`IdleState.timerDue`) is ignored when it fires.

extension EventLoop {
    /// Starts reading the clock every iteration: some connection now has an idle timeout.
    final func watchIdleness() {
        guard !idleWatch else { return }
        idleWatch = true
        readClock()
    }

    /// Reads the loop's clock (`now`, `clock`).
    final func readClock() {
        now = .now
        clock = now - epoch
    }

    /// The time since `epoch`, read now (not the loop's clock).
    final var sinceEpoch: Duration { ContinuousClock.now - epoch }

    /// Gives a new connection the engine-wide timeouts, before `onOpen` (which may override them).
    final func startIdleTimers(_ c: Connection) {
        guard !defaultIdleTimeouts.isOff else { return }
        let state = IdleState()
        state.settings = defaultIdleTimeouts
        c.idle = state
        let now = sinceEpoch // accepts are rare; the loop's clock may be a few events old
        c.lastRead = now
        c.lastWrite = now
        armIdleTimer(c)
    }

    /// The earliest instant one of `c`'s timeouts can expire, with its kind; nil when none is set.
    /// (Since `epoch`.)
    private final func nextIdleExpiry(_ c: Connection) -> (due: Duration, kind: IdleKind)? {
        var best: (due: Duration, kind: IdleKind)? = nil
        func consider(_ due: Duration, _ kind: IdleKind) {
            if best == nil || due < best!.due { best = (due, kind) }
        }
        guard let t = c.idle?.settings else { return nil }
        if let d = t.readWrite { consider(max(c.lastRead, c.lastWrite) + d, .readWrite) }
        if let d = t.read { consider(c.lastRead + d, .read) }
        if let d = t.write { consider(c.lastWrite + d, .write) }
        return best
    }

    /// Makes sure a timer is armed no later than `c`'s next possible expiry.
    final func armIdleTimer(_ c: Connection) {
        guard c.state == .open, let idle = c.idle, let (since, _) = nextIdleExpiry(c) else { return }
        let due = epoch + since
        if let armed = idle.timerDue, armed <= due { return }
        idle.timerDue = due
        schedule(at: due, .idle(c.fd, c.generation))
    }

    /// `c`'s idle timer (armed for `deadline`) fired: re-arm if there was activity since, else
    /// tell the handler, and close with `GNetError.idleTimeout` if it returns `.close`.
    final func idleTimerFired(_ c: Connection, _ deadline: ContinuousClock.Instant) {
        guard c.state == .open, let idle = c.idle, idle.timerDue == deadline else { return } // superseded
        idle.timerDue = nil
        guard let (due, kind) = nextIdleExpiry(c) else { return } // timeouts turned off
        let now = sinceEpoch
        guard due <= now else {
            armIdleTimer(c)
            return
        }
        beginCallback(c)
        let action = handler.onIdle(c, kind)
        if action == .close && idle.closeReason == nil { idle.closeReason = GNetError.idleTimeout(kind) }
        endCallback(c, action)
        guard c.state == .open else { return }
        // Kept open: the next `onIdle` of this kind comes after another full period.
        switch kind {
        case .readWrite: c.lastRead = max(c.lastRead, now); c.lastWrite = max(c.lastWrite, now)
        case .read: c.lastRead = max(c.lastRead, now)
        case .write: c.lastWrite = max(c.lastWrite, now)
        }
        armIdleTimer(c)
    }
}

// MARK: - Per connection

extension Connection {
    /// Sets this connection's idle timeout: with no bytes read or sent for `timeout`, the
    /// handler's `onIdle(_:_:)` is called with `.readWrite` (by default it closes the
    /// connection, `onClose` getting `GNetError.idleTimeout(.readWrite)`). nil turns it off.
    /// Overrides `Options.idleTimeout` for this connection. A connection that had no timeout
    /// counts from now. Loop thread only, like every `Connection` method; throws
    /// `GNetError.invalidOption` for a timeout that is not positive.
    public func setIdleTimeout(_ timeout: Duration?) throws {
        try setIdle(\.readWrite, timeout, "idleTimeout")
    }

    /// Sets this connection's read-idle timeout: nothing read from the peer for `timeout`
    /// calls `onIdle(_:_:)` with `.read`. nil turns it off. Overrides `Options.readIdleTimeout`.
    public func setReadIdleTimeout(_ timeout: Duration?) throws {
        try setIdle(\.read, timeout, "readIdleTimeout")
    }

    /// Sets this connection's write-idle timeout: nothing sent to the peer for `timeout` calls
    /// `onIdle(_:_:)` with `.write`. nil turns it off. Overrides `Options.writeIdleTimeout`.
    public func setWriteIdleTimeout(_ timeout: Duration?) throws {
        try setIdle(\.write, timeout, "writeIdleTimeout")
    }

    /// The idle timeouts in force for this connection: no bytes either way, nothing read,
    /// nothing sent (nil: off).
    public var idleTimeouts: (idle: Duration?, read: Duration?, write: Duration?) {
        let s = idle?.settings ?? IdleTimeouts()
        return (s.readWrite, s.read, s.write)
    }

    private func setIdle(_ which: WritableKeyPath<IdleTimeouts, Duration?>, _ timeout: Duration?, _ name: String) throws {
        guard state != .closed else { throw GNetError.connectionClosed }
        if isListenerDatagram {
            throw GNetError.misuse("idle timeouts apply to connections; a datagram listener's socket has no peer to time out")
        }
        if let timeout, timeout <= .zero {
            throw GNetError.invalidOption(name: name, reason: "must be positive (nil turns it off), got \(timeout)")
        }
        if timeout != nil { owner.watchIdleness() }
        let box: IdleState
        if let idle { box = idle } else {
            guard timeout != nil else { return } // turning off what was never on
            box = IdleState()
            idle = box
        }
        if box.settings.isOff {
            let now = owner.sinceEpoch
            lastRead = now
            lastWrite = now
        }
        box.settings[keyPath: which] = timeout
        owner.armIdleTimer(self)
    }
}
