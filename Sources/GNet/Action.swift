/// What the engine does after a handler callback returns.
public enum Action: Sendable, Hashable {
    /// Carry on.
    case none
    /// Close this connection (after flushing what was written). Where no connection is involved
    /// (`onBoot`, `onTick`), it means the same as `none`.
    case close
    /// Stop the whole engine gracefully (like `Engine.stop()`).
    case shutdown
}
