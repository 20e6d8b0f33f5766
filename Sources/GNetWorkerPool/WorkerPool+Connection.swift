import GNet

/// A connection carried to a worker and back: only ever opened on its own loop's thread.
private struct LoopBound: @unchecked Sendable {
    let connection: Connection
}

extension WorkerPool {
    /// Runs `work` on a worker thread, then `then` on the connection's loop thread with the
    /// connection and the result: the way a handler does blocking work and answers from the
    /// loop (`onTraffic` submits, `then` writes the reply).
    ///
    /// Loop thread of `connection` only (a `Connection` is loop-confined). Never blocks: a full
    /// queue throws `.queueFull(capacity:)` (or, with `whenFull: .wait`, `.wouldBlockEventLoop`)
    /// at once, whatever the policy; a shut-down pool throws `.shutDown`. When it throws,
    /// neither closure runs.
    ///
    /// Once accepted, `then` runs exactly once, on the loop, unless the loop itself has ended:
    /// - with `.success(value)` or `.failure(error thrown by work)` while the connection is
    ///   open;
    /// - with `.failure(GNetError.connectionClosed)` if the connection closed before the result
    ///   came back (the value is dropped; `connection.isOpen` is false and writes fail);
    /// - with `.failure(WorkerPoolError.shutDown)` if `shutdown(.cancelQueued)` cancelled it
    ///   (while the connection is open; else as above);
    /// - never, if the engine stopped and the loop ended first (nothing can run on the loop
    ///   then; `work`'s result and `then` are released on the worker thread).
    public func submit<T: Sendable>(
        for connection: Connection,
        _ work: @escaping @Sendable () throws -> T,
        then: @escaping @Sendable (Connection, Result<T, any Error>) -> Void
    ) throws(WorkerPoolError) {
        let loop = connection.loop
        assert(loop.inEventLoop, "WorkerPool.submit(for:) must be called on the connection's loop")
        let bound = LoopBound(connection: connection)
        let deliver: @Sendable (Result<T, any Error>) -> Void = { result in
            loop.execute {
                let c = bound.connection
                then(c, c.isOpen ? result : .failure(GNetError.connectionClosed))
            }
        }
        try enqueue(Job(run: { deliver(Result { try work() }) },
                        cancel: { deliver(.failure(WorkerPoolError.shutDown)) }),
                    mayWait: false)
    }

    /// Runs `work` on a worker thread and returns its value (or rethrows its error). Never
    /// blocks a thread: a full queue throws `.queueFull(capacity:)` at once, whatever the
    /// policy; a shut-down pool (or `shutdown(.cancelQueued)` before it ran) throws `.shutDown`.
    /// Any task.
    public func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<T, any Error>) in
            do {
                try enqueue(Job(run: { k.resume(with: Result { try work() }) },
                                cancel: { k.resume(throwing: WorkerPoolError.shutDown) }),
                            mayWait: false)
            } catch let error as WorkerPoolError {
                k.resume(throwing: error == .wouldBlockEventLoop ? .queueFull(capacity: configuration.queueCapacity) : error)
            } catch {
                k.resume(throwing: error)
            }
        }
    }
}
