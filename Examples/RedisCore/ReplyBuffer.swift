/// RESP2 replies, encoded into a growing byte array that the server writes in one go.
/// Fixed replies are copied from static strings; numbers are formatted without `String`.
public struct ReplyBuffer: Sendable {
    public var bytes: [UInt8] = []

    public init() {}

    public var count: Int { bytes.count }
    public var isEmpty: Bool { bytes.isEmpty }

    /// Empties the buffer, keeping its storage unless it grew past `limit` bytes.
    public mutating func reset(keepingCapacityUpTo limit: Int = 1 << 20) {
        if bytes.capacity > limit {
            bytes = []
        } else {
            bytes.removeAll(keepingCapacity: true)
        }
    }

    /// Appends a complete, already encoded reply such as `+OK\r\n`.
    @inline(__always)
    public mutating func raw(_ encoded: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: encoded.utf8Start, count: encoded.utf8CodeUnitCount))
    }

    /// `+OK\r\n`
    public mutating func ok() { raw("+OK\r\n") }

    /// `$-1\r\n`, the null bulk string.
    public mutating func null() { raw("$-1\r\n") }

    /// `-<message>\r\n`; CR and LF in the message become spaces, as the protocol needs.
    public mutating func error(_ message: String) {
        error(bytes: message.utf8)
    }

    /// An error whose message is raw bytes (it may quote what the client sent).
    public mutating func error<S: Sequence<UInt8>>(bytes message: S) {
        bytes.append(UInt8(ascii: "-"))
        for b in message {
            bytes.append(b == UInt8(ascii: "\r") || b == UInt8(ascii: "\n") ? UInt8(ascii: " ") : b)
        }
        raw("\r\n")
    }

    /// `:<n>\r\n`
    public mutating func integer(_ n: Int64) {
        switch n {
        case 0: raw(":0\r\n")
        case 1: raw(":1\r\n")
        default:
            bytes.append(UInt8(ascii: ":"))
            DecimalBytes.append(n, to: &bytes)
            raw("\r\n")
        }
    }

    public mutating func integer(_ n: Int) { integer(Int64(n)) }

    /// `$<count>\r\n<bytes>\r\n`
    public mutating func bulk(_ value: UnsafeRawBufferPointer) {
        bytes.append(UInt8(ascii: "$"))
        DecimalBytes.append(Int64(value.count), to: &bytes)
        raw("\r\n")
        bytes.append(contentsOf: value)
        raw("\r\n")
    }

    public mutating func bulk(_ value: [UInt8]) {
        value.withUnsafeBytes { bulk($0) }
    }

    public mutating func bulk(_ value: String) {
        bulk(Array(value.utf8))
    }

    /// The bulk string, or the null bulk string for nil.
    public mutating func bulkOrNull(_ value: [UInt8]?) {
        if let value { bulk(value) } else { null() }
    }

    /// `*<count>\r\n`; the `count` elements follow.
    public mutating func arrayHeader(_ count: Int) {
        if count == 0 { return raw("*0\r\n") }
        bytes.append(UInt8(ascii: "*"))
        DecimalBytes.append(Int64(count), to: &bytes)
        raw("\r\n")
    }
}
