/// The `Date` header's format, RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
///
/// Rendered by arithmetic alone (no time zone database, no locale, no allocation), so a
/// caller can refresh a pre-rendered header in place.
public enum HTTPDate {
    /// Every IMF-fixdate is this many bytes long.
    public static let length = 29

    /// Writes the date for `seconds` since 1970-01-01T00:00:00Z into the first `length` bytes
    /// of `out`, which must have room for them.
    public static func render(_ seconds: Int, into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= length, "HTTPDate.render needs \(length) bytes")
        let days = seconds.floorDivided(by: 86_400)
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        // 1970-01-01 was a Thursday (index 4, counting from Sunday).
        let weekday = (days + 4).floorModulo(7)

        var i = 0
        func put(_ b: UInt8) { out[i] = b; i += 1 }
        func put(_ names: StaticString, _ index: Int) {
            for k in 0..<3 { put(names.utf8Start[index * 3 + k]) }
        }
        func put2(_ v: Int) { put(digit(v / 10)); put(digit(v % 10)) }

        put(weekdayNames, weekday)
        put(0x2C); put(0x20)  // ", "
        put2(day); put(0x20)
        put(monthNames, month - 1); put(0x20)
        let y = min(max(year, 0), 9999)  // the format has four digits
        put2(y / 100); put2(y % 100); put(0x20)
        put2(secondOfDay / 3600); put(0x3A)
        put2(secondOfDay / 60 % 60); put(0x3A)
        put2(secondOfDay % 60)
        put(0x20); put(0x47); put(0x4D); put(0x54)  // " GMT"
    }

    /// The date as a `String`, for tests and logs (allocates).
    public static func string(_ seconds: Int) -> String {
        withUnsafeTemporaryAllocation(byteCount: length, alignment: 1) { buf in
            render(seconds, into: buf)
            return String(decoding: buf, as: UTF8.self)
        }
    }

    /// Year, month (1...12) and day (1...31) of a day counted from 1970-01-01, proleptic
    /// Gregorian. Howard Hinnant's `civil_from_days`: eras of 400 years starting in March.
    static func civilDate(daysSinceEpoch: Int) -> (year: Int, month: Int, day: Int) {
        let z = daysSinceEpoch + 719_468
        let era = z.floorDivided(by: 146_097)
        let dayOfEra = z - era * 146_097                                                  // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365  // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)    // 0...365, from March 1
        let mp = (5 * dayOfYear + 2) / 153                                                // 0...11, March = 0
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    private static let weekdayNames: StaticString = "SunMonTueWedThuFriSat"
    private static let monthNames: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"

    @inline(__always)
    private static func digit(_ v: Int) -> UInt8 { 0x30 + UInt8(truncatingIfNeeded: v) }
}

extension Int {
    /// Division rounding toward negative infinity, so dates before 1970 come out right.
    fileprivate func floorDivided(by d: Int) -> Int {
        let q = self / d
        return (self % d != 0 && (self < 0) != (d < 0)) ? q - 1 : q
    }

    fileprivate func floorModulo(_ d: Int) -> Int {
        self - floorDivided(by: d) * d
    }
}
