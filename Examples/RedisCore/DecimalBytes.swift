/// Decimal integers on raw bytes, with Redis's strictness: what `parse` accepts is exactly what
/// `format` prints, so "12", "-3" and "0" are integers and "+1", " 1", "01", "-0" and "" are not.
public enum DecimalBytes {
    /// The 64-bit signed integer spelled by `bytes`, or nil when it is not one (or overflows).
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        let n = bytes.count
        guard n > 0, n <= 20 else { return nil }
        if n == 1 && bytes[0] == UInt8(ascii: "0") { return 0 }
        var i = 0
        let negative = bytes[0] == UInt8(ascii: "-")
        if negative { i = 1 }
        // The first digit must be 1...9: no leading zeros, no "-0", no empty digits.
        guard i < n, bytes[i] >= UInt8(ascii: "1"), bytes[i] <= UInt8(ascii: "9") else { return nil }
        // Accumulate as a magnitude in UInt64, so Int64.min parses too.
        var magnitude: UInt64 = 0
        while i < n {
            let d = bytes[i] &- UInt8(ascii: "0")
            guard d <= 9 else { return nil }
            let (times10, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(d))
            guard !o1, !o2 else { return nil }
            magnitude = sum
            i += 1
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }

    /// Parses an array of bytes (see `parse(_:)` on a buffer).
    public static func parse(_ bytes: [UInt8]) -> Int64? {
        bytes.withUnsafeBytes { parse($0) }
    }

    /// Appends the decimal spelling of `value` to `out`, without going through `String`.
    public static func append(_ value: Int64, to out: inout [UInt8]) {
        // 20 digits and a sign fit Int64.min.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var magnitude = value.magnitude
            var i = 20
            repeat {
                i -= 1
                digits[i] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 { out.append(UInt8(ascii: "-")) }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: digits[i..<20]))
        }
    }

    /// The decimal spelling of `value` as bytes.
    public static func bytes(_ value: Int64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(20)
        append(value, to: &out)
        return out
    }
}
