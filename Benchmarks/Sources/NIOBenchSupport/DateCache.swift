import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value derived from the current HTTP date (RFC 9110 IMF-fixdate, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`), rendered once a second on one event loop rather than once
/// per response.
///
/// Loop-confined: created, refreshed and read on `eventLoop` only.
public final class PerSecondCache<Value> {
    public let eventLoop: any EventLoop
    public private(set) var value: Value
    private let render: (String) -> Value

    /// Call on `eventLoop`.
    init(eventLoop: any EventLoop, render: @escaping (String) -> Value) {
        eventLoop.preconditionInEventLoop()
        self.eventLoop = eventLoop
        self.render = render
        self.value = render(httpDate())
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            bound.value.refresh()
        }
    }

    private func refresh() {
        self.value = self.render(httpDate())
    }
}

/// One `PerSecondCache` per loop of a group, so handlers never share one across threads.
public struct PerLoopCaches<Value>: Sendable {
    private let caches: [NIOLoopBound<PerSecondCache<Value>>]

    /// Call from outside the group (it waits for each loop to build its cache).
    public init(group: any EventLoopGroup, render: @escaping @Sendable (String) -> Value) throws {
        self.caches = try group.makeIterator().map { loop in
            try loop.submit { NIOLoopBound(PerSecondCache(eventLoop: loop, render: render), eventLoop: loop) }.wait()
        }
    }

    /// The cache of `loop`. Call on `loop` (for example from a child channel initializer).
    public func cache(for loop: any EventLoop) -> PerSecondCache<Value> {
        guard let bound = self.caches.first(where: { $0.eventLoop === loop }) else {
            preconditionFailure("event loop \(loop) is not in the group these caches were built for")
        }
        return bound.value
    }
}

/// The current time as an IMF-fixdate. strftime's `%a` and `%b` are English in the C locale,
/// which is the one a program is in until it calls setlocale.
public func httpDate() -> String {
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
        let n = strftime(buffer.baseAddress!, 64, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress!, count: n), as: UTF8.self)
    }
}
