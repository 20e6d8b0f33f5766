import ArgumentParser
import GNet
import GNetConformance

/// Runs the conformance scenarios on the chosen backends and prints a backend × scenario table.
@main
struct ConformanceRunner: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gnet-conformance",
        abstract: "Runs the behavioural suite every poller backend must pass, and prints the matrix.",
        discussion: "Exit status is non-zero when any scenario fails on any backend, or when backends disagree on a deterministic trace."
    )

    @Option(help: "A backend name or 'all' (\(PollerKind.validNames.joined(separator: ", "))).")
    var poller = "all"

    @Option(help: "Run only scenarios whose name contains this text.")
    var filter: String?

    @Flag(help: "List the scenarios and backends, run nothing.")
    var list = false

    func run() async throws {
        let kinds: [PollerKind]
        do {
            kinds = poller == "all" ? PollerKind.allAvailable : [try PollerKind(name: poller)]
        } catch {
            print("gnet-conformance: \(error)")
            throw ExitCode.failure
        }
        let scenarios = Scenarios.all.filter { filter == nil || $0.name.contains(filter!) }
        if list {
            print("backends: \(kinds.map(\.name).joined(separator: ", "))")
            for s in scenarios { print("\(s.level.rawValue)\t\(s.name)") }
            return
        }
        guard !scenarios.isEmpty else {
            print("gnet-conformance: no scenario matches '\(filter ?? "")'")
            throw ExitCode.failure
        }
        let nameWidth = max(8, scenarios.map(\.name.count).max() ?? 8)
        let colWidth = max(14, kinds.map(\.name.count).max() ?? 14)
        print(pad("scenario", nameWidth) + kinds.map { " | " + pad($0.name, colWidth) }.joined())
        print(String(repeating: "-", count: nameWidth) + kinds.map { _ in "-+-" + String(repeating: "-", count: colWidth) }.joined())
        var failures: [String] = []
        var unsupported = 0
        for s in scenarios {
            var row = pad(s.name, nameWidth)
            let results = await s.results(on: kinds)
            for r in results {
                let cell = r.unsupported != nil ? "unsupported" : (r.passed ? "pass" : "FAIL") + String(format3(r.seconds))
                if r.unsupported != nil { unsupported += 1 }
                row += " | " + pad(cell, colWidth)
                if let e = r.error { failures.append("\(s.name) on \(r.backend): \(e)") }
            }
            let disagreements = traceDisagreements(results)
            failures += disagreements
            if !disagreements.isEmpty { row += "  (trace differs)" }
            print(row)
        }
        let total = scenarios.count * kinds.count
        print("")
        for f in failures { print("FAIL \(f)") }
        let unsupportedNote = unsupported > 0 ? ", \(unsupported) unsupported (the backend lacks the capability)" : ""
        print("\(total - failures.count - unsupported) passed, \(failures.count) failed\(unsupportedNote)")
        if !failures.isEmpty { throw ExitCode.failure }
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    private func format3(_ seconds: Double) -> String {
        let ms = Int((seconds * 1000).rounded())
        return " \(ms) ms"
    }
}
