import GNet
import Poller
import TestSupport

/// One behavioural check that every backend must pass.
public struct Scenario: Sendable, CustomStringConvertible {
    public enum Level: String, Sendable { case poller, engine }

    public let name: String
    public let level: Level
    /// Runs the check on one backend. Returns the callback trace when the scenario is
    /// deterministic (every backend must then produce the same one), nil otherwise.
    public let run: @Sendable (PollerKind) async throws -> Trace?

    public init(_ name: String, _ level: Level, run: @escaping @Sendable (PollerKind) async throws -> Trace?) {
        self.name = name
        self.level = level
        self.run = run
    }

    public var description: String { name }
}

/// A scenario's failure: what was expected, what happened.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Thrown by a scenario whose backend truly lacks the capability it checks (edge-triggered
/// I/O on a backend without it): reported as "unsupported", never as a pass. A scenario throws
/// it only after asking the backend (its `capabilities`), so a backend that claims the
/// capability and fails is a failure.
public struct ScenarioUnsupported: Error, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Fails the scenario with `message` unless `condition` holds.
public func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw ConformanceFailure(message()) }
}

/// Every scenario, poller level first.
public enum Scenarios {
    public static let all: [Scenario] = PollerScenarios.all + EngineScenarios.all + EngineLifecycleScenarios.all
        + ServerMatrixScenarios.all + FlowControlScenarios.all + ClosingScenarios.all + SocketOptionScenarios.all
        + AcceptScenarios.all + CodecScenarios.all + LoopScenarios.all + IdleScenarios.all
        + WorkerPoolScenarios.all + ClientScenarios.all + EdgeScenarios.all + OptionScenarios.all
        + UDPScenarios.all + UDPClientScenarios.all + StopScenarios.all

    public static func named(_ name: String) -> Scenario? { all.first { $0.name == name } }
}

/// The result of one scenario on one backend.
public struct ScenarioResult: Sendable {
    public let scenario: String
    public let backend: String
    public let error: String?
    /// Why the backend cannot run the scenario (`ScenarioUnsupported`); neither a pass nor a failure.
    public var unsupported: String? = nil
    public let trace: Trace?
    public let seconds: Double
    public var passed: Bool { error == nil && unsupported == nil }
}

extension Scenario {
    /// Runs on `kind`, timing it and catching its failure.
    public func result(on kind: PollerKind) async -> ScenarioResult {
        let start = ContinuousClock.now
        do {
            let trace = try await run(kind)
            return ScenarioResult(scenario: name, backend: kind.name, error: nil, trace: trace, seconds: (ContinuousClock.now - start).inSeconds)
        } catch let u as ScenarioUnsupported {
            return ScenarioResult(scenario: name, backend: kind.name, error: nil, unsupported: u.reason, trace: nil, seconds: (ContinuousClock.now - start).inSeconds)
        } catch {
            return ScenarioResult(scenario: name, backend: kind.name, error: "\(error)", trace: nil, seconds: (ContinuousClock.now - start).inSeconds)
        }
    }

    /// Runs once on each of `kinds`, in turn.
    public func results(on kinds: [PollerKind]) async -> [ScenarioResult] {
        var out: [ScenarioResult] = []
        for kind in kinds { out.append(await result(on: kind)) }
        return out
    }
}

/// Where a deterministic scenario's backends saw different callback traces: one line for each
/// backend whose trace differs from the first backend's, naming the scenario and both backends.
/// Results without a trace (failed, or not deterministic) are left out.
public func traceDisagreements(_ results: [ScenarioResult]) -> [String] {
    let traced = results.compactMap { r in r.trace.map { (r, $0) } }
    guard let (first, firstTrace) = traced.first else { return [] }
    return traced.dropFirst().filter { $0.1 != firstTrace }.map { r, t in
        "\(r.scenario): \(r.backend) traced [\(t)] but \(first.backend) traced [\(firstTrace)]"
    }
}
