// The gnet-kv wire protocol: what a frame's payload holds.
//
// Every message, either way, is one frame: a 4-byte big-endian payload length, then the
// payload (`LengthFieldBasedFrameCodec`'s defaults). A request payload starts with an opcode:
//
// ```
//   GET   +----+-----------------+          DEL  +----+-----------------+
//         | 01 | key (the rest)  |               | 03 | key (the rest)  |
//         +----+-----------------+               +----+-----------------+
//   SET   +----+--------------+-----+----------------+        SAVE +----+
//         | 02 | key length   | key | value (rest)   |             | 04 |
//         |    | u16, big end.|     |                |             +----+
//         +----+--------------+-----+----------------+
// ```
//
// A reply payload starts with a status byte: 00 ok (then GET's value, or nothing), 01 not
// found (GET, DEL of a missing key), 02 error (then a UTF-8 message; the connection stays
// usable: framing was intact, only the request was wrong).

/// One parsed request. Keys and values are copied out of the frame (the store keeps them).
public enum KVRequest: Hashable, Sendable {
    case get(key: [UInt8])
    case set(key: [UInt8], value: [UInt8])
    case delete(key: [UInt8])
    /// Write a snapshot of the whole store to the server's data file (blocking: on the pool).
    case save

    public enum Opcode: UInt8, Sendable {
        case get = 1, set = 2, delete = 3, save = 4
    }

    /// Keys are at most this long (SET's key length is a u16).
    public static let maxKeyLength = Int(UInt16.max)

    /// Parses a request payload (a frame as the codec lends it).
    public static func parse(_ payload: RawSpan) -> Result<KVRequest, KVProtocolError> {
        payload.withUnsafeBytes { parse($0) }
    }

    /// Parses a request payload.
    public static func parse(_ p: UnsafeRawBufferPointer) -> Result<KVRequest, KVProtocolError> {
        guard let first = p.first else { return .failure(.emptyRequest) }
        guard let opcode = Opcode(rawValue: first) else { return .failure(.unknownOpcode(first)) }
        let body = UnsafeRawBufferPointer(rebasing: p[1...])
        switch opcode {
        case .get, .delete:
            guard !body.isEmpty else { return .failure(.missingKey(opcode)) }
            guard body.count <= maxKeyLength else { return .failure(.keyTooLong(body.count)) }
            return .success(opcode == .get ? .get(key: Array(body)) : .delete(key: Array(body)))
        case .set:
            guard body.count >= 2 else { return .failure(.truncated(opcode)) }
            let keyLength = Int(body[0]) << 8 | Int(body[1])
            guard keyLength > 0 else { return .failure(.missingKey(opcode)) }
            guard body.count >= 2 + keyLength else { return .failure(.truncated(opcode)) }
            return .success(.set(key: Array(body[2..<(2 + keyLength)]), value: Array(body[(2 + keyLength)...])))
        case .save:
            guard body.isEmpty else { return .failure(.unexpectedBytes(opcode, body.count)) }
            return .success(.save)
        }
    }

    /// The request's payload, as a client sends it (frame it with the codec).
    public var payload: [UInt8] {
        switch self {
        case .get(let key): [Opcode.get.rawValue] + key
        case .delete(let key): [Opcode.delete.rawValue] + key
        case .set(let key, let value):
            [Opcode.set.rawValue, UInt8(truncatingIfNeeded: key.count >> 8), UInt8(truncatingIfNeeded: key.count)] + key + value
        case .save: [Opcode.save.rawValue]
        }
    }
}

/// Why a request payload was refused. The reply says so (status 02) and the connection stays.
public enum KVProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    case emptyRequest
    case unknownOpcode(UInt8)
    case missingKey(KVRequest.Opcode)
    case keyTooLong(Int)
    case truncated(KVRequest.Opcode)
    case unexpectedBytes(KVRequest.Opcode, Int)

    public var description: String {
        switch self {
        case .emptyRequest: "empty request: a payload starts with an opcode (1 GET, 2 SET, 3 DEL, 4 SAVE)"
        case .unknownOpcode(let b): "unknown opcode \(b): use 1 GET, 2 SET, 3 DEL or 4 SAVE"
        case .missingKey(let op): "\(op) needs a non-empty key"
        case .keyTooLong(let n): "key of \(n) bytes: keys are at most \(KVRequest.maxKeyLength)"
        case .truncated(let op): "\(op) payload ends inside its key (u16 key length, key, value)"
        case .unexpectedBytes(let op, let n): "\(op) takes no operand, got \(n) bytes"
        }
    }
}

/// One reply.
public enum KVReply: Hashable, Sendable {
    /// Done; GET's value, SAVE's count of keys written (decimal text), else empty.
    case ok([UInt8])
    case notFound
    case error(String)

    public enum Status: UInt8, Sendable { case ok = 0, notFound = 1, error = 2 }

    /// The reply's payload, as the server sends it (framed by the codec).
    public var payload: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: payloadCount) { buffer, count in
            count = render(into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// The size of `payload`.
    public var payloadCount: Int {
        switch self {
        case .ok(let body): 1 + body.count
        case .notFound: 1
        case .error(let message): 1 + message.utf8.count
        }
    }

    /// Writes the payload into `buffer` (at least `payloadCount` bytes) and returns its size:
    /// the server renders a reply straight into the connection's output this way.
    public func render(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= payloadCount, "a \(payloadCount)-byte reply does not fit \(buffer.count) bytes")
        switch self {
        case .ok(let body):
            buffer[0] = Status.ok.rawValue
            UnsafeMutableRawBufferPointer(rebasing: buffer[1...]).copyBytes(from: body)
        case .notFound:
            buffer[0] = Status.notFound.rawValue
        case .error(let message):
            buffer[0] = Status.error.rawValue
            UnsafeMutableRawBufferPointer(rebasing: buffer[1...]).copyBytes(from: message.utf8)
        }
        return payloadCount
    }

    /// Parses a reply payload (a client's side); nil when it is not one.
    public init?(payload p: [UInt8]) {
        guard let first = p.first, let status = Status(rawValue: first) else { return nil }
        switch status {
        case .ok: self = .ok(Array(p[1...]))
        case .notFound where p.count == 1: self = .notFound
        case .notFound: return nil
        case .error: self = .error(String(decoding: p[1...], as: UTF8.self))
        }
    }
}
