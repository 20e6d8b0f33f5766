import GNet
import GNetCodec
import GNetWorkerPool

/// What one connection keeps: its frame decoder, and whether a SAVE of it is at the pool.
///
/// Loop thread of the connection only (it lives in `connection.context`).
final class KVSession {
    var decoder: LengthFieldBasedFrameCodec
    /// While true the connection's later requests wait, buffered, so replies keep request order.
    var saving = false
    init(decoder: LengthFieldBasedFrameCodec) { self.decoder = decoder }
}

/// The gnet-kv handler: GET, SET and DEL answered inline on the loop; SAVE written on the
/// worker pool and answered from the connection's loop when the file is on disk.
///
/// Requests of one connection are answered in order: while its SAVE is at the pool, the
/// requests after it stay buffered in the connection's input (bounded by
/// `Options.inboundLimit`) and are served when the SAVE reply has been written. Other
/// connections, on the same loop or not, are answered meanwhile.
///
/// A frame longer than `maxFrameLength` (or a length field that does not parse) is a
/// `CodecError`: the connection is aborted (`onClose` gets the error). A bad payload inside
/// a good frame gets an error reply and the connection stays.
///
/// The handler owns the pool: `onBoot` protects the loops, `onShutdown` shuts the pool down
/// (finishing queued SAVEs) once the loops have ended.
public final class KVHandler: EventHandler {
    public let store: KVStore
    public let pool: WorkerPool
    /// Where SAVE writes the snapshot.
    public let dataPath: String
    /// Frames of both directions: 4-byte big-endian length, payload; at most this long in all.
    public let codec: LengthFieldBasedFrameCodec
    /// Runs on the worker before each SAVE writes (tests use it to hold a SAVE at the pool).
    let beforeSave: @Sendable () -> Void

    public static let defaultMaxFrameLength = 1 << 20

    public init(
        store: KVStore, pool: WorkerPool, dataPath: String,
        maxFrameLength: Int = KVHandler.defaultMaxFrameLength,
        beforeSave: @escaping @Sendable () -> Void = {}
    ) {
        self.store = store
        self.pool = pool
        self.dataPath = dataPath
        self.codec = LengthFieldBasedFrameCodec(maxFrameLength: maxFrameLength)
        self.beforeSave = beforeSave
    }

    public func onBoot(_ engine: Engine) -> Action {
        pool.protect(engine.loops)
        return .none
    }

    public func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        c.context = KVSession(decoder: codec)
        return (nil, .none)
    }

    public func onTraffic(_ c: Connection) -> Action {
        guard let session = c.context as? KVSession else { return .close }
        serve(c, session)
        return .none
    }

    public func onShutdown(_ engine: Engine) {
        pool.shutdown(.finishQueued)  // the loops have ended: let queued SAVEs finish, join
    }

    /// Answers every complete buffered request until a SAVE goes to the pool. Loop thread.
    func serve(_ c: Connection, _ session: KVSession) {
        do {
            while c.isOpen, !session.saving {
                guard let request = try c.nextFrame(using: &session.decoder, { KVRequest.parse($0) }) else { break }
                switch request {
                case .success(.save):
                    startSave(c, session)
                case .success(let request):
                    try send(store.execute(request), to: c)
                case .failure(let error):
                    try send(.error(error.description), to: c)
                }
            }
        } catch {
            c.abort(error)  // a CodecError (frame too long, bad length) or a failed write
        }
    }

    /// Writes `reply` as one frame, rendered straight into the connection's output.
    private func send(_ reply: KVReply, to c: Connection) throws {
        _ = try c.writeFrame(using: codec, reservingCapacity: reply.payloadCount) { reply.render(into: $0) }
    }

    private func startSave(_ c: Connection, _ session: KVSession) {
        let store = store, path = dataPath, beforeSave = beforeSave
        do {
            try pool.submit(for: c, {
                beforeSave()
                return try store.save(to: path)  // open, write, fsync, rename: on a worker
            }, then: { [self] c, result in  // back on c's loop
                finishSave(c, result)
            })
            session.saving = true
        } catch {
            // WorkerPoolError.queueFull or .shutDown: refuse this SAVE, never block the loop.
            try? send(.error("SAVE refused: \(error)"), to: c)
        }
    }

    private func finishSave(_ c: Connection, _ result: Result<Int, any Error>) {
        guard c.isOpen, let session = c.context as? KVSession else { return }  // the client left
        session.saving = false
        let reply: KVReply = switch result {
        case .success(let count): .ok(Array(String(count).utf8))
        case .failure(let error): .error("SAVE failed: \(error)")
        }
        do {
            try send(reply, to: c)
        } catch {
            c.abort(error)
            return
        }
        serve(c, session)  // the requests that waited behind the SAVE
    }
}
