// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "swift-gnet",
    // Linux only: GNet uses Glibc and a Linux shim (epoll, eventfd, accept4); see README
    // "Platforms". No Apple platform is claimed because none is built or tested.
    products: [
        .library(name: "GNet", targets: ["GNet"]),
        .library(name: "Poller", targets: ["Poller"]),
        .library(name: "GNetCodec", targets: ["GNetCodec"]),
        .library(name: "GNetWorkerPool", targets: ["GNetWorkerPool"]),
        .library(name: "GNetServiceLifecycle", targets: ["GNetServiceLifecycle"]),
        .library(name: "GNetMetrics", targets: ["GNetMetrics"]),
        .library(name: "GNetAsync", targets: ["GNetAsync"]),
        .library(name: "GNetTLS", targets: ["GNetTLS"]),
        .library(name: "GNetConformance", targets: ["GNetConformance"]),
        .executable(name: "gnet-echo", targets: ["gnet-echo"]),
        .executable(name: "gnet-conformance", targets: ["gnet-conformance"]),
        .executable(name: "gnet-http", targets: ["gnet-http"]),
        .executable(name: "gnet-redis", targets: ["gnet-redis"]),
        .executable(name: "gnet-kv", targets: ["gnet-kv"]),
        .executable(name: "gnet-dial", targets: ["gnet-dial"]),
        .executable(name: "gnet-echo-async", targets: ["gnet-echo-async"]),
    ],
    // `Libevent` (default): the libevent backend. `swift build --disable-default-traits` leaves
    // it, and the need for libevent-dev, out; a package depending on this one opts out with
    // `.package(url: ..., from: ..., traits: [])`.
    traits: [
        .trait(name: "Libevent", description: "The libevent poller backend (needs libevent-dev)."),
        .default(enabledTraits: ["Libevent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
    ],
    targets: [
        // The contract every backend implements. No platform code.
        .target(name: "Poller"),
        // `Locked`, the pthread mutex every cross-thread structure uses (package-visible): one
        // that ThreadSanitizer sees, unlike `Synchronization.Mutex` on Linux.
        .target(name: "GNetLocks"),
        // Linux C shim: epoll, eventfd and friends, which Glibc does not export to Swift.
        .target(name: "CGNetLinux"),
        .target(name: "PollerEpoll", dependencies: ["Poller", "CGNetLinux"]),
        // libevent 2.1 (Debian: libevent-dev). Stands in for kqueue-class backends: on the BSDs
        // and macOS the same code runs on kqueue.
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent_pthreads",
            providers: [.apt(["libevent-dev"])]
        ),
        .target(name: "PollerLibevent", dependencies: ["Poller", "CLibevent"]),
        // DispatchSource: the portable fallback (like gnet's Go-stdlib mode).
        .target(name: "PollerDispatch", dependencies: ["Poller", "GNetLocks"]),
        .target(
            name: "GNet",
            dependencies: [
                "Poller", "GNetLocks", "PollerEpoll", "PollerDispatch", "CGNetLinux",
                // The libevent backend (and libevent-dev) only with the Libevent trait, on by default.
                .target(name: "PollerLibevent", condition: .when(traits: ["Libevent"])),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),
        // Frame codecs (line, delimiter, fixed-length, length-field) lending frames in place.
        .target(name: "GNetCodec", dependencies: ["GNet"]),
        // A bounded pool of worker threads for blocking work; results return on the loop.
        .target(
            name: "GNetWorkerPool",
            dependencies: ["GNet", "GNetLocks", "CGNetLinux", .product(name: "DequeModule", package: "swift-collections")]
        ),
        // An engine as a swift-service-lifecycle Service: graceful shutdown quiesces, cancellation
        // aborts. A module of its own, so GNet does not depend on ServiceLifecycle.
        .target(
            name: "GNetServiceLifecycle",
            dependencies: ["GNet", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")]
        ),
        // Connections for async code: accepted as an AsyncSequence, input as chunks with
        // backpressure, writes that wait for the peer.
        .target(
            name: "GNetAsync",
            dependencies: ["GNet", "GNetLocks", .product(name: "DequeModule", package: "swift-collections")]
        ),
        // The system's OpenSSL 3 (Debian: libssl-dev), for GNetTLS only.
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // TLS on OpenSSL as a per-connection layer between the loop's ciphertext and the
        // handler's plaintext.
        .target(name: "GNetTLS", dependencies: ["GNet", "GNetLocks", "COpenSSL"]),
        // The loops' statistics published through swift-metrics.
        .target(
            name: "GNetMetrics",
            dependencies: ["GNet", "GNetLocks", .product(name: "CoreMetrics", package: "swift-metrics")]
        ),
        // Descriptor, socket-pair and thread helpers for tests, on plain POSIX calls: used by
        // the test targets and by the conformance suite (which the gnet-conformance tool runs
        // too, so this is a library target rather than a test target).
        .target(name: "TestSupport", dependencies: ["Poller"], path: "Tests/TestSupport"),
        .target(
            name: "GNetConformance",
            dependencies: ["GNet", "GNetCodec", "GNetWorkerPool", "Poller", "GNetLocks", "TestSupport", .product(name: "Logging", package: "swift-log")],
            path: "conformance/GNetConformance"
        ),
        // What the example servers share: logging set-up, the ready line, running the engine in
        // a ServiceGroup that stops it on SIGINT/SIGTERM.
        .target(
            name: "ExampleSupport",
            dependencies: [
                "GNet", "GNetTLS", "GNetServiceLifecycle", "GNetLocks", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/Support"
        ),
        .executableTarget(
            name: "gnet-conformance",
            dependencies: ["GNetConformance", "GNet", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "conformance/Runner"
        ),
        .executableTarget(
            name: "gnet-echo",
            dependencies: ["GNet", "GNetCodec", "GNetMetrics", "ExampleSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/Echo"
        ),
        // The echo server on GNetAsync: a task per connection.
        .executableTarget(
            name: "gnet-echo-async",
            dependencies: ["GNet", "GNetAsync", "GNetLocks", "ExampleSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/EchoAsync"
        ),
        // An echo client on GNet's Client: dials, pings, checks every byte.
        .executableTarget(
            name: "gnet-dial",
            dependencies: ["GNet", "GNetLocks", "ExampleSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/Dial"
        ),
        // The HTTP/1.1 request scanner and response writer behind gnet-http; pure, unit-tested.
        .target(name: "HTTPCore", dependencies: ["GNet"], path: "Examples/HTTPCore"),
        .executableTarget(
            name: "gnet-http",
            dependencies: ["GNet", "HTTPCore", "ExampleSupport",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/HTTP"
        ),
        .testTarget(name: "HTTPCoreTests", dependencies: ["HTTPCore", "GNet", "GNetConformance"]),
        // The RESP2 parser, key-value store and commands behind gnet-redis; pure, unit-tested.
        .target(
            name: "RedisCore",
            dependencies: ["GNet", "GNetLocks", .product(name: "HeapModule", package: "swift-collections")],
            path: "Examples/RedisCore"
        ),
        .executableTarget(
            name: "gnet-redis",
            dependencies: ["GNet", "RedisCore", "ExampleSupport",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/Redis"
        ),
        .testTarget(name: "RedisCoreTests", dependencies: ["RedisCore", "GNet", "GNetConformance"]),
        // The length-prefixed protocol, store and handler behind gnet-kv: frames through GNetCodec,
        // SAVE on GNetWorkerPool; pure enough to test without the executable.
        .target(
            name: "KVCore",
            dependencies: ["GNet", "GNetCodec", "GNetWorkerPool", "GNetLocks"],
            path: "Examples/KVCore"
        ),
        .executableTarget(
            name: "gnet-kv",
            dependencies: ["GNet", "GNetWorkerPool", "KVCore", "ExampleSupport",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/KV"
        ),
        .testTarget(
            name: "KVCoreTests",
            dependencies: ["KVCore", "GNet", "GNetCodec", "GNetWorkerPool", "GNetLocks", "GNetConformance"]
        ),
        .testTarget(name: "PollerEpollTests", dependencies: ["PollerEpoll", "Poller", "TestSupport"]),
        .testTarget(name: "PollerLibeventTests", dependencies: ["PollerLibevent", "Poller", "TestSupport"]),
        .testTarget(name: "PollerDispatchTests", dependencies: ["PollerDispatch", "Poller", "TestSupport"]),
        .testTarget(
            name: "GNetTests",
            dependencies: ["GNet", "GNetConformance", "GNetLocks", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "GNetMetricsTests",
            dependencies: ["GNetMetrics", "GNet", "GNetConformance", .product(name: "MetricsTestKit", package: "swift-metrics")]
        ),
        .testTarget(name: "GNetTLSTests", dependencies: ["GNetTLS", "GNet", "GNetLocks"]),
        .testTarget(name: "GNetAsyncTests", dependencies: ["GNetAsync", "GNet", "GNetConformance", "GNetLocks", "TestSupport"]),
        .testTarget(name: "GNetCodecTests", dependencies: ["GNetCodec", "GNet", "GNetConformance"]),
        .testTarget(
            name: "GNetWorkerPoolTests",
            dependencies: ["GNetWorkerPool", "GNet", "GNetConformance", "TestSupport"]
        ),
        .testTarget(
            name: "GNetServiceLifecycleTests",
            dependencies: [
                "GNetServiceLifecycle", "GNet", "GNetConformance", "GNetLocks",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "ConformanceTests",
            dependencies: ["GNetConformance", "GNet"],
            path: "conformance/Tests"
        ),
    ]
)
