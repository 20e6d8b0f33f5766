/// What one connection keeps between reads: scratch space reused for every request (so parsing
/// and encoding allocate nothing in the steady state), and the parser's hint.
///
/// Loop-confined, like the connection it belongs to.
public struct RedisSession {
    /// The argument slices of the request being executed.
    var arguments: [ArgumentSlice] = []
    /// Replies not yet handed to the connection.
    public var replies = ReplyBuffer()
    /// Input shorter than this, counted from the first byte `process` left unconsumed, cannot
    /// complete the pending request, so it is not parsed again until more arrives.
    public var needed = 0

    public init() {}
}

/// Turns request bytes into replies: parses every complete request in the input, executes it
/// against the store and encodes the reply. Independent of the network, so tests drive it with
/// plain byte arrays.
///
/// ## Threads
/// `process` may run on many threads at once (each with its own session); the store is shared.
public struct RedisProcessor: Sendable {
    public let store: KeyValueStore
    public let parser: RESPParser
    /// Stop and hand replies over once this many bytes are waiting.
    public var replyFlushThreshold = 64 << 10

    public init(store: KeyValueStore = KeyValueStore(), limits: RequestLimits = RequestLimits()) {
        self.store = store
        self.parser = RESPParser(limits: limits)
    }

    public struct Outcome: Sendable, Hashable {
        /// Input bytes taken: every request that was executed (or skipped).
        public var consumed: Int
        /// The connection must close once the replies are sent (QUIT, or a protocol error).
        public var close: Bool
    }

    /// Executes the complete requests at the front of `input`, in order, appending their replies
    /// to `session.replies`. Stops at a partial request (which stays unconsumed), at QUIT or a
    /// protocol error (`close`), or once `replyFlushThreshold` bytes of replies wait.
    public func process(_ input: UnsafeRawBufferPointer, session: inout RedisSession) -> Outcome {
        if input.count < session.needed { return Outcome(consumed: 0, close: false) }
        session.needed = 0
        var pos = 0
        while pos < input.count && session.replies.count < replyFlushThreshold {
            session.arguments.removeAll(keepingCapacity: true)
            switch parser.parse(input, from: pos, arguments: &session.arguments) {
            case .command(let end):
                let request = Request(buffer: input, slices: session.arguments)
                pos = end
                if execute(request, into: &session.replies) == .close {
                    return Outcome(consumed: pos, close: true)
                }
            case .empty(let end):
                pos = end
            case .incomplete(let atLeast):
                session.needed = atLeast
                return Outcome(consumed: pos, close: false)
            case .invalid(let error):
                session.replies.error(error.message)
                return Outcome(consumed: pos, close: true)
            }
        }
        if session.arguments.capacity > 1024 { session.arguments = [] }
        return Outcome(consumed: pos, close: false)
    }

    public enum Disposition: Sendable { case proceed, close }

    /// Executes one request and appends its reply.
    public func execute(_ r: Request, into out: inout ReplyBuffer) -> Disposition {
        guard let command = Command.lookup(r[0]) else {
            unknownCommand(r, into: &out)
            return .proceed
        }
        guard command.accepts(argumentCount: r.count) else {
            wrongArity(command.name, into: &out)
            return .proceed
        }
        switch command {
        case .get:
            out.bulkOrNull(store.get(r.key(1)))
        case .set:
            set(r, into: &out)
        case .ping:
            switch r.count {
            case 1: out.raw("+PONG\r\n")
            case 2: out.bulk(r[1])
            default: wrongArity(command.name, into: &out)
            }
        case .echo:
            out.bulk(r[1])
        case .del:
            var n = 0
            for i in 1..<r.count where store.remove(r.key(i)) { n += 1 }
            out.integer(n)
        case .exists:
            var n = 0
            for i in 1..<r.count where store.contains(r.key(i)) { n += 1 }
            out.integer(n)
        case .incr:
            increment(r.key(1), by: 1, into: &out)
        case .decr:
            increment(r.key(1), by: -1, into: &out)
        case .incrby, .decrby:
            guard let n = DecimalBytes.parse(r[2]) else { return reply(Errors.notAnInteger, into: &out) }
            if command == .incrby {
                increment(r.key(1), by: n, into: &out)
            } else {
                guard n != .min else { return reply("ERR decrement would overflow", into: &out) }
                increment(r.key(1), by: -n, into: &out)
            }
        case .mset:
            guard r.count % 2 == 1 else {
                wrongArity(command.name, into: &out)
                return .proceed
            }
            // Key by key: unlike Redis's, this MSET is not atomic (another loop may see some of
            // the keys set before the others).
            for i in stride(from: 1, to: r.count, by: 2) { store.set(r.key(i), r.bytes(i + 1)) }
            out.ok()
        case .mget:
            out.arrayHeader(r.count - 1)
            for i in 1..<r.count { out.bulkOrNull(store.get(r.key(i))) }
        case .ttl, .pttl:
            switch store.timeToLive(r.key(1)) {
            case .missing: out.integer(-2)
            case .persistent: out.integer(-1)
            case .milliseconds(let ms): out.integer(command == .ttl ? (ms + 500) / 1000 : ms)
            }
        case .dbsize:
            out.integer(store.count)
        case .flushdb, .flushall:
            guard r.count == 1 || (r.count == 2 && (r.argument(1, is: "sync") || r.argument(1, is: "async"))) else {
                return reply(Errors.syntax, into: &out)
            }
            store.removeAll()
            out.ok()
        case .command:
            commandCommand(r, into: &out)
        case .config:
            configCommand(r, into: &out)
        case .quit:
            out.ok()
            return .close
        }
        return .proceed
    }

    // MARK: Strings

    /// `SET key value [NX | XX] [EX seconds | PX milliseconds | KEEPTTL]`
    private func set(_ r: Request, into out: inout ReplyBuffer) {
        var condition = KeyValueStore.Condition.always
        var keepTTL = false
        var expireArgument: (index: Int, unit: Int64)? = nil
        var i = 3
        // Options first, as Redis does: a syntax error wins over a bad expire value.
        while i < r.count {
            let last = i + 1 == r.count
            if r.argument(i, is: "nx") && condition != .ifPresent {
                condition = .ifAbsent
            } else if r.argument(i, is: "xx") && condition != .ifAbsent {
                condition = .ifPresent
            } else if r.argument(i, is: "keepttl") && expireArgument == nil {
                keepTTL = true
            } else if r.argument(i, is: "ex") && !keepTTL && expireArgument?.unit != 1 && !last {
                expireArgument = (i + 1, 1000)
                i += 1
            } else if r.argument(i, is: "px") && !keepTTL && expireArgument?.unit != 1000 && !last {
                expireArgument = (i + 1, 1)
                i += 1
            } else {
                return out.error(Errors.syntax)
            }
            i += 1
        }
        var expiry: KeyValueStore.Expiry = keepTTL ? .keep : .none
        if let (index, unit) = expireArgument {
            guard let amount = DecimalBytes.parse(r[index]) else { return out.error(Errors.notAnInteger) }
            let (ms, o1) = amount.multipliedReportingOverflow(by: unit)
            let now = store.clock()
            let (deadline, o2) = now.addingReportingOverflow(ms)
            guard amount > 0, !o1, !o2 else { return out.error("ERR invalid expire time in 'set' command") }
            expiry = .at(deadline)
        }
        if store.set(r.key(1), r.bytes(2), condition: condition, expiry: expiry) {
            out.ok()
        } else {
            out.null()
        }
    }

    private func increment(_ key: Key, by delta: Int64, into out: inout ReplyBuffer) {
        switch store.increment(key, by: delta) {
        case .value(let n): out.integer(n)
        case .notAnInteger: out.error(Errors.notAnInteger)
        case .overflow: out.error("ERR increment or decrement would overflow")
        }
    }

    // MARK: Introspection

    /// `COMMAND`, `COMMAND DOCS|INFO [name...]`, `COMMAND COUNT`. Clients ask on connect (redis-cli
    /// for its hints); an empty answer tells them to rely on what they know.
    private func commandCommand(_ r: Request, into out: inout ReplyBuffer) {
        if r.count == 1 || r.argument(1, is: "docs") || r.argument(1, is: "info") {
            out.arrayHeader(0)
        } else if r.argument(1, is: "count") && r.count == 2 {
            out.integer(Command.allCases.count)
        } else {
            unknownSubcommand(r, of: "COMMAND", into: &out)
        }
    }

    /// `CONFIG GET pattern...`. redis-benchmark asks for `save` and `appendonly` on start.
    private func configCommand(_ r: Request, into out: inout ReplyBuffer) {
        guard r.argument(1, is: "get") else { return unknownSubcommand(r, of: "CONFIG", into: &out) }
        guard r.count >= 3 else { return wrongArity("config|get", into: &out) }
        let parameters: [(name: StaticString, value: StaticString)] = [("save", ""), ("appendonly", "no")]
        var matched: [(name: StaticString, value: StaticString)] = []
        for (name, value) in parameters {
            let hit = (2..<r.count).contains { i in
                name.withUTF8Buffer { Glob.matches(pattern: r[i], UnsafeRawBufferPointer($0)) }
            }
            if hit { matched.append((name, value)) }
        }
        out.arrayHeader(matched.count * 2)
        for (name, value) in matched {
            name.withUTF8Buffer { out.bulk(UnsafeRawBufferPointer($0)) }
            value.withUTF8Buffer { out.bulk(UnsafeRawBufferPointer($0)) }
        }
    }

    // MARK: Errors

    enum Errors {
        static let notAnInteger = "ERR value is not an integer or out of range"
        static let syntax = "ERR syntax error"
    }

    private func reply(_ error: String, into out: inout ReplyBuffer) -> Disposition {
        out.error(error)
        return .proceed
    }

    private func wrongArity(_ name: StaticString, into out: inout ReplyBuffer) {
        out.error("ERR wrong number of arguments for '\(name)' command")
    }

    /// Redis's wording: the name and the first arguments, quoted, up to about 128 bytes each.
    private func unknownCommand(_ r: Request, into out: inout ReplyBuffer) {
        var message = Array("ERR unknown command '".utf8)
        message += r[0].prefix(128)
        message += Array("', with args beginning with: ".utf8)
        var quoted = 0
        for i in 1..<r.count where quoted < 128 {
            let arg = r[i].prefix(128 - quoted)
            message.append(UInt8(ascii: "'"))
            message += arg
            message += Array("' ".utf8)
            quoted += arg.count + 3
        }
        out.error(bytes: message)
    }

    private func unknownSubcommand(_ r: Request, of command: String, into out: inout ReplyBuffer) {
        var message = Array("ERR unknown subcommand '".utf8)
        message += r[1].prefix(128)
        message += Array("'. Try \(command) HELP.".utf8)
        out.error(bytes: message)
    }
}

/// Redis-style glob matching on bytes (`*`, `?`, no classes), ignoring ASCII case.
enum Glob {
    static func matches(pattern: UnsafeRawBufferPointer, _ text: UnsafeRawBufferPointer) -> Bool {
        var p = 0, t = 0
        var star = -1, resume = 0
        @inline(__always) func lower(_ b: UInt8) -> UInt8 {
            b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b | 0x20 : b
        }
        while t < text.count {
            if p < pattern.count && (pattern[p] == UInt8(ascii: "?") || lower(pattern[p]) == lower(text[t])) {
                p += 1
                t += 1
            } else if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p
                resume = t
                p += 1
            } else if star >= 0 {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}
