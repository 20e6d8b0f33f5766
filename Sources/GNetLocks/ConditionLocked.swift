#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A value guarded by a pthread mutex, with condition variables to wait on for it to change:
/// `Locked` for a thread that must sleep until another thread changes the value (the worker
/// pool's queue). ThreadSanitizer sees both the mutex and the waits.
///
/// Conditions are numbered `0 ..< conditions`; give each a name at the use site. Waits are
/// always for a predicate, re-checked on every wake-up, so spurious wake-ups do no harm.
package final class ConditionLocked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let conds: UnsafeMutablePointer<pthread_cond_t>
    private let condCount: Int
    private var value: Value

    package init(_ value: Value, conditions: Int) {
        precondition(conditions > 0, "at least one condition")
        self.value = value
        condCount = conditions
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        var rc = pthread_mutex_init(mutex, nil)
        precondition(rc == 0, "pthread_mutex_init failed: \(rc)")
        conds = .allocate(capacity: conditions)
        conds.initialize(repeating: pthread_cond_t(), count: conditions)
        for i in 0 ..< conditions {
            rc = pthread_cond_init(conds + i, nil)
            precondition(rc == 0, "pthread_cond_init failed: \(rc)")
        }
    }

    deinit {
        for i in 0 ..< condCount { pthread_cond_destroy(conds + i) }
        conds.deinitialize(count: condCount)
        conds.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive access to the value. Do not call back into the same lock.
    @inline(__always)
    package func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }

    /// Sleeps on `condition` until `ready` holds, then runs `body` with exclusive access (the
    /// lock held from the check through `body`).
    package func withLock<R, E: Error>(
        waitingOn condition: Int, until ready: (borrowing Value) -> Bool, _ body: (inout Value) throws(E) -> R
    ) throws(E) -> R {
        precondition(condition >= 0 && condition < condCount, "no condition \(condition)")
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !ready(value) { pthread_cond_wait(conds + condition, mutex) }
        return try body(&value)
    }

    /// Wakes one thread waiting on `condition`. Any thread; the lock need not be held.
    package func signal(_ condition: Int) { pthread_cond_signal(conds + condition) }

    /// Wakes every thread waiting on `condition`. Any thread; the lock need not be held.
    package func broadcast(_ condition: Int) { pthread_cond_broadcast(conds + condition) }
}
