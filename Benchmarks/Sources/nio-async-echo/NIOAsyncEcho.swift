import ArgumentParser
import NIOBenchSupport
import NIOCore
import NIOPosix


/// Echoes every byte back with SwiftNIO's async API: `NIOAsyncChannel`, a task per
/// connection reading its inbound sequence and writing each buffer back — the peer of
/// `gnet-echo-async`.
@main
struct NIOAsyncEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-async-echo",
        abstract: "SwiftNIO NIOAsyncChannel TCP echo server, the peer of gnet-echo-async."
    )

    @OptionGroup var options: ServerOptions

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.loops)
        let server = try await ServerBootstrap.benchmarkServer(group: group)
            .bind(host: options.host, port: options.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let port = server.channel.localAddress?.port ?? options.port
        announceLine("listening on tcp://\(options.host):\(port) (poller=nio-async, loops=\(options.loops))\n")
        try await withThrowingDiscardingTaskGroup { tasks in
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    tasks.addTask {
                        try? await connection.executeThenClose { inbound, outbound in
                            for try await buffer in inbound { try await outbound.write(buffer) }
                        }
                    }
                }
            }
        }
    }
}
