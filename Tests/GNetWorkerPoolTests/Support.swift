import GNetConformance
import GNetLocks
import GNetWorkerPool
import Glibc
import TestSupport

/// A gate worker jobs wait at until the test opens it: holds the workers busy on purpose.
final class Gate: Sendable {
    private let open = ConditionLocked(false, conditions: 1)
    func wait() { open.withLock(waitingOn: 0, until: { $0 }) { _ in } }
    func release() {
        open.withLock { $0 = true }
        open.broadcast(0)
    }
}

/// A counter any thread may bump.
final class Counter: Sendable {
    private let value = Locked(0)
    func add(_ n: Int = 1) { value.withLock { $0 += n } }
    var count: Int { value.withLock { $0 } }
}

/// Polls `condition` every millisecond for up to `seconds`; returns whether it came true.
func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while !condition() {
        if ContinuousClock.now > deadline { return false }
        usleep(1000)
    }
    return true
}

/// Fills `pool` (one thread) so that its worker is held at `gate` and its queue is empty.
func holdWorker(_ pool: WorkerPool, at gate: Gate, started: Counter) throws {
    try pool.submit { started.add(); gate.wait() }
    precondition(waitUntil { started.count == 1 }, "worker did not start")
}
