import ArgumentParser
import NIOBenchSupport
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Plaintext HTTP/1.1 parsed as little as gnet-http parses it: a request is whatever ends at the
/// next `\r\n\r\n`, and every request gets the same response. All responses owed for one read go
/// out as one buffer (the cached response itself when there is just one, so nothing is copied),
/// flushed once per read burst. Bytes of an unfinished request wait for the next read.
final class RawPlaintextHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// An unfinished request longer than this is not a request we answer.
    private static let maxRequestHead = 8192

    private let response: PerSecondCache<ByteBuffer>
    private var partial: ByteBuffer?

    init(response: PerSecondCache<ByteBuffer>) {
        self.response = response
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = self.unwrapInboundIn(data)
        if var partial = self.partial {
            self.partial = nil
            partial.writeBuffer(&input)
            input = partial
        }
        let (requests, consumed) = Self.completeRequests(in: input)
        input.moveReaderIndex(forwardBy: consumed)
        if input.readableBytes > 0 {
            guard input.readableBytes <= Self.maxRequestHead else {
                context.close(promise: nil)
                return
            }
            self.partial = input
        }
        switch requests {
        case 0:
            break
        case 1:
            context.write(self.wrapOutboundOut(self.response.value), promise: nil)
        default:
            let one = self.response.value
            var out = context.channel.allocator.buffer(capacity: one.readableBytes * requests)
            for _ in 0..<requests { out.writeImmutableBuffer(one) }
            context.write(self.wrapOutboundOut(out), promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// How many requests end in `buffer`, and how many bytes they span.
    static func completeRequests(in buffer: ByteBuffer) -> (count: Int, bytes: Int) {
        buffer.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return (0, 0) }
            var count = 0
            var end = 0  // one past the last complete request
            var i = 0
            while i < bytes.count, let nl = memchr(base + i, 0x0A, bytes.count - i) {
                let at = base.distance(to: nl.assumingMemoryBound(to: UInt8.self))
                // "\r\n\r\n" ends at `at` when it lies wholly inside the current request.
                if at - 3 >= end, base[at - 1] == 0x0D, base[at - 2] == 0x0A, base[at - 3] == 0x0D {
                    count += 1
                    end = at + 1
                }
                i = at + 1
            }
            return (count, end)
        }
    }
}

@main
struct NIOHTTPRaw: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nio-http-raw",
        abstract: "SwiftNIO plaintext HTTP server on raw bytes, parsing as little as gnet-http."
    )

    @OptionGroup var options: ServerOptions

    func run() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.options.loops)
        defer { try? group.syncShutdownGracefully() }
        let responses = try PerLoopCaches(group: group) { date in
            ByteBuffer(
                string: "HTTP/1.1 200 OK\r\nServer: nio\r\nContent-Type: text/plain\r\n"
                    + "Date: \(date)\r\nContent-Length: 13\r\n\r\nHello, World!"
            )
        }
        let bootstrap = ServerBootstrap.benchmarkServer(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = RawPlaintextHandler(response: responses.cache(for: channel.eventLoop))
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        try serve(bootstrap, options: self.options)
    }
}
