import ArgumentParser
import NIOBenchSupport
import NIOCore
import NIOPosix

/// Echoes every datagram back to its sender: writes as datagrams arrive, flushes once per read
/// burst. Tuned as a NIO user tunes UDP for throughput: vectored reads (`recvmmsg`, 32 at a
/// time) and receive buffers sized for any datagram.
final class UDPEchoHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: envelope.data)), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A refused send (the peer's port closed) is reported here; the socket carries on.
    }
}

@main
struct NIOUDPEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-udp-echo",
        abstract: "SwiftNIO DatagramBootstrap UDP echo server, the peer of gnet's UDP echo."
    )

    @OptionGroup var options: ServerOptions

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: options.loops)
        defer { try? group.syncShutdownGracefully() }
        let channel = try DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.datagramVectorReadMessageCount, value: 32)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 2048))
            .channelOption(.socketOption(.so_rcvbuf), value: 4 << 20)
            .channelOption(.socketOption(.so_sndbuf), value: 4 << 20)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPEchoHandler()) }
            }
            .bind(host: options.host, port: options.port).wait()
        let port = channel.localAddress?.port ?? options.port
        announceLine("listening on udp://\(options.host):\(port) (poller=nio, loops=\(options.loops))\n")
        try channel.closeFuture.wait()
    }
}
