import GNetLocks
import Glibc

/// The keyspace of gnet-kv: byte keys to byte values, shared by every loop and the pool.
///
/// ## Threads
/// Every method may be called from any thread. One dictionary behind one `Locked` (a pthread
/// mutex ThreadSanitizer can check); a call holds it briefly and never does I/O under it:
/// `save(to:)` takes the dictionary under the lock (copy-on-write: O(1)) and writes the file
/// after releasing it, so loops keep answering while a worker saves. The price: the first
/// write during a save copies the dictionary, on that loop, under the lock (Redis forks for
/// the same reason; a sharded store would copy one shard).
public final class KVStore: Sendable {
    private let entries = Locked<[[UInt8]: [UInt8]]>([:])
    /// Held for a whole `save(to:)`, file I/O included (workers only, never a loop): saves from
    /// two connections would otherwise write the same `path.tmp` at once and one rename fail.
    private let saving = Locked(())

    public init() {}

    public func get(_ key: [UInt8]) -> [UInt8]? { entries.withLock { $0[key] } }

    public func set(_ key: [UInt8], _ value: [UInt8]) { entries.withLock { $0[key] = value } }

    /// Removes `key`; whether it was there.
    @discardableResult
    public func delete(_ key: [UInt8]) -> Bool { entries.withLock { $0.removeValue(forKey: key) != nil } }

    public var count: Int { entries.withLock { $0.count } }

    /// Runs one inline request (not SAVE, which the handler sends to the pool).
    public func execute(_ request: KVRequest) -> KVReply {
        switch request {
        case .get(let key):
            return get(key).map { .ok($0) } ?? .notFound
        case .set(let key, let value):
            set(key, value)
            return .ok([])
        case .delete(let key):
            return delete(key) ? .ok([]) : .notFound
        case .save:
            return .error("SAVE runs on the worker pool, not inline")
        }
    }

    // MARK: Snapshots

    /// The snapshot file starts with these 8 bytes, then holds each entry as
    /// `u32 key length, key, u32 value length, value` (big-endian), in no particular order.
    static let magic: [UInt8] = Array("GNETKV1\n".utf8)

    /// Writes every entry to `path`, atomically: into `path.tmp`, `fsync`, then `rename` over
    /// `path` and `fsync` the directory, so a crash leaves the old snapshot or the new one.
    /// Blocking: call it on a worker thread, never on a loop. Returns the number of entries.
    /// Saves run one at a time, each writing what the store held when it started, so the file
    /// ends up with the snapshot of the last SAVE to start.
    @discardableResult
    public func save(to path: String) throws -> Int {
        try saving.withLock { _ throws in try writeSnapshot(to: path) }
    }

    private func writeSnapshot(to path: String) throws -> Int {
        let snapshot = entries.withLock { $0 }
        var bytes = Self.magic
        bytes.reserveCapacity(snapshot.reduce(8) { $0 + 8 + $1.key.count + $1.value.count })
        for (key, value) in snapshot {
            append(UInt32(key.count), to: &bytes)
            bytes += key
            append(UInt32(value.count), to: &bytes)
            bytes += value
        }
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw KVStoreError.system("open(\(temporary))", errno) }
        do {
            try bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw KVStoreError.system("write(\(temporary))", errno)
                    }
                    offset += n
                }
            }
            guard fsync(fd) == 0 else { throw KVStoreError.system("fsync(\(temporary))", errno) }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let e = errno
            unlink(temporary)
            throw KVStoreError.system("rename(\(temporary), \(path))", e)
        }
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let dfd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
        return snapshot.count
    }

    /// Adds every entry of the snapshot at `path` (a missing file is an empty store) and
    /// returns how many it read. Throws `KVStoreError.corrupt` for a file that is not a whole
    /// snapshot. Blocking: call it before the engine starts, or on a worker.
    @discardableResult
    public func load(from path: String) throws -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return 0 }
            throw KVStoreError.system("open(\(path))", errno)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw KVStoreError.system("read(\(path))", errno)
            }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        guard bytes.starts(with: Self.magic) else { throw KVStoreError.corrupt(path, offset: 0) }
        var loaded: [[UInt8]: [UInt8]] = [:]
        var offset = Self.magic.count
        func field() throws -> [UInt8] {
            guard bytes.count - offset >= 4 else { throw KVStoreError.corrupt(path, offset: offset) }
            let length = bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
            guard bytes.count - offset - 4 >= length else { throw KVStoreError.corrupt(path, offset: offset) }
            defer { offset += 4 + length }
            return Array(bytes[(offset + 4)..<(offset + 4 + length)])
        }
        while offset < bytes.count {
            let key = try field()
            loaded[key] = try field()
        }
        entries.withLock { $0.merge(loaded) { _, new in new } }
        return loaded.count
    }

    private func append(_ n: UInt32, to bytes: inout [UInt8]) {
        bytes += [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
    }
}

/// Why a snapshot could not be written or read.
public enum KVStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    case system(String, Int32)
    case corrupt(String, offset: Int)

    public var description: String {
        switch self {
        case .system(let call, let e): "\(call): \(String(cString: strerror(e)))"
        case .corrupt(let path, let offset): "\(path) is not a gnet-kv snapshot (bad data at byte \(offset)); move it away or pass another --data"
        }
    }
}
