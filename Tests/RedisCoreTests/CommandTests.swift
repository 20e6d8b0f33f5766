import RedisCore
import Testing

@Suite("Commands")
struct CommandTests {
    let clock = ManualClock()
    let processor: RedisProcessor

    init() {
        processor = RedisProcessor(store: KeyValueStore(shardCount: 4, clock: clock.clock))
    }

    @Test("PING and ECHO")
    func pingEcho() {
        #expect(reply(processor, "PING") == "+PONG\r\n")
        #expect(reply(processor, "ping", "hello") == "$5\r\nhello\r\n")
        #expect(reply(processor, "PING", "a", "b") == "-ERR wrong number of arguments for 'ping' command\r\n")
        #expect(reply(processor, "ECHO", "") == "$0\r\n\r\n")
        #expect(reply(processor, "echo", "a b") == "$3\r\na b\r\n")
        #expect(reply(processor, "ECHO") == "-ERR wrong number of arguments for 'echo' command\r\n")
    }

    @Test("command names match in any case")
    func caseInsensitive() {
        #expect(reply(processor, "SeT", "k", "v") == "+OK\r\n")
        #expect(reply(processor, "gEt", "k") == "$1\r\nv\r\n")
        #expect(reply(processor, "GET", "K") == "$-1\r\n") // keys are case-sensitive
    }

    @Test("SET and GET, binary values, overwrite")
    func setGet() {
        #expect(reply(processor, "GET", "missing") == "$-1\r\n")
        #expect(reply(processor, "SET", "k", "v1") == "+OK\r\n")
        #expect(reply(processor, "SET", "k", "v\r\n2") == "+OK\r\n")
        #expect(reply(processor, "GET", "k") == "$4\r\nv\r\n2\r\n")
        let long = String(repeating: "key", count: 20) // past the inline key size
        #expect(reply(processor, "SET", long, "") == "+OK\r\n")
        #expect(reply(processor, "GET", long) == "$0\r\n\r\n")
        #expect(reply(processor, "GET", String(long.dropLast())) == "$-1\r\n")
        #expect(reply(processor, "SET", "k") == "-ERR wrong number of arguments for 'set' command\r\n")
        #expect(reply(processor, "GET", "a", "b") == "-ERR wrong number of arguments for 'get' command\r\n")
    }

    @Test("SET NX and XX")
    func setConditions() {
        #expect(reply(processor, "SET", "k", "1", "XX") == "$-1\r\n")
        #expect(reply(processor, "GET", "k") == "$-1\r\n")
        #expect(reply(processor, "SET", "k", "1", "nx") == "+OK\r\n")
        #expect(reply(processor, "SET", "k", "2", "NX") == "$-1\r\n")
        #expect(reply(processor, "GET", "k") == "$1\r\n1\r\n")
        #expect(reply(processor, "SET", "k", "3", "xx") == "+OK\r\n")
        #expect(reply(processor, "GET", "k") == "$1\r\n3\r\n")
        #expect(reply(processor, "SET", "k", "4", "NX", "XX") == "-ERR syntax error\r\n")
        #expect(reply(processor, "SET", "k", "4", "NX", "NX") == "$-1\r\n")
    }

    @Test("SET EX and PX expire the key; TTL and PTTL report it")
    func setExpiry() {
        #expect(reply(processor, "SET", "s", "v", "EX", "10") == "+OK\r\n")
        #expect(reply(processor, "SET", "m", "v", "px", "1500") == "+OK\r\n")
        #expect(reply(processor, "TTL", "s") == ":10\r\n")
        #expect(reply(processor, "PTTL", "m") == ":1500\r\n")
        clock.advance(milliseconds: 1499)
        #expect(reply(processor, "GET", "m") == "$1\r\nv\r\n")
        #expect(reply(processor, "TTL", "s") == ":9\r\n") // 8.501 s rounds to 9, as in Redis
        clock.advance(milliseconds: 1)
        #expect(reply(processor, "GET", "m") == "$-1\r\n")
        #expect(reply(processor, "EXISTS", "m") == ":0\r\n")
        #expect(reply(processor, "TTL", "m") == ":-2\r\n")
        clock.advance(milliseconds: 8500)
        #expect(reply(processor, "GET", "s") == "$-1\r\n")
        // A plain SET clears a deadline; NX sees an expired key as absent.
        #expect(reply(processor, "SET", "k", "v", "EX", "1") == "+OK\r\n")
        #expect(reply(processor, "SET", "k", "w") == "+OK\r\n")
        #expect(reply(processor, "TTL", "k") == ":-1\r\n")
        #expect(reply(processor, "SET", "n", "v", "PX", "5") == "+OK\r\n")
        clock.advance(milliseconds: 5)
        #expect(reply(processor, "SET", "n", "again", "NX") == "+OK\r\n")
    }

    @Test("SET KEEPTTL keeps the deadline")
    func keepTTL() {
        #expect(reply(processor, "SET", "k", "v", "PX", "100") == "+OK\r\n")
        #expect(reply(processor, "SET", "k", "w", "KEEPTTL") == "+OK\r\n")
        #expect(reply(processor, "PTTL", "k") == ":100\r\n")
        #expect(reply(processor, "SET", "k", "w", "KEEPTTL", "EX", "1") == "-ERR syntax error\r\n")
    }

    @Test(
        "SET option errors",
        arguments: [
            (["EX", "0"], "-ERR invalid expire time in 'set' command\r\n"),
            (["PX", "-5"], "-ERR invalid expire time in 'set' command\r\n"),
            (["EX", "9223372036854775807"], "-ERR invalid expire time in 'set' command\r\n"),
            (["EX", "ten"], "-ERR value is not an integer or out of range\r\n"),
            (["EX"], "-ERR syntax error\r\n"),
            (["EX", "1", "PX", "1"], "-ERR syntax error\r\n"),
            (["EX", "abc", "FOO"], "-ERR syntax error\r\n"),
            (["GETX"], "-ERR syntax error\r\n"),
        ])
    func setErrors(_ options: [String], _ expected: String) {
        #expect(exchange(processor, resp(["SET", "k", "v"] + options)).replies == expected)
        #expect(reply(processor, "EXISTS", "k") == ":0\r\n")
    }

    @Test("DEL and EXISTS count keys, duplicates included")
    func delExists() {
        _ = reply(processor, "MSET", "a", "1", "b", "2")
        #expect(reply(processor, "EXISTS", "a", "b", "c", "a") == ":3\r\n")
        #expect(reply(processor, "DEL", "a", "c", "a") == ":1\r\n")
        #expect(reply(processor, "EXISTS", "a") == ":0\r\n")
        #expect(reply(processor, "DEL") == "-ERR wrong number of arguments for 'del' command\r\n")
        #expect(reply(processor, "EXISTS") == "-ERR wrong number of arguments for 'exists' command\r\n")
    }

    @Test("INCR, DECR, INCRBY, DECRBY")
    func counters() {
        #expect(reply(processor, "INCR", "n") == ":1\r\n")
        #expect(reply(processor, "INCRBY", "n", "41") == ":42\r\n")
        #expect(reply(processor, "DECR", "n") == ":41\r\n")
        #expect(reply(processor, "DECRBY", "n", "-9") == ":50\r\n")
        #expect(reply(processor, "GET", "n") == "$2\r\n50\r\n")
        #expect(reply(processor, "DECR", "fresh") == ":-1\r\n")
    }

    @Test("counter errors")
    func counterErrors() {
        _ = reply(processor, "SET", "s", "abc")
        _ = reply(processor, "SET", "z", "01")
        _ = reply(processor, "SET", "max", "9223372036854775807")
        let notInteger = "-ERR value is not an integer or out of range\r\n"
        #expect(reply(processor, "INCR", "s") == notInteger)
        #expect(reply(processor, "INCR", "z") == notInteger)
        #expect(reply(processor, "INCRBY", "n", "1.5") == notInteger)
        #expect(reply(processor, "DECRBY", "n", "x") == notInteger)
        #expect(reply(processor, "INCR", "max") == "-ERR increment or decrement would overflow\r\n")
        #expect(reply(processor, "DECRBY", "n", "-9223372036854775808") == "-ERR decrement would overflow\r\n")
        #expect(reply(processor, "INCR") == "-ERR wrong number of arguments for 'incr' command\r\n")
        #expect(reply(processor, "INCRBY", "n") == "-ERR wrong number of arguments for 'incrby' command\r\n")
        #expect(reply(processor, "GET", "s") == "$3\r\nabc\r\n")
    }

    @Test("INCR keeps the deadline")
    func incrementKeepsTTL() {
        _ = reply(processor, "SET", "n", "1", "PX", "100")
        #expect(reply(processor, "INCR", "n") == ":2\r\n")
        #expect(reply(processor, "PTTL", "n") == ":100\r\n")
    }

    @Test("MSET and MGET")
    func multi() {
        #expect(reply(processor, "MSET", "a", "1", "b", "") == "+OK\r\n")
        #expect(reply(processor, "MGET", "a", "x", "b") == "*3\r\n$1\r\n1\r\n$-1\r\n$0\r\n\r\n")
        #expect(reply(processor, "MSET", "a", "1", "b") == "-ERR wrong number of arguments for 'mset' command\r\n")
        #expect(reply(processor, "MSET", "a") == "-ERR wrong number of arguments for 'mset' command\r\n")
        #expect(reply(processor, "MGET") == "-ERR wrong number of arguments for 'mget' command\r\n")
    }

    @Test("DBSIZE, FLUSHDB, FLUSHALL")
    func keyspace() {
        _ = reply(processor, "MSET", "a", "1", "b", "2")
        #expect(reply(processor, "DBSIZE") == ":2\r\n")
        #expect(reply(processor, "FLUSHDB", "nope") == "-ERR syntax error\r\n")
        #expect(reply(processor, "FLUSHALL", "ASYNC") == "+OK\r\n")
        #expect(reply(processor, "DBSIZE") == ":0\r\n")
        #expect(reply(processor, "FLUSHDB") == "+OK\r\n")
    }

    @Test("COMMAND and CONFIG GET answer what clients ask on connect")
    func introspection() {
        #expect(reply(processor, "COMMAND") == "*0\r\n")
        #expect(reply(processor, "COMMAND", "DOCS") == "*0\r\n")
        #expect(reply(processor, "command", "docs", "get") == "*0\r\n")
        #expect(reply(processor, "COMMAND", "COUNT") == ":\(Command.allCases.count)\r\n")
        #expect(reply(processor, "COMMAND", "BOGUS") == "-ERR unknown subcommand 'BOGUS'. Try COMMAND HELP.\r\n")
        #expect(reply(processor, "CONFIG", "GET", "save") == "*2\r\n$4\r\nsave\r\n$0\r\n\r\n")
        #expect(reply(processor, "CONFIG", "get", "APPENDONLY") == "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n")
        #expect(reply(processor, "CONFIG", "GET", "*") == "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n")
        #expect(reply(processor, "CONFIG", "GET", "s?ve", "nothing") == "*2\r\n$4\r\nsave\r\n$0\r\n\r\n")
        #expect(reply(processor, "CONFIG", "GET", "maxmemory") == "*0\r\n")
        #expect(reply(processor, "CONFIG", "GET") == "-ERR wrong number of arguments for 'config|get' command\r\n")
        #expect(reply(processor, "CONFIG", "SET", "a", "b") == "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n")
        #expect(reply(processor, "CONFIG") == "-ERR wrong number of arguments for 'config' command\r\n")
    }

    @Test("unknown commands are named with their first arguments, as Redis does")
    func unknown() {
        #expect(reply(processor, "FOO") == "-ERR unknown command 'FOO', with args beginning with: \r\n")
        #expect(reply(processor, "foo", "a", "b c") == "-ERR unknown command 'foo', with args beginning with: 'a' 'b c' \r\n")
        #expect(reply(processor, "x", "new\r\nline") == "-ERR unknown command 'x', with args beginning with: 'new  line' \r\n")
        // Arguments are quoted up to about 128 bytes in all.
        let long = String(repeating: "z", count: 200)
        let expected = "-ERR unknown command 'x', with args beginning with: '" + String(repeating: "z", count: 128) + "' \r\n"
        #expect(reply(processor, "x", long, "more") == expected)
        // The session goes on after an unknown command.
        #expect(exchange(processor, resp("nope") + resp("PING")).replies.hasSuffix("+PONG\r\n"))
    }

    @Test("QUIT replies OK, closes, and ignores what follows")
    func quit() {
        let input = resp("SET", "a", "1") + resp("QUIT") + resp("SET", "b", "2")
        let result = exchange(processor, input)
        #expect(result.replies == "+OK\r\n+OK\r\n")
        #expect(result.close)
        #expect(result.consumed == (resp("SET", "a", "1") + resp("QUIT")).utf8.count)
        #expect(reply(processor, "EXISTS", "b") == ":0\r\n")
    }
}
