import RedisCore
import Testing

/// Parses the first request of `input`, returning the outcome and the arguments as strings.
private func parse(_ input: String, limits: RequestLimits = RequestLimits()) -> (ParseResult, [String]) {
    parse(Array(input.utf8), limits: limits)
}

private func parse(_ input: [UInt8], from start: Int = 0, limits: RequestLimits = RequestLimits()) -> (ParseResult, [String]) {
    var args: [ArgumentSlice] = []
    let result = input.withUnsafeBytes { RESPParser(limits: limits).parse($0, from: start, arguments: &args) }
    guard case .command = result else { return (result, []) }
    let words = args.map { String(decoding: input[$0.offset..<($0.offset + $0.count)], as: UTF8.self) }
    return (result, words)
}

@Suite("RESP parser")
struct ParserTests {
    @Test("an array of bulk strings")
    func array() {
        let input = resp("SET", "key", "value")
        let (result, words) = parse(input)
        #expect(result == .command(end: input.utf8.count))
        #expect(words == ["SET", "key", "value"])
    }

    @Test("bulk strings may hold CR, LF and NUL, and may be empty")
    func binarySafe() {
        let input = "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$5\r\na\r\n\0b\r\n"
        let (result, words) = parse(input)
        #expect(result == .command(end: input.utf8.count))
        #expect(words == ["SET", "", "a\r\n\0b"])
    }

    @Test("inline commands: blanks split words, CR is optional, the line ends at LF")
    func inline() {
        #expect(parse("PING\r\n").1 == ["PING"])
        #expect(parse("PING\n").0 == .command(end: 5))
        #expect(parse("  set   a\t b  \r\n").1 == ["set", "a", "b"])
    }

    @Test("empty requests are skipped without a reply", arguments: ["*0\r\n", "*-1\r\n", "\r\n", "   \n"])
    func empty(_ input: String) {
        #expect(parse(input).0 == .empty(end: input.utf8.count))
    }

    @Test("a partial request asks for more at every split point, never for more than the whole")
    func partialAtEveryByte() {
        for input in [resp("SET", "key", "a value with spaces"), "GET key\r\n", resp("PING"), "*0\r\n", resp("", "", "")] {
            let bytes = Array(input.utf8)
            for cut in 1..<bytes.count {
                let (result, _) = parse(Array(bytes[..<cut]))
                guard case .incomplete(let atLeast) = result else {
                    Issue.record("\(input.debugDescription) cut at \(cut): \(result)")
                    continue
                }
                #expect(atLeast > cut && atLeast <= bytes.count, "\(input.debugDescription) cut at \(cut)")
            }
            let whole = parse(bytes).0
            #expect(whole == .command(end: bytes.count) || whole == .empty(end: bytes.count))
        }
    }

    @Test("a known bulk length lets the parser ask for the whole request at once")
    func lowerBound() {
        let (result, _) = parse("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\nabc")
        // The header, "SET" and "k" (20 bytes), "$1000\r\n" (7), the value and its CRLF (1002).
        #expect(result == .incomplete(atLeast: 20 + 7 + 1002))
    }

    @Test("pipelined requests parse one after another from each end offset")
    func pipelined() {
        let bytes = Array((resp("SET", "a", "1") + "GET a\r\n" + resp("PING")).utf8)
        var start = 0
        var seen: [[String]] = []
        while start < bytes.count {
            let (result, words) = parse(bytes, from: start)
            guard case .command(let end) = result else {
                Issue.record("at \(start): \(result)")
                return
            }
            seen.append(words)
            start = end
        }
        #expect(seen == [["SET", "a", "1"], ["GET", "a"], ["PING"]])
    }

    @Test(
        "malformed input is a protocol error",
        arguments: [
            ("*x\r\n", "invalid multibulk length"),
            ("*1\rx", "invalid multibulk length"),
            ("*+1\r\n", "invalid multibulk length"),
            ("*1\r\n:1\r\n", "expected '$', got ':'"),
            ("*1\r\n$-1\r\n", "invalid bulk length"),
            ("*1\r\n$01\r\nx\r\n", "invalid bulk length"),
            ("*1\r\n$1\r\nxyz\r\n", "expected CRLF after bulk string"),
            ("*2\r\n$1\r\nx\r\n\u{1}", "expected '$', got '\\x1'"),
        ])
    func malformed(_ input: String, _ reason: String) {
        #expect(parse(input).0 == .invalid(ProtocolError(reason)))
    }

    @Test("the caps on a request")
    func caps() {
        var limits = RequestLimits()
        limits.maxBulkLength = 10
        limits.maxInlineLength = 16
        limits.maxArrayLength = 3
        limits.maxRequestLength = 40
        #expect(parse("*1\r\n$10\r\n", limits: limits).0 == .incomplete(atLeast: 21))
        #expect(parse("*1\r\n$11\r\n", limits: limits).0 == .invalid(ProtocolError("invalid bulk length")))
        #expect(parse("*3\r\n", limits: limits).0 == .incomplete(atLeast: 22))
        #expect(parse("*4\r\n", limits: limits).0 == .invalid(ProtocolError("invalid multibulk length")))
        #expect(parse("*3\r\n$10\r\n0123456789\r\n$10\r\n", limits: limits).0 == .invalid(ProtocolError("too big request")))
        // Inline lines and header lines: 16 bytes wait for more, 17 without an end are too many.
        #expect(parse(String(repeating: "a", count: 16), limits: limits).0 == .incomplete(atLeast: 17))
        #expect(parse(String(repeating: "a", count: 17), limits: limits).0 == .invalid(ProtocolError("too big inline request")))
        #expect(parse(String(repeating: "a", count: 17) + "\r\n", limits: limits).0 == .invalid(ProtocolError("too big inline request")))
        #expect(parse("*" + String(repeating: "1", count: 17), limits: limits).0 == .invalid(ProtocolError("too big mbulk count string")))
        #expect(parse("*1\r\n$" + String(repeating: "1", count: 17), limits: limits).0 == .invalid(ProtocolError("too big bulk count string")))
    }

    @Test("the default caps are Redis's")
    func defaults() {
        let limits = RequestLimits()
        #expect(limits.maxBulkLength == 512 * 1024 * 1024)
        #expect(limits.maxInlineLength == 64 * 1024)
        #expect(limits.maxArrayLength == 1024 * 1024)
        #expect(parse("*1048577\r\n").0 == .invalid(ProtocolError("invalid multibulk length")))
        #expect(parse("*1\r\n$536870913\r\n").0 == .invalid(ProtocolError("invalid bulk length")))
        #expect(parse("*1\r\n$536870912\r\n").0 == .incomplete(atLeast: 4 + 12 + 536_870_912 + 2))
    }
}

@Suite("Decimal bytes")
struct DecimalBytesTests {
    @Test("parse accepts exactly Redis's integers")
    func parse() {
        let cases: [(String, Int64?)] = [
            ("0", 0), ("7", 7), ("-12", -12), ("9223372036854775807", .max), ("-9223372036854775808", .min),
            ("9223372036854775808", nil), ("-9223372036854775809", nil), ("", nil), ("-", nil), ("+1", nil),
            ("01", nil), ("-0", nil), (" 1", nil), ("1 ", nil), ("1a", nil), ("99999999999999999999", nil),
        ]
        for (text, value) in cases {
            #expect(DecimalBytes.parse(Array(text.utf8)) == value, "\(text.debugDescription)")
        }
    }

    @Test("append prints what parse reads", arguments: [Int64.min, -1, 0, 1, 42, 1_000_000, Int64.max])
    func roundTrip(_ n: Int64) {
        #expect(DecimalBytes.bytes(n) == Array(String(n).utf8))
        #expect(DecimalBytes.parse(DecimalBytes.bytes(n)) == n)
    }
}
