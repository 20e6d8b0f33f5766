#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The outcome of a non-blocking system call: it finished, or it would have blocked.
///
/// These helpers are `@inlinable` so that each call site (the engine's reads and sends among
/// them) gets them specialised and inlined: across modules, a generic function that is not
/// inlinable runs unspecialised, through value witnesses, on every call.
@frozen @usableFromInline
package enum IOResult<T> {
    case done(T)
    case wouldBlock
}

/// Calls `body` (a C call returning -1 and setting `errno` on failure), retrying on `EINTR`.
/// Any other failure throws `SystemError(call(), errno)`. `call` is built only on failure.
@inlinable @inline(__always)
package func sysCall<T: FixedWidthInteger>(
    _ call: @autoclosure () -> String, _ body: () -> T
) throws(SystemError) -> T {
    while true {
        let r = body()
        if r != -1 { return r }
        let e = errno
        if e == EINTR { continue }
        throw SystemError(call(), errno: e)
    }
}

/// Like `sysCall`, but `EAGAIN`/`EWOULDBLOCK` becomes `.wouldBlock` instead of an error.
@inlinable @inline(__always)
package func sysCallNonBlocking<T: FixedWidthInteger>(
    _ call: @autoclosure () -> String, _ body: () -> T
) throws(SystemError) -> IOResult<T> {
    while true {
        let r = body()
        if r != -1 { return .done(r) }
        let e = errno
        if e == EINTR { continue }
        if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
        throw SystemError(call(), errno: e)
    }
}
