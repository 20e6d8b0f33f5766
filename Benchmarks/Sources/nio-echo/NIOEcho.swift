import ArgumentParser
import NIOBenchSupport
import NIOCore
import NIOPosix

/// Echoes every byte back. Writes as reads arrive and flushes once per read burst, so the bytes
/// of one wake-up leave in one `writev`. When the outbound buffer passes its high watermark the
/// channel stops reading until the peer catches up.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(.autoRead, value: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@main
struct NIOEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-echo",
        abstract: "SwiftNIO TCP echo server, the peer of gnet-echo."
    )

    @OptionGroup var options: ServerOptions

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.options.loops)
        defer { try? group.syncShutdownGracefully() }
        let bootstrap = ServerBootstrap.benchmarkServer(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
        try serve(bootstrap, options: self.options)
    }
}
