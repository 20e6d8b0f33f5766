import Poller
import PollerDispatch
import PollerEpoll
#if Libevent
import PollerLibevent
#endif

#if canImport(Glibc)
import Glibc
#endif

/// The poller backends, decided in this one place: which exist on this platform, which is the
/// default, how a name maps to one, and how each is constructed.
///
/// Names, as `Options.poller`, `--poller` and `GNET_POLLER` take them:
/// - `epoll`: Linux epoll, the fast path and the Linux default.
/// - `libevent`: libevent on its best method; `libevent-epoll`, `libevent-poll`,
///   `libevent-select` (`libevent-kqueue` on the BSDs and macOS) pin the method.
/// - `dispatch`: DispatchSource, the portable fallback (like gnet's Go-stdlib mode).
public enum PollerKind: Sendable, Hashable, CustomStringConvertible {
    /// Linux epoll.
    case epoll
    /// libevent; `method` nil picks libevent's best (epoll on Linux, kqueue on BSD/macOS).
    case libevent(method: String?)
    /// DispatchSource read and write sources on a private queue.
    case dispatch

    /// The name users type.
    public var name: String {
        switch self {
        case .epoll: return "epoll"
        case .libevent(nil): return "libevent"
        case .libevent(let m?): return "libevent-\(m)"
        case .dispatch: return "dispatch"
        }
    }

    public var description: String { name }

    /// Every backend that can run on this machine, platform default first, then libevent on
    /// each method it offers here.
    public static var allAvailable: [PollerKind] {
        var kinds: [PollerKind] = []
        #if os(Linux)
        kinds.append(.epoll)
        #endif
        #if Libevent
        kinds.append(.libevent(method: nil))
        kinds += LibeventPoller.availableMethods.map { .libevent(method: $0) }
        #endif
        kinds.append(.dispatch)
        return kinds
    }

    /// What an engine uses when nothing is chosen: epoll on Linux, libevent (kqueue) elsewhere.
    public static var platformDefault: PollerKind {
        #if os(Linux)
        return .epoll
        #elseif Libevent
        return .libevent(method: nil)
        #else
        return .dispatch
        #endif
    }

    /// Every name `init(name:)` accepts on this machine.
    public static var validNames: [String] { allAvailable.map(\.name) }

    /// The backend called `name`. Throws `GNetError.pollerUnavailable` listing the valid names.
    public init(name: String) throws(GNetError) {
        let wanted = name.lowercased()
        guard let kind = Self.allAvailable.first(where: { $0.name == wanted }) else {
            throw .pollerUnavailable(
                name: name, reason: "unknown or not available here; valid names: \(Self.validNames.joined(separator: ", "))")
        }
        self = kind
    }

    /// The environment variable that overrides the engine's choice, for debugging without a rebuild.
    public static let environmentVariable = "GNET_POLLER"

    /// The backend named by `GNET_POLLER`, nil when it is unset or empty.
    public static func fromEnvironment() throws(GNetError) -> PollerKind? {
        guard let raw = getenv(environmentVariable).map({ String(cString: $0) }), !raw.isEmpty else { return nil }
        do {
            return try PollerKind(name: raw)
        } catch {
            throw .pollerUnavailable(name: raw, reason: "set by \(environmentVariable); valid names: \(validNames.joined(separator: ", "))")
        }
    }

    /// The backend an engine with `option` runs on: `GNET_POLLER` if set, else `option`, else
    /// the platform default.
    public static func resolve(_ option: PollerKind?) throws(GNetError) -> PollerKind {
        try fromEnvironment() ?? option ?? platformDefault
    }

    /// A new poller of this kind, type-erased (for tests and tools; the engine keeps the type).
    public func makePoller() throws -> any Poller {
        switch self {
        case .epoll: return try EpollPoller()
        case .libevent(let method):
            #if Libevent
            return try LibeventPoller(method: method)
            #else
            throw Self.libeventLeftOut(method)
            #endif
        case .dispatch: return DispatchPoller()
        }
    }

    /// The error for the libevent backend in a build without the `Libevent` trait.
    static func libeventLeftOut(_ method: String?) -> GNetError {
        .pollerUnavailable(name: PollerKind.libevent(method: method).name,
                           reason: "this build leaves libevent out (the package's Libevent trait is off); use epoll or dispatch")
    }

    /// A loop running this backend, with the concrete poller type kept for the hot path.
    func makeLoop(index: Int, engine: Engine) throws -> LoopRunner {
        switch self {
        case .epoll: return try LoopRunner(index: index, engine: engine, poller: EpollPoller())
        case .libevent(let method):
            #if Libevent
            return try LoopRunner(index: index, engine: engine, poller: LibeventPoller(method: method))
            #else
            throw Self.libeventLeftOut(method)
            #endif
        case .dispatch: return try LoopRunner(index: index, engine: engine, poller: DispatchPoller())
        }
    }
}
