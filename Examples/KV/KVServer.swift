import ArgumentParser
import ExampleSupport
import GNet
import GNetWorkerPool
import Glibc
import KVCore

@main
struct KVCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-kv",
        abstract: "A length-prefixed key-value server on swift-gnet, with SAVE on a worker pool.",
        discussion: """
            Frames are a 4-byte big-endian length and a payload; a request payload is an opcode \
            (1 GET key, 2 SET u16-key-length key value, 3 DEL key, 4 SAVE) and a reply payload a \
            status byte (0 ok, 1 not found, 2 error) and a body. SAVE writes the store to --data \
            (write, fsync, rename) on a worker thread; the snapshot there is loaded at start. \
            Prints 'listening on tcp://HOST:PORT (poller=NAME, loops=N)' when ready and stops \
            gracefully on SIGINT or SIGTERM. Default port 7379. \
            The GNET_POLLER environment variable overrides --poller.
            """
    )

    @OptionGroup var server: ServerOptions

    @Option(help: "The snapshot file SAVE writes and the server loads at start. Default: $TMPDIR/gnet-kv.snapshot.")
    var data: String?

    @Option(help: "Worker threads for SAVE.")
    var workers = 2

    @Option(help: "The largest frame (length field included) a client may send, in bytes.")
    var maxFrameLength = KVHandler.defaultMaxFrameLength

    func validate() throws {
        guard workers > 0 else { throw ValidationError("--workers must be positive, got \(workers)") }
        guard maxFrameLength >= 5 else { throw ValidationError("--max-frame-length must be at least 5, got \(maxFrameLength)") }
    }

    func run() throws {
        let path = data ?? ((getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp") + "/gnet-kv.snapshot")
        let store = KVStore()
        do {
            let loaded = try store.load(from: path)
            if loaded > 0 { ExampleServer.printError("gnet-kv: loaded \(loaded) keys from \(path)") }
        } catch {
            ExampleServer.printError("gnet-kv: \(error)")
            throw ExitCode.failure
        }
        // Before the pool starts its threads, so they inherit the mask and a stop signal
        // reaches the engine's waiter rather than a worker.
        ExampleServer.blockStopSignals()
        let handler = KVHandler(
            store: store, pool: WorkerPool(threads: workers, queueCapacity: 64, name: "gnet-kv-worker"),
            dataPath: path, maxFrameLength: maxFrameLength)
        try server.serve("gnet-kv", handler, defaultPort: 7379, configure: { options in
            // A request is handled whole, and requests wait buffered behind a SAVE: keep room
            // for the largest frame.
            options.inboundLimit = max(options.inboundLimit, 2 * maxFrameLength)
        })
    }
}
