import GNetLocks
import Glibc
import HeapModule

/// The string keyspace: byte keys to byte values with optional expiry, shared by every loop.
///
/// ## Threads
/// Every method may be called from any thread. Keys are spread over `shardCount` shards, each
/// a dictionary behind its own lock (`Locked`, a pthread mutex ThreadSanitizer can check), so loops working on different keys rarely wait for each
/// other. A call holds one shard lock at a time and never calls out while holding it.
///
/// ## Expiry
/// A key with a deadline is removed lazily when it is next touched, as in Redis, and by
/// `sweep(budget:)`, which the server calls on each engine tick: every deadline also sits in its
/// shard's min-heap, so a sweep pops what is due without scanning the keyspace. A deadline that
/// was overwritten stays in the heap until it is due (the sweep then skips it), or until the heap
/// holds twice as many deadlines as the shard has keys, when it is rebuilt.
public final class KeyValueStore: Sendable {
    /// Milliseconds on a monotonic clock. Deadlines are compared with it, never shown.
    public typealias Clock = @Sendable () -> Int64

    struct Entry {
        var value: [UInt8]
        /// The clock's reading at which the key expires; 0 for never.
        var expiresAt: Int64
    }

    struct Deadline: Comparable {
        let at: Int64
        let key: Key
        static func < (a: Deadline, b: Deadline) -> Bool { a.at < b.at }
        static func == (a: Deadline, b: Deadline) -> Bool { a.at == b.at && a.key == b.key }
    }

    struct Table {
        var entries: [Key: Entry] = [:]
        var deadlines = Heap<Deadline>()

        /// The entry for `key` unless it is missing or expired (an expired one is removed).
        /// Reads the clock only for a key that has a deadline.
        mutating func live(_ key: Key, _ now: inout Now) -> Entry? {
            guard let entry = entries[key] else { return nil }
            if entry.expiresAt != 0 && entry.expiresAt <= now.value {
                entries[key] = nil
                return nil
            }
            return entry
        }

        mutating func track(_ key: Key, expiresAt: Int64) {
            guard expiresAt != 0 else { return }
            deadlines.insert(Deadline(at: expiresAt, key: key))
            if deadlines.count > max(1024, 2 * entries.count) {
                deadlines = Heap(entries.lazy.filter { $0.value.expiresAt != 0 }.map { Deadline(at: $0.value.expiresAt, key: $0.key) })
            }
        }
    }

    /// The clock, read at most once per call and only when a deadline needs comparing.
    struct Now {
        let clock: Clock
        var cached: Int64? = nil
        var value: Int64 {
            mutating get {
                if let cached { return cached }
                let t = clock()
                cached = t
                return t
            }
        }
    }

    final class Shard: Sendable {
        let table = Locked(Table())
    }

    private let shards: [Shard]
    private let shardMask: Int
    public let clock: Clock

    /// A store with `shardCount` shards (rounded up to a power of two) and `clock` for
    /// deadlines (by default the monotonic clock; tests pass one they control).
    public init(shardCount: Int = 16, clock: Clock? = nil) {
        var n = 1
        while n < max(1, shardCount) { n <<= 1 }
        shards = (0..<n).map { _ in Shard() }
        shardMask = n - 1
        self.clock = clock ?? KeyValueStore.monotonicMilliseconds
    }

    /// `CLOCK_MONOTONIC` in milliseconds.
    @Sendable public static func monotonicMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    @inline(__always)
    private func shard(_ key: Key) -> Shard {
        shards[Int(truncatingIfNeeded: key.shardHash) & shardMask]
    }

    // MARK: Strings

    /// The value of `key`, or nil when it is missing or expired.
    public func get(_ key: Key) -> [UInt8]? {
        var now = Now(clock: clock)
        return shard(key).table.withLock { $0.live(key, &now)?.value }
    }

    public enum Condition: Sendable { case always, ifAbsent, ifPresent }
    public enum Expiry: Sendable, Hashable {
        /// No deadline (a previous one is cleared).
        case none
        /// Keep the key's current deadline (`KEEPTTL`).
        case keep
        /// Expire when the clock reaches this reading.
        case at(Int64)
    }

    /// Sets `key` to `value` when `condition` holds; returns whether it did.
    @discardableResult
    public func set(_ key: Key, _ value: [UInt8], condition: Condition = .always, expiry: Expiry = .none) -> Bool {
        var now = Now(clock: clock)
        return shard(key).table.withLock { t in
            if condition == .always && expiry == .none {
                t.entries[key] = Entry(value: value, expiresAt: 0)
                return true
            }
            let old = t.live(key, &now)
            switch condition {
            case .always: break
            case .ifAbsent: if old != nil { return false }
            case .ifPresent: if old == nil { return false }
            }
            let expiresAt: Int64
            switch expiry {
            case .none: expiresAt = 0
            case .keep: expiresAt = old?.expiresAt ?? 0
            case .at(let deadline): expiresAt = deadline
            }
            t.entries[key] = Entry(value: value, expiresAt: expiresAt)
            if case .at = expiry { t.track(key, expiresAt: expiresAt) }
            return true
        }
    }

    /// Removes `key`; returns whether it was there (and not expired).
    @discardableResult
    public func remove(_ key: Key) -> Bool {
        var now = Now(clock: clock)
        return shard(key).table.withLock { t in
            guard let removed = t.entries.removeValue(forKey: key) else { return false }
            return removed.expiresAt == 0 || removed.expiresAt > now.value
        }
    }

    /// Whether `key` is there and not expired.
    public func contains(_ key: Key) -> Bool {
        var now = Now(clock: clock)
        return shard(key).table.withLock { $0.live(key, &now) != nil }
    }

    public enum IncrementResult: Sendable, Hashable {
        case value(Int64)
        case notAnInteger
        case overflow
    }

    /// Adds `delta` to the integer stored at `key` (0 when missing), keeping its deadline.
    public func increment(_ key: Key, by delta: Int64) -> IncrementResult {
        var now = Now(clock: clock)
        return shard(key).table.withLock { t in
            let old = t.live(key, &now)
            var current: Int64 = 0
            if let old {
                guard let n = DecimalBytes.parse(old.value) else { return .notAnInteger }
                current = n
            }
            let (sum, overflow) = current.addingReportingOverflow(delta)
            guard !overflow else { return .overflow }
            t.entries[key] = Entry(value: DecimalBytes.bytes(sum), expiresAt: old?.expiresAt ?? 0)
            return .value(sum)
        }
    }

    public enum TimeToLive: Sendable, Hashable {
        case missing
        case persistent
        case milliseconds(Int64)
    }

    /// How long `key` has left.
    public func timeToLive(_ key: Key) -> TimeToLive {
        var now = Now(clock: clock)
        return shard(key).table.withLock { t in
            guard let e = t.live(key, &now) else { return .missing }
            return e.expiresAt == 0 ? .persistent : .milliseconds(e.expiresAt - now.value)
        }
    }

    // MARK: Keyspace

    /// Keys held, counting expired ones not yet removed (as Redis's DBSIZE does).
    public var count: Int {
        shards.reduce(0) { n, s in n + s.table.withLock { $0.entries.count } }
    }

    public func removeAll() {
        for s in shards { s.table.withLock { $0 = Table() } }
    }

    /// Removes keys whose deadline has passed, at most `budget` per shard; returns how many.
    @discardableResult
    public func sweep(budget: Int = 1000) -> Int {
        var removed = 0
        let now = clock()
        for s in shards {
            removed += s.table.withLock { t in
                var n = 0
                var popped = 0
                while popped < budget, let due = t.deadlines.min, due.at <= now {
                    t.deadlines.removeMin()
                    popped += 1
                    if let e = t.entries[due.key], e.expiresAt == due.at {
                        t.entries[due.key] = nil
                        n += 1
                    }
                }
                return n
            }
        }
        return removed
    }
}
