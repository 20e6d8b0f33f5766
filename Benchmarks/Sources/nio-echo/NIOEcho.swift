import ArgumentParser
import NIOBenchSupport
import NIOCore
import NIOPosix
import NIOSSL

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

    @Option(help: "Serve TLS (swift-nio-ssl) with this PEM certificate chain (with --tls-key).")
    var tlsCert: String?

    @Option(help: "The PEM private key of --tls-cert.")
    var tlsKey: String?

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.options.loops)
        defer { try? group.syncShutdownGracefully() }
        // One NIOSSLContext shared by every connection, as a NIO user sets up TLS.
        let tls = try tlsCert.map { cert in
            try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                privateKey: .privateKey(NIOSSLPrivateKey(file: tlsKey ?? "", format: .pem))))
        }
        let bootstrap = ServerBootstrap.benchmarkServer(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
        try serve(bootstrap, options: self.options)
    }
}
