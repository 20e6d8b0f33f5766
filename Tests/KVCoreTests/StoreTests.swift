import Dispatch
import GNetLocks
import Glibc
import KVCore
import Testing

@Suite("KV store: snapshots")
struct StoreTests {
    @Test("saves from several threads at once all succeed, and the file loads")
    func concurrentSaves() throws {
        var template = Array("/tmp/gnet-kv-store-XXXXXX".utf8CString)
        let dir = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        let path = dir + "/snapshot"
        defer {
            unlink(path)
            rmdir(dir)
        }
        let store = KVStore()
        for i in 0..<100 { store.set(Array("k\(i)".utf8), Array("v\(i)".utf8)) }
        let failures = Locked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            do { try store.save(to: path) } catch { failures.withLock { $0.append("\(error)") } }
        }
        #expect(failures.withLock { $0 } == [])
        let loaded = KVStore()
        #expect(try loaded.load(from: path) == 100)
        #expect(loaded.get(Array("k42".utf8)) == Array("v42".utf8))
    }

    @Test("a file that is not a whole snapshot is refused, not half loaded")
    func corrupt() throws {
        var template = Array("/tmp/gnet-kv-store-XXXXXX".utf8CString)
        let dir = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        let path = dir + "/snapshot"
        defer {
            unlink(path)
            rmdir(dir)
        }
        let store = KVStore()
        store.set(Array("key".utf8), Array("value".utf8))
        try store.save(to: path)
        #expect(truncate(path, 8 + 4 + 3 + 2) == 0)  // inside the value's length field
        let loaded = KVStore()
        #expect(throws: KVStoreError.self) { try loaded.load(from: path) }
        #expect(loaded.count == 0)
        #expect(try KVStore().load(from: dir + "/missing") == 0, "a missing file is an empty store")
    }
}
