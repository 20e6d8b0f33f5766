import GNet
import GNetLocks
import Synchronization

/// What a handler saw, in order: the part of a scenario every backend must agree on.
public struct Trace: Sendable, Hashable, CustomStringConvertible {
    public enum Event: Sendable, Hashable, CustomStringConvertible {
        case boot
        case open(Int)
        /// Bytes buffered when `onTraffic` was called, summed over calls between other events.
        case traffic(Int, bytes: Int)
        case close(Int, error: Bool)
        case shutdown

        public var description: String {
            switch self {
            case .boot: return "boot"
            case .open(let c): return "open(\(c))"
            case .traffic(let c, let n): return "traffic(\(c),\(n)B)"
            case .close(let c, let e): return "close(\(c)\(e ? ",error" : ""))"
            case .shutdown: return "shutdown"
            }
        }
    }

    public var events: [Event] = []
    public var description: String { events.map(\.description).joined(separator: " ") }

    /// Adds `event`, merging consecutive traffic of one connection (how input is split into
    /// reads is the kernel's business, not the contract's).
    mutating func append(_ event: Event) {
        if case .traffic(let c, let n) = event, case .traffic(let c0, let n0)? = events.last, c0 == c {
            events[events.count - 1] = .traffic(c, bytes: n0 + n)
        } else {
            events.append(event)
        }
    }
}

/// A handler whose behaviour a scenario scripts with closures, and which records the trace,
/// counts callbacks per connection, and checks the lifecycle order as it goes.
public final class ScriptedHandler: EventHandler {
    public typealias OpenBody = @Sendable (Connection, Int) -> (output: [UInt8]?, action: Action)
    public typealias TrafficBody = @Sendable (Connection, Int) -> Action

    private let openBody: OpenBody
    private let trafficBody: TrafficBody
    private let closeBody: (@Sendable (Connection, Int, (any Error)?) -> Void)?
    private let writabilityBody: TrafficBody?
    private let inputClosedBody: TrafficBody?
    private let idleBody: (@Sendable (Connection, Int, IdleKind) -> Action)?
    private let quiesceBody: TrafficBody?

    private struct State {
        var trace = Trace()
        var ids: [ObjectIdentifier: Int] = [:]
        var nextID = 0
        var closed: Set<Int> = []
        var opened = 0
        var closes = 0
        var violations: [String] = []
        var trafficBytes = 0
        var closeErrors: [Int: String] = [:]
        var handles: [ConnectionHandle] = []
        var quiesced: [Int] = []
    }
    private let state = Locked(State())

    public init(
        onOpen: @escaping OpenBody = { _, _ in (nil, .none) },
        onTraffic: @escaping TrafficBody = { _, _ in .none },
        onClose: (@Sendable (Connection, Int, (any Error)?) -> Void)? = nil,
        onWritabilityChanged: TrafficBody? = nil,
        onInputClosed: TrafficBody? = nil,
        onIdle: (@Sendable (Connection, Int, IdleKind) -> Action)? = nil,
        onQuiesce: TrafficBody? = nil
    ) {
        idleBody = onIdle
        quiesceBody = onQuiesce
        openBody = onOpen
        trafficBody = onTraffic
        closeBody = onClose
        writabilityBody = onWritabilityChanged
        inputClosedBody = onInputClosed
    }

    public func onBoot(_ engine: Engine) -> Action {
        state.withLock { $0.trace.append(.boot) }
        return .none
    }

    public func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        let id = state.withLock { s -> Int in
            let id = s.nextID
            s.nextID += 1
            s.ids[ObjectIdentifier(c)] = id
            s.opened += 1
            s.trace.append(.open(id))
            s.handles.append(c.handle)
            return id
        }
        return openBody(c, id)
    }

    public func onTraffic(_ c: Connection) -> Action {
        let n = c.inboundBuffered
        let id = state.withLock { s -> Int in
            guard let id = s.ids[ObjectIdentifier(c)] else {
                s.violations.append("onTraffic for a connection that had no onOpen")
                return -1
            }
            if s.closed.contains(id) { s.violations.append("onTraffic after onClose on connection \(id)") }
            s.trace.append(.traffic(id, bytes: n))
            s.trafficBytes += n
            return id
        }
        return trafficBody(c, id)
    }

    public func onClose(_ c: Connection, error: (any Error)?) -> Action {
        let id = state.withLock { s -> Int in
            guard let id = s.ids.removeValue(forKey: ObjectIdentifier(c)) else {
                s.violations.append("onClose for a connection without onOpen, or a second onClose")
                return -1
            }
            if !s.closed.insert(id).inserted { s.violations.append("second onClose on connection \(id)") }
            s.closes += 1
            s.trace.append(.close(id, error: error != nil))
            if let error { s.closeErrors[id] = "\(error)" }
            return id
        }
        closeBody?(c, id, error)
        return .none
    }

    public func onWritabilityChanged(_ c: Connection) -> Action {
        let id = liveID(c, "onWritabilityChanged")
        return writabilityBody?(c, id) ?? .none
    }

    public func onInputClosed(_ c: Connection) -> Action {
        let id = liveID(c, "onInputClosed")
        return inputClosedBody?(c, id) ?? .none
    }

    /// Without an `onIdle` body, the protocol's default: close.
    public func onIdle(_ c: Connection, _ kind: IdleKind) -> Action {
        let id = liveID(c, "onIdle")
        return idleBody?(c, id, kind) ?? .close
    }

    /// Without an `onQuiesce` body, the protocol's default: close. Recorded in `quiesced`
    /// (not in the trace, so the traces of scenarios that stop with connections open stay
    /// as they were).
    public func onQuiesce(_ c: Connection) -> Action {
        let id = liveID(c, "onQuiesce")
        state.withLock { s in
            if s.quiesced.contains(id) { s.violations.append("second onQuiesce on connection \(id)") }
            s.quiesced.append(id)
        }
        return quiesceBody?(c, id) ?? .close
    }

    /// The connections `onQuiesce` was called for, by id, in call order.
    public var quiesced: [Int] { state.withLock { $0.quiesced } }

    /// The id of an open connection; records a violation for one without `onOpen` or closed.
    private func liveID(_ c: Connection, _ callback: String) -> Int {
        state.withLock { s -> Int in
            guard let id = s.ids[ObjectIdentifier(c)] else {
                s.violations.append("\(callback) for a connection that is not open")
                return -1
            }
            return id
        }
    }

    /// The handle of each connection, in the order they opened.
    public var handles: [ConnectionHandle] { state.withLock { $0.handles } }

    /// The error each closed connection's `onClose` got, by connection id.
    public var closeErrors: [Int: String] { state.withLock { $0.closeErrors } }

    public func onShutdown(_ engine: Engine) {
        state.withLock { $0.trace.append(.shutdown) }
    }

    public var trace: Trace { state.withLock { $0.trace } }
    public var opened: Int { state.withLock { $0.opened } }
    public var closes: Int { state.withLock { $0.closes } }
    /// Connections opened and not yet closed.
    public var open: Int { state.withLock { $0.opened - $0.closes } }
    public var violations: [String] { state.withLock { $0.violations } }

    /// Throws if any lifecycle rule was broken.
    public func checkLifecycle() throws {
        let v = violations
        try expect(v.isEmpty, "lifecycle violations: \(v.prefix(5).joined(separator: "; "))")
        try expect(opened == closes, "\(opened) onOpen but \(closes) onClose")
    }
}
