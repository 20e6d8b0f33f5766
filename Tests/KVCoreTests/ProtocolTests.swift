import GNetCodec
import KVCore
import Testing

/// Runs `chunks` through `codec` the way a connection does (input appended per read, each
/// complete frame parsed and consumed, a partial one left buffered) and returns the parsed
/// requests in order.
func decodeRequests(_ chunks: [[UInt8]], codec: LengthFieldBasedFrameCodec) throws -> [Result<KVRequest, KVProtocolError>] {
    var decoder = codec
    var buffered: [UInt8] = []
    var out: [Result<KVRequest, KVProtocolError>] = []
    for chunk in chunks {
        buffered += chunk
        while true {
            let step = try buffered.withUnsafeBytes { try decoder.decode($0.bytes) }
            guard case .frame(let range, let consume) = step else {
                if case .skip(let n) = step { buffered.removeFirst(n); continue }
                break
            }
            out.append(buffered.withUnsafeBytes { KVRequest.parse(UnsafeRawBufferPointer(rebasing: $0[range])) })
            buffered.removeFirst(consume)
        }
    }
    return out
}

/// `payload` framed: 4-byte big-endian length, then the payload.
func framed(_ payload: [UInt8]) -> [UInt8] {
    let n = UInt32(payload.count)
    return [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)] + payload
}

let sampleRequests: [KVRequest] = [
    .set(key: Array("greeting".utf8), value: Array("hello".utf8)),
    .get(key: Array("greeting".utf8)),
    .set(key: [0, 255, 10], value: []),  // binary key, empty value
    .delete(key: Array("greeting".utf8)),
    .save,
    .set(key: Array("k".utf8), value: (0..<300).map { UInt8(truncatingIfNeeded: $0) }),
]

@Suite("KV protocol: parser and encoder")
struct ProtocolTests {
    let codec = LengthFieldBasedFrameCodec(maxFrameLength: 1024)

    @Test("each request survives payload → parse unchanged", arguments: sampleRequests)
    func roundTrip(_ request: KVRequest) {
        let parsed = request.payload.withUnsafeBytes { KVRequest.parse($0) }
        #expect(parsed == .success(request))
    }

    @Test("the codec's encoder writes what the framing expects: length, then payload")
    func encoderMatchesFraming() throws {
        let payload = KVRequest.get(key: Array("abc".utf8)).payload
        var out = [UInt8](repeating: 0, count: try codec.encodedLength(payloadCount: payload.count))
        let n = try payload.withUnsafeBytes { p in try out.withUnsafeMutableBytes { try codec.encode(p, into: $0) } }
        #expect(Array(out[..<n]) == framed(payload))
        #expect(Array(out[..<n]) == [0, 0, 0, 4, 1, 97, 98, 99])
    }

    @Test("a pipelined stream split at every point decodes to the same requests")
    func everySplitPoint() throws {
        let stream = sampleRequests.flatMap { framed($0.payload) }
        let expected = sampleRequests.map { Result<KVRequest, KVProtocolError>.success($0) }
        for split in 0...stream.count {
            let got = try decodeRequests([Array(stream[..<split]), Array(stream[split...])], codec: codec)
            #expect(got == expected, "split at \(split)")
        }
        let oneByteAtATime = try decodeRequests(stream.map { [$0] }, codec: codec)
        #expect(oneByteAtATime == expected)
    }

    @Test("garbage inside a good frame is a typed error, and the frames after it still parse")
    func garbage() throws {
        let cases: [([UInt8], KVProtocolError)] = [
            ([], .emptyRequest),
            ([9, 1, 2], .unknownOpcode(9)),
            ([1], .missingKey(.get)),
            ([3], .missingKey(.delete)),
            ([2, 0], .truncated(.set)),
            ([2, 0, 0, 1], .missingKey(.set)),
            ([2, 0, 5, 97, 98], .truncated(.set)),
            ([4, 0], .unexpectedBytes(.save, 1)),
        ]
        for (payload, error) in cases {
            let got = try decodeRequests([framed(payload) + framed(KVRequest.save.payload)], codec: codec)
            #expect(got == [.failure(error), .success(.save)], "payload \(payload)")
        }
    }

    @Test("a frame longer than maxFrameLength is a CodecError before its bytes arrive")
    func overLong() throws {
        // Only the header: the decoder must refuse without waiting for (or buffering) 1 MiB.
        let header: [UInt8] = [0, 0x10, 0, 0]
        #expect(throws: CodecError.self) { try decodeRequests([header], codec: codec) }
        // At the bound exactly (header + payload = maxFrameLength) is fine.
        let payload = [UInt8(KVRequest.Opcode.get.rawValue)] + [UInt8](repeating: 7, count: 1024 - 5)
        #expect(try decodeRequests([framed(payload)], codec: codec).count == 1)
        #expect(throws: CodecError.self) { try decodeRequests([framed(payload + [7])], codec: codec) }
    }

    @Test("replies parse back from their payloads", arguments: [KVReply.ok([]), .ok([0, 1, 2]), .notFound, .error("no")])
    func replies(_ reply: KVReply) {
        #expect(KVReply(payload: reply.payload) == reply)
    }

    @Test("a reply payload with an unknown status or a body after not-found is refused")
    func badReplies() {
        #expect(KVReply(payload: []) == nil)
        #expect(KVReply(payload: [7]) == nil)
        #expect(KVReply(payload: [1, 0]) == nil)
    }
}
