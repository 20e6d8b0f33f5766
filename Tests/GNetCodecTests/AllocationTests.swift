import GNet
import GNetCodec
import GNetConformance
import Glibc
import Testing

/// Heap allocations per framed message through a real engine, counted by the benchmark suite's
/// LD_PRELOAD shim (`Benchmarks/C/malloccount.c`). It runs only under the shim:
///
///     cc -O2 -shared -fPIC -o /tmp/malloccount.so Benchmarks/C/malloccount.c
///     MALLOCCOUNT_FILE=/tmp/counts LD_PRELOAD=/tmp/malloccount.so \
///         .build/debug/swift-gnetPackageTests.xctest --testing-library swift-testing --filter AllocationTests
///
/// (the test binary itself: `swift test` would preload the shim into SwiftPM too). The count is
/// process-wide, so the client here allocates nothing per message: its buffers exist once.
@Suite(.serialized, .enabled(if: getenv("MALLOCCOUNT_FILE") != nil && getenv("LD_PRELOAD") != nil))
struct AllocationTests {
    struct PlainEcho: EventHandler {
        func onTraffic(_ c: Connection) -> Action {
            _ = try? c.next { try c.write($0) }
            return .none
        }
    }

    /// The framed echo (README's `FramedEcho`) against the plain echo, same traffic: whatever
    /// the engine and this harness allocate (a few per round trip in a debug build), the codec
    /// adds nothing per frame.
    @Test func framedEchoAllocatesNothingMorePerFrame() throws {
        let plain = try allocationsPerFrame(PlainEcho(), "plain echo")
        let framed = try allocationsPerFrame(FramedEcho(), "length-field echo")
        #expect(framed <= plain + 0.001, "framed \(framed) vs plain \(plain) allocations per frame")
    }

    /// 20,000 frames of 60 bytes (in round trips of 100) after a warm-up; returns the heap
    /// allocations per frame, process-wide.
    func allocationsPerFrame(_ handler: some EventHandler, _ name: String) throws -> Double {
        let path = String(cString: getenv("MALLOCCOUNT_FILE"))
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        func allocations() -> UInt64 {
            var n: UInt64 = 0
            _ = pread(fd, &n, 8, 0)
            return n
        }
        var batch: [UInt8] = []
        for i in 0 ..< 100 { batch += [0, 0, 0, 60] + patternBytes(60, seed: UInt64(i)) }
        var reply = [UInt8](repeating: 0, count: batch.count)
        var result = Double.infinity
        try serving(handler) { address in
            let client = try TestClient(address)
            func roundTrip() throws {
                try client.send(batch)
                var got = 0
                while got < reply.count {
                    let r = reply.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress! + got, $0.count - got, 0) }
                    guard r > 0 else { throw ConformanceFailure("recv returned \(r)") }  // no #require: it allocates
                    got += r
                }
            }
            for _ in 0 ..< 100 { try roundTrip() }
            let before = allocations()
            let rounds = 200
            for _ in 0 ..< rounds { try roundTrip() }
            let perFrame = Double(allocations() - before) / Double(rounds * 100)
            print("\(name): \(perFrame) heap allocations per frame (\(allocations() - before) for \(rounds * 100))")
            #expect(reply == batch)
            result = perFrame
        }
        return result
    }
}
