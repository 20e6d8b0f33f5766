import GNet
import GNetLocks
import Glibc
import Poller
import Synchronization
import TestSupport

/// Flow control against hostile peers: a peer that never reads, reads slowly, or floods; the
/// watermarks and their callback; the inbound cap; pausing reads; the cap on handle writes.
enum FlowControlScenarios {
    static let all: [Scenario] = [
        Scenario("flow.non-reader-bounded", .engine, run: nonReaderBounded),
        Scenario("flow.writability-callbacks", .engine, run: writabilityCallbacks),
        Scenario("flow.inbound-limit", .engine, run: inboundLimit),
        Scenario("flow.pause-resume-reading", .engine, run: pauseResume),
        Scenario("flow.async-write-limit", .engine, run: asyncWriteLimit),
        Scenario("flow.write-inside-in-place-render", .engine, run: writeInsideRender),
    ]

    /// An echo server and a client that sends 16 MiB without reading: the server stops reading
    /// once its queued output passes the high watermark, so it never holds more than the
    /// watermark plus one read; when the client then reads, every byte arrives in order.
    static func nonReaderBounded(_ kind: PollerKind) async throws -> Trace? {
        let maxHeld = Shared(0)
        let flips = Shared<[Bool]>([])
        let handler = ScriptedHandler(onTraffic: { c, _ in
            do { try c.next { try c.write($0) } } catch { return .close }
            let held = c.outboundBuffered + c.inboundBuffered
            maxHeld.update { $0 = max($0, held) }
            return .none
        }, onWritabilityChanged: { c, _ in
            flips.update { $0.append(c.isWritable) }
            return .none
        })
        let high = 64 * 1024
        let readBuffer = 64 * 1024
        try await withEngine(kind, handler, configure: {
            $0.outboundHighWatermark = high
            $0.outboundLowWatermark = 32 * 1024
            $0.readBufferCapacity = readBuffer
            $0.socketSendBuffer = 64 * 1024
        }) { _, address in
            let payload = patternBytes(16 << 20, seed: 7)
            let client = try TestClient(address, timeout: .seconds(20))
            client.setReceiveBuffer(64 * 1024)
            let sender = client.sendInBackground(payload)
            // The kernel buffers fill, then the server must stop reading: what it has taken stops
            // growing while the sender is still blocked.
            var last = -1
            var stableFor = 0
            for _ in 0..<200 where stableFor < 5 {
                try await Task.sleep(for: .milliseconds(20))
                let now = handler.trafficBytesSeen
                stableFor = now == last ? stableFor + 1 : 0
                last = now
            }
            try expect(sender.get() == nil, "the 16 MiB send finished although nobody read the echo")
            try expect(stableFor >= 5, "the server kept reading from a client that does not read")
            let held = maxHeld.get
            try expect(held <= high + readBuffer, "the server held \(held) bytes for one connection; the bound is \(high + readBuffer)")
            try expect(flips.get.first == false, "no onWritabilityChanged(false) while output backed up (flips: \(flips.get))")
            let got = try await onThread("reading the echo") { try client.receive(exactly: payload.count) }
            try expect(got == payload, "echo differs from what was sent (first difference at byte \(firstDifference(got, payload)))")
            let f = flips.get
            try expect(zip(f, f.dropFirst()).allSatisfy { $0 != $1 }, "writability flips do not alternate: \(f)")
        }
        return nil
    }

    /// A streaming handler writes until unwritable and resumes on `onWritabilityChanged`; a slow
    /// reader gets the exact stream, and output never piles up past the watermark plus a chunk.
    static func writabilityCallbacks(_ kind: PollerKind) async throws -> Trace? {
        let total = 4 << 20
        let chunk = 16 * 1024
        let stream = patternBytes(total, seed: 11)
        let sent = Shared(0)
        let maxQueued = Shared(0)
        let flips = Shared<[Bool]>([])
        @Sendable func pump(_ c: Connection) -> Action {
            while c.isWritable {
                let off = sent.get
                if off >= total { return .close }
                let n = min(chunk, total - off)
                do { try stream.withUnsafeBytes { try c.write(UnsafeRawBufferPointer(rebasing: $0[off..<off + n])) } } catch { return .close }
                sent.update { $0 += n }
                maxQueued.update { $0 = max($0, c.outboundBuffered) }
            }
            return .none
        }
        let handler = ScriptedHandler(onOpen: { c, _ in (nil, pump(c)) }, onWritabilityChanged: { c, _ in
            flips.update { $0.append(c.isWritable) }
            return c.isWritable ? pump(c) : .none
        })
        try await withEngine(kind, handler, configure: {
            $0.outboundHighWatermark = 64 * 1024
            $0.outboundLowWatermark = 16 * 1024
            $0.socketSendBuffer = 32 * 1024
        }) { _, address in
            let got = try await onThread("slow reader") {
                let client = try TestClient(address)
                client.setReceiveBuffer(32 * 1024)
                return try client.readToEnd(chunk: 32 * 1024, pause: .microseconds(300))
            }
            try expect(got.end == .eof, "the stream ended with a reset after \(got.bytes.count) bytes")
            try expect(got.bytes == stream, "the stream differs from what was written (\(got.bytes.count) of \(total) bytes)")
            let f = flips.get
            try expect(f.count >= 2, "expected the connection to turn unwritable and writable again; flips: \(f)")
            try expect(zip(f, f.dropFirst()).allSatisfy { $0 != $1 } && f.first == false, "flips do not alternate from false: \(f)")
            try expect(maxQueued.get <= 64 * 1024 + chunk, "queued output reached \(maxQueued.get) bytes")
        }
        return nil
    }

    /// A handler that consumes nothing until told: reading stops at `inboundLimit` (plus one
    /// read); once the handler consumes, reading resumes and every byte arrives.
    static func inboundLimit(_ kind: PollerKind) async throws -> Trace? {
        let consume = Shared(false)
        let received = Shared<[UInt8]>([])
        let maxBuffered = Shared(0)
        let handler = ScriptedHandler(onTraffic: { c, _ in
            maxBuffered.update { $0 = max($0, c.inboundBuffered) }
            if consume.get, let bytes = c.next() { received.update { $0 += bytes } }
            return .none
        })
        let limit = 256 * 1024
        try await withEngine(kind, handler, configure: {
            $0.inboundLimit = limit
            $0.readBufferCapacity = 16 * 1024
            $0.socketReceiveBuffer = 32 * 1024
        }) { _, address in
            let payload = patternBytes(16 << 20, seed: 5)
            let client = try TestClient(address, timeout: .seconds(20))
            let sender = client.sendInBackground(payload)
            try await eventually("the server to buffer up to its inbound limit") { maxBuffered.get >= limit }
            try await Task.sleep(for: .milliseconds(100))
            try expect(sender.get() == nil, "16 MiB went through although the handler consumed nothing")
            try expect(maxBuffered.get <= limit + 16 * 1024, "the server buffered \(maxBuffered.get) bytes; the limit is \(limit) plus one read")
            consume.update { $0 = true }
            try await onThread("wake") { try wakeAndWait(handler.firstHandle) }
            try await eventually("all 16 MiB to arrive", timeout: .seconds(20)) { received.get.count >= payload.count }
            try expect(received.get == payload, "the input differs from what was sent")
        }
        return nil
    }

    /// `pauseReading` holds the peer back until `resumeReading`; nothing is lost.
    static func pauseResume(_ kind: PollerKind) async throws -> Trace? {
        let resume = Shared(false)
        let received = Shared(0)
        let handler = ScriptedHandler(onTraffic: { c, _ in
            if resume.get {
                c.resumeReading()
            } else if !c.isReadingPaused {
                c.pauseReading()
            }
            received.update { $0 += c.inboundBuffered }
            c.discard(c.inboundBuffered)
            return .none
        })
        try await withEngine(kind, handler, configure: {
            $0.readBufferCapacity = 16 * 1024
            $0.socketReceiveBuffer = 32 * 1024
        }) { _, address in
            let payload = patternBytes(16 << 20, seed: 9)
            let client = try TestClient(address, timeout: .seconds(20))
            let sender = client.sendInBackground(payload)
            try await eventually("the first input") { received.get > 0 }
            try await Task.sleep(for: .milliseconds(100))
            let whilePaused = received.get
            try expect(whilePaused <= 16 * 1024, "\(whilePaused) bytes were read after pauseReading (one read is 16 KiB)")
            try expect(sender.get() == nil, "16 MiB went through a paused connection")
            resume.update { $0 = true }
            try await onThread("wake") { try wakeAndWait(handler.firstHandle) }
            try await eventually("all 16 MiB after resumeReading", timeout: .seconds(20)) { received.get == payload.count }
            for _ in 0..<500 where sender.get() == nil { try await Task.sleep(for: .milliseconds(2)) }
            try sender.get()?.get()
        }
        return nil
    }

    /// Writes from another thread to a peer that never reads: once they would queue more than
    /// `asyncWriteLimit`, one fails with `outboundLimitExceeded`, the connection is aborted
    /// (the peer sees a reset, not a clean end), and `onClose` says why.
    static func asyncWriteLimit(_ kind: PollerKind) async throws -> Trace? {
        let handler = ScriptedHandler()
        let limit = 1 << 20
        try await withEngine(kind, handler, configure: {
            $0.asyncWriteLimit = limit
            $0.socketSendBuffer = 32 * 1024
        }) { _, address in
            let client = try TestClient(address)
            client.setReceiveBuffer(32 * 1024)
            try await eventually("the connection") { handler.opened == 1 }
            let handle = try handler.firstHandle
            let outcome = try await onThread("writing past the limit") { () -> (ok: Int, error: String?) in
                var ok = 0
                for _ in 0..<400 {
                    let box = ResultBox<Void>()
                    handle.write([UInt8](repeating: 0x61, count: 16 * 1024)) { box.set($0) }
                    while box.get() == nil { usleep(100) }
                    switch box.get()! {
                    case .success: ok += 1
                    case .failure(let e): return (ok, "\(e)")
                    }
                }
                return (ok, nil)
            }
            try expect(outcome.error?.contains("asyncWriteLimit") == true, "expected outboundLimitExceeded after about \(limit) bytes; got \(outcome.error ?? "no error") after \(outcome.ok) writes")
            try await eventually("onClose") { handler.closes == 1 }
            try expect(handler.closeErrors[0]?.contains("asyncWriteLimit") == true, "onClose got \(handler.closeErrors[0] ?? "no error")")
            let end = try await onThread("reading") { try client.readToEnd() }
            try expect(end.end == .reset, "the peer saw a clean EOF after \(end.bytes.count) bytes of an abandoned stream")
        }
        return nil
    }

    /// Writing from inside a `write(reservingCapacity:)` closure is refused with a typed error,
    /// and the output stays exactly what was rendered.
    static func writeInsideRender(_ kind: PollerKind) async throws -> Trace? {
        let errors = Shared<[String]>([])
        let handler = ScriptedHandler(onTraffic: { c, _ in
            c.discard(c.inboundBuffered)
            do {
                try c.write(reservingCapacity: 8) { buf in
                    do { try c.write("BAD") } catch { errors.update { $0.append("\(error)") } }
                    do { try c.flush() } catch { errors.update { $0.append("\(error)") } }
                    for (i, b) in "rendered".utf8.enumerated() { buf[i] = b }
                    return 8
                }
                try c.write("!")
            } catch {
                return .close
            }
            return .none
        })
        try await withEngine(kind, handler) { _, address in
            let got = try await onThread("render") {
                let client = try TestClient(address)
                try client.send("x")
                return try client.receive(exactly: 9)
            }
            try expect(got == Array("rendered!".utf8), "output was \(String(decoding: got, as: UTF8.self))")
            try expect(errors.get.count == 2 && errors.get.allSatisfy { $0.contains("reservingCapacity") }, "expected two misuse errors, got \(errors.get)")
        }
        return nil
    }
}

extension ScriptedHandler {
    /// Bytes offered to `onTraffic` so far (each call counts what was buffered).
    public var trafficBytesSeen: Int { trace.events.reduce(0) { if case .traffic(_, let n) = $1 { return $0 + n } else { return $0 } } }

    /// The handle of the first connection opened.
    var firstHandle: ConnectionHandle {
        get throws {
            guard let h = handles.first else { throw ConformanceFailure("no connection was opened") }
            return h
        }
    }
}

/// Calls `onTraffic` through the handle and waits for the loop to have done it.
func wakeAndWait(_ handle: ConnectionHandle) throws {
    let box = ResultBox<Void>()
    handle.wake { box.set($0) }
    for _ in 0..<5000 where box.get() == nil { usleep(1000) }
    guard let r = box.get() else { throw ConformanceFailure("wake did not complete") }
    try r.get()
}
