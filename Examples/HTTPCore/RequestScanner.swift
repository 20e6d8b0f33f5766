import Glibc

/// The HTTP versions this server speaks. Anything else in a request line is a 400.
public enum HTTPVersion: Sendable, Hashable {
    case http1_0
    case http1_1
}

/// The methods the routes tell apart. Every other valid token is `.other`.
public enum HTTPMethod: Sendable, Hashable {
    case get
    case head
    case other
}

/// A complete, valid request head: the request line and the header fields that matter here.
///
/// The method and target are kept as byte ranges into the buffer that was scanned (no copies);
/// `headLength` counts every byte up to and including the blank line that ends the head.
/// The body, `contentLength` bytes, follows at once.
public struct HTTPRequestHead: Sendable, Hashable {
    public var method: HTTPMethod
    public var methodRange: Range<Int>
    public var targetRange: Range<Int>
    public var version: HTTPVersion
    /// Whether the connection stays open after the response (HTTP/1.1 unless `Connection:
    /// close`; HTTP/1.0 only with `Connection: keep-alive`).
    public var keepAlive: Bool
    /// The body length from `Content-Length`, 0 without one.
    public var contentLength: Int
    /// Bytes from the start of the buffer to the end of the head's blank line.
    public var headLength: Int
}

/// Why a request is rejected. Each one is answered with `400 Bad Request` and a close.
public enum HTTPParseError: Error, Sendable, Hashable {
    /// The method is not a token, the target is empty or holds a byte outside 0x21...0x7E,
    /// the separators are not single spaces, or the line does not end in CRLF.
    case badRequestLine
    /// The version is not exactly `HTTP/1.0` or `HTTP/1.1`.
    case badVersion
    /// A field name that is not a token (or is followed by space before the colon), a value
    /// with a control byte, a folded line, or a line not ending in CRLF.
    case badHeader
    /// No blank line within `RequestScanner.maxHeadBytes`.
    case headerTooLarge
    /// `Content-Length` that is not 1 to 18 digits, or two that disagree.
    case badContentLength
    /// HTTP/1.1 without exactly one `Host`, or HTTP/1.0 with several (RFC 9112 §3.2).
    case badHost
    /// Any `Transfer-Encoding`: request bodies must be sized by `Content-Length` here.
    case unsupportedTransferEncoding
}

/// What `RequestScanner.scan` found at the front of a buffer.
public enum HTTPScanResult: Sendable, Hashable {
    /// A valid head; the body (if any) follows it.
    case complete(HTTPRequestHead)
    /// Valid so far, but the head has not ended yet: wait for more bytes.
    case incomplete
    /// Not HTTP/1.x, or not valid: answer 400 and close.
    case invalid(HTTPParseError)
}

/// Finds and checks one request head at the front of a byte buffer.
///
/// Stateless: each call scans from the first byte, so a caller keeps unconsumed bytes and
/// scans again when more arrive (the head is capped at `maxHeadBytes`, which bounds the
/// rescanning). Validation runs as far as the bytes go, so garbage is rejected at its first
/// bad byte rather than after 8 KiB of waiting.
///
/// Strict where RFC 9112 allows a choice: lines end in CRLF (a bare LF or CR is a 400),
/// request-line separators are single spaces, obsolete line folding is rejected, and header
/// values may not hold control bytes other than HTAB. One or more empty lines before the
/// request line are skipped (RFC 9112 §2.2) and count toward the head.
public enum RequestScanner {
    /// The cap on a request head, request line to blank line inclusive.
    public static let maxHeadBytes = 8192

    public static func scan(_ buf: UnsafeRawBufferPointer) -> HTTPScanResult {
        let n = buf.count
        let limit = min(n, maxHeadBytes)
        @inline(__always) func outOfBytes() -> HTTPScanResult { outOfBytesResult(total: n) }
        var i = 0

        // Empty lines before the request line.
        while i < limit && buf[i] == cr {
            guard i + 1 < limit else { return outOfBytes() }
            guard buf[i + 1] == lf else { return .invalid(.badRequestLine) }
            i += 2
        }

        // method SP (the usual "GET " checked as one word)
        let methodStart = i
        if i + 4 <= limit && load32(buf, i) == getSpace { i += 3 }
        while true {
            guard i < limit else { return outOfBytes() }
            let b = buf[i]
            if b == sp { break }
            guard isTokenByte(b) else { return .invalid(.badRequestLine) }
            i += 1
        }
        guard i > methodStart else { return .invalid(.badRequestLine) }
        let methodRange = methodStart..<i
        i += 1

        // request-target SP
        let targetStart = i
        while i + 8 <= limit && !hasByteOutside21to7E(load64(buf, i)) { i += 8 }
        while true {
            guard i < limit else { return outOfBytes() }
            let b = buf[i]
            if b == sp { break }
            guard b > 0x20 && b < 0x7F else { return .invalid(.badRequestLine) }
            i += 1
        }
        guard i > targetStart else { return .invalid(.badRequestLine) }
        let targetRange = targetStart..<i
        i += 1

        // "HTTP/1." DIGIT CRLF: one word compare when the whole line is here, else byte by byte
        // (which also classifies the error and handles a partial line).
        if i + 10 <= limit && load16(buf, i + 8) == crlf16 {
            let word = load64(buf, i)
            if word == http11 || word == http10 {
                i += 10
                return scanFields(buf, at: i, version: word == http11 ? .http1_1 : .http1_0,
                                  method: methodRange, target: targetRange, limit: limit, total: n)
            }
        }
        for k in 0..<httpSlashOneDot.utf8CodeUnitCount {
            guard i < limit else { return outOfBytes() }
            guard buf[i] == httpSlashOneDot.utf8Start[k] else { return .invalid(.badVersion) }
            i += 1
        }
        guard i < limit else { return outOfBytes() }
        let version: HTTPVersion
        switch buf[i] {
        case UInt8(ascii: "1"): version = .http1_1
        case UInt8(ascii: "0"): version = .http1_0
        default: return .invalid(.badVersion)
        }
        i += 1
        guard i + 1 < limit else { return outOfBytes() }
        guard buf[i] == cr && buf[i + 1] == lf else { return .invalid(.badRequestLine) }
        i += 2
        return scanFields(buf, at: i, version: version, method: methodRange, target: targetRange, limit: limit, total: n)
    }

    /// Scans the header fields from `start` (just after the request line) to the blank line,
    /// and builds the head.
    @inline(__always)
    private static func scanFields(
        _ buf: UnsafeRawBufferPointer, at start: Int, version: HTTPVersion,
        method methodRange: Range<Int>, target targetRange: Range<Int>, limit: Int, total n: Int
    ) -> HTTPScanResult {
        @inline(__always) func outOfBytes() -> HTTPScanResult { outOfBytesResult(total: n) }
        var i = start
        var fields = FieldSummary()
        while true {
            guard i < limit else { return outOfBytes() }
            if buf[i] == cr {
                guard i + 1 < limit else { return outOfBytes() }
                guard buf[i + 1] == lf else { return .invalid(.badHeader) }
                i += 2
                break
            }
            // field-name ":" — a leading space or tab (obsolete folding) is not a token byte.
            let nameStart = i
            while true {
                guard i < limit else { return outOfBytes() }
                let b = buf[i]
                if b == colon { break }
                guard isTokenByte(b) else { return .invalid(.badHeader) }
                i += 1
            }
            guard i > nameStart else { return .invalid(.badHeader) }
            let nameRange = nameStart..<i
            i += 1
            // OWS field-value OWS CRLF
            while i < limit && (buf[i] == sp || buf[i] == tab) { i += 1 }
            let valueStart = i
            while i + 8 <= limit && !hasControlByte(load64(buf, i)) { i += 8 }
            while true {
                guard i < limit else { return outOfBytes() }
                let b = buf[i]
                if b == cr { break }
                guard b == tab || (b >= 0x20 && b != 0x7F) else { return .invalid(.badHeader) }
                i += 1
            }
            var valueEnd = i
            while valueEnd > valueStart && (buf[valueEnd - 1] == sp || buf[valueEnd - 1] == tab) { valueEnd -= 1 }
            guard i + 1 < limit else { return outOfBytes() }
            guard buf[i + 1] == lf else { return .invalid(.badHeader) }
            i += 2
            if let error = fields.note(name: nameRange, value: valueStart..<valueEnd, in: buf) {
                return .invalid(error)
            }
        }

        if fields.transferEncoding { return .invalid(.unsupportedTransferEncoding) }
        switch version {
        case .http1_1: if fields.hostCount != 1 { return .invalid(.badHost) }
        case .http1_0: if fields.hostCount > 1 { return .invalid(.badHost) }
        }
        let keepAlive = switch version {
        case .http1_1: !fields.close
        case .http1_0: fields.keepAlive && !fields.close
        }
        return .complete(HTTPRequestHead(
            method: method(buf, methodRange),
            methodRange: methodRange,
            targetRange: targetRange,
            version: version,
            keepAlive: keepAlive,
            contentLength: fields.contentLength ?? 0,
            headLength: i
        ))
    }

    /// The head has not ended within the bytes we may look at: wait for more, unless the cap
    /// has been reached.
    @inline(__always)
    private static func outOfBytesResult(total n: Int) -> HTTPScanResult {
        n >= maxHeadBytes ? .invalid(.headerTooLarge) : .incomplete
    }

    @inline(__always)
    private static func method(_ buf: UnsafeRawBufferPointer, _ r: Range<Int>) -> HTTPMethod {
        if r.count == 3 && load32(buf, r.lowerBound) == getSpace { return .get }
        if matches(buf, r, "HEAD", ignoringCase: false) { return .head }
        return .other
    }
}

/// What the header fields said, gathered as they are scanned.
private struct FieldSummary {
    var hostCount = 0
    var contentLength: Int? = nil
    var transferEncoding = false
    var close = false
    var keepAlive = false

    /// Takes one field in; returns why the request is bad, if this field makes it so.
    mutating func note(name: Range<Int>, value: Range<Int>, in buf: UnsafeRawBufferPointer) -> HTTPParseError? {
        switch name.count {
        case 4 where matches(buf, name, "host"):
            hostCount += 1
        case 10 where matches(buf, name, "connection"):
            noteConnection(value, in: buf)
        case 14 where matches(buf, name, "content-length"):
            guard let length = decimal(buf, value) else { return .badContentLength }
            if let earlier = contentLength, earlier != length { return .badContentLength }
            contentLength = length
        case 17 where matches(buf, name, "transfer-encoding"):
            transferEncoding = true
        default:
            break
        }
        return nil
    }

    /// `Connection` is a comma-separated list of options; only `close` and `keep-alive`
    /// matter here, in any case, and a field may appear more than once.
    private mutating func noteConnection(_ value: Range<Int>, in buf: UnsafeRawBufferPointer) {
        var i = value.lowerBound
        while i < value.upperBound {
            while i < value.upperBound && (buf[i] == sp || buf[i] == tab || buf[i] == comma) { i += 1 }
            let start = i
            while i < value.upperBound && buf[i] != comma { i += 1 }
            var end = i
            while end > start && (buf[end - 1] == sp || buf[end - 1] == tab) { end -= 1 }
            let option = start..<end
            if option.count == 5 && matches(buf, option, "close") { close = true }
            if option.count == 10 && matches(buf, option, "keep-alive") { keepAlive = true }
        }
    }

    /// 1 to 18 ASCII digits (so the value fits an `Int` with room to add), else nil.
    private func decimal(_ buf: UnsafeRawBufferPointer, _ r: Range<Int>) -> Int? {
        guard !r.isEmpty, r.count <= 18 else { return nil }
        var v = 0
        for i in r {
            let d = buf[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            v = v * 10 + Int(d)
        }
        return v
    }
}

// MARK: - Bytes

// Plain literals, so the optimizer folds them (no lazy global initialisation in the loops).
private let cr: UInt8 = 0x0D
private let lf: UInt8 = 0x0A
private let sp: UInt8 = 0x20
private let tab: UInt8 = 0x09
private let colon: UInt8 = 0x3A
private let comma: UInt8 = 0x2C
private let httpSlashOneDot: StaticString = "HTTP/1."

/// RFC 9110 `tchar`: ALPHA, DIGIT and ``!#$%&'*+-.^_`|~``, as two 64-bit masks over ASCII.
@inline(__always)
func isTokenByte(_ b: UInt8) -> Bool {
    let low: UInt64 = 0x03FF_6CFA_0000_0000  // bytes 0...63
    let high: UInt64 = 0x57FF_FFFF_C7FF_FFFE  // bytes 64...127
    if b < 64 { return (low >> UInt64(b)) & 1 != 0 }
    if b < 128 { return (high >> UInt64(b - 64)) & 1 != 0 }
    return false
}

/// Whether `buf[r]` spells `literal`; with `ignoringCase`, ASCII letters match either case
/// (`literal` must be lower case).
@inline(__always)
func matches(_ buf: UnsafeRawBufferPointer, _ r: Range<Int>, _ literal: StaticString, ignoringCase: Bool = true) -> Bool {
    guard r.count == literal.utf8CodeUnitCount else { return false }
    let lit = literal.utf8Start
    if !ignoringCase { return memcmp(buf.baseAddress! + r.lowerBound, lit, r.count) == 0 }
    for k in 0..<r.count {
        var b = buf[r.lowerBound + k]
        // Fold only letters, so that e.g. "@" never matches "`".
        if b >= 0x41 && b <= 0x5A { b |= 0x20 }
        if b != lit[k] { return false }
    }
    return true
}

// MARK: - Word at a time
//
// The common case (a well-formed request from a benchmark or a browser) is checked eight bytes
// per step; any word that might hold a byte of interest falls back to the byte loops, which
// make every decision. The tricks are the classic SWAR ones ("Bit Twiddling Hacks", "determine
// if a word has a byte less than n"), exact for n <= 128.

private let ones: UInt64 = 0x0101_0101_0101_0101
private let highs: UInt64 = 0x8080_8080_8080_8080
/// "GET " and "HTTP/1.1", "HTTP/1.0", CRLF as little-endian words.
private let getSpace: UInt32 = 0x2054_4547
private let http11: UInt64 = 0x312E_312F_5054_5448
private let http10: UInt64 = 0x302E_312F_5054_5448
private let crlf16: UInt16 = 0x0A0D

@inline(__always)
private func load64(_ buf: UnsafeRawBufferPointer, _ i: Int) -> UInt64 {
    UInt64(littleEndian: buf.loadUnaligned(fromByteOffset: i, as: UInt64.self))
}

@inline(__always)
private func load32(_ buf: UnsafeRawBufferPointer, _ i: Int) -> UInt32 {
    UInt32(littleEndian: buf.loadUnaligned(fromByteOffset: i, as: UInt32.self))
}

@inline(__always)
private func load16(_ buf: UnsafeRawBufferPointer, _ i: Int) -> UInt16 {
    UInt16(littleEndian: buf.loadUnaligned(fromByteOffset: i, as: UInt16.self))
}

/// Whether some byte of `w` is below `n` (n <= 128).
@inline(__always)
private func hasByteBelow(_ w: UInt64, _ n: UInt64) -> Bool {
    (w &- ones &* n) & ~w & highs != 0
}

/// Whether some byte of `w` is not in 0x21...0x7E (a request-target byte). A byte >= 0x7F has
/// its high bit set either itself or after adding one; a carry out of a byte only comes from
/// 0xFF, which is caught by its own high bit.
@inline(__always)
private func hasByteOutside21to7E(_ w: UInt64) -> Bool {
    hasByteBelow(w, 0x21) || ((w &+ ones) | w) & highs != 0
}

/// Whether some byte of `w` is a control byte (below 0x20, which includes CR and HTAB, or DEL):
/// the bytes that end or may invalidate a field value.
@inline(__always)
private func hasControlByte(_ w: UInt64) -> Bool {
    hasByteBelow(w, 0x20) || hasByteBelow(w ^ (ones &* 0x7F), 1)
}
