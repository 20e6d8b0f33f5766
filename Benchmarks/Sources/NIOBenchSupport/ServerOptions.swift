import ArgumentParser
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The command line every benchmark server shares with gnet's examples and the C floor, so that
/// `run.sh` can start any of them the same way.
public struct ServerOptions: ParsableArguments {
    @Option(help: "Address to listen on.")
    public var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    public var port = 9000

    @Option(help: "Number of event loops (threads).")
    public var loops = 1

    public init() {}

    public func validate() throws {
        guard self.loops >= 1 else { throw ValidationError("--loops must be at least 1") }
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be 0...65535") }
    }
}

extension ServerBootstrap {
    /// A server bootstrap tuned the way a NIO user tunes one for throughput: a deep accept
    /// backlog, `SO_REUSEADDR`, `TCP_NODELAY`, an adaptive receive allocator (grows to the read
    /// sizes it sees, shrinks again when they fall) and more reads per wake-up than the default 4.
    public static func benchmarkServer(group: any EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator())
            .childChannelOption(.maxMessagesPerRead, value: 16)
    }
}

/// Binds `bootstrap`, prints the one `listening on` line `run.sh` waits for, and blocks until the
/// server channel closes. SIGINT and SIGTERM keep their default action (the process ends).
public func serve(_ bootstrap: ServerBootstrap, options: ServerOptions, poller: String = "nio") throws {
    let channel = try bootstrap.bind(host: options.host, port: options.port).wait()
    let port = channel.localAddress?.port ?? options.port
    announce("listening on tcp://\(options.host):\(port) (poller=\(poller), loops=\(options.loops))\n")
    try channel.closeFuture.wait()
}

/// Writes straight to fd 1: stdout is a file or a pipe under `run.sh`, where `print` would sit in
/// the stdio buffer until exit.
public func announceLine(_ line: String) { announce(line) }

private func announce(_ line: String) {
    var line = line
    line.withUTF8 { bytes in
        var offset = 0
        while offset < bytes.count {
            let n = write(1, bytes.baseAddress! + offset, bytes.count - offset)
            if n <= 0 { return }
            offset += n
        }
    }
}
