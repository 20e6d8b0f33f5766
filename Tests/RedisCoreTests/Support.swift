import RedisCore
import Synchronization

/// A clock the test moves by hand, for deterministic expiry.
final class ManualClock: Sendable {
    private let now = Mutex<Int64>(1_000_000)
    func advance(milliseconds: Int64) { now.withLock { $0 += milliseconds } }
    var reading: Int64 { now.withLock { $0 } }
    var clock: KeyValueStore.Clock { { [self] in self.reading } }
}

/// Runs `input` through `processor` the way the handler does, calling again while it makes
/// progress, and returns the replies as text, the bytes consumed, and whether it asked to close.
struct Exchange {
    var replies: String
    var consumed: Int
    var close: Bool
}

func exchange(_ processor: RedisProcessor, _ input: [UInt8], session: inout RedisSession) -> Exchange {
    var consumed = 0
    var out: [UInt8] = []
    var close = false
    while true {
        let outcome = input.withUnsafeBytes { all in
            processor.process(UnsafeRawBufferPointer(rebasing: all[consumed...]), session: &session)
        }
        consumed += outcome.consumed
        out += session.replies.bytes
        session.replies.reset()
        if outcome.close { close = true; break }
        if outcome.consumed == 0 || consumed == input.count { break }
    }
    return Exchange(replies: String(decoding: out, as: UTF8.self), consumed: consumed, close: close)
}

func exchange(_ processor: RedisProcessor, _ input: String) -> Exchange {
    var session = RedisSession()
    return exchange(processor, Array(input.utf8), session: &session)
}

/// Encodes a request as a RESP array of bulk strings, as clients send it.
func resp(_ words: String...) -> String { resp(words) }

func resp(_ words: [String]) -> String {
    var s = "*\(words.count)\r\n"
    for w in words { s += "$\(w.utf8.count)\r\n\(w)\r\n" }
    return s
}

/// Runs one request (given as words) and returns the reply text.
func reply(_ processor: RedisProcessor, _ words: String...) -> String {
    exchange(processor, resp(words)).replies
}
