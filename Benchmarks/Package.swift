// swift-tools-version:6.1
//
// The benchmark peers of swift-gnet. A package of its own so that the library never depends on
// SwiftNIO: these servers exist only to be measured against (see run.sh and README.md).
import PackageDescription

let package = Package(
    name: "swift-gnet-benchmarks",
    products: [
        .executable(name: "nio-echo", targets: ["nio-echo"]),
        .executable(name: "nio-async-echo", targets: ["nio-async-echo"]),
        .executable(name: "nio-udp-echo", targets: ["nio-udp-echo"]),
        .executable(name: "nio-http", targets: ["nio-http"]),
        .executable(name: "nio-http-raw", targets: ["nio-http-raw"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
    ],
    targets: [
        // What the three peers share: the command line, the tuned bootstrap, the Date cache.
        .target(
            name: "NIOBenchSupport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "nio-echo",
            dependencies: [
                "NIOBenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "nio-udp-echo",
            dependencies: [
                "NIOBenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "nio-async-echo",
            dependencies: [
                "NIOBenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "nio-http",
            dependencies: [
                "NIOBenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "nio-http-raw",
            dependencies: [
                "NIOBenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
    ]
)
