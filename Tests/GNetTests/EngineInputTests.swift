import GNet
import GNetConformance
import Glibc
import Testing

struct Silent: EventHandler {}

/// Bad input to the engine: a typed error that says what to fix, no crash, no hang, no leak.
@Suite("Engine input", .serialized)
struct EngineInputTests {
    @Test("loops must be at least 1", arguments: [0, -1, -100])
    func badLoops(_ loops: Int) {
        var o = Options()
        o.loops = loops
        #expect(throws: GNetError.invalidOption(name: "loops", reason: "must be at least 1, got \(loops)")) {
            try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"], options: o)
        }
    }

    @Test func otherOptions() {
        var o = Options()
        o.readBufferCapacity = 10
        #expect(throws: GNetError.self) { try o.validate() }
        o = Options()
        o.backlog = 0
        #expect(throws: GNetError.self) { try o.validate() }
        o = Options()
        o.shutdownTimeout = .seconds(-1)
        #expect(throws: GNetError.self) { try o.validate() }
        #expect(throws: Never.self) { try Options().validate() }
    }

    /// A setting the kernel would refuse, and the option `validate()` must name for it.
    struct BadSetting: Sendable, CustomTestStringConvertible {
        let option: String
        let testDescription: String
        let options: Options

        init(_ option: String, _ value: String, _ change: (inout Options) -> Void) {
            self.option = option
            testDescription = "\(option) = \(value)"
            var o = Options()
            change(&o)
            options = o
        }
    }

    @Test("settings the kernel would refuse are rejected, naming the option", arguments: [
        BadSetting("tcpKeepAlive", "32768 s") { $0.tcpKeepAlive = .seconds(32_768) },
        BadSetting("tcpKeepAlive", "2^40 s") { $0.tcpKeepAlive = .seconds(1 << 40) },
        BadSetting("socketReceiveBuffer", "Int32.max + 1") { $0.socketReceiveBuffer = Int(Int32.max) + 1 },
        BadSetting("socketSendBuffer", "Int32.max + 1") { $0.socketSendBuffer = Int(Int32.max) + 1 },
        BadSetting("socketSendBuffer", "0") { $0.socketSendBuffer = 0 },
        BadSetting("idleTimeout", "0") { $0.idleTimeout = .zero },
        BadSetting("readIdleTimeout", "-1 s") { $0.readIdleTimeout = .seconds(-1) },
        BadSetting("writeIdleTimeout", "0") { $0.writeIdleTimeout = .zero },
        BadSetting("tcpKeepAliveInterval", "32768 s") { $0.tcpKeepAlive = .seconds(60); $0.tcpKeepAliveInterval = .seconds(32_768) },
        BadSetting("tcpKeepAliveCount", "128") { $0.tcpKeepAlive = .seconds(60); $0.tcpKeepAliveCount = 128 },
        BadSetting("tcpKeepAliveCount", "0") { $0.tcpKeepAlive = .seconds(60); $0.tcpKeepAliveCount = 0 },
        BadSetting("bindToDevice", "16 characters") { $0.bindToDevice = "abcdefghijklmnop" },
        BadSetting("bindToDevice", "empty") { $0.bindToDevice = "" },
        BadSetting("edgeTriggeredReadBudget", "below readBufferCapacity") { $0.edgeTriggeredReadBudget = 1024 },
    ])
    func beyondKernelLimits(_ bad: BadSetting) {
        #expect(rejectedOption(bad.options) == bad.option)
        #expect(throws: GNetError.self, "Engine.init validates") {
            try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"], options: bad.options)
        }
    }

    @Test("the largest settings the kernel takes are accepted")
    func atKernelLimits() {
        var o = Options()
        o.tcpKeepAlive = .seconds(32_767)
        o.socketReceiveBuffer = Int(Int32.max)
        o.socketSendBuffer = Int(Int32.max)
        #expect(rejectedOption(o) == nil)
        o.tcpKeepAlive = .milliseconds(32_767_999)  // set as whole seconds: 32767
        #expect(rejectedOption(o) == nil)
    }

    /// The option `validate()` names as invalid, or nil when it accepts `options`.
    func rejectedOption(_ options: Options) -> String? {
        do {
            try options.validate()
            return nil
        } catch {
            guard case .invalidOption(let name, _) = error else { return "unexpected \(error)" }
            return name
        }
    }

    @Test func noAddress() {
        #expect(throws: GNetError.self) { try Engine(handler: Silent(), addresses: []) }
    }

    @Test func unknownPollerListsValidNames() {
        do {
            _ = try PollerKind(name: "bogus")
            Issue.record("bogus accepted")
        } catch {
            #expect(error.description.contains("valid names"))
            for name in PollerKind.validNames { #expect(error.description.contains(name)) }
        }
    }

    @Test("a port in use is a typed error, and nothing leaks", arguments: [1, 2])
    func portInUse(_ loops: Int) throws {
        let first = try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"])
        try first.start()
        defer { first.stop(); first.wait() }
        let port = try #require(first.addresses.first?.port)
        let before = openDescriptorCount()
        var o = Options()
        o.loops = loops
        o.reusePort = false
        let second = try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:\(port)"], options: o)
        #expect(throws: GNetError.addressInUse("tcp://127.0.0.1:\(port)")) { try second.start() }
        #expect(openDescriptorCount() == before, "a failed start left descriptors open")
        #expect(threadsNamed("gnet-loop") == 0 || first.isRunning)
    }

    @Test func twoAddressesOneBad() throws {
        let taken = try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"])
        try taken.start()
        defer { taken.stop(); taken.wait() }
        let port = try #require(taken.addresses.first?.port)
        let before = openDescriptorCount()
        let e = try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0", "tcp://127.0.0.1:\(port)"])
        #expect(throws: GNetError.self) { try e.start() }
        #expect(openDescriptorCount() == before, "the first listener of a failed start was left open")
    }

    @Test func runsOnce() throws {
        let e = try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"])
        try e.start()
        #expect(throws: GNetError.self) { try e.start() }
        e.stop()
        e.wait()
        #expect(throws: GNetError.self) { try e.start() }
    }

    @Test func stopBeforeStartAndTwice() throws {
        let e = try Engine(handler: Silent(), addresses: ["tcp://127.0.0.1:0"])
        e.stop()
        e.stop()
        e.wait() // returns at once: never started
        #expect(throws: GNetError.self) { try e.start() }
    }

    @Test func unixSocketServesAndCleansUp() throws {
        let path = "/tmp/gnet-test-\(getpid()).sock"
        let e = try Engine(handler: Silent(), addresses: ["unix://\(path)"])
        try e.start()
        #expect(access(path, F_OK) == 0)
        let client = try TestClient(e.addresses[0])
        _ = client
        e.stop()
        e.wait()
        #expect(access(path, F_OK) != 0, "the socket file was left behind")
    }

    @Test func ipv6Loopback() throws {
        let e = try Engine(handler: Silent(), addresses: ["tcp6://[::1]:0"])
        do { try e.start() } catch let error as GNetError {
            // A machine without IPv6 says so; nothing else is acceptable.
            if case .invalidAddress = error { return }
            throw error
        }
        defer { e.stop(); e.wait() }
        #expect(e.addresses[0].family == .ipv6)
        _ = try TestClient(e.addresses[0])
    }
}
