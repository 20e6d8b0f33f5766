import GNet

/// The Redis server as a gnet `EventHandler`: each read runs every complete request in the
/// input through a `RedisProcessor` and writes the replies back in one write.
///
/// ## Threads
/// One handler serves every loop; what it shares is the processor's `KeyValueStore`, which is
/// thread-safe. Each connection keeps its own `RedisSession` in `Connection.context`, touched
/// only on that connection's loop.
public struct RedisHandler: EventHandler {
    public let processor: RedisProcessor
    /// How often `onTick` (with `Options.ticker`) sweeps expired keys.
    public var sweepInterval: Duration = .milliseconds(100)

    public init(processor: RedisProcessor = RedisProcessor()) {
        self.processor = processor
    }

    /// The per-connection session, boxed so the connection's `context` can hold it.
    final class SessionBox {
        var session = RedisSession()
    }

    public func onOpen(_ c: Connection) -> (output: [UInt8]?, action: Action) {
        c.context = SessionBox()
        return (nil, .none)
    }

    public func onTraffic(_ c: Connection) -> Action {
        guard let box = c.context as? SessionBox else { return .close }
        let outcome = c.withUnsafeInboundBytes { processor.process($0, session: &box.session) }
        c.discard(outcome.consumed)
        if !box.session.replies.isEmpty {
            do {
                try c.write(box.session.replies.bytes)
            } catch {
                return .close
            }
            box.session.replies.reset()
        }
        // When the replies filled up before the input ran out, the engine calls again at once
        // (something was consumed and something is left).
        return outcome.close ? .close : .none
    }

    public func onTick() -> (delay: Duration, action: Action) {
        processor.store.sweep()
        return (sweepInterval, .none)
    }
}
