import Dispatch
import GNet
import GNetConformance
import GNetLocks
import GNetWorkerPool
import Glibc
import KVCore
import Testing

/// A gnet-kv client over TCP loopback: frames requests, reads framed replies (receives time
/// out rather than hang).
private final class KVClient {
    let socket: TestClient

    init(port: Int) throws { socket = try TestClient(SocketAddress(ipAddress: "127.0.0.1", port: port)!) }

    func send(_ requests: [KVRequest]) throws { try socket.send(requests.flatMap { framed($0.payload) }) }

    func receiveReply() throws -> KVReply? {
        let header = try socket.receive(exactly: 4)
        let length = header.reduce(0) { $0 << 8 | Int($1) }
        return KVReply(payload: try socket.receive(exactly: length))
    }

    func call(_ request: KVRequest) throws -> KVReply? {
        try send([request])
        return try receiveReply()
    }

    /// Whether a reply byte is already waiting (without waiting for one).
    var hasPendingReply: Bool {
        var byte: UInt8 = 0
        return recv(socket.fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0
    }

    /// Whether the server closed the connection (EOF or reset) with nothing more to read.
    var isClosedByServer: Bool { (try? socket.receiveSome(max: 1))?.isEmpty ?? true }
}

/// A fresh directory for snapshot files, removed with its files afterwards.
private func withTemporaryDirectory(_ body: (String) throws -> Void) throws {
    var template = Array("/tmp/gnet-kv-test-XXXXXX".utf8CString)
    let dir = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
    defer {
        for name in ["snapshot", "snapshot.tmp"] { unlink(dir + "/" + name) }
        rmdir(dir)
    }
    try body(dir)
}

/// Serves a KVHandler (its store loaded from `dataPath` first, as gnet-kv does) on a free
/// loopback port while `body` runs; the engine's stop shuts the pool down (onShutdown).
private func withKVServer(
    dataPath: String = "/nonexistent/gnet-kv-test", loops: Int = 1, poller: PollerKind? = nil,
    maxFrameLength: Int = 1 << 16, workers: Int = 2, queueCapacity: Int = 16,
    beforeSave: @escaping @Sendable () -> Void = {},
    _ body: (Int, KVHandler) throws -> Void
) throws {
    let store = KVStore()
    try store.load(from: dataPath)
    let handler = KVHandler(
        store: store, pool: WorkerPool(threads: workers, queueCapacity: queueCapacity, name: "kv-test-worker"),
        dataPath: dataPath, maxFrameLength: maxFrameLength, beforeSave: beforeSave)
    try serving(handler, configure: {
        $0.loops = loops
        $0.poller = poller
    }) { address in try body(try #require(address.port), handler) }
    #expect(handler.pool.isShutDown, "onShutdown shuts the pool down")
}

/// The calling thread's name (Linux: /proc/thread-self/comm, at most 15 bytes).
private func currentThreadName() -> String {
    let fd = open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var name = [UInt8](repeating: 0, count: 32)
    let n = name.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
    return String(decoding: name[..<max(0, n)], as: UTF8.self).trimmingSuffix("\n")
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("gnet-kv end to end, over TCP", .serialized)
struct EndToEndTests {
    @Test("SET, GET and DEL round trips, binary keys and values included")
    func roundTrips() throws {
        try withKVServer { port, _ in
            let c = try KVClient(port: port)
            #expect(try c.call(.get(key: bytes("a"))) == .notFound)
            #expect(try c.call(.set(key: bytes("a"), value: bytes("1"))) == .ok([]))
            #expect(try c.call(.get(key: bytes("a"))) == .ok(bytes("1")))
            #expect(try c.call(.set(key: bytes("a"), value: bytes("two"))) == .ok([]))
            #expect(try c.call(.get(key: bytes("a"))) == .ok(bytes("two")))
            let binary: [UInt8] = [0, 255, 13, 10, 0]
            #expect(try c.call(.set(key: binary, value: binary + binary)) == .ok([]))
            #expect(try c.call(.get(key: binary)) == .ok(binary + binary))
            #expect(try c.call(.delete(key: bytes("a"))) == .ok([]))
            #expect(try c.call(.delete(key: bytes("a"))) == .notFound)
            #expect(try c.call(.get(key: bytes("a"))) == .notFound)
            // A second connection sees the same store.
            let d = try KVClient(port: port)
            #expect(try d.call(.get(key: binary)) == .ok(binary + binary))
        }
    }

    @Test("200 pipelined requests, a SAVE among them, are answered in order (2 loops, each backend)",
          arguments: PollerKind.allAvailable)
    func pipelined(poller: PollerKind) throws {
        try withTemporaryDirectory { dir in
            try withKVServer(dataPath: dir + "/snapshot", loops: 2, poller: poller) { port, _ in
                let c = try KVClient(port: port)
                var requests: [KVRequest] = []
                var expected: [KVReply] = []
                for i in 0..<100 {
                    let key = bytes("key\(i)"), value = bytes("value\(i)")
                    requests += [.set(key: key, value: value), i == 50 ? .save : .get(key: key)]
                    expected += [.ok([]), i == 50 ? .ok(bytes("51")) : .ok(value)]
                }
                try c.send(requests)  // one write: the server sees many frames per read
                for (i, want) in expected.enumerated() {
                    #expect(try c.receiveReply() == want, "reply \(i)")
                }
            }
        }
    }

    @Test("a bad payload gets an error reply and the connection stays; an over-long frame closes it")
    func badInput() throws {
        try withKVServer(maxFrameLength: 1024) { port, _ in
            let c = try KVClient(port: port)
            try c.socket.send(framed([9, 9]) + framed(KVRequest.get(key: bytes("x")).payload))
            guard case .error(let message)? = try c.receiveReply() else { Issue.record("no error reply"); return }
            #expect(message.contains("unknown opcode 9"))
            #expect(try c.receiveReply() == .notFound)
            // The header alone announces 16 MiB: the server refuses without waiting for it.
            try c.socket.send([1, 0, 0, 0])
            #expect(c.isClosedByServer)
            // Other clients are unaffected.
            #expect(try KVClient(port: port).call(.get(key: bytes("x"))) == .notFound)
        }
    }

    @Test("SAVE writes a snapshot that a restarted server loads")
    func saveAndReload() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/snapshot"
            let entries: [([UInt8], [UInt8])] = [(bytes("a"), bytes("1")), ([0, 1, 2], []), (bytes("big"), [UInt8](repeating: 42, count: 50_000))]
            try withKVServer(dataPath: path) { port, _ in
                let c = try KVClient(port: port)
                for (k, v) in entries { #expect(try c.call(.set(key: k, value: v)) == .ok([])) }
                #expect(try c.call(.set(key: bytes("gone"), value: bytes("x"))) == .ok([]))
                #expect(try c.call(.delete(key: bytes("gone"))) == .ok([]))
                #expect(try c.call(.save) == .ok(bytes("3")))
            }
            #expect(access(path, F_OK) == 0, "the snapshot file exists")
            #expect(access(path + ".tmp", F_OK) != 0, "the temporary file was renamed over it")
            try withKVServer(dataPath: path) { port, handler in
                #expect(handler.store.count == 3)
                let c = try KVClient(port: port)
                for (k, v) in entries { #expect(try c.call(.get(key: k)) == .ok(v)) }
                #expect(try c.call(.get(key: bytes("gone"))) == .notFound)
            }
        }
    }

    @Test("while a SAVE is held at the pool, the loop answers other connections; its reply then comes in order")
    func saveOffTheLoop() throws {
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let workerName = Locked<String>("")
        try withTemporaryDirectory { dir in
            // One loop: if SAVE blocked it, the second client could not be answered.
            try withKVServer(dataPath: dir + "/snapshot", loops: 1, beforeSave: {
                workerName.withLock { $0 = currentThreadName() }
                entered.signal()
                release.wait()
            }) { port, _ in
                defer { for _ in 0..<2 { release.signal() } }  // a failed expectation must not leave a worker held
                let saver = try KVClient(port: port)
                try saver.send([.set(key: bytes("k"), value: bytes("v")), .save, .get(key: bytes("k"))])
                #expect(try saver.receiveReply() == .ok([]))
                #expect(entered.wait(timeout: .now() + 10) == .success, "SAVE reached the pool")

                let other = try KVClient(port: port)
                for i in 0..<20 {
                    #expect(try other.call(.set(key: bytes("o\(i)"), value: bytes("\(i)"))) == .ok([]))
                    #expect(try other.call(.get(key: bytes("o\(i)"))) == .ok(bytes("\(i)")))
                }
                // The GET pipelined behind the SAVE waits for it: nothing has come back yet.
                #expect(!saver.hasPendingReply)

                release.signal()
                #expect(try saver.receiveReply() == .ok(bytes("21")), "SAVE's reply, from the loop")
                #expect(try saver.receiveReply() == .ok(bytes("v")), "then the GET sent after it")
            }
        }
        #expect(workerName.withLock { $0 }.hasPrefix("kv-test-worker"), "the file was written on a worker thread")
    }

    @Test("a SAVE the full pool cannot take is refused with an error reply, without blocking the loop")
    func saveRefusedWhenFull() throws {
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        try withTemporaryDirectory { dir in
            // One worker, one queue slot: the first SAVE runs (held), the second waits queued.
            try withKVServer(dataPath: dir + "/snapshot", workers: 1, queueCapacity: 1, beforeSave: {
                entered.signal()
                release.wait()
            }) { port, handler in
                defer { for _ in 0..<2 { release.signal() } }  // a failed expectation must not leave a worker held
                let running = try KVClient(port: port), queued = try KVClient(port: port)
                try running.send([.save])
                #expect(entered.wait(timeout: .now() + 10) == .success)
                try queued.send([.save])
                for _ in 0..<5_000 where handler.pool.queuedCount == 0 { usleep(1_000) }
                try #require(handler.pool.queuedCount == 1, "the second SAVE waits in the queue")
                let refused = try KVClient(port: port)
                // Its pipelined GET shows the loop moved on at once rather than wait for room.
                try refused.send([.save, .get(key: bytes("k"))])
                guard case .error(let message)? = try refused.receiveReply() else { Issue.record("no error reply"); return }
                #expect(message.contains("SAVE refused"))
                #expect(try refused.receiveReply() == .notFound)
                release.signal()
                release.signal()
                #expect(try running.receiveReply() == .ok(bytes("0")))
                #expect(try queued.receiveReply() == .ok(bytes("0")))
            }
        }
    }

    @Test("a client that leaves while its SAVE is at the pool: the save completes, the server carries on")
    func clientLeavesDuringSave() throws {
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        try withTemporaryDirectory { dir in
            let path = dir + "/snapshot"
            try withKVServer(dataPath: path, beforeSave: {
                entered.signal()
                release.wait()
            }) { port, _ in
                defer { for _ in 0..<2 { release.signal() } }  // a failed expectation must not leave a worker held
                do {
                    let leaver = try KVClient(port: port)
                    try leaver.send([.set(key: bytes("k"), value: bytes("v")), .save])
                    #expect(try leaver.receiveReply() == .ok([]))
                    #expect(entered.wait(timeout: .now() + 10) == .success)
                }  // closed here, before the SAVE's reply
                release.signal()
                let c = try KVClient(port: port)
                #expect(try c.call(.get(key: bytes("k"))) == .ok(bytes("v")))
                // A second SAVE (released at once) proves the pool and the loop are still fine.
                release.signal()
                #expect(try c.call(.save) == .ok(bytes("1")))
            }
            #expect(access(path, F_OK) == 0)
        }
    }
}
