import Glibc

/// Where one argument of a parsed request lies in the input buffer: `count` bytes from byte
/// `offset`. Arguments are never copied out of the buffer by the parser.
public struct ArgumentSlice: Sendable, Hashable {
    public var offset: Int
    public var count: Int

    public init(offset: Int, count: Int) {
        self.offset = offset
        self.count = count
    }
}

/// The caps on one request. A request over a cap gets a protocol error and the connection
/// closes, as in Redis (`proto-max-bulk-len`, `PROTO_INLINE_MAX_SIZE`).
public struct RequestLimits: Sendable, Hashable {
    /// The largest bulk string (one argument) of an array request. Redis: 512 MiB.
    public var maxBulkLength = 512 << 20
    /// The longest inline command line, and the longest `*N` / `$N` header line. Redis: 64 KiB.
    public var maxInlineLength = 64 << 10
    /// The most arguments in an array request. Redis (before authentication): 1,048,576.
    public var maxArrayLength = 1 << 20
    /// The most bytes one whole request may span, so many large arguments cannot add up to
    /// unbounded memory. Redis closes a client whose query buffer passes 1 GiB.
    public var maxRequestLength = 1 << 30

    public init() {}
}

/// Why a request cannot be parsed. The reply is `-ERR Protocol error: <reason>`, then close.
public struct ProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    public let reason: String

    public init(_ reason: String) { self.reason = reason }

    /// The error line's text, without the leading `-` and the CRLF.
    public var message: String { "ERR Protocol error: \(reason)" }
    public var description: String { message }

    static let invalidMultibulkLength = ProtocolError("invalid multibulk length")
    static let invalidBulkLength = ProtocolError("invalid bulk length")
    static let tooBigInline = ProtocolError("too big inline request")
    static let tooBigMultibulkHeader = ProtocolError("too big mbulk count string")
    static let tooBigBulkHeader = ProtocolError("too big bulk count string")
    static let tooBigRequest = ProtocolError("too big request")
    static let missingCRLF = ProtocolError("expected CRLF after bulk string")
}

/// What `RESPParser.parse` found at the start offset.
public enum ParseResult: Sendable, Hashable {
    /// A complete request whose arguments were appended to `arguments`; it ends before `end`.
    case command(end: Int)
    /// A request with no arguments (`*0\r\n`, `*-1\r\n` or a blank inline line): skip to `end`,
    /// reply nothing.
    case empty(end: Int)
    /// The request is not complete: nothing to do until at least `atLeast` bytes (counted from
    /// the start offset) are buffered. A lower bound, so a large argument arriving in many reads
    /// is not parsed again on each one.
    case incomplete(atLeast: Int)
    /// The input breaks the protocol or a cap: reply with the error and close.
    case invalid(ProtocolError)
}

/// An incremental RESP2 request parser: arrays of bulk strings (what clients send) and inline
/// commands (a line of space-separated words, what telnet sends).
///
/// It is stateless: each call parses one request from `start`, looking at the buffer without
/// copying or consuming anything, and reports where the request ends. A partial request reports
/// `.incomplete` and is parsed again from its start once more bytes arrive.
///
/// ```
///  start                                                              end
///   |*2\r\n|$3\r\n|GET|\r\n|$3\r\n|key|\r\n|   ← array of bulk strings
///                  ^^^ argument 0       ^^^ argument 1 (offset, count)
///   |GET key\r\n|                              ← inline (the \r is optional)
/// ```
public struct RESPParser: Sendable {
    public var limits: RequestLimits

    public init(limits: RequestLimits = RequestLimits()) {
        self.limits = limits
    }

    /// Parses the request at `start` in `buffer`, appending its argument slices (offsets into
    /// `buffer`) to `arguments` when it is complete. `arguments` may hold partial results after
    /// any other outcome; clear it before each call.
    public func parse(_ buffer: UnsafeRawBufferPointer, from start: Int, arguments: inout [ArgumentSlice]) -> ParseResult {
        guard start < buffer.count else { return .incomplete(atLeast: 1) }
        if buffer[start] == UInt8(ascii: "*") {
            return parseArray(buffer, from: start, arguments: &arguments)
        }
        return parseInline(buffer, from: start, arguments: &arguments)
    }

    // MARK: Arrays of bulk strings

    private func parseArray(_ buffer: UnsafeRawBufferPointer, from start: Int, arguments: inout [ArgumentSlice]) -> ParseResult {
        let end = buffer.count
        // *<count>\r\n
        guard let headerEnd = findCR(buffer, from: start + 1, limit: limits.maxInlineLength) else {
            return end - start > limits.maxInlineLength ? .invalid(.tooBigMultibulkHeader) : .incomplete(atLeast: end - start + 1)
        }
        guard headerEnd + 1 < end else { return .incomplete(atLeast: headerEnd + 2 - start) }
        guard buffer[headerEnd + 1] == UInt8(ascii: "\n"),
            let count = DecimalBytes.parse(UnsafeRawBufferPointer(rebasing: buffer[(start + 1)..<headerEnd])),
            count <= limits.maxArrayLength
        else { return .invalid(.invalidMultibulkLength) }
        var pos = headerEnd + 2
        guard count > 0 else { return .empty(end: pos) }
        arguments.reserveCapacity(min(Int(count), 1024))

        // The smallest possible rest of a request with `n` arguments still to come: "$0\r\n\r\n" each.
        func atLeast(_ upTo: Int, remaining n: Int) -> ParseResult {
            let least = upTo - start + n * 6
            return least > limits.maxRequestLength ? .invalid(.tooBigRequest) : .incomplete(atLeast: least)
        }

        var remaining = Int(count)
        while remaining > 0 {
            guard pos < end else { return atLeast(pos, remaining: remaining) }
            guard buffer[pos] == UInt8(ascii: "$") else {
                return .invalid(ProtocolError("expected '$', got '\(printable(buffer[pos]))'"))
            }
            // $<length>\r\n<bytes>\r\n
            guard let lengthEnd = findCR(buffer, from: pos + 1, limit: limits.maxInlineLength) else {
                return end - pos > limits.maxInlineLength ? .invalid(.tooBigBulkHeader) : atLeast(end + 1, remaining: remaining - 1)
            }
            guard lengthEnd + 1 < end else { return atLeast(lengthEnd + 2, remaining: remaining - 1) }
            guard buffer[lengthEnd + 1] == UInt8(ascii: "\n"),
                let length = DecimalBytes.parse(UnsafeRawBufferPointer(rebasing: buffer[(pos + 1)..<lengthEnd])),
                length >= 0, length <= limits.maxBulkLength
            else { return .invalid(.invalidBulkLength) }
            let dataStart = lengthEnd + 2
            let dataEnd = dataStart + Int(length)
            remaining -= 1
            guard dataEnd + 2 <= end else { return atLeast(dataEnd + 2, remaining: remaining) }
            guard buffer[dataEnd] == UInt8(ascii: "\r"), buffer[dataEnd + 1] == UInt8(ascii: "\n") else {
                return .invalid(.missingCRLF)
            }
            arguments.append(ArgumentSlice(offset: dataStart, count: Int(length)))
            pos = dataEnd + 2
            if pos - start > limits.maxRequestLength { return .invalid(.tooBigRequest) }
        }
        return .command(end: pos)
    }

    // MARK: Inline commands

    /// A line of words separated by blanks, ending in `\n` (a `\r` before it is dropped).
    /// Quoting is not supported: words are split at every blank.
    private func parseInline(_ buffer: UnsafeRawBufferPointer, from start: Int, arguments: inout [ArgumentSlice]) -> ParseResult {
        let end = buffer.count
        let searchable = min(end - start, limits.maxInlineLength + 1)
        guard let found = memchr(buffer.baseAddress! + start, Int32(UInt8(ascii: "\n")), searchable) else {
            return end - start > limits.maxInlineLength ? .invalid(.tooBigInline) : .incomplete(atLeast: end - start + 1)
        }
        let newline = UnsafeRawPointer(found) - buffer.baseAddress!
        var lineEnd = newline
        if lineEnd > start && buffer[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
        if lineEnd - start > limits.maxInlineLength { return .invalid(.tooBigInline) }
        var pos = start
        while pos < lineEnd {
            while pos < lineEnd && isBlank(buffer[pos]) { pos += 1 }
            let wordStart = pos
            while pos < lineEnd && !isBlank(buffer[pos]) { pos += 1 }
            if pos > wordStart { arguments.append(ArgumentSlice(offset: wordStart, count: pos - wordStart)) }
        }
        return arguments.isEmpty ? .empty(end: newline + 1) : .command(end: newline + 1)
    }

    // MARK: Helpers

    /// The offset of the first `\r` at or after `from`, looking at most `limit + 1` bytes.
    @inline(__always)
    private func findCR(_ buffer: UnsafeRawBufferPointer, from: Int, limit: Int) -> Int? {
        let n = min(buffer.count - from, limit + 1)
        guard n > 0, let found = memchr(buffer.baseAddress! + from, Int32(UInt8(ascii: "\r")), n) else { return nil }
        return UnsafeRawPointer(found) - buffer.baseAddress!
    }

    @inline(__always)
    private func isBlank(_ b: UInt8) -> Bool {
        b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") || b == 0x0B || b == 0x0C || b == UInt8(ascii: "\r")
    }

    private func printable(_ b: UInt8) -> String {
        b >= 0x20 && b < 0x7F ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16)
    }
}
