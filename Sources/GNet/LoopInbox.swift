import DequeModule
import Glibc
import GNetLocks
import Poller
import Synchronization

/// Work handed to a loop from another thread.
enum LoopTask: Sendable {
    /// Write bytes to a connection (`ConnectionHandle.write`); `bytes` is their total.
    case write(fd: Int32, generation: UInt32, buffers: [[UInt8]], bytes: Int, completion: (@Sendable (Result<Void, any Error>) -> Void)?)
    /// Call `onTraffic` without new input (`ConnectionHandle.wake`).
    case wake(fd: Int32, generation: UInt32, completion: (@Sendable (Result<Void, any Error>) -> Void)?)
    /// Close a connection (`ConnectionHandle.close`).
    case close(fd: Int32, generation: UInt32, completion: (@Sendable (Result<Void, any Error>) -> Void)?)
    /// Abort a connection with a reset (a handle write went past `Options.asyncWriteLimit`).
    case abort(fd: Int32, generation: UInt32, error: GNetError)
    /// Take over a socket accepted by another loop.
    case adopt(fd: Int32, remote: SocketAddress, listener: SocketAddress?, network: Network)
    /// Send a datagram (`ConnectionHandle.write` on a datagram connection): from the datagram
    /// listener socket `fd` (generation 0) to `peer`, or from the dialled datagram connection
    /// `fd`/`generation` to its peer; `bytes` is the buffers' total.
    case sendDatagram(fd: Int32, generation: UInt32, peer: SocketAddress, buffers: [[UInt8]], bytes: Int, completion: (@Sendable (Result<Void, any Error>) -> Void)?)
    /// Dial, or take over a connected socket (`Engine.dial`, `Engine.enroll`).
    case dial(DialRequest)
    /// Stop: close listeners; quiesce, flush and close connections (`.gracefully`) or abort
    /// them (`.immediately`); end the loop.
    case stop(Engine.StopMode)
    /// Run a closure on the loop thread (`EventLoopHandle.execute`, and the engine's own).
    case run(@Sendable () -> Void)
    /// Arm a timer for a scheduled closure (`EventLoopHandle.schedule`).
    case schedule(ScheduledTask)
    /// Read the loop's counters (`EventLoopHandle.statistics`).
    case statistics(@Sendable (LoopStatistics) -> Void)

    /// Fails the task's completion (or closes its socket) when the loop is gone.
    func abandon() {
        switch self {
        case .write(_, _, _, _, let c), .wake(_, _, let c), .close(_, _, let c), .sendDatagram(_, _, _, _, _, let c):
            c?(.failure(GNetError.connectionClosed))
        case .adopt(let fd, _, _, _):
            _ = closeDescriptor(fd)
        case .dial(let request):
            request.abandon(GNetError.engineStopped)
        case .schedule(let task):
            task.finish(.dropped)
        case .abort, .stop, .run, .statistics:
            break
        }
    }
}

/// The one door into a loop from other threads: a task queue and a coalesced wakeup.
///
/// All of it may be used from any thread.
final class LoopInbox: Sendable {
    let index: Int
    private let queue = Locked<(tasks: Deque<LoopTask>, open: Bool)>((Deque(), true))
    /// True from the first enqueue after a drain until the loop drains again: wakes coalesce.
    private let wakePending = Atomic<Bool>(false)
    private let waker: any PollerWaker
    /// Open connections on this loop, read by the least-connections balancer.
    let connectionCount = Atomic<Int>(0)
    /// Datagrams this loop dropped because they were larger than `Options.readBufferCapacity`.
    let truncatedDatagrams = Atomic<Int>(0)
    /// Datagrams written during a receive batch that the kernel refused when the batch was sent.
    let unsentDatagrams = Atomic<Int>(0)
    /// Bytes of handle writes queued here and not yet taken by the loop.
    private let queuedWriteBytes = Atomic<Int>(0)
    /// `Options.asyncWriteLimit`.
    let asyncWriteLimit: Int
    /// The loop's thread while it runs its loop, 0 otherwise (`pthread_t` is an integer on Linux).
    private let loopThread = Atomic<UInt>(0)

    init(index: Int, waker: any PollerWaker, asyncWriteLimit: Int) {
        self.index = index
        self.waker = waker
        self.asyncWriteLimit = asyncWriteLimit
    }

    /// Queues a handle write of `bytes` unless that would put more than `asyncWriteLimit` bytes
    /// in this queue; then fails it and aborts the connection, so no later write can follow a
    /// hole in the stream.
    func enqueueWrite(fd: Int32, generation: UInt32, buffers: [[UInt8]], completion: (@Sendable (Result<Void, any Error>) -> Void)?) {
        var bytes = 0
        for b in buffers { bytes += b.count }
        let queued = queuedWriteBytes.wrappingAdd(bytes, ordering: .relaxed).newValue
        if queued > asyncWriteLimit {
            queuedWriteBytes.subtract(bytes, ordering: .relaxed)
            let error = GNetError.outboundLimitExceeded(limit: asyncWriteLimit)
            enqueue(.abort(fd: fd, generation: generation, error: error))
            completion?(.failure(error))
            return
        }
        enqueue(.write(fd: fd, generation: generation, buffers: buffers, bytes: bytes, completion: completion))
    }

    /// Queues a handle's datagram to `peer`, unless that would put more than `asyncWriteLimit`
    /// bytes in this queue: then it fails with `GNetError.outboundLimitExceeded` (the datagram
    /// is not sent; the socket serves on).
    func enqueueDatagram(
        fd: Int32, generation: UInt32, peer: SocketAddress, buffers: [[UInt8]], completion: (@Sendable (Result<Void, any Error>) -> Void)?
    ) {
        var bytes = 0
        for b in buffers { bytes += b.count }
        let queued = queuedWriteBytes.wrappingAdd(bytes, ordering: .relaxed).newValue
        if queued > asyncWriteLimit {
            queuedWriteBytes.subtract(bytes, ordering: .relaxed)
            completion?(.failure(GNetError.outboundLimitExceeded(limit: asyncWriteLimit)))
            return
        }
        enqueue(.sendDatagram(fd: fd, generation: generation, peer: peer, buffers: buffers, bytes: bytes, completion: completion))
    }

    /// The loop took a handle write of `bytes` off the queue.
    func tookAsyncWrite(_ bytes: Int) {
        queuedWriteBytes.subtract(bytes, ordering: .relaxed)
    }

    /// Queues `task` and wakes the loop. Returns false (and abandons the task) if the loop
    /// has ended.
    @discardableResult
    func enqueue(_ task: LoopTask) -> Bool {
        let accepted = queue.withLock { q -> Bool in
            guard q.open else { return false }
            q.tasks.append(task)
            return true
        }
        guard accepted else {
            task.abandon()
            return false
        }
        if !wakePending.exchange(true, ordering: .acquiringAndReleasing) {
            // Fails only once the poller has closed, after the loop's tear-down took (and
            // completed) every queued task, this one included.
            try? waker.wakeup()
        }
        return true
    }

    /// Records (or, with false, forgets) the calling thread as the loop's. Loop thread only.
    func setLoopThread(_ running: Bool) {
        loopThread.store(running ? UInt(pthread_self()) : 0, ordering: .releasing)
    }

    /// Whether the caller is the loop's thread (one atomic load).
    var isLoopThread: Bool { loopThread.load(ordering: .acquiring) == UInt(pthread_self()) }

    /// Whether tasks may be waiting (cheap; no lock).
    var hasPending: Bool { wakePending.load(ordering: .acquiring) }

    /// Takes every queued task. Loop thread only.
    func drain(into batch: inout Deque<LoopTask>) {
        wakePending.store(false, ordering: .releasing)
        queue.withLock { q in swap(&q.tasks, &batch) }
    }

    /// Refuses further tasks and returns what was still queued. Loop thread only, at exit.
    func close() -> Deque<LoopTask> {
        queue.withLock { q in
            q.open = false
            defer { q.tasks = [] }
            return q.tasks
        }
    }
}

/// What other threads may do with a connection. `Sendable`; copy it freely.
///
/// Every operation is carried out on the connection's loop. Each completion is called exactly
/// once, on the loop thread (or on the calling thread if the engine has stopped), with
/// `GNetError.connectionClosed` when the connection is gone — including a connection closed
/// and replaced by a new one on the same descriptor, which the generation tells apart.
///
/// ## Datagram connections
/// The handle of a datagram listener's connection (`udp://`) stands for its socket and the
/// sender of the datagram being handled when the handle was made (`peer`). `write` and
/// `writev` send one datagram to that peer from the loop (completing with the send's error,
/// if any, and with `GNetError.outboundLimitExceeded` past `Options.asyncWriteLimit` bytes
/// waiting for the loop; the socket is never closed for it); `wake` and `close` complete with
/// `GNetError.misuse` (there is no connection to wake or close: the socket is the engine's).
/// After the engine stopped, everything completes with `GNetError.connectionClosed`.
///
/// The handle of a dialled datagram connection (`Engine.dial("udp://…")`) is a connection's
/// handle: `peer` is the dialled address; `write` and `writev` send one datagram each, bounded
/// and completed the same way (a refusal that closes the connection, such as
/// `GNetError.connectionRefused`, completes the write with that error); `wake` and `close`
/// work as for a stream, and once it has closed everything completes with
/// `GNetError.connectionClosed`.
public struct ConnectionHandle: Sendable, Hashable {
    let inbox: LoopInbox
    /// The descriptor the connection had (for a datagram connection, its socket's).
    public let fd: Int32
    let generation: UInt32
    /// For a datagram connection, the peer that writes go to (nil if the datagram's sender had
    /// no address); nil for a stream connection.
    public let peer: SocketAddress?
    /// Whether this is the handle of a datagram connection: a datagram listener's, or a dialled one.
    public let isDatagram: Bool

    /// Whether this is the handle of a datagram listener's connection (its socket's
    /// registration, which uses the listeners' generation 0: connections never do).
    var isListenerDatagram: Bool { generation == EventLoop.listenerGeneration }

    init(inbox: LoopInbox, fd: Int32, generation: UInt32, isDatagram: Bool = false, peer: SocketAddress? = nil) {
        self.inbox = inbox
        self.fd = fd
        self.generation = generation
        self.isDatagram = isDatagram
        self.peer = peer
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.inbox === b.inbox && a.fd == b.fd && a.generation == b.generation && a.peer == b.peer
    }
    public func hash(into h: inout Hasher) {
        h.combine(fd)
        h.combine(generation)
    }

    /// Writes `bytes` from any thread (gnet's `AsyncWrite`). The completion says when the loop
    /// has taken them (sent or queued).
    ///
    /// Bounded: a write that would hold more than `Options.asyncWriteLimit` bytes — queued for
    /// the connection, or waiting for the loop to take them — fails with
    /// `GNetError.outboundLimitExceeded` and aborts the connection (the peer sees a reset; a
    /// stream with a hole in it is never delivered). Pace writes by their completions to stay
    /// under it.
    public func write(_ bytes: [UInt8], completion: (@Sendable (Result<Void, any Error>) -> Void)? = nil) {
        if isDatagram {
            sendDatagram([bytes], completion)
            return
        }
        inbox.enqueueWrite(fd: fd, generation: generation, buffers: [bytes], completion: completion)
    }

    /// Writes several buffers in order from any thread (gnet's `AsyncWritev`), bounded as `write`.
    public func writev(_ buffers: [[UInt8]], completion: (@Sendable (Result<Void, any Error>) -> Void)? = nil) {
        if isDatagram {
            sendDatagram(buffers, completion)
            return
        }
        inbox.enqueueWrite(fd: fd, generation: generation, buffers: buffers, completion: completion)
    }

    /// Makes the loop call `onTraffic` for this connection even without new input (gnet's `Wake`).
    public func wake(completion: (@Sendable (Result<Void, any Error>) -> Void)? = nil) {
        if isListenerDatagram {
            completion?(.failure(Self.notForDatagrams))
            return
        }
        inbox.enqueue(.wake(fd: fd, generation: generation, completion: completion))
    }

    /// Closes the connection after its pending output, from any thread. The completion is
    /// called once the connection has closed (after its `onClose`), or with
    /// `GNetError.connectionClosed` if it was already gone.
    public func close(completion: (@Sendable (Result<Void, any Error>) -> Void)? = nil) {
        if isListenerDatagram {
            completion?(.failure(Self.notForDatagrams))
            return
        }
        inbox.enqueue(.close(fd: fd, generation: generation, completion: completion))
    }

    private func sendDatagram(_ buffers: [[UInt8]], _ completion: (@Sendable (Result<Void, any Error>) -> Void)?) {
        guard let peer else {
            completion?(.failure(Connection.noDatagramYet))
            return
        }
        inbox.enqueueDatagram(fd: fd, generation: generation, peer: peer, buffers: buffers, completion: completion)
    }

    static let notForDatagrams = GNetError.misuse(
        "wake and close do not apply to a datagram connection: its socket is the engine's, and each datagram "
            + "is handled once; write to the peer, or stop the engine")

    /// Writes `bytes` and returns when the loop has taken them (sent or queued).
    public func write(_ bytes: [UInt8]) async throws {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Void, any Error>) in
            write(bytes) { k.resume(with: $0) }
        }
    }

    /// Closes the connection and returns once it has closed (after its `onClose`).
    public func close() async throws {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Void, any Error>) in
            close { k.resume(with: $0) }
        }
    }
}

@inline(__always)
func closeDescriptor(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
    return Glibc.close(fd)
    #endif
}

#if canImport(Glibc)
import Glibc
#endif
