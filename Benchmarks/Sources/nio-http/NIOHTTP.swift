import ArgumentParser
import NIOBenchSupport
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Plaintext HTTP/1.1 the way NIOHTTP1 is meant to be used: the standard server pipeline
/// (`HTTPResponseEncoder`, the `HTTPRequestDecoder`, `HTTPServerPipelineHandler` for pipelined
/// requests, the protocol error handler) and a handler answering typed `HTTPServerRequestPart`s
/// with typed response parts. Responses are written as requests end and flushed once per read
/// burst.
final class PlaintextHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let date: PerSecondCache<String>
    private let body: ByteBuffer

    init(date: PerSecondCache<String>, body: ByteBuffer) {
        self.date = date
        self.body = body
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head, .body:
            break
        case .end:
            let headers: HTTPHeaders = [
                "Server": "nio",
                "Content-Type": "text/plain",
                "Date": self.date.value,
                "Content-Length": "13",
            ]
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(self.body))), promise: nil)
            context.write(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        context.fireChannelReadComplete()
    }
}

@main
struct NIOHTTP: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-http",
        abstract: "SwiftNIO plaintext HTTP server (NIOHTTP1), the idiomatic peer of gnet-http."
    )

    @OptionGroup var options: ServerOptions

    @Option(help: "Serve HTTPS (swift-nio-ssl) with this PEM certificate chain (with --tls-key).")
    var tlsCert: String?

    @Option(help: "The PEM private key of --tls-cert.")
    var tlsKey: String?

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.options.loops)
        defer { try? group.syncShutdownGracefully() }
        let dates = try PerLoopCaches(group: group) { $0 }
        let body = ByteBuffer(string: "Hello, World!")
        // One NIOSSLContext shared by every connection, as a NIO user sets up TLS.
        let tls = try tlsCert.map { cert in
            try NIOSSLContext(configuration: .makeServerConfiguration(
                certificateChain: NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                privateKey: .privateKey(NIOSSLPrivateKey(file: tlsKey ?? "", format: .pem))))
        }
        let bootstrap = ServerBootstrap.benchmarkServer(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls)) }
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
                    try sync.addHandler(PlaintextHandler(date: dates.cache(for: channel.eventLoop), body: body))
                }
            }
        try serve(bootstrap, options: self.options)
    }
}
