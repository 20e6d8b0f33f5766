#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A plain POSIX thread for test work: no libdispatch worker or Swift concurrency executor is
/// involved, so a test that blocks in a wait cannot starve the code that is to wake it.
///
/// `start` returns a thread the caller must `join()`; `detach` starts one nobody waits for.
public final class TestThread: @unchecked Sendable {
    private let body: @Sendable () -> Void
    #if os(Linux)
    private var thread = pthread_t()
    #else
    private var thread: pthread_t? = nil
    #endif

    private init(_ body: @escaping @Sendable () -> Void) { self.body = body }

    /// Runs `body` on a new thread; `join()` it.
    public static func start(_ body: @escaping @Sendable () -> Void) -> TestThread {
        let t = TestThread(body)
        let retained = Unmanaged.passRetained(t).toOpaque()
        let rc = pthread_create(&t.thread, nil, { arg in
            Unmanaged<TestThread>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, retained)
        precondition(rc == 0, "pthread_create: \(rc)")
        return t
    }

    /// Runs `body` on a new thread that nobody joins.
    public static func detach(_ body: @escaping @Sendable () -> Void) {
        let t = start(body)
        #if os(Linux)
        pthread_detach(t.thread)
        #else
        pthread_detach(t.thread!)
        #endif
    }

    /// Waits for the thread to end. Call once, from another thread.
    public func join() {
        #if os(Linux)
        pthread_join(thread, nil)
        #else
        pthread_join(thread!, nil)
        #endif
    }
}

extension Duration {
    /// The duration in microseconds, for printing measurements.
    public var inMicroseconds: Double {
        Double(components.seconds) * 1e6 + Double(components.attoseconds) / 1e12
    }

    /// The duration in seconds.
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
