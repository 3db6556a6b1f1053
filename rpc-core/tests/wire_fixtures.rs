//! Byte-exact fixtures: these bytes are `docs/wire.md`. A change here is a wire change and
//! needs a new version number.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::frame::{
    Cancel, ErrorFrame, Frame, FrameDecoder, GoAway, Hello, Limits, Ping, Request, Response, MAGIC, WIRE_VERSION,
};
use rpc_core::{Code, DecodeError, Payload, Status};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&Hello { version: 1, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1 }.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(bytes);
    let f = d.decode(&mut buf).unwrap().expect("complete frame");
    assert!(buf.is_empty(), "frame consumed exactly");
    f
}

#[test]
fn hello() {
    let h = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 0x0800_0000, max_calls_in_flight: 10_000, max_attachments: 1024 };
    let expected = hex("5a435250 0100 0000 0000000000000000 00000008 10270000 00040000 00000000");
    assert_eq!(&h.encode()[..], &expected[..]);
    assert_eq!(Hello::decode(&expected).unwrap(), h);
    assert_eq!(&expected[..4], &MAGIC);
}

#[test]
fn request_with_deadline_message_and_two_attachments() {
    let req = Request {
        id: 0x0102,
        method: 0xdead_beef,
        deadline: Some(Duration::from_millis(1500)),
        message: Bytes::from_static(b"hi"),
        attachments: vec![
            [Bytes::from_static(b"ab"), Bytes::from_static(b"c")].into_iter().collect::<Payload>(),
            Payload::from(Bytes::from_static(b"xyz!")),
        ],
    };
    let expected = hex(concat!(
        "01 00 0200 efbeadde 0201000000000000 60e3160000000000 02000000 00000000 0700000000000000",
        "0300000000000000 0400000000000000",
        "6869",
        "616263 78797a21",
    ));
    let t = req.clone().encode().unwrap();
    assert_eq!(t.to_vec(), expected);
    // The attachments' segments are sent as they are, after the head: not copied into it.
    assert_eq!(t.segments.len(), 3);
    assert_eq!(decode_one(&expected), Frame::Request(Request {
        attachments: vec![Payload::from(Bytes::from_static(b"abc")), Payload::from(Bytes::from_static(b"xyz!"))],
        ..req
    }));
}

#[test]
fn response() {
    let r = Response { id: 5, message: Bytes::from_static(b"ok"), attachments: vec![] };
    let expected = hex("02 00 0000 00000000 0500000000000000 0000000000000000 02000000 00000000 0000000000000000 6f6b");
    assert_eq!(r.clone().encode().unwrap().to_vec(), expected);
    assert_eq!(decode_one(&expected), Frame::Response(r));
}

#[test]
fn error_with_details() {
    let e = ErrorFrame { id: 3, status: Status { code: Code::APPLICATION, message: "no".into(), details: Bytes::from_static(b"\x01") } };
    let expected = hex("03 00 0100 00000000 0300000000000000 0000000000000000 02000000 64000000 0100000000000000 0100000000000000 6e6f 01");
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

    let g = GoAway { last_id: 4, code: Code::OK, message: "bye".into() };
    let goaway = hex("0a 00 0000 00000000 0400000000000000 0000000000000000 03000000 00000000 0000000000000000 627965");
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
