import GNet
import GNetConformance
import Testing

/// Every conformance scenario on every backend available here, in one process.
@Suite(.serialized)
struct Conformance {
    @Test("scenario × backend", arguments: Scenarios.all.map(\.name), PollerKind.allAvailable)
    func scenario(_ name: String, _ kind: PollerKind) async throws {
        let scenario = try #require(Scenarios.named(name))
        let result = await scenario.result(on: kind)
        #expect(result.error == nil, "\(name) on \(kind): \(result.error ?? "")")
    }

    /// Where a scenario is deterministic, every backend must see the same callback trace.
    @Test("same trace on every backend", arguments: Scenarios.all.map(\.name))
    func sameTrace(_ name: String) async throws {
        let scenario = try #require(Scenarios.named(name))
        var traces: [(String, Trace)] = []
        for kind in PollerKind.allAvailable {
            let r = await scenario.result(on: kind)
            try #require(r.error == nil, "\(name) on \(kind): \(r.error ?? "")")
            if let t = r.trace { traces.append((kind.name, t)) }
        }
        guard let (firstName, first) = traces.first else { return }
        for (backend, t) in traces.dropFirst() {
            #expect(t == first, "\(name): \(backend) traced \(t) but \(firstName) traced \(first)")
        }
    }
}
