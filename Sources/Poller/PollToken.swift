/// Identifies one registration: the descriptor plus a generation chosen by the caller.
///
/// Descriptors are reused by the kernel as soon as they are closed. The generation lets the
/// owner of a registration table recognise an event that belongs to an earlier registration of
/// the same number and drop it. Backends carry the token verbatim and hand it back with each
/// event; they never interpret the generation.
///
/// It packs into 64 bits (`packed`), the size of epoll's `data` and of a pointer-sized
/// callback argument.
public struct PollToken: Hashable, Sendable, CustomStringConvertible {
    public var fd: Int32
    public var generation: UInt32

    @inlinable public init(fd: Int32, generation: UInt32) {
        self.fd = fd
        self.generation = generation
    }

    /// `generation` in the high 32 bits, `fd` in the low 32 bits.
    @inlinable public var packed: UInt64 {
        UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    @inlinable public init(packed: UInt64) {
        self.fd = Int32(bitPattern: UInt32(truncatingIfNeeded: packed))
        self.generation = UInt32(truncatingIfNeeded: packed >> 32)
    }

    public var description: String { "fd \(fd) gen \(generation)" }
}

/// How long `Poller.wait` may block.
public enum PollTimeout: Sendable, Hashable {
    /// Until an event or a wakeup arrives.
    case block
    /// Never block: report what is ready now.
    case now
    /// At most this long (negative durations behave like `.now`).
    case after(Duration)

    /// Whole milliseconds, rounded up so that a short positive timeout never becomes a busy
    /// poll; `-1` for `.block`. Clamped to `Int32.max`.
    @inlinable public var milliseconds: Int32 {
        switch self {
        case .block: return -1
        case .now: return 0
        case .after(let d):
            let (s, atto) = d.components
            if s < 0 || (s == 0 && atto <= 0) { return 0 }
            let ms = s.multipliedReportingOverflow(by: 1000)
            if ms.overflow || ms.partialValue >= Int64(Int32.max) { return Int32.max }
            let extra = (atto + 999_999_999_999_999) / 1_000_000_000_000_000
            return Int32(min(Int64(Int32.max), ms.partialValue + extra))
        }
    }
}
