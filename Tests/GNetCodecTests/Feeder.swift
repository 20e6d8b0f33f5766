import GNetCodec

/// Drives a decoder over input arriving in chunks, as a connection would, without an engine:
/// after each chunk it decodes until the decoder needs more, collecting frames and checking
/// the decoder's answers against the buffered bytes.
struct Feeder<D: FrameDecoder> {
    var decoder: D
    /// Bytes received and not yet consumed.
    var buffered: [UInt8] = []
    var frames: [[UInt8]] = []
    /// The most ever buffered after decoding (what a connection would have to hold).
    var peakBuffered = 0

    init(_ decoder: D) { self.decoder = decoder }

    /// Appends `chunk` and decodes every complete frame. Rethrows the decoder's error.
    mutating func feed(_ chunk: some Sequence<UInt8>) throws {
        buffered.append(contentsOf: chunk)
        while true {
            let step = try buffered.withUnsafeBytes { try decoder.decode($0.bytes) }
            switch step {
            case .needMore(let atLeast):
                precondition(atLeast > buffered.count, "needMore(atLeast: \(atLeast)) with \(buffered.count) buffered")
                peakBuffered = max(peakBuffered, buffered.count)
                return
            case .skip(let n):
                precondition(n > 0 && n <= buffered.count)
                buffered.removeFirst(n)
            case .frame(let range, let consume):
                precondition(consume > 0 && range.upperBound <= consume && consume <= buffered.count)
                frames.append(Array(buffered[range]))
                buffered.removeFirst(consume)
            }
        }
    }

    /// Feeds `bytes` in pieces of the given sizes (cycled), then what is left.
    mutating func feed(_ bytes: [UInt8], pieces: [Int]) throws {
        var at = 0
        var i = 0
        while at < bytes.count {
            let n = min(max(1, pieces[i % pieces.count]), bytes.count - at)
            try feed(bytes[at ..< at + n])
            at += n
            i += 1
        }
    }
}

/// A reproducible generator (xorshift) for sizes and split points.
struct Random {
    var x: UInt64
    init(seed: UInt64) { x = seed | 1 }
    mutating func next(_ range: ClosedRange<Int>) -> Int {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        return range.lowerBound + Int(x % UInt64(range.count))
    }
}

/// Frame `payload` with `encoder` into bytes.
func encoded(_ payload: [UInt8], _ encoder: some FrameEncoder) throws -> [UInt8] {
    let n = try encoder.encodedLength(payloadCount: payload.count)
    var out = [UInt8](repeating: 0, count: n)
    let wrote = try out.withUnsafeMutableBytes { o in try payload.withUnsafeBytes { try encoder.encode($0, into: o) } }
    precondition(wrote == n)
    return out
}
