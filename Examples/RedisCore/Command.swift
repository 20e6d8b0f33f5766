/// A parsed request: its arguments, lent from the input buffer. Valid only while that buffer is
/// (inside the `process` call that made it).
public struct Request {
    public let buffer: UnsafeRawBufferPointer
    public let slices: [ArgumentSlice]

    public init(buffer: UnsafeRawBufferPointer, slices: [ArgumentSlice]) {
        self.buffer = buffer
        self.slices = slices
    }

    /// The number of arguments, the command name included.
    @inline(__always)
    public var count: Int { slices.count }

    /// Argument `i` (0 is the command name), lent.
    @inline(__always)
    public subscript(_ i: Int) -> UnsafeRawBufferPointer {
        let s = slices[i]
        return UnsafeRawBufferPointer(rebasing: buffer[s.offset..<(s.offset + s.count)])
    }

    /// Argument `i` as a key.
    public func key(_ i: Int) -> Key { Key(self[i]) }

    /// A copy of argument `i`.
    public func bytes(_ i: Int) -> [UInt8] { Array(self[i]) }

    /// Whether argument `i` is `word` (lowercase letters), ignoring ASCII case.
    public func argument(_ i: Int, is word: StaticString) -> Bool {
        ASCII.equalsIgnoringCase(self[i], word)
    }
}

/// The commands this server knows, with Redis's names and arities.
public enum Command: CaseIterable, Sendable {
    case get, set, ping, echo, del, exists, incr, decr, incrby, decrby, mset, mget
    case ttl, pttl, dbsize, flushdb, flushall, command, config, quit

    /// The lowercase name, as error messages quote it.
    public var name: StaticString {
        switch self {
        case .get: "get"
        case .set: "set"
        case .ping: "ping"
        case .echo: "echo"
        case .del: "del"
        case .exists: "exists"
        case .incr: "incr"
        case .decr: "decr"
        case .incrby: "incrby"
        case .decrby: "decrby"
        case .mset: "mset"
        case .mget: "mget"
        case .ttl: "ttl"
        case .pttl: "pttl"
        case .dbsize: "dbsize"
        case .flushdb: "flushdb"
        case .flushall: "flushall"
        case .command: "command"
        case .config: "config"
        case .quit: "quit"
        }
    }

    /// Redis's arity: `n > 0` means exactly `n` arguments (the name included), `n < 0` at
    /// least `-n`.
    public var arity: Int {
        switch self {
        case .get, .echo, .incr, .decr, .ttl, .pttl: 2
        case .set, .mset: -3
        case .ping, .flushdb, .flushall, .command, .quit: -1
        case .del, .exists, .mget, .config: -2
        case .incrby, .decrby: 3
        case .dbsize: 1
        }
    }

    public func accepts(argumentCount n: Int) -> Bool {
        arity > 0 ? n == arity : n >= -arity
    }

    /// The command called `name`, in any case, without building a `String`.
    public static func lookup(_ name: UnsafeRawBufferPointer) -> Command? {
        @inline(__always) func `is`(_ c: Command) -> Bool { ASCII.equalsIgnoringCase(name, c.name) }
        switch name.count {
        case 3:
            if `is`(.get) { return .get }
            if `is`(.set) { return .set }
            if `is`(.del) { return .del }
            if `is`(.ttl) { return .ttl }
        case 4:
            if `is`(.ping) { return .ping }
            if `is`(.incr) { return .incr }
            if `is`(.decr) { return .decr }
            if `is`(.mget) { return .mget }
            if `is`(.mset) { return .mset }
            if `is`(.echo) { return .echo }
            if `is`(.pttl) { return .pttl }
            if `is`(.quit) { return .quit }
        case 6:
            if `is`(.exists) { return .exists }
            if `is`(.incrby) { return .incrby }
            if `is`(.decrby) { return .decrby }
            if `is`(.config) { return .config }
            if `is`(.dbsize) { return .dbsize }
        case 7:
            if `is`(.command) { return .command }
            if `is`(.flushdb) { return .flushdb }
        case 8:
            if `is`(.flushall) { return .flushall }
        default:
            break
        }
        return nil
    }
}

enum ASCII {
    /// Whether `bytes` spell `lowercase` (ASCII letters, digits, punctuation), ignoring the case
    /// of letters.
    @inline(__always)
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        let n = lowercase.utf8CodeUnitCount
        guard bytes.count == n else { return false }
        let word = lowercase.utf8Start
        for i in 0..<n {
            let a = bytes[i]
            let b = word[i]
            if a == b { continue }
            // Only a letter may differ, and only by case.
            guard b >= UInt8(ascii: "a"), b <= UInt8(ascii: "z"), a | 0x20 == b else { return false }
        }
        return true
    }
}
