/// A key of the store: any bytes. Keys of up to 24 bytes (most, and every key redis-benchmark
/// uses) live inline in three words, so building one to look a key up allocates nothing;
/// longer keys also keep all their bytes in an array.
///
/// ```
///  words.0   words.1   words.2    count   spill
/// |k e y : 0 0 0 0|0 0 0 0 1 2 3 4|0 ... 0|  16  |  nil          ← 16-byte key
/// | first 24 bytes, zero-padded           |  40  | [40 bytes]    ← 40-byte key
/// ```
/// The first 24 bytes are always in `words` (zero-padded), so equality and hashing look at the
/// words and the count first, and at `spill` only for long keys.
public struct Key: Hashable, Sendable, CustomStringConvertible {
    static let inlineCapacity = 24

    private var words: (UInt64, UInt64, UInt64) = (0, 0, 0)
    public let count: Int
    private let spill: [UInt8]?

    /// A key with a copy of `bytes`.
    public init(_ bytes: UnsafeRawBufferPointer) {
        count = bytes.count
        let head = min(count, Key.inlineCapacity)
        if head > 0 {
            withUnsafeMutableBytes(of: &words) {
                $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[..<head]))
            }
        }
        spill = count > Key.inlineCapacity ? Array(bytes) : nil
    }

    public init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { Key($0) }
    }

    public init(_ string: String) {
        self.init(Array(string.utf8))
    }

    /// Lends the key's bytes.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if let spill { return try spill.withUnsafeBytes(body) }
        return try withUnsafeBytes(of: words) { try body(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
    }

    public var bytes: [UInt8] { withBytes { Array($0) } }

    public var description: String { withBytes { String(decoding: $0, as: UTF8.self) } }

    /// A cheap, well-mixed number for picking a shard (the dictionary hashes on its own).
    var shardHash: UInt64 {
        var x = words.0 ^ (words.1 &* 0x9E37_79B9_7F4A_7C15) ^ (words.2 &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(count)
        x ^= x >> 33
        x = x &* 0xFF51_AFD7_ED55_8CCD
        x ^= x >> 33
        return x
    }

    public static func == (a: Key, b: Key) -> Bool {
        guard a.count == b.count, a.words.0 == b.words.0, a.words.1 == b.words.1, a.words.2 == b.words.2 else {
            return false
        }
        return a.spill == b.spill
    }

    public func hash(into hasher: inout Hasher) {
        // One call for the inline part: the three words and the count, 32 contiguous bytes.
        let head = (words.0, words.1, words.2, UInt64(count))
        withUnsafeBytes(of: head) { hasher.combine(bytes: $0) }
        if let spill {
            spill.withUnsafeBytes { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0[Key.inlineCapacity...])) }
        }
    }
}
