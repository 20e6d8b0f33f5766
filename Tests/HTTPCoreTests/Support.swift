import HTTPCore
import Testing

/// 1994-11-06T08:49:37Z, RFC 9110's example date: every test renders this second.
let fixedSecond = 784_111_777
let fixedDate = "Sun, 06 Nov 1994 08:49:37 GMT"

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

func scan(_ s: String) -> HTTPScanResult { scan(bytes(s)) }

func scan(_ b: [UInt8]) -> HTTPScanResult { b.withUnsafeBytes { RequestScanner.scan($0) } }

/// The head of a complete scan, or nil.
func head(_ s: String) -> HTTPRequestHead? {
    if case .complete(let h) = scan(s) { return h }
    return nil
}

/// Collects responses in an array.
struct ArrayOutput: HTTPOutput {
    var bytes: [UInt8] = []
    mutating func write(_ b: UnsafeRawBufferPointer) throws { bytes += b }
}

/// Plays the engine's part: keeps unconsumed input, appends each chunk, serves, drops what was
/// consumed; stops at a close.
struct Feeder {
    let responses = HTTPResponses(now: fixedSecond)
    var pending: [UInt8] = []
    var state = HTTPConnectionState()
    var output = ArrayOutput()
    var closed = false
    /// How many responses were written before each chunk was fed.
    var calls = 0

    mutating func feed(_ chunk: [UInt8]) throws {
        precondition(!closed, "fed after close")
        pending += chunk
        calls += 1
        let r = try pending.withUnsafeBytes { try HTTPSession.serve($0, state: &state, responses: responses, output: &output) }
        #expect(r.consumed >= 0 && r.consumed <= pending.count)
        pending.removeFirst(r.consumed)
        closed = r.close
    }

    mutating func feed(_ s: String) throws { try feed(bytes(s)) }

    var text: String { String(decoding: output.bytes, as: UTF8.self) }
}

/// One response as a client reads it.
struct ParsedResponse: Equatable, CustomStringConvertible {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: String

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    static func == (a: Self, b: Self) -> Bool {
        a.status == b.status && a.body == b.body && a.headers.map(\.name) == b.headers.map(\.name)
            && a.headers.map(\.value) == b.headers.map(\.value)
    }

    var description: String { "\(status) \(headers) \(body.debugDescription)" }
}

/// Splits a byte stream into responses (each sized by its Content-Length); the rest, an
/// incomplete response, is returned as `leftover`.
func parseResponses(_ stream: [UInt8]) -> (responses: [ParsedResponse], leftover: Int) {
    var out: [ParsedResponse] = []
    var pos = 0
    let crlfcrlf: [UInt8] = [13, 10, 13, 10]
    while pos < stream.count {
        guard let end = firstRange(of: crlfcrlf, in: stream, from: pos) else { break }
        let head = String(decoding: stream[pos..<end], as: UTF8.self)
        // "\r\n" is one Character in Swift, so this splits lines.
        var lines = head.split(separator: "\r\n" as Character, omittingEmptySubsequences: false)
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0] == "HTTP/1.1", let status = Int(parts[1]) else { break }
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingSpaces()))
        }
        let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
        let bodyStart = end + 4
        guard stream.count >= bodyStart + length else { break }
        out.append(ParsedResponse(
            status: status, headers: headers.map { (name: $0.0, value: $0.1) },
            body: String(decoding: stream[bodyStart..<(bodyStart + length)], as: UTF8.self)))
        pos = bodyStart + length
    }
    return (out, stream.count - pos)
}

func firstRange(of needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
    guard hay.count >= needle.count else { return nil }
    var i = from
    while i + needle.count <= hay.count {
        if hay[i..<(i + needle.count)].elementsEqual(needle) { return i }
        i += 1
    }
    return nil
}

extension Substring {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
