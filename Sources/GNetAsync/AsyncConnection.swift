import DequeModule
import GNet
import GNetLocks

/// A connection for `async` code: its input as an `AsyncSequence` of byte chunks, writes that
/// suspend while the peer is slow, and a scope that always closes it (SwiftNIO's
/// `NIOAsyncChannel`).
///
/// ```swift
/// try await connection.executeThenClose { inbound, outbound in
///     for try await chunk in inbound { try await outbound.write(chunk) }
/// }
/// ```
///
/// ## Backpressure
/// Input is read by the connection's loop into a buffer the reader drains. When more than
/// `AsyncOptions.inboundHighWatermark` bytes wait there, the loop stops reading the connection
/// (TCP then holds the peer back); when the reader has taken them down to the low watermark,
/// reading resumes. `outbound.write` returns once the loop has taken the bytes and the
/// connection is writable (its queued output under `Options.outboundHighWatermark`), so a
/// writer facing a slow peer waits instead of queueing without bound. Memory per connection is
/// bounded by those watermarks plus one read and one write.
///
/// ## Threads
/// `Sendable`. One task reads `inbound` (a second iterator is a precondition failure), any
/// task may write; writes from one task go out in order.
public final class AsyncConnection: Sendable {
    let state: ConnectionState
    /// The connection's handle, for what the callback API offers (wake, close).
    public let handle: ConnectionHandle
    /// The peer's address.
    public let remoteAddress: SocketAddress?
    /// The listener that accepted it (nil for a dialled connection).
    public let listenerAddress: SocketAddress?
    /// The connection's loop.
    public let loop: EventLoopHandle

    init(state: ConnectionState, handle: ConnectionHandle, remote: SocketAddress?, listener: SocketAddress?, loop: EventLoopHandle) {
        self.state = state
        self.handle = handle
        self.remoteAddress = remote
        self.listenerAddress = listener
        self.loop = loop
    }

    /// Input read from the socket and not yet taken by the reader: at most
    /// `AsyncOptions.inboundHighWatermark` plus one read. Any thread; a snapshot.
    public var bufferedInput: Int { state.bufferedBytes }

    /// The connection's input, chunk by chunk as it arrived; ends at the peer's EOF (or throws
    /// the error the connection closed with). One iterator per connection.
    public var inbound: Inbound { Inbound(state: state) }

    /// Writes to the connection.
    public var outbound: Outbound { Outbound(state: state, handle: handle) }

    /// Runs `body` with the connection's input and output, then closes the connection (after
    /// its queued output is sent) whether `body` returned or threw, and returns or rethrows
    /// what `body` did.
    public func executeThenClose<R>(
        _ body: (_ inbound: Inbound, _ outbound: Outbound) async throws -> R
    ) async throws -> R {
        let result: Result<R, any Error>
        do {
            result = .success(try await body(inbound, outbound))
        } catch {
            result = .failure(error)
        }
        await close()
        return try result.get()
    }

    /// Closes the connection once its queued output is sent; returns when it has closed.
    /// Harmless on a connection already closed.
    public func close() async {
        try? await handle.close()
    }

    /// The input as an `AsyncSequence` of byte chunks.
    public struct Inbound: AsyncSequence, Sendable {
        public typealias Element = [UInt8]
        let state: ConnectionState

        public func makeAsyncIterator() -> AsyncIterator {
            state.claimReader()
            return AsyncIterator(state: state)
        }

        public struct AsyncIterator: AsyncIteratorProtocol {
            let state: ConnectionState
            public mutating func next() async throws -> [UInt8]? { try await state.next() }
        }
    }

    /// Writes that wait for the peer.
    public struct Outbound: Sendable {
        let state: ConnectionState
        let handle: ConnectionHandle

        /// Sends `bytes`: returns once the loop has taken them and the connection is writable
        /// again (its queued output at most `Options.outboundHighWatermark`). Throws
        /// `GNetError.connectionClosed` once the connection has closed.
        public func write(_ bytes: [UInt8]) async throws {
            try await withCheckedThrowingContinuation { (k: CheckedContinuation<Void, any Error>) in
                handle.write(bytes) { k.resume(with: $0) }
            }
            try await state.waitWritable()
        }

        /// Sends a string's UTF-8 bytes (see `write(_:)`).
        public func write(_ string: String) async throws {
            try await write(Array(string.utf8))
        }

        /// Closes the connection once what was written is sent: the peer sees EOF after it.
        /// (Async connections run with `Options.allowHalfClosure`: the peer's EOF ends
        /// `inbound`, and the connection stays open for writes until it is closed.)
        public func finish() async {
            try? await handle.close()
        }
    }
}

/// Each continuation here is resumed exactly once, by whoever takes it out of `fields` under
/// the lock. They are checked ones: unsafe continuations would save an allocation per
/// suspension, but ThreadSanitizer then reports the task's frame reused after a resume on the
/// loop's thread as a race, and a clean `--sanitize=thread` run is worth more here.
///
/// The shared state of one async connection: the input waiting for the reader, the reader's
/// continuation, writability and its waiters. The loop thread fills it (`AsyncBridge`), tasks
/// drain it; every field is under one lock.
final class ConnectionState: Sendable {
    private struct Fields {
        var chunks = Deque<[UInt8]>()
        var buffered = 0
        /// The reader suspended in `next()`.
        var reader: CheckedContinuation<[UInt8]?, any Error>? = nil
        var readerClaimed = false
        /// The loop paused reading because `buffered` passed the high watermark.
        var paused = false
        /// Set when the input ended: nil error for the peer's EOF.
        var ended: Result<Void, any Error>? = nil
        var writable = true
        var closed = false
        var writeWaiters: [CheckedContinuation<Void, any Error>] = []
    }
    private let fields = Locked(Fields())
    let high: Int
    let low: Int
    /// Resumes the loop's reading (set by the bridge: runs on the connection's loop).
    private let resume: @Sendable () -> Void

    init(high: Int, low: Int, resume: @escaping @Sendable () -> Void) {
        self.high = high
        self.low = low
        self.resume = resume
    }

    func claimReader() {
        let claimed = fields.withLock { f -> Bool in
            defer { f.readerClaimed = true }
            return f.readerClaimed
        }
        precondition(!claimed, "AsyncConnection.inbound is read by one iterator only")
    }

    // MARK: Loop side

    /// Input arrived (loop thread). Returns whether the loop should pause reading.
    func received(_ chunk: [UInt8]) -> Bool {
        let (reader, pause) = fields.withLock { f -> (CheckedContinuation<[UInt8]?, any Error>?, Bool) in
            if let r = f.reader, f.chunks.isEmpty {
                f.reader = nil
                return (r, false)
            }
            f.chunks.append(chunk)
            f.buffered += chunk.count
            if f.buffered >= high && !f.paused {
                f.paused = true
                return (nil, true)
            }
            return (nil, false)
        }
        reader?.resume(returning: chunk)
        return pause
    }

    /// The input ended (loop thread): the peer's EOF (nil) or the connection's error.
    func inputEnded(_ error: (any Error)?) {
        let reader = fields.withLock { f -> CheckedContinuation<[UInt8]?, any Error>? in
            guard f.ended == nil else { return nil }
            f.ended = error.map { .failure($0) } ?? .success(())
            guard f.chunks.isEmpty else { return nil }
            defer { f.reader = nil }
            return f.reader
        }
        if let error { reader?.resume(throwing: error) } else { reader?.resume(returning: nil) }
    }

    /// Writability flipped (loop thread).
    func writabilityChanged(_ writable: Bool) {
        let waiters = fields.withLock { f -> [CheckedContinuation<Void, any Error>] in
            f.writable = writable
            guard writable else { return [] }
            defer { f.writeWaiters = [] }
            return f.writeWaiters
        }
        for w in waiters { w.resume() }
    }

    /// The connection closed (loop thread): the input ends, writers fail.
    func closed(_ error: (any Error)?) {
        inputEnded(error)
        let waiters = fields.withLock { f -> [CheckedContinuation<Void, any Error>] in
            f.closed = true
            defer { f.writeWaiters = [] }
            return f.writeWaiters
        }
        for w in waiters { w.resume(throwing: GNetError.connectionClosed) }
    }

    // MARK: Task side

    /// The next chunk, waiting for one; nil at the end of the input.
    func next() async throws -> [UInt8]? {
        enum Step { case chunk([UInt8], resume: Bool), end(Result<Void, any Error>), wait }
        let step = fields.withLock { f -> Step in
            if let chunk = f.chunks.popFirst() {
                f.buffered -= chunk.count
                if f.paused && f.buffered <= low {
                    f.paused = false
                    return .chunk(chunk, resume: true)
                }
                return .chunk(chunk, resume: false)
            }
            if let ended = f.ended { return .end(ended) }
            return .wait
        }
        switch step {
        case .chunk(let chunk, let resumeReading):
            if resumeReading { resume() }
            return chunk
        case .end(let ended):
            try ended.get()
            return nil
        case .wait:
            return try await withCheckedThrowingContinuation { (k: CheckedContinuation<[UInt8]?, any Error>) in
                let now = fields.withLock { f -> Step? in
                    // Input may have come, or ended, since the check above.
                    if let chunk = f.chunks.popFirst() {
                        f.buffered -= chunk.count
                        let resumeReading = f.paused && f.buffered <= low
                        if resumeReading { f.paused = false }
                        return .chunk(chunk, resume: resumeReading)
                    }
                    if let ended = f.ended { return .end(ended) }
                    f.reader = k
                    return nil
                }
                switch now {
                case .chunk(let chunk, let resumeReading)?:
                    if resumeReading { resume() }
                    k.resume(returning: chunk)
                case .end(.success)?: k.resume(returning: nil)
                case .end(.failure(let e))?: k.resume(throwing: e)
                case .wait?, nil: break
                }
            }
        }
    }

    /// Returns once the connection is writable; throws once it has closed.
    func waitWritable() async throws {
        // Usually writable: no continuation then.
        let now = fields.withLock { f -> Bool? in f.closed ? nil : (f.writable ? true : false) }
        guard let writable = now else { throw GNetError.connectionClosed }
        if writable { return }
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Void, any Error>) in
            let ready = fields.withLock { f -> Result<Void, any Error>? in
                if f.closed { return .failure(GNetError.connectionClosed) }
                if f.writable { return .success(()) }
                f.writeWaiters.append(k)
                return nil
            }
            if let ready { k.resume(with: ready) }
        }
    }

    /// Whether the reader wants the loop's reading paused (loop thread asks, on `wake`).
    var wantsPause: Bool { fields.withLock { $0.paused } }

    /// Bytes waiting for the reader (for tests and diagnostics).
    var bufferedBytes: Int { fields.withLock { $0.buffered } }
}
