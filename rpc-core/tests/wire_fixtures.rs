//! Byte-exact fixtures: these bytes are `docs/wire.md`. A change here is a wire change and
//! needs a new version number (or, before any release, an amendment written down in
//! `docs/wire.md`, as streams were).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::frame::{
    caps, CallMode, Cancel, Commit, Credit, ErrorFrame, Frame, FrameDecoder, GoAway, Hello, Limits, MetadataBlocks, Ping,
    Request, Response, StreamBatch, StreamData, StreamEnd, StreamHeaders, MAGIC, WIRE_VERSION,
};
use rpc_core::{Code, DecodeError, Payload, Status};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&Hello { version: 1, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 }.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(bytes);
    let f = d.decode(&mut buf).unwrap().expect("complete frame");
    assert!(buf.is_empty(), "frame consumed exactly");
    f
}

#[test]
fn hello() {
    let h = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 0x0800_0000, max_calls_in_flight: 10_000, max_attachments: 1024, max_metadata: 0, stream_window: 0 };
    let expected = hex("5a435250 0100 0000 0000000000000000 00000008 10270000 00040000 00000000");
    assert_eq!(&h.encode()[..], &expected[..]);
    assert_eq!(Hello::decode(&expected).unwrap(), h);
    assert_eq!(&expected[..4], &MAGIC);
}

#[test]
fn hello_with_streams() {
    let h = Hello {
        version: WIRE_VERSION,
        capabilities: caps::STREAMS,
        max_frame: 0x0800_0000,
        max_calls_in_flight: 10_000,
        max_attachments: 1024,
        max_metadata: 16 << 10,
        stream_window: 4 << 20,
    };
    let expected = hex("5a435250 0100 1000 0100000000000000 00000008 10270000 00040000 00004000");
    assert_eq!(&h.encode()[..], &expected[..]);
    assert_eq!(Hello::decode(&expected).unwrap(), h);
}

#[test]
fn streaming_request_and_stream_frames() {
    let req = Request {
        id: 3,
        method: 1,
        mode: CallMode::BIDI, await_commit: false,
        metadata: Bytes::new(),
        deadline: None,
        message: Bytes::new(),
        attachments: vec![],
    };
    let expected = hex("01 03 0000 01000000 0300000000000000 0000000000000000 00000000 00000000 0000000000000000");
    assert_eq!(req.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Request(req));
    let server_only = hex("01 02 0000 01000000 0300000000000000 0000000000000000 00000000 00000000 0000000000000000");
    let Frame::Request(r) = decode_one(&server_only) else { panic!() };
    assert_eq!(r.mode, CallMode::SERVER_STREAMING);

    let d = StreamData { id: 3, message: Bytes::from_static(b"m"), attachments: vec![Payload::from(Bytes::from_static(b"ab"))], meta: Default::default() };
    // Header, table and message are 49 bytes: 15 zeros start the attachment at 64.
    let data = hex(&[
        "05 00 0100 00000000 0300000000000000 0000000000000000 01000000 00000000 0200000000000000 0200000000000000 6d",
        &"00".repeat(15),
        "6162",
    ].concat());
    assert_eq!(d.clone().encode().unwrap().to_vec(), data);
    assert_eq!(decode_one(&data), Frame::StreamData(d));

    // A batch (flag bit 7) of two messages, "m" and "ab", each behind its u32 length.
    let batch = StreamBatch { id: 3, messages: vec![Bytes::from_static(b"m"), Bytes::from_static(b"ab")].into() };
    let batched = hex("05 80 0000 00000000 0300000000000000 0000000000000000 0b000000 00000000 0000000000000000 01000000 6d 02000000 6162");
    assert_eq!(batch.clone().encode().unwrap().to_vec(), batched);
    assert_eq!(decode_one(&batched), Frame::StreamBatch(batch));

    let end = hex("06 00 0000 00000000 0300000000000000 0000000000000000 00000000 00000000 0000000000000000");
    assert_eq!(StreamEnd::new(3, Code::OK).encode().unwrap().to_vec(), end);
    assert_eq!(decode_one(&end), Frame::StreamEnd(StreamEnd::new(3, Code::OK)));

    let credit = hex("07 00 0000 00000000 0300000000000000 0000000000000000 08000000 00000000 0000000000000000 0000100000000000");
    assert_eq!(Credit { id: 3, bytes: 1 << 20 }.encode().unwrap().to_vec(), credit);
    assert_eq!(decode_one(&credit), Frame::Credit(Credit { id: 3, bytes: 1 << 20 }));
}

#[test]
fn request_with_metadata() {
    let metadata = rpc_core::Metadata::new().with("k", "v").encode();
    assert_eq!(metadata.to_vec(), hex("0100 0100 6b 01000000 76"));
    let req = Request { id: 1, method: 2, mode: CallMode::UNARY, await_commit: false, deadline: None, metadata, message: Bytes::from_static(b"m"), attachments: vec![] };
    let expected = hex(concat!(
        "01 04 0000 02000000 0100000000000000 0000000000000000 0f000000 00000000 0000000000000000",
        "0a000000 0100 0100 6b 01000000 76 6d",
    ));
    assert_eq!(req.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Request(req));
}

/// `k: v` and `t: 1`, each a 10-byte block.
fn blocks(headers: bool, trailers: bool) -> MetadataBlocks {
    let k = rpc_core::Metadata::new().with("k", "v").encode();
    let t = rpc_core::Metadata::new().with("t", "1").encode();
    assert_eq!(t.to_vec(), hex("0100 0100 74 01000000 31"));
    MetadataBlocks { headers: if headers { k } else { Bytes::new() }, trailers: if trailers { t } else { Bytes::new() } }
}

#[test]
fn response_with_headers_and_trailers() {
    // Flags 0x14: bit 2 (headers) and bit 4 (trailers); the message is the headers' length and
    // block, the trailers' length and block, then "ok": 30 bytes.
    let r = Response { id: 5, message: Bytes::from_static(b"ok"), attachments: vec![], meta: blocks(true, true) };
    let expected = hex(concat!(
        "02 14 0000 00000000 0500000000000000 0000000000000000 1e000000 00000000 0000000000000000",
        "0a000000 0100 0100 6b 01000000 76",
        "0a000000 0100 0100 74 01000000 31",
        "6f6b",
    ));
    assert_eq!(r.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Response(r));

    // With an attachment: the blocks are part of the message, so the padding counts them
    // (here 40 + 8 + 16 = 64: the attachment starts at 64 with no padding).
    let r = Response {
        id: 5,
        message: Bytes::from_static(b"ok"),
        attachments: vec![Payload::from(Bytes::from_static(b"ab"))],
        meta: blocks(true, false),
    };
    let expected = hex(concat!(
        "02 04 0100 00000000 0500000000000000 0000000000000000 10000000 00000000 0200000000000000 0200000000000000",
        "0a000000 0100 0100 6b 01000000 76 6f6b",
        "6162",
    ));
    assert_eq!(r.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Response(r));
}

#[test]
fn a_refusal_is_an_error_flagged_refused() {
    // A draining server's answer to a request after its goaway: the call never ran (bit 0).
    let e = ErrorFrame::refused(5, Status::new(Code::UNAVAILABLE, "no"));
    let expected = hex(concat!(
        "03 01 0000 00000000 0500000000000000 0000000000000000 02000000 0e000000 0000000000000000",
        "6e6f",
    ));
    assert_eq!(e.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Error(e));
}

#[test]
fn error_stream_data_and_stream_end_with_metadata() {
    // An error status with trailers: the text follows the block.
    let e = ErrorFrame { id: 3, status: Status::new(Code::INVALID_ARGUMENT, "no"), meta: blocks(false, true), refused: false };
    let expected = hex(concat!(
        "03 10 0000 00000000 0300000000000000 0000000000000000 10000000 03000000 0000000000000000",
        "0a000000 0100 0100 74 01000000 31 6e6f",
    ));
    assert_eq!(e.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Error(e));

    // The server's first stream message with the response headers.
    let d = StreamData { id: 3, message: Bytes::from_static(b"m"), attachments: vec![], meta: blocks(true, false) };
    let expected = hex(concat!(
        "05 04 0000 00000000 0300000000000000 0000000000000000 0f000000 00000000 0000000000000000",
        "0a000000 0100 0100 6b 01000000 76 6d",
    ));
    assert_eq!(d.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::StreamData(d));

    // The server's stream end with the trailers: its message is the block alone.
    let end = StreamEnd { id: 3, code: Code::OK, meta: blocks(false, true) };
    let expected = hex(concat!(
        "06 10 0000 00000000 0300000000000000 0000000000000000 0e000000 00000000 0000000000000000",
        "0a000000 0100 0100 74 01000000 31",
    ));
    assert_eq!(end.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::StreamEnd(end));
}

#[test]
fn headers_only_ahead_of_the_first_message() {
    // Stream data flagged 0x24: bit 5 (headers only) and bit 2 (the headers block); the message
    // is the block and nothing after it.
    let h = StreamHeaders { id: 3, headers: blocks(true, false).headers };
    let expected = hex(concat!(
        "05 24 0000 00000000 0300000000000000 0000000000000000 0e000000 00000000 0000000000000000",
        "0a000000 0100 0100 6b 01000000 76",
    ));
    assert_eq!(h.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::StreamHeaders(h));
    // Empty headers: the flag alone.
    let h = StreamHeaders { id: 3, headers: Bytes::new() };
    let expected = hex("05 20 0000 00000000 0300000000000000 0000000000000000 00000000 00000000 0000000000000000");
    assert_eq!(h.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::StreamHeaders(h));
    assert_eq!(caps::EARLY_HEADERS, 1 << 4);
}

#[test]
fn a_metadata_length_past_the_message_is_a_malformed_frame() {
    // Headers flag, a block length of 255 in a 6-byte message.
    let bad = hex("02 04 0000 00000000 0500000000000000 0000000000000000 06000000 00000000 0000000000000000 ff000000 6f6b");
    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&Hello { version: 1, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 }.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(&bad);
    let e = d.decode(&mut buf).unwrap_err();
    assert!(e.to_string().contains("headers block of 255 bytes in 2 bytes of message"), "{e}");
}

#[test]
fn request_with_deadline_message_and_two_attachments() {
    let req = Request {
        id: 0x0102,
        method: 0xdead_beef,
        mode: Default::default(), await_commit: false,
        metadata: Bytes::new(),
        deadline: Some(Duration::from_millis(1500)),
        message: Bytes::from_static(b"hi"),
        attachments: vec![
            [Bytes::from_static(b"ab"), Bytes::from_static(b"c")].into_iter().collect::<Payload>(),
            Payload::from(Bytes::from_static(b"xyz!")),
        ],
    };
    // Header, table, message: 58 bytes, then 6 zeros so that the payload starts at 64; "abc",
    // 61 zeros so that the second attachment starts at 128; "xyz!" (the last: no padding).
    // payload_len counts the padding between attachments: 64 + 4.
    let expected = hex(&[
        "01 00 0200 efbeadde 0201000000000000 60e3160000000000 02000000 00000000 4400000000000000",
        "0300000000000000 0400000000000000",
        "6869",
        &"00".repeat(6),
        "616263",
        &"00".repeat(61),
        "78797a21",
    ].concat());
    assert_eq!(expected.len(), 132);
    let t = req.clone().encode().unwrap();
    assert_eq!(t.to_vec(), expected);
    // The attachments' segments are sent as they are, after the head: not copied into it. The
    // padding after the short message is in the head; the padding between attachments is a
    // segment of its own.
    assert_eq!(t.segments.len(), 4);
    assert_eq!(t.head.len(), 64);
    let decoded = decode_one(&expected);
    let Frame::Request(got) = &decoded else { panic!("{decoded:?}") };
    for a in &got.attachments {
        assert_eq!(a.to_bytes().as_ptr() as usize % 64, 0, "attachment not 64-byte aligned");
    }
    assert_eq!(decoded, Frame::Request(Request {
        attachments: vec![Payload::from(Bytes::from_static(b"abc")), Payload::from(Bytes::from_static(b"xyz!"))],
        ..req
    }));
}

#[test]
fn request_with_a_long_message_pads_with_a_segment() {
    // A message over 512 bytes is a segment of its own; the padding after it is another.
    let req = Request {
        id: 1,
        method: 2,
        mode: CallMode::UNARY,
        await_commit: false,
        metadata: Bytes::new(),
        deadline: None,
        message: Bytes::from(vec![b'm'; 600]),
        attachments: vec![Payload::from(Bytes::from_static(b"z"))],
    };
    let t = req.clone().encode().unwrap();
    // 40 + 8 + 600 = 648: 56 zeros take the payload to 704 = 11 x 64.
    assert_eq!(t.head.len(), 48);
    assert_eq!(t.segments.iter().map(|s| s.len()).collect::<Vec<_>>(), vec![600, 56, 1]);
    let wire = t.to_vec();
    assert_eq!(wire.len(), 705);
    assert_eq!(&wire[32..40], &1u64.to_le_bytes(), "payload_len: one byte, no padding after the last");
    assert!(wire[648..704].iter().all(|&b| b == 0));
    assert_eq!(decode_one(&wire), Frame::Request(req));
}

#[test]
fn frames_without_attachments_are_not_padded() {
    // The 64-byte unary call: header and a 24-byte message, nothing more.
    let req = Request { id: 1, method: 2, mode: Default::default(), await_commit: false, deadline: None, metadata: Bytes::new(), message: Bytes::from(vec![7u8; 24]), attachments: vec![] };
    let t = req.encode().unwrap();
    assert_eq!(t.len(), 64);
    assert!(t.segments.is_empty());
    // An empty attachment is still an attachment: the payload (empty) starts at 64.
    let req = Request { id: 1, method: 2, mode: Default::default(), await_commit: false, deadline: None, metadata: Bytes::new(), message: Bytes::new(), attachments: vec![Payload::new()] };
    let wire = req.clone().encode().unwrap().to_vec();
    assert_eq!(wire.len(), 64);
    assert_eq!(decode_one(&wire), Frame::Request(req));
}

#[test]
fn response() {
    let r = Response { id: 5, message: Bytes::from_static(b"ok"), attachments: vec![], meta: Default::default() };
    let expected = hex("02 00 0000 00000000 0500000000000000 0000000000000000 02000000 00000000 0000000000000000 6f6b");
    assert_eq!(r.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Response(r));
}

#[test]
fn error_with_details() {
    let e = ErrorFrame::new(3, Status { code: Code::APPLICATION, message: "no".into(), details: Bytes::from_static(b"\x01") });
    // 50 bytes of header, table and text, 14 zeros, then the details at 64.
    let expected = hex(&[
        "03 00 0100 00000000 0300000000000000 0000000000000000 02000000 64000000 0100000000000000 0100000000000000 6e6f",
        &"00".repeat(14),
        "01",
    ].concat());
    assert_eq!(e.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Error(e));
}

#[test]
fn control_frames() {
    let cancel = hex("04 00 0000 00000000 0900000000000000 0000000000000000 00000000 00000000 0000000000000000");
    assert_eq!(Cancel { id: 9 }.encode().unwrap().to_vec(), cancel);
    assert_eq!(decode_one(&cancel), Frame::Cancel(Cancel { id: 9 }));

    let pong = hex("09 00 0000 00000000 0700000000000000 0000000000000000 00000000 00000000 0000000000000000");
    assert_eq!(Ping { id: 7, pong: true }.encode().unwrap().to_vec(), pong);
    assert_eq!(decode_one(&pong), Frame::Ping(Ping { id: 7, pong: true }));

    let commit = hex("0b 00 0000 00000000 0500000000000000 0000000000000000 00000000 00000000 0000000000000000");
    assert_eq!(Commit { id: 5 }.encode().unwrap().to_vec(), commit);
    assert_eq!(decode_one(&commit), Frame::Commit(Commit { id: 5 }));

    // A goaway that does not say which pieced requests arrived (as before the amendment)...
    let g = GoAway { last_id: 4, last_pieced: None, code: Code::OK, message: "bye".into() };
    let goaway = hex("0a 00 0000 00000000 0400000000000000 0000000000000000 03000000 00000000 0000000000000000 627965");
    assert_eq!(g.clone().encode().unwrap().to_vec(), goaway);
    assert_eq!(decode_one(&goaway), Frame::GoAway(g));
    // ...and one that does: flag bit 0, the highest pieced request's id where a request's
    // deadline goes (2 here; 0 would say none came in pieces).
    assert_eq!(rpc_core::frame::FLAG_LAST_PIECED, 1);
    let g = GoAway { last_id: 4, last_pieced: Some(2), code: Code::OK, message: "bye".into() };
    let goaway = hex("0a 01 0000 00000000 0400000000000000 0200000000000000 03000000 00000000 0000000000000000 627965");
    assert_eq!(g.clone().encode().unwrap().to_vec(), goaway);
    assert_eq!(decode_one(&goaway), Frame::GoAway(g));
}

#[test]
fn version_mismatch_names_both_versions() {
    let mut bytes = hex("5a435250 0200 0000 0000000000000000 00000008 10270000 00040000 00000000");
    let err = Hello::decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::VersionMismatch { peer: 2, ours: 1 });
    assert_eq!(err.to_string(), "wire version mismatch: peer speaks version 2, we speak version 1");
    bytes[0] = b'G';
    assert!(matches!(Hello::decode(&bytes), Err(DecodeError::BadMagic { .. })));
}

#[test]
fn pieces_and_their_markers() {
    use rpc_core::frame::{Marker, FLAG_PIECED, MARKER_LEN};
    assert_eq!(caps::PIECES, 1 << 5);
    assert_eq!(FLAG_PIECED, 1 << 6);
    assert_eq!(MARKER_LEN, 8);
    assert_eq!(&Marker::Data(0x0010_0000).encode()[..], &hex("00001000 00 000000")[..]);
    assert_eq!(&Marker::Abort.encode()[..], &hex("00000000 01 000000")[..]);
    assert_eq!(Marker::decode(&hex("09000000 00 000000")).unwrap(), Marker::Data(9));

    // A request with the message "abcdefghij", flagged await-commit and in pieces (0x48), in
    // one piece of 10 bytes (a piece is at least 8 bytes, so 10 cannot be split).
    let pieced = hex(&[
        "01 48 0000 01000000 0500000000000000 0000000000000000 0a000000 00000000 0000000000000000",
        "0a000000 00 000000",
        "6162636465666768696a",
    ].concat());
    let Frame::Request(r) = decode_one(&pieced) else { panic!("a request") };
    assert_eq!((r.id, &r.message[..], r.await_commit), (5, &b"abcdefghij"[..], true));
    // The same request in two pieces is a protocol error: a piece of 2 bytes is too short.
    let short = hex(&[
        "01 48 0000 01000000 0500000000000000 0000000000000000 0a000000 00000000 0000000000000000",
        "08000000 00 000000 6162636465666768",
        "02000000 00 000000 696a",
    ].concat());
    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&Hello { version: 1, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 }.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(&short);
    // Found at the first marker already: its piece of 8 leaves 2 bytes, too few for a piece.
    let e = d.decode(&mut buf).expect_err("a 2-byte piece").to_string();
    assert!(e.contains("a data piece of 8 bytes leaves 2 of the frame (at least 8)"), "{e}");
}

#[test]
fn pieced_answers() {
    use rpc_core::frame::FLAG_PIECED;
    assert_eq!(caps::PIECED_ANSWERS, 1 << 6);
    // A response to call 5 with the message "abcdefghij", in pieces (0x40): one of 10 bytes.
    let pieced = hex(&[
        "02 40 0000 00000000 0500000000000000 0000000000000000 0a000000 00000000 0000000000000000",
        "0a000000 00 000000",
        "6162636465666768696a",
    ].concat());
    let r = Response { id: 5, message: Bytes::from_static(b"abcdefghij"), attachments: vec![], meta: Default::default() };
    assert_eq!(decode_one(&pieced), Frame::Response(r));
    // Ended part-way by an abort marker: dropped, and the ping after it is the next frame.
    let mut aborted = hex("02 40 0000 00000000 0500000000000000 0000000000000000 10000000 00000000 0000000000000000");
    aborted.extend_from_slice(&hex("08000000 00 000000 6162636465666768 00000000 01 000000"));
    let ping = Frame::Ping(Ping { id: 1, pong: false });
    aborted.extend_from_slice(&ping.clone().encode().unwrap().to_vec());
    assert_eq!(decode_one(&aborted), ping);
    // The flag on a kind that is never pieced (a cancel) means nothing: the frame is whole.
    assert_eq!(FLAG_PIECED, 0x40);
    let cancel = hex("04 40 0000 00000000 0500000000000000 0000000000000000 00000000 00000000 0000000000000000");
    assert_eq!(decode_one(&cancel), Frame::Cancel(Cancel { id: 5 }));
}

#[test]
fn frames_between_pieces() {
    use rpc_core::frame::{Marker, MAX_BETWEEN};
    assert_eq!(caps::FRAMES_BETWEEN_PIECES, 1 << 7);
    assert_eq!(MAX_BETWEEN, 128 << 10);
    assert_eq!(&Marker::Frames(80).encode()[..], &hex("50000000 02 000000")[..]);
    // A request with a message of 96 bytes ("abcdefgh", then 88 "x"), flagged await-commit and
    // in pieces (0x48), in pieces of 8 and 88 bytes, with a ping (id 1) and a cancel (id 9), 80
    // bytes, between them: no more than the 88 the body still has to bring.
    let xs = "78".repeat(88);
    let wire = hex(&[
        "01 48 0000 01000000 0500000000000000 0000000000000000 60000000 00000000 0000000000000000",
        "08000000 00 000000 6162636465666768",
        "50000000 02 000000",
        "08 00 0000 00000000 0100000000000000 0000000000000000 00000000 00000000 0000000000000000",
        "04 00 0000 00000000 0900000000000000 0000000000000000 00000000 00000000 0000000000000000",
        "58000000 00 000000",
        &xs,
    ].concat());
    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&Hello { version: 1, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 }.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(&wire);
    let frames: Vec<Frame> = std::iter::from_fn(|| d.decode(&mut buf).unwrap()).collect();
    assert!(buf.is_empty(), "all consumed");
    let [Frame::Ping(ping), Frame::Cancel(cancel), Frame::Request(r)] = &frames[..] else { panic!("{frames:?}") };
    assert_eq!((ping.id, cancel.id), (1, 9));
    assert_eq!((r.id, &r.message[..8], &r.message[8..], r.await_commit), (5, &b"abcdefgh"[..], &[b'x'; 88][..], true));
    assert_eq!(d.frames_between_pieces(), 2);
}
