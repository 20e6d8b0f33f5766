import CoreMetrics
import GNet
import GNetLocks

/// Publishes an engine's loop statistics (`LoopStatistics`) through swift-metrics, per loop
/// (dimension `loop`), every `interval`.
///
/// The engine counts in plain loop-local integers on its hot path; this reads them on each
/// loop's own thread once per interval and adds the growth since the last reading to the
/// metrics, so the echo path pays nothing per message.
///
/// | Metric (label prefix `gnet`) | Kind | What |
/// |---|---|---|
/// | `gnet_connections_accepted_total`, `gnet_connections_dialled_total` | counter | connections opened |
/// | `gnet_connections_closed_total` (dimension `reason`: `orderly`, `error`, `timeout`, `aborted`) | counter | connections closed |
/// | `gnet_connections_open` | gauge | open now |
/// | `gnet_bytes_read_total`, `gnet_bytes_written_total` | counter | bytes through the sockets |
/// | `gnet_accept_backoffs_total` | counter | accept pauses (descriptors or memory exhausted) |
/// | `gnet_datagrams_received_total`, `gnet_datagrams_sent_total` | counter | datagrams through `udp`/`unixgram` sockets (their bytes count above too) |
/// | `gnet_datagrams_dropped_total` (dimension `reason`: `truncated`, `unsent`) | counter | datagrams larger than `readBufferCapacity`; answers the kernel refused |
/// | `gnet_loop_iterations_total` | counter | loop turns |
/// | `gnet_loop_busy_nanoseconds_total`, `gnet_loop_utilization` | counter, gauge (0…1) | time outside the wait for readiness (with `Options.measureLoopTime`) |
///
/// ```swift
/// var options = Options()
/// options.measureLoopTime = true  // for the busy time and utilisation
/// let engine = try Engine(handler: h, addresses: ["tcp://:9000"], options: options)
/// try engine.start()
/// let metrics = EngineMetrics(engine: engine)
/// metrics.start()
/// ```
///
/// Any thread. Publishing ends with `stop()` or when the engine stops (the loops take no
/// more work); `publish()` reads and publishes at once.
public final class EngineMetrics: Sendable {
    public let interval: Duration
    private let engine: Engine
    private let prefix: String
    private let factory: any MetricsFactory

    /// One loop's metrics and what was last published for it.
    private final class LoopMetrics: Sendable {
        let accepted, dialled, closedOrderly, closedError, closedTimeout, aborted: Counter
        let bytesRead, bytesWritten, backoffs, iterations, busy: Counter
        let datagramsReceived, datagramsSent, datagramsTruncated, datagramsUnsent: Counter
        let open, utilization: Gauge
        let last = Locked<(stats: LoopStatistics, at: ContinuousClock.Instant)>((LoopStatistics(), .now))
        let timer = Locked<ScheduledTask?>(nil)

        init(loop: Int, prefix: String, factory: any MetricsFactory) {
            let d = [("loop", "\(loop)")]
            func counter(_ name: String, _ extra: [(String, String)] = []) -> Counter {
                Counter(label: "\(prefix)_\(name)", dimensions: d + extra, factory: factory)
            }
            accepted = counter("connections_accepted_total")
            dialled = counter("connections_dialled_total")
            closedOrderly = counter("connections_closed_total", [("reason", "orderly")])
            closedError = counter("connections_closed_total", [("reason", "error")])
            closedTimeout = counter("connections_closed_total", [("reason", "timeout")])
            aborted = counter("connections_closed_total", [("reason", "aborted")])
            bytesRead = counter("bytes_read_total")
            bytesWritten = counter("bytes_written_total")
            backoffs = counter("accept_backoffs_total")
            datagramsReceived = counter("datagrams_received_total")
            datagramsSent = counter("datagrams_sent_total")
            datagramsTruncated = counter("datagrams_dropped_total", [("reason", "truncated")])
            datagramsUnsent = counter("datagrams_dropped_total", [("reason", "unsent")])
            iterations = counter("loop_iterations_total")
            busy = counter("loop_busy_nanoseconds_total")
            open = Gauge(label: "\(prefix)_connections_open", dimensions: d, factory: factory)
            utilization = Gauge(label: "\(prefix)_loop_utilization", dimensions: d, factory: factory)
        }

        /// Adds the growth since the last reading.
        func publish(_ s: LoopStatistics) {
            let now = ContinuousClock.now
            let (before, then) = last.withLock { l in
                defer { l = (s, now) }
                return l
            }
            func add(_ c: Counter, _ a: Int, _ b: Int) { if a > b { c.increment(by: Int64(a - b)) } }
            add(accepted, s.accepted, before.accepted)
            add(dialled, s.dialled, before.dialled)
            add(closedOrderly, s.closedOrderly, before.closedOrderly)
            add(closedError, s.closedByError, before.closedByError)
            add(closedTimeout, s.closedByTimeout, before.closedByTimeout)
            add(aborted, s.aborted, before.aborted)
            add(bytesRead, s.bytesRead, before.bytesRead)
            add(bytesWritten, s.bytesWritten, before.bytesWritten)
            add(backoffs, s.acceptBackoffs, before.acceptBackoffs)
            add(datagramsReceived, s.datagramsReceived, before.datagramsReceived)
            add(datagramsSent, s.datagramsSent, before.datagramsSent)
            add(datagramsTruncated, s.datagramsTruncated, before.datagramsTruncated)
            add(datagramsUnsent, s.datagramsUnsent, before.datagramsUnsent)
            add(iterations, s.iterations, before.iterations)
            let busyGrowth = s.busyTime - before.busyTime
            add(busy, Self.nanoseconds(s.busyTime), Self.nanoseconds(before.busyTime))
            open.record(s.open)
            let elapsed = now - then
            if elapsed > .zero { utilization.record(min(1, max(0, busyGrowth / elapsed))) }
        }

        static func nanoseconds(_ d: Duration) -> Int {
            Int(d.components.seconds) * 1_000_000_000 + Int(d.components.attoseconds / 1_000_000_000)
        }
    }

    private let loops: Locked<[LoopMetrics]>
    private let running = Locked(false)

    /// Metrics for `engine` (started, or in `onBoot`: its loops must exist), published every
    /// `interval` with labels starting `label` through `factory` (the bootstrapped
    /// `MetricsSystem` by default).
    public init(engine: Engine, interval: Duration = .seconds(10), label: String = "gnet",
                factory: any MetricsFactory = MetricsSystem.factory) {
        precondition(interval > .zero, "EngineMetrics interval must be positive, got \(interval)")
        self.engine = engine
        self.interval = interval
        self.prefix = label
        self.factory = factory
        self.loops = Locked([])
    }

    /// Starts publishing every `interval` on each loop. Calling it again does nothing.
    public func start() {
        let handles = engine.loops
        let metrics = running.withLock { r -> [LoopMetrics]? in
            guard !r else { return nil }
            r = true
            let made = handles.map { LoopMetrics(loop: $0.index, prefix: prefix, factory: factory) }
            loops.withLock { $0 = made }
            return made
        }
        guard let metrics else { return }
        for (loop, m) in zip(handles, metrics) { arm(loop, m) }
    }

    /// Stops publishing (what was counted after the last publication is not published).
    public func stop() {
        running.withLock { $0 = false }
        for m in loops.withLock({ $0 }) { m.timer.withLock { _ = $0?.cancel() } }
    }

    /// Reads every loop now and publishes; returns when done (at once for loops that ended).
    /// Starts nothing periodic. Any thread.
    public func publish() async {
        let handles = engine.loops
        let metrics = loops.withLock { m -> [LoopMetrics] in
            if m.isEmpty { m = handles.map { LoopMetrics(loop: $0.index, prefix: prefix, factory: factory) } }
            return m
        }
        for (loop, m) in zip(handles, metrics) {
            if let s = try? await loop.statistics() { m.publish(s) }
        }
    }

    private func arm(_ loop: EventLoopHandle, _ m: LoopMetrics) {
        let task = loop.schedule(after: interval) { [self] in
            guard running.withLock({ $0 }) else { return }
            loop.statistics { s in m.publish(s) }
            arm(loop, m)
        }
        m.timer.withLock { $0 = task }
    }
}
