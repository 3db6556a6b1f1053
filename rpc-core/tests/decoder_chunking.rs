//! The decoder gives the same frames however the stream is cut into reads.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::frame::{
    Cancel, ErrorFrame, Frame, FrameDecoder, GoAway, Hello, Limits, Ping, Request, Response, WIRE_VERSION,
};
use rpc_core::{Code, Payload, Status};

fn frames() -> Vec<Frame> {
    let att = |n: usize, b: u8| Payload::from(Bytes::from(vec![b; n]));
    vec![
        Frame::Request(Request { id: 1, method: 7, mode: Default::default(), await_commit: false, deadline: Some(Duration::from_millis(3)), metadata: Bytes::new(), message: Bytes::from_static(b"args"), attachments: vec![att(5000, 1), att(0, 2), att(70_000, 3)] }),
        Frame::Ping(Ping { id: 9, pong: false }),
        Frame::Response(Response { id: 1, message: Bytes::from(vec![4u8; 600]), attachments: vec![], meta: Default::default() }),
        Frame::Cancel(Cancel { id: 2 }),
        Frame::Error(ErrorFrame::new(3, Status { code: Code::APPLICATION, message: "x".into(), details: Bytes::from_static(b"e") })),
        Frame::GoAway(GoAway { last_id: 3, last_pieced: Some(2), code: Code::OK, message: "bye".into() }),
    ]
}

/// Received attachments have no empty segments; compare by content.
fn normalize(f: Frame) -> Frame {
    match f {
        Frame::Request(mut r) => {
            r.attachments = r.attachments.iter().map(|a| Payload::from(a.to_bytes())).collect();
            Frame::Request(r)
        }
        f => f,
    }
}

#[test]
fn any_split_of_the_stream_decodes_to_the_same_frames() {
    let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 20, max_calls_in_flight: 1, max_attachments: 8, max_metadata: 0, stream_window: 0 };
    let mut wire = hello.encode().to_vec();
    for f in frames() {
        wire.extend(f.encode().unwrap().to_vec());
    }
    let expected: Vec<Frame> = frames().into_iter().map(normalize).collect();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for round in 0..300 {
        let mut d = FrameDecoder::new(Limits { max_frame: 1 << 20, max_attachments: 8 });
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut hello_seen = false;
        let mut pos = 0;
        while pos < wire.len() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mostly small reads, sometimes large ones, one byte at a time in round 0.
            let max = if round == 0 { 1 } else if seed % 4 == 0 { 100_000 } else { 64 };
            let n = (1 + (seed >> 8) as usize % max).min(wire.len() - pos);
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            if !hello_seen {
                match d.decode_hello(&mut buf).unwrap() {
                    Some(h) => {
                        assert_eq!(h, hello);
                        hello_seen = true;
                    }
                    None => continue,
                }
            }
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert!(buf.is_empty(), "round {round}: {} bytes left over", buf.len());
        assert_eq!(got.len(), expected.len(), "round {round}");
        for (g, e) in got.into_iter().zip(&expected) {
            assert_eq!(&normalize(g), e, "round {round}");
        }
    }
}
