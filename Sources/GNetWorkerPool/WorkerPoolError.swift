/// Why the worker pool refused or abandoned a piece of work.
public enum WorkerPoolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The queue already held `capacity` pieces of work (the pool fails at once rather than
    /// block: `WorkerPool.Configuration.whenFull == .fail`, or the caller is an event loop).
    /// Shed the request, answer "busy", or retry later.
    case queueFull(capacity: Int)
    /// The pool is shut down (or shutting down): work submitted now is refused, and work still
    /// queued by `shutdown(.cancelQueued)` completes with this error without running.
    case shutDown
    /// With `whenFull == .wait`, an event-loop thread asked to wait for room in a full queue.
    /// A loop must never block; it gets this error instead (as soon as the queue is full).
    case wouldBlockEventLoop

    public var description: String {
        switch self {
        case .queueFull(let capacity):
            return "worker pool queue full (\(capacity) queued): shed the work or retry later"
        case .shutDown:
            return "worker pool shut down: the work was not run"
        case .wouldBlockEventLoop:
            return "worker pool queue full and the caller is an event loop, which must not wait for room"
        }
    }
}
