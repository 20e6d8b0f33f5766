import GNet
import GNetConformance
import Testing

/// Every conformance scenario on every backend available here, in one process.
@Suite(.serialized)
struct Conformance {
    /// Runs the scenario once on each backend. Each failure names the scenario and the backend;
    /// where the scenario is deterministic, the traces of those same runs must agree.
    @Test("scenario on every backend", arguments: Scenarios.all.map(\.name))
    func scenario(_ name: String) async throws {
        let scenario = try #require(Scenarios.named(name))
        let results = await scenario.results(on: PollerKind.allAvailable)
        for r in results {
            #expect(r.error == nil, "\(name) on \(r.backend): \(r.error ?? "")")
        }
        for disagreement in traceDisagreements(results) {
            Issue.record(Comment(rawValue: disagreement))
        }
    }
}
