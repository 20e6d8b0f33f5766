import CGNetLinux
import Glibc
import Poller

/// What a dial asks a loop to do: connect a new socket, or take one already connected.
struct DialRequest: Sendable {
    enum Target: Sendable {
        /// Connect to `address`, failing with `GNetError.connectTimeout` after `timeout`.
        case connect(ListenAddress, timeout: Duration)
        /// Take over this connected socket (`Engine.enroll`).
        case enroll(Int32)
    }
    let target: Target
    /// Set as the connection's `context` before `onOpen`.
    let context: (any Sendable)?
    /// The connection's layer (TLS), and the server name it is for.
    var layer: (any ConnectionLayerFactory)? = nil
    var serverName: String? = nil
    let completion: @Sendable (Result<ConnectionHandle, any Error>) -> Void

    /// The network of the connection it makes: the dialled address's, or for an enrolled
    /// socket, tcp or unix by its peer's family.
    func network(_ remote: SocketAddress) -> Network {
        switch target {
        case .connect(let address, _): return address.network
        case .enroll: return remote.family == .unix ? .unix : .tcp
        }
    }

    /// Fails the dial when no loop will take it; an enrolled socket is closed (it was handed over).
    func abandon(_ error: any Error) {
        if case .enroll(let fd) = target { _ = closeDescriptor(fd) }
        completion(.failure(error))
    }
}

/// A socket whose non-blocking connect is in progress, watched for writability.
final class PendingDial {
    let fd: Int32
    let generation: UInt32
    let address: ListenAddress
    let timeout: Duration
    let request: DialRequest

    init(fd: Int32, generation: UInt32, address: ListenAddress, timeout: Duration, request: DialRequest) {
        self.fd = fd
        self.generation = generation
        self.address = address
        self.timeout = timeout
        self.request = request
    }
}

/// Dialling: the loop side of `Engine.dial` and `Engine.enroll`.
///
/// A dial becomes a connection only once its socket is connected: until then it lives in
/// `dialing`, not in `connections`, so the handler never sees a half-made connection and the
/// read and write paths never test for one. A connected socket goes through the same `open`
/// as an accepted one (options, registration, `onOpen`), then the dial's completion gets its
/// handle. A failed dial calls no handler method: its completion gets the typed error.
extension EventLoop {
    /// Starts a dial handed to this loop. The caller has counted it in `inbox.connectionCount`.
    final func startDial(_ request: DialRequest) {
        if stopping {
            inbox.connectionCount.subtract(1, ordering: .relaxed)
            request.abandon(GNetError.engineStopped)
            return
        }
        switch request.target {
        case .enroll(let fd):
            enroll(fd, request)
        case .connect(let address, let timeout):
            connect(address, timeout: timeout, request)
        }
    }

    private final func enroll(_ fd: Int32, _ request: DialRequest) {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
            dialFailed(request, SystemError("fcntl(enroll)", errno: errno))
            return
        }
        guard Socket.getOption(fd, SOL_SOCKET, SO_TYPE) == Int32(SOCK_STREAM.rawValue) else {
            dialFailed(request, GNetError.misuse("Engine.enroll takes a connected stream socket (TCP or Unix); descriptor \(fd) is not one"))
            return
        }
        guard let remote = Socket.remoteAddress(fd) else {
            dialFailed(request, GNetError.misuse("Engine.enroll takes a connected socket; descriptor \(fd) is not connected (\(SystemError("getpeername", errno: errno)))"))
            return
        }
        established(fd, generation: newGeneration(), remote: remote, registered: [], request)
    }

    /// A datagram socket (`udp`, `unixgram`) connects at once (the kernel only records the
    /// peer); a `unixgram` one is first bound to an address the kernel picks (autobind), so
    /// the server can answer it.
    private final func connect(_ address: ListenAddress, timeout: Duration, _ request: DialRequest) {
        let datagram = address.network.isDatagram
        let fd: Int32
        do {
            let type = datagram ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue
            fd = try sysCall("socket") {
                Glibc.socket(address.address.sockaddrFamily, Int32(type) | CGNET_SOCK_NONBLOCK | CGNET_SOCK_CLOEXEC, 0)
            }
        } catch {
            dialFailed(request, error)
            return
        }
        do {
            if let device = options.bindToDevice, !address.network.isUnix { try Socket.bindToDevice(fd, device, address.original) }
            if address.network == .unixgram { try Socket.autobind(fd) }
        } catch {
            _ = closeDescriptor(fd)
            dialFailed(request, error)
            return
        }
        if datagram { prepareDatagramArrays() }
        var rc: Int32
        repeat {
            rc = address.address.withUnsafeSockaddr { Glibc.connect(fd, $0, $1) }
        } while rc != 0 && errno == EINTR
        let generation = newGeneration()
        if rc == 0 {
            established(fd, generation: generation, remote: address.address, registered: [], request)
            return
        }
        let e = errno
        guard e == EINPROGRESS else {
            _ = closeDescriptor(fd)
            dialFailed(request, Self.connectError(e, address))
            return
        }
        do {
            try poller.register(fd, interest: .write, token: PollToken(fd: fd, generation: generation), trigger: trigger)
        } catch {
            _ = closeDescriptor(fd)
            dialFailed(request, error)
            return
        }
        dialing[fd] = PendingDial(fd: fd, generation: generation, address: address, timeout: timeout, request: request)
        schedule(after: timeout, .dialDeadline(fd, generation))
    }

    /// Readiness of a socket being dialled: connected, or failed (`SO_ERROR` says which).
    final func dialReady(_ token: PollToken, _ events: IOEvents) {
        guard let d = dialing[token.fd], d.generation == token.generation else { return }
        var soError = Socket.getOption(d.fd, SOL_SOCKET, SO_ERROR) ?? EIO
        if soError == 0 && !events.contains(.write) {
            guard !events.isDisjoint(with: [.reset, .error]) else { return } // spurious: wait on
            soError = ECONNRESET
        }
        dialing[d.fd] = nil
        guard soError == 0 else {
            cancelDial(d, Self.connectError(soError, d.address))
            return
        }
        established(d.fd, generation: d.generation, remote: Socket.remoteAddress(d.fd) ?? d.address.address,
                    registered: .write, d.request)
    }

    /// The dial's timeout passed before its socket connected.
    final func dialDeadlinePassed(_ fd: Int32, _ generation: UInt32) {
        guard let d = dialing[fd], d.generation == generation else { return }
        dialing[fd] = nil
        cancelDial(d, GNetError.connectTimeout(d.address.original, timeout: d.timeout))
    }

    /// Ends every dial in progress with `error` (the engine is stopping).
    final func cancelDials(_ error: any Error) {
        let pending = dialing.values
        dialing = [:]
        for d in pending { cancelDial(d, error) }
    }

    private final func cancelDial(_ d: PendingDial, _ error: any Error) {
        do {
            try poller.deregister(d.fd, interest: .write)
        } catch {
            logger.debug("deregistering a failed dial failed", metadata: ["fd": "\(d.fd)", "error": "\(error)"])
        }
        _ = closeDescriptor(d.fd)
        dialFailed(d.request, error)
    }

    private final func dialFailed(_ request: DialRequest, _ error: any Error) {
        inbox.connectionCount.subtract(1, ordering: .relaxed)
        request.abandon(error)
    }

    /// The socket is connected: it becomes a connection (`onOpen`), then the dial completes.
    private final func established(_ fd: Int32, generation: UInt32, remote: SocketAddress, registered: IOEvents, _ request: DialRequest) {
        guard let c = open(fd, generation: generation, remote: remote, listener: nil, network: request.network(remote), registered: registered,
                           context: request.context, layer: request.layer, serverName: request.serverName) else {
            request.completion(.failure(GNetError.connectionClosed))
            return
        }
        request.completion(.success(c.handle))
    }

    /// The typed error for a failed connect to `address`.
    static func connectError(_ e: Int32, _ address: ListenAddress) -> any Error {
        switch e {
        case ECONNREFUSED:
            return GNetError.connectionRefused(address.original)
        case ENOENT where address.network.isUnix:
            return GNetError.connectionRefused(address.original)
        case ENETUNREACH, EHOSTUNREACH, EHOSTDOWN, ENETDOWN:
            return GNetError.unreachable(address.original, SystemError("connect", errno: e))
        case ETIMEDOUT:
            return GNetError.connectTimeout(address.original, timeout: nil)
        default:
            return SystemError("connect(\(address.original))", errno: e)
        }
    }
}
