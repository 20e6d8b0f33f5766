import Glibc
import HTTPCore
import Testing

@Suite("Date header")
struct DateTests {
    @Test("known dates", arguments: [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT"),
        (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
        (-1, "Wed, 31 Dec 1969 23:59:59 GMT"),
        (-86_400 * 365, "Wed, 01 Jan 1969 00:00:00 GMT"),
    ])
    func known(_ seconds: Int, _ expected: String) {
        #expect(HTTPDate.string(seconds) == expected)
    }

    @Test("agrees with gmtime_r and strftime across four centuries")
    func againstLibc() {
        var generator = SystemRandomNumberGenerator()
        // Every day boundary of a few leap-rule years, then random instants up to 2400.
        var samples: [Int] = []
        for year in [1970, 1999, 2000, 2001, 2100, 2399] {
            let start = (year - 1970) * 365 * 86_400
            samples += stride(from: start - 3 * 86_400, to: start + 370 * 86_400, by: 86_400).map { $0 - 1 }
        }
        samples += (0..<5_000).map { _ in Int.random(in: 0..<13_569_465_600, using: &generator) }
        for s in samples {
            var t = time_t(s)
            var parts = tm()
            gmtime_r(&t, &parts)
            var buf = [CChar](repeating: 0, count: 64)
            let n = strftime(&buf, buf.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
            let expected = String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            #expect(HTTPDate.string(s) == expected, "at \(s)")
            if HTTPDate.string(s) != expected { break }
        }
    }

    @Test("each thread keeps one set of responses, dated now")
    func perThread() {
        let a = HTTPResponses.forCurrentThread()
        let b = HTTPResponses.forCurrentThread()
        #expect(a === b)
        let now = Int(time(nil))
        #expect(abs(a.second - now) <= 1)
    }

    @Test("every response is rendered with the current date and a matching Content-Length")
    func templates() {
        let r = HTTPResponses(now: fixedSecond)
        for status in HTTPStatus.allCases {
            for field in ConnectionField.allCases {
                let full = Array(r.response(status, field))
                let parsed = parseResponses(full)
                #expect(parsed.leftover == 0)
                guard let p = parsed.responses.first else { Issue.record("unparsable \(status) \(field)"); continue }
                #expect(p.header("Date") == fixedDate)
                #expect(p.header("Server") == "gnet")
                #expect(p.header("Content-Type") == "text/plain")
                #expect(p.header("Connection") == [.none: nil, .keepAlive: "keep-alive", .close: "close"][field]!)
                let head = Array(r.response(status, field, withBody: false))
                #expect(head.count + p.body.utf8.count == full.count && head == Array(full[..<head.count]))
            }
        }
    }
}
