//! Arbitrary bytes after a valid hello, cut into arbitrary reads: the decoder returns frames
//! or an error, never panics, and never asks for more than the limits allow; every attachment
//! it hands out is 64-byte aligned; a stream batch that decodes is never empty.
//!
//! Then a frame with attachments built from the input, with one byte changed: a change inside
//! the padding (`docs/wire.md`, "Padding") is always an error, and an unchanged frame decodes
//! to itself, aligned.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_core::frame::{Frame, FrameDecoder, Hello, Limits, Request, HEADER_LEN, WIRE_VERSION};
use rpc_core::Payload;

const LIMITS: Limits = Limits { max_frame: 1 << 16, max_attachments: 8 };

fn decoder() -> (FrameDecoder, BytesMut) {
    let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 };
    let mut d = FrameDecoder::new(LIMITS);
    let mut buf = BytesMut::from(&hello.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    (d, buf)
}

fn assert_aligned(f: &Frame) {
    let attachments: &[Payload] = match f {
        Frame::Request(r) => &r.attachments,
        Frame::Response(r) => &r.attachments,
        Frame::Error(e) => {
            assert!(e.status.details.is_empty() || e.status.details.as_ptr() as usize % 64 == 0);
            &[]
        }
        // A batch (stream data flagged batch) that decodes has messages that filled it.
        Frame::StreamBatch(b) => {
            assert!(!b.messages.is_empty());
            &[]
        }
        _ => &[],
    };
    for a in attachments {
        assert_eq!(a.to_bytes().as_ptr() as usize % 64, 0, "attachment of {} bytes not aligned", a.len());
    }
}

fn arbitrary_stream(cut: u8, rest: &[u8]) {
    let (mut d, mut buf) = decoder();
    let step = usize::from(cut).max(1);
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => assert_aligned(&f),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // A pending frame never needs more than the limits allow: header, table, message and
        // attachments, and at most 63 bytes of padding before each attachment.
        let n = LIMITS.max_attachments as usize;
        let bound = HEADER_LEN + 8 * n + LIMITS.max_frame as usize + 63 * n;
        assert!(d.bytes_needed() <= bound);
    }
}

/// A request whose attachment sizes and message length come from `data`, encoded, with the
/// byte at a chosen offset xored with a chosen value.
fn mutated_round_trip(data: &[u8]) {
    let [n, msg, at_lo, at_hi, xor, sizes @ ..] = data else { return };
    let n = usize::from(*n % 8);
    if sizes.len() < n {
        return;
    }
    let attachments: Vec<Payload> = sizes[..n]
        .iter()
        .enumerate()
        .map(|(i, &s)| Payload::from(vec![i as u8 | 0x80; usize::from(s) * 3]))
        .collect();
    let req = Request { id: 1, method: 2, mode: Default::default(), await_commit: false, deadline: None, metadata: Bytes::new(), message: Bytes::from(vec![b'm'; usize::from(*msg)]), attachments };
    let mut wire = Frame::Request(req.clone()).encode().unwrap().to_vec();
    // Where the padding is, computed here from the rule rather than taken from the encoder.
    let mut padding = Vec::new();
    if n > 0 {
        let mut at = HEADER_LEN + 8 * n + usize::from(*msg);
        let start = at.next_multiple_of(64);
        padding.push(at..start);
        at = start;
        for (i, a) in req.attachments.iter().enumerate() {
            at += a.len();
            if i + 1 < n {
                padding.push(at..at.next_multiple_of(64));
                at = at.next_multiple_of(64);
            }
        }
        assert_eq!(at, wire.len(), "the frame's length follows from the rule");
    } else {
        assert_eq!(wire.len(), HEADER_LEN + usize::from(*msg), "no padding without attachments");
    }
    let at = usize::from(u16::from_le_bytes([*at_lo, *at_hi])) % wire.len();
    wire[at] ^= xor;
    let (mut d, mut buf) = decoder();
    buf.extend_from_slice(&wire);
    let got = d.decode(&mut buf);
    if *xor == 0 {
        let f = got.expect("an unchanged frame decodes").expect("whole");
        assert_aligned(&f);
        assert_eq!(f, Frame::Request(req));
    } else if padding.iter().any(|p| p.contains(&at)) {
        assert!(got.is_err(), "a non-zero padding byte at {at} was accepted");
    } else if let Ok(Some(f)) = got {
        assert_aligned(&f);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    arbitrary_stream(cut, rest);
    mutated_round_trip(rest);
});
