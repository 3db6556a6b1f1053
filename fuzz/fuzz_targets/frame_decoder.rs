//! Arbitrary bytes after a valid hello, cut into arbitrary reads: the decoder returns frames
//! or an error, never panics, and never asks for more than the limits allow; every attachment
//! it hands out is 64-byte aligned; a stream batch that decodes is never empty.
//!
//! Then a frame with attachments built from the input, with one byte changed: a change inside
//! the padding (`docs/wire.md`, "Padding") is always an error, and an unchanged frame decodes
//! to itself, aligned.
//!
//! Then a request cut into pieces (`docs/wire.md`, "Pieces"; `shared/pieces.rs`) of
//! input-chosen lengths, perhaps with runs of pings, cancels and small requests of other calls
//! between its pieces (frames markers), perhaps breaking a rule of those on purpose, perhaps
//! ended by an abort marker, perhaps with one byte changed, and an ordinary request after it,
//! fed in input-chosen reads (perhaps bounded by `piece_room` as the driver bounds them,
//! perhaps as a transport's chunks whose rest the driver appends to its buffer, from which
//! alone a pieced frame is decoded): unchanged, the frames between its pieces come out first,
//! in order, then exactly the frame its whole encoding decodes to (attachments aligned), or,
//! aborted, nothing, counted in `aborted_frames`; the request after it decodes intact either
//! way; bounded reads end at every marker's start and end and at every run's end. Frames of
//! fewer than a header's bytes or more than `MAX_BETWEEN`, or more than the body still to come,
//! a run ending inside a frame and a pieced frame in a run are each a `piece marker` error
//! naming the rule, after the frames between pieces before them, from the read that completes
//! that marker or run. A changed body byte, or a header field the pieces do not depend on,
//! gives what the whole frame with that byte changed gives; a changed byte of a frame between
//! pieces (not one of its lengths) gives what that frame gives alone, in its place; a changed
//! marker kind, a reserved marker byte not zero, an abort with a length, a data length under
//! `MIN_PIECE`, past the body or leaving 1 to 7 bytes of it, or a frames length out of bounds,
//! is a `piece marker` error naming that rule, as above; any other change may give anything but
//! a panic, and `bytes_needed` stays within the limits.
#![no_main]

#[path = "shared/pieces.rs"]
mod pieces;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pieces::{Expect, Input, Then};
use rpc_core::frame::{Frame, FrameDecoder, Hello, InputBuf, Limits, Request, HEADER_LEN, WIRE_VERSION};
use rpc_core::{DecodeError, Payload};

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
        assert!(d.bytes_needed() <= bound());
    }
}

/// A pending frame never needs more than the limits allow: header, table, message and
/// attachments, and at most 63 bytes of padding before each attachment.
fn bound() -> usize {
    let n = LIMITS.max_attachments as usize;
    HEADER_LEN + 8 * n + LIMITS.max_frame as usize + 63 * n
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

/// What a decoder made of a stream: its frames in order, then the error that ended it, if one
/// did; the aborted frames it counted and the bytes it left.
#[derive(Debug)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    /// Where the read after which the error came began and ended in the stream.
    error_read: (usize, usize),
    aborted: u64,
    left: usize,
}

/// Feeds `wire` to a decoder past its hello in reads of the sizes `sizes` gives in turn (0:
/// the rest), each bounded by `piece_room` when `bounded`, as the driver bounds its reads. With
/// `chunks`, a read into an empty buffer comes as a transport's chunk (`Bytes`, as from the
/// io_uring ring): frames are decoded from it first, and its rest is appended to the buffer,
/// as the driver does. A read bounded by `piece_room` crosses none of `boundaries`;
/// `bytes_needed` is always within the limits, and one of `needed` when that is given.
fn feed(wire: &[u8], sizes: &[u8], bounded: bool, chunks: bool, boundaries: &[usize], needed: &[usize]) -> Outcome {
    let (mut d, mut buf) = decoder();
    let mut frames = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < wire.len() {
        let want = match sizes.get(i % sizes.len().max(1)) {
            Some(&0) | None => wire.len() - at,
            Some(&b) => usize::from(b),
        };
        i += 1;
        let room = if bounded { d.piece_room(buf.len()) } else { None };
        let n = want.min(room.unwrap_or(usize::MAX)).min(wire.len() - at);
        if room.is_some() {
            assert!(n > 0, "no room for a read");
            if let Some(b) = boundaries.iter().find(|&&b| at < b && b < at + n) {
                panic!("a read of {n} bytes at {at}, bounded by piece_room {room:?}, crosses the piece boundary at {b}");
            }
        }
        let read = &wire[at..at + n];
        at += n;
        if chunks && buf.is_empty() {
            let mut chunk = Bytes::copy_from_slice(read);
            if let Err(e) = drain(&mut d, &mut chunk, &mut frames) {
                return Outcome { frames, error: Some(e), error_read: (at - n, at), aborted: d.aborted_frames(), left: chunk.len() };
            }
            buf.extend_from_slice(&chunk);
        } else {
            buf.extend_from_slice(read);
        }
        if let Err(e) = drain(&mut d, &mut buf, &mut frames) {
            return Outcome { frames, error: Some(e), error_read: (at - n, at), aborted: d.aborted_frames(), left: buf.len() };
        }
        assert!(d.bytes_needed() <= bound());
        assert!(needed.is_empty() || needed.contains(&d.bytes_needed()), "bytes_needed {} not among {needed:?}", d.bytes_needed());
    }
    Outcome { frames, error: None, error_read: (0, 0), aborted: d.aborted_frames(), left: buf.len() }
}

/// A pieced request built from `data` (`shared/pieces.rs`), perhaps with frames of other calls
/// between its pieces, perhaps breaking a rule of those, perhaps aborted, perhaps with a byte
/// changed, then an ordinary request, checked against what the rules say.
fn pieced(data: &[u8]) {
    let mut input = Input(data);
    let mut p = pieces::build(&mut input, 1);
    let how = input.byte();
    let (lo, hi, xor) = (input.byte(), input.byte(), input.byte());
    let expect = if how & 1 != 0 && xor != 0 { p.mutate(usize::from(u16::from_le_bytes([lo, hi])), xor) } else { p.unchanged() };
    let next = Request {
        id: 2,
        method: 9,
        mode: Default::default(),
        await_commit: false,
        deadline: None,
        metadata: Bytes::new(),
        message: Bytes::from_static(b"next"),
        attachments: vec![Payload::from(Bytes::from_static(b"abc")), Payload::from(Bytes::from_static(b"de"))],
    };
    let next_wire = Frame::Request(next.clone()).encode().unwrap().to_vec();
    let stream = [&p.wire[..], &next_wire].concat();
    // The pieces and runs line up with what the header and markers announce, up to the first
    // bytes the rules refuse: bounded reads stop at each marker and at each run's end, and the
    // frame needs what its whole encoding is long.
    let (boundaries, needed) = match expect {
        Expect::Decodes { .. } => (p.boundaries(), vec![HEADER_LEN, p.whole.len(), next_wire.len()]),
        Expect::Anything => (Vec::new(), Vec::new()),
    };
    let got = feed(&stream, input.0, how & 2 != 0, how & 4 != 0, &boundaries, &needed);
    let Expect::Decodes { between, then } = expect else { return };
    // Frames between pieces come out first, before the pieced frame or the error that ends it.
    let n = between.len();
    assert!(got.frames.len() >= n && got.frames[..n] == between[..], "frames between pieces: expected {between:?}, got {got:?}");
    let after = &got.frames[n..];
    let ended_at = |end: usize| {
        let (from, to) = got.error_read;
        assert!(from < end && end <= to, "the error came after the read of {from}..{to}, not the one bringing the bytes up to {end}");
    };
    match then {
        Then::AsWhole(w) if w == p.whole => {
            assert_eq!(got.error, None);
            let whole = feed(&[&p.whole[..], &next_wire].concat(), &[0], false, false, &[], &[]);
            assert_eq!(whole.error, None);
            assert_eq!(whole.frames, [Frame::Request(p.req.clone()), Frame::Request(next.clone())], "the whole encoding decodes to itself");
            assert_eq!(after, whole.frames, "a pieced frame decodes as its whole encoding does, after the frames between its pieces");
            assert_eq!(got.aborted, 0);
            assert_eq!(got.left, 0);
        }
        Then::AsWhole(w) => {
            let whole = feed(&[&w[..], &next_wire].concat(), &[0], false, false, &[], &[]);
            assert_eq!(after, whole.frames, "a changed body byte: as in the whole frame");
            assert_eq!(got.error, whole.error, "a changed body byte: as in the whole frame");
            assert_eq!(got.aborted, 0);
        }
        Then::Aborted => {
            assert_eq!(got.error, None);
            assert_eq!(after, [Frame::Request(next)], "an aborted frame is dropped, the next one decodes");
            assert_eq!(got.aborted, 1);
            assert_eq!(got.left, 0);
        }
        Then::MarkerError { end, says } => {
            assert!(after.is_empty(), "{got:?}");
            let Some(DecodeError::Malformed { kind: "piece marker", reason }) = &got.error else { panic!("expected a piece marker error: {got:?}") };
            assert!(reason.contains(&says), "expected a marker error saying {says:?}: {reason}");
            ended_at(end);
        }
        Then::Refused { end, error } => {
            assert!(after.is_empty(), "{got:?}");
            assert_eq!(got.error, Some(error), "a changed frame between pieces: as alone");
            ended_at(end);
        }
    }
}

/// Decodes every whole frame at the front of `b` into `frames`, each checked for alignment;
/// the decoder's error, if it stops at one.
fn drain<B: InputBuf>(d: &mut FrameDecoder, b: &mut B, frames: &mut Vec<Frame>) -> Result<(), DecodeError> {
    while let Some(f) = d.decode(b)? {
        assert_aligned(&f);
        frames.push(f);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    arbitrary_stream(cut, rest);
    mutated_round_trip(rest);
    pieced(rest);
});
