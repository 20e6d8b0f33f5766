import GNet
import Glibc

/// Starts an engine on `kind`, runs `body` against it, then stops it, runs `afterStop` (which
/// must release any client sockets it kept), and checks what every stop must leave: the engine ended within the deadline, every opened connection got exactly
/// one `onClose`, no loop thread is left, and the process's open-descriptor count is back where
/// it started.
public func withEngine(
    _ kind: PollerKind,
    _ handler: ScriptedHandler,
    address: String = "tcp://127.0.0.1:0",
    configure: (inout Options) -> Void = { _ in },
    _ body: (Engine, SocketAddress) async throws -> Void,
    afterStop: () async throws -> Void = {}
) async throws {
    try await warmUpRuntime()
    let descriptorsBefore = openDescriptorCount()
    let listBefore = openDescriptors()
    var options = Options()
    options.poller = kind
    options.logger.logLevel = .warning
    configure(&options)
    let engine = try Engine(handler: handler, addresses: [address], options: options)
    try engine.start()
    try await stopping(engine) { try await runBody(engine, body) }
    try await afterStop()
    try handler.checkLifecycle()
    try checkEngineLeftNothing(descriptorsBefore: descriptorsBefore, listBefore: listBefore)
}

/// What every stopped engine must leave: no loop thread (but `loopThreads` of engines still
/// running), and the process's descriptors as they were before it started (`listBefore` names
/// the new ones in the failure).
func checkEngineLeftNothing(descriptorsBefore: Int, listBefore: [Int32: String], loopThreads: Int = 0) throws {
    let threads = threadsNamed("gnet-loop")
    try expect(threads == loopThreads, "\(threads - loopThreads) loop threads still running after stop")
    let descriptorsAfter = openDescriptorCount()
    if descriptorsAfter != descriptorsBefore {
        let added = openDescriptors().filter { listBefore[$0.key] != $0.value }.map { "\($0.key)→\($0.value)" }
        throw ConformanceFailure(
            "open descriptors: \(descriptorsBefore) before the engine, \(descriptorsAfter) after it stopped; new: \(added.sorted().joined(separator: ", "))")
    }
}

/// Serves `handler` on a free loopback port while `body` runs with the bound address, then stops
/// the engine and waits for it, also when `body` throws: the plain set-up of end-to-end tests.
/// Unlike `withEngine` it checks nothing about the stop.
public func serving(
    _ handler: any EventHandler,
    configure: (inout Options) -> Void = { _ in },
    _ body: (SocketAddress) throws -> Void
) throws {
    var options = Options()
    configure(&options)
    let engine = try Engine(handler: handler, addresses: ["tcp://127.0.0.1:0"], options: options)
    try engine.start()
    defer {
        engine.stop()
        engine.wait()
    }
    guard let address = engine.addresses.first else { throw ConformanceFailure("engine has no bound address") }
    try body(address)
}

/// Runs `body`, then stops `engine` and waits for it (up to 10 s), whether `body` threw or not;
/// `body`'s error is the one reported.
func stopping(_ engine: Engine, after body: () async throws -> Void) async throws {
    try await stopping("engine stop", stop: { engine.stop() }, wait: { engine.wait() }, after: body)
}

/// `stopping(_:after:)` for anything with a stop and a wait (an `Engine`, a `Client`).
func stopping(
    _ what: String, stop: () -> Void, wait: @escaping @Sendable () -> Void, after body: () async throws -> Void
) async throws {
    do {
        try await body()
    } catch {
        stop()
        _ = try? await onThread(timeout: .seconds(10), what) { wait() }
        throw error
    }
    stop()
    try await onThread(timeout: .seconds(10), what) { wait() }
}

private func runBody(_ engine: Engine, _ body: (Engine, SocketAddress) async throws -> Void) async throws {
    guard let address = engine.addresses.first else { throw ConformanceFailure("engine has no bound address") }
    try await body(engine, address)
}

/// Polls `condition` every 2 ms until it holds or `timeout` passes.
public func eventually(
    _ what: @autoclosure () -> String, timeout: Duration = .seconds(5), _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now > deadline { throw ConformanceFailure("timed out waiting for \(what())") }
        try await Task.sleep(for: .milliseconds(2))
    }
}

/// The first timed sleeps in a process make libdispatch open its timer descriptors (a
/// `timerfd` per clock, created lazily). Make them exist before a scenario counts descriptors,
/// so the count measures the engine alone.
func warmUpRuntime() async throws {
    try await Task.sleep(for: .milliseconds(1))
    try await Task.sleep(until: .now + .milliseconds(1), clock: .suspending)
    try await Task.sleep(for: .milliseconds(12))
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<2 { group.addTask(priority: .high) { try await Task.sleep(for: .milliseconds(3)) } }
        try await group.waitForAll()
    }
}
