//! Pieced requests and answers (`pieced.rs`) attacked: the sender's queue around them, the
//! client's and the server's cancels, and the receiver given input a hostile peer could send.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::tests::{keepalive_client, Pair};
use super::*;
use crate::frame::{Marker, FLAG_PIECED};
use crate::payload::Payload;

/// A body over `PIECED_FROM`: sent in pieces to a peer announcing them.
pub(super) fn large() -> Body {
    Body::new(Bytes::new(), vec![Payload::from(vec![5u8; 3 << 20])])
}

/// A pair past its hellos, the client's reported written (`Pair::drive` never reports what it
/// takes).
pub(super) fn pair() -> Pair {
    let mut p = Pair::new();
    let hello = p.client.held_bytes();
    p.client.handle_written(hello, p.now);
    p
}

/// Writes what the client queued, reporting it written, until nothing moves (the writer's
/// part the plain `Pair::drive` leaves out).
pub(super) fn write_all(p: &mut Pair) {
    for _ in 0..1000 {
        let mut out = Vec::new();
        p.client.take_transmits(&mut out);
        let n = to_server(p, &out);
        serve(p);
        if n == 0 && !p.client.has_transmits() {
            return;
        }
    }
    panic!("the client never stopped writing");
}

/// What the client's writer took (`out`) reaches the server's input, and is reported written;
/// its bytes.
pub(super) fn to_server(p: &mut Pair, out: &[Transmit]) -> usize {
    let n: usize = out.iter().map(Transmit::len).sum();
    for t in out {
        p.server_in.extend_from_slice(&t.to_vec());
    }
    if n > 0 {
        p.client.handle_written(n, p.now);
    }
    n
}

/// The server takes what reached it and answers; the client reads the answers (the client's
/// own transmits are left to the caller, who reports them written).
pub(super) fn serve(p: &mut Pair) {
    let now = p.now;
    let _ = p.server.handle_input(&mut p.server_in, now);
    while let Some(e) = p.server.poll_event() {
        p.server_events.push(e);
    }
    let mut out = Vec::new();
    p.server.take_transmits(&mut out);
    for t in out {
        p.client_in.extend_from_slice(&t.to_vec());
    }
    let _ = p.client.handle_input(&mut p.client_in, now);
    while let Some(e) = p.client.poll_event() {
        p.client_events.push(e);
    }
}

pub(super) fn requests_seen(events: &[Event]) -> Vec<u64> {
    events.iter().filter_map(|e| if let Event::Request { id, .. } = e { Some(*id) } else { None }).collect()
}

#[test]
fn a_call_cancelled_while_queued_behind_a_pieced_request_is_never_sent() {
    let mut p = pair();
    let big = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    // The writer has the header and the first pieces; the rest of the frame waits.
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    assert!(out.len() <= 2, "{} transmits", out.len());
    // A small call queued behind it, given up on before it left.
    let small = p.client.start_call(1, body(b"small", b""), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    p.client.cancel_call(small);
    to_server(&mut p, &out);
    write_all(&mut p);
    assert_eq!(requests_seen(&p.server_events), vec![big], "the server saw a call given up on before it was sent");
    assert!(!p.server_events.iter().any(|e| matches!(e, Event::Abort { .. })), "{:?}", p.server_events.len());
    assert_eq!(p.client.held_bytes(), 0);
}

#[test]
fn stream_frames_of_a_call_cancelled_behind_a_pieced_request_are_dropped_with_it() {
    let mut p = pair();
    let big = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    let s = p.client.start_call(2, body(b"open", b""), CallMode { client_stream: true, server_stream: false }, &Metadata::default(), None, p.now).unwrap();
    p.client.cancel_call(s);
    to_server(&mut p, &out);
    write_all(&mut p);
    assert_eq!(requests_seen(&p.server_events), vec![big]);
    assert_eq!(p.client.held_bytes(), 0);
}

#[test]
fn the_writer_never_holds_more_than_two_pieces_and_the_commit_follows_the_last() {
    let mut p = pair();
    let id = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let ping = Frame::Ping(crate::frame::Ping { id: 7, pong: false });
    p.client.push_frame(ping);
    let mut kinds = Vec::new();
    for _ in 0..100 {
        let mut out = Vec::new();
        p.client.take_transmits(&mut out);
        if out.is_empty() {
            break;
        }
        assert!(out.len() <= 3, "{} transmits at once", out.len());
        for t in &out {
            kinds.push(if t.head.len() >= HEADER_LEN { header_of(t).map(|h| h.kind) } else { None });
            p.server_in.extend_from_slice(&t.to_vec());
        }
        let n: usize = out.iter().map(Transmit::len).sum();
        p.client.handle_written(n, p.now);
        serve(&mut p);
    }
    write_all(&mut p);
    assert_eq!(kinds.iter().filter(|k| k.is_some()).collect::<Vec<_>>(), [&Some(FrameKind::Request), &Some(FrameKind::Ping), &Some(FrameKind::Commit)]);
    // The ping after the frame, then the commit: the server ran the request.
    assert_eq!(requests_seen(&p.server_events), vec![id]);
    assert_eq!(p.client.held_bytes(), 0);
}

#[test]
fn aborted_or_withdrawn_pieced_requests_leave_nothing_counted_and_the_next_call_runs() {
    let mut p = pair();
    // Three at once: the first begun, the second withdrawn unbegun, the first aborted.
    let a = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let b = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let c = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    p.client.cancel_call(b);
    p.client.cancel_call(a);
    to_server(&mut p, &out);
    write_all(&mut p);
    assert_eq!(requests_seen(&p.server_events), vec![c]);
    assert_eq!(p.client.held_bytes(), 0);
    assert_eq!(p.server.decoder.aborted_frames(), 1, "a aborted; b never sent");
}

/// A server that stops reading in the middle of a pieced request and pings: the client's pongs
/// wait behind the request's pieces; past the backlog bound that is a protocol violation, as
/// when they wait in the plain queue.
#[test]
fn a_peer_that_pings_while_not_reading_a_pieced_request_is_cut_off() {
    let mut p = pair();
    p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    // The writer took the first pieces and never gets to write them.
    p.client.take_transmits(&mut Vec::new());
    let mut flood = BytesMut::new();
    for id in 0..12_000 {
        flood.extend_from_slice(&crate::frame::Ping { id, pong: false }.encode().unwrap().to_vec());
    }
    let err = p.client.handle_input(&mut flood, p.now).unwrap_err();
    assert!(matches!(&err, ConnectionError::Protocol(m) if m.contains("not reading")), "{err}");
}

/// A request header flagged pieced, of `body` bytes (one attachment), for a decoder.
pub(super) fn pieced_header(id: u64, body: usize) -> Bytes {
    let t = attached_request(id, body).encode().unwrap();
    let mut head = BytesMut::from(&t.head[..HEADER_LEN]);
    head[1] |= FLAG_PIECED;
    head.freeze()
}

/// Request `id` with an attachment of `body` bytes (1s), awaiting its commit.
pub(super) fn attached_request(id: u64, body: usize) -> crate::frame::Request {
    crate::frame::Request {
        id,
        method: 1,
        mode: CallMode::UNARY,
        await_commit: true,
        deadline: None,
        metadata: Bytes::new(),
        message: Bytes::new(),
        attachments: vec![Payload::from(vec![1u8; body])],
    }
}

/// A hostile peer's input: a read block full of pieced requests each aborted at once (48 bytes
/// each), then a ping. The decoder drops them one after another; it must not take stack per
/// frame dropped (the reader runs on a worker thread of 2 MiB).
#[test]
fn a_block_full_of_aborted_frames_does_not_exhaust_the_readers_stack() {
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, ConnConfig::default(), now);
    let mut input = BytesMut::from(&Connection::new(Side::Client, ConnConfig::default(), now).transmits[0].to_vec()[..]);
    for i in 0..(64 << 10) / 48 {
        input.extend_from_slice(&pieced_header(2 * i as u64 + 1, 1000));
        input.extend_from_slice(&Marker::Abort.encode());
    }
    let ping = Frame::Ping(crate::frame::Ping { id: 7, pong: false }).encode().unwrap();
    input.extend_from_slice(&ping.to_vec());
    let r = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            server.handle_input(&mut input, now).unwrap();
            server.has_transmits()
        })
        .unwrap()
        .join();
    assert!(matches!(r, Ok(true)), "the ping after them was answered");
}

/// A data piece that leaves less than a piece of the body (under `MIN_PIECE` bytes) breaks the
/// rule that keeps room for the next marker in the frame's buffer: a `PROTOCOL` error, as the
/// short piece itself would be.
#[test]
fn a_data_piece_leaving_less_than_a_piece_of_the_body_is_a_protocol_error() {
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, ConnConfig::default(), now);
    let mut input = BytesMut::from(&Connection::new(Side::Client, ConnConfig::default(), now).transmits[0].to_vec()[..]);
    server.handle_input(&mut input, now).unwrap();
    input.extend_from_slice(&pieced_header(1, 1000));
    server.handle_input(&mut input, now).unwrap();
    let body = server.bytes_needed() - HEADER_LEN;
    input.extend_from_slice(&Marker::Data(body as u32 - 3).encode());
    input.extend_from_slice(&vec![0u8; body - 3]);
    let e = server.handle_input(&mut input, now).expect_err("3 bytes of the body left for a piece of at least 8");
    assert!(e.to_string().contains("piece marker"), "{e}");
}

pub(super) fn body(msg: &'static [u8], att: &'static [u8]) -> Body {
    let attachments = if att.is_empty() { Vec::new() } else { vec![Payload::from(Bytes::from_static(att))] };
    Body::new(Bytes::from_static(msg), attachments)
}

/// The client fails (here: the server sent garbage) while the writer is in the middle of a
/// pieced request: the goaway that names the error must still reach the server as a frame, not
/// be read as the rest of the request's pieces.
#[test]
fn a_goaway_after_a_pieced_request_cut_short_by_a_failure_is_read_as_a_goaway() {
    let mut p = pair();
    p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    to_server(&mut p, &out);
    let mut garbage = BytesMut::from(&[0xffu8; HEADER_LEN][..]);
    assert!(p.client.handle_input(&mut garbage, p.now).is_err());
    let mut last = Vec::new();
    p.client.take_transmits(&mut last);
    for t in &last {
        p.server_in.extend_from_slice(&t.to_vec());
    }
    let now = p.now;
    let r = p.server.handle_input(&mut p.server_in, now);
    let closed = std::iter::from_fn(|| p.server.poll_event()).find_map(|e| if let Event::Closed(e) = e { Some(e) } else { None });
    assert!(
        matches!(&closed, Some(ConnectionError::GoAway { code: Code::PROTOCOL, .. })),
        "the server read the client's last bytes as {r:?}, closed with {closed:?}"
    );
    assert_eq!(p.client.held_bytes(), last.iter().map(Transmit::len).sum::<usize>());
}

/// Cancelled before the writer took any of it: withdrawn, nothing at all goes (no cancel).
#[test]
fn a_pieced_request_cancelled_before_its_first_piece_left_is_never_sent() {
    let mut p = pair();
    let id = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    p.client.cancel_call(id);
    assert!(!p.client.has_transmits());
    assert_eq!(p.client.held_bytes(), 0);
    let after = p.client.start_call(1, body(b"after", b""), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    write_all(&mut p);
    assert_eq!(requests_seen(&p.server_events), vec![after]);
}

/// Cancelled once its last piece was handed out, before it was written: the frame is whole on
/// the wire, so a cancel takes its commit's place and the server never runs it.
#[test]
fn a_pieced_request_cancelled_after_its_last_piece_was_taken_gets_a_cancel_not_a_commit() {
    let mut p = pair();
    let id = p.client.start_call(1, large(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let mut taken = Vec::new();
    loop {
        let mut out = Vec::new();
        p.client.take_transmits(&mut out);
        if out.is_empty() {
            break;
        }
        let n: usize = out.iter().map(Transmit::len).sum();
        taken.extend(out);
        // Written, all but the last batch.
        if p.client.pieced.is_empty() {
            p.client.cancel_call(id);
            for t in &taken {
                p.server_in.extend_from_slice(&t.to_vec());
            }
            p.client.handle_written(n, p.now);
            break;
        }
        p.client.handle_written(n, p.now);
    }
    write_all(&mut p);
    assert!(requests_seen(&p.server_events).is_empty(), "the server ran a request given up on");
    assert_eq!(p.server.calls_in_flight(), 0, "held until a cancel dropped it");
    assert_eq!(p.client.held_bytes(), 0);
}

#[test]
fn a_ping_queued_behind_a_pieced_request_is_not_timed_until_it_is_written() {
    let now = Instant::now();
    let at = |s| now + std::time::Duration::from_secs(s);
    let mut c = keepalive_client(now);
    let written = |t: &[Transmit]| t.iter().map(Transmit::len).sum::<usize>();
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    c.handle_written(written(&out), now);
    let body = Body::new(Bytes::new(), vec![Payload::from(vec![1u8; 5 << 20])]);
    c.start_call(1, body, CallMode::UNARY, &Metadata::default(), None, now).unwrap();
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    assert_eq!(out.len(), 2, "the writer gets two pieces of the request at a time");
    // Quiet for the interval: a ping is queued, behind the rest of the request.
    c.handle_timeout(at(1));
    let mut none = Vec::new();
    c.take_transmits(&mut none);
    assert!(none.is_empty(), "nothing more until a piece is written");
    // A slow link: each pair of pieces takes a minute. The ping is still queued behind.
    c.handle_written(written(&out), at(60));
    let mut next = Vec::new();
    c.take_transmits(&mut next);
    assert_eq!(next.len(), 2);
    c.handle_written(written(&next), at(120));
    c.handle_timeout(at(125));
    assert!(c.is_open(), "a ping not yet written cannot have timed out");
    // The last piece, and the ping behind it: the timeout counts from their write.
    let mut last = Vec::new();
    c.take_transmits(&mut last);
    assert_eq!(last.len(), 2, "the last piece and the ping");
    c.handle_written(written(&last), at(180));
    assert_eq!(c.poll_timeout(), Some(at(182)));
    c.handle_timeout(at(182));
    assert!(!c.is_open());
}

// Pieced answers: a server's large response to a client announcing `caps::PIECED_ANSWERS`.

/// An answer over `PIECED_FROM` (6 MiB: six pieces), its bytes a pattern so that a piece out of
/// place would show.
fn large_answer() -> Body {
    let blob: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
    Body::new(Bytes::from_static(b"the answer"), vec![Payload::from(blob)])
}

/// A pair past its hellos, both reported written, with call `id` running on the server.
fn answering_pair() -> (Pair, u64) {
    let mut p = pair();
    let hello = p.server.held_bytes();
    p.server.handle_written(hello, p.now);
    let id = p.call(1, body(b"get", b""), None);
    assert_eq!(requests_seen(&p.server_events), vec![id]);
    (p, id)
}

/// What the server's writer takes now (not yet reported written).
fn server_takes(p: &mut Pair) -> Vec<Transmit> {
    let mut out = Vec::new();
    p.server.take_transmits(&mut out);
    out
}

/// `out` written by the server's writer: reported, and its bytes put before the client, which
/// reads them.
fn server_writes(p: &mut Pair, out: &[Transmit]) {
    deliver(&mut p.server, &mut p.client, &mut p.client_in, &mut p.client_events, out, p.now);
}

/// The client's queued frames (a cancel) written to the server, which reads them.
fn client_writes(p: &mut Pair) {
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    deliver(&mut p.client, &mut p.server, &mut p.server_in, &mut p.server_events, &out, p.now);
}

/// `out`, taken by `from`'s writer, written: reported to `from`, and read by `to` (from its
/// input `to_in`), whose events join `to_events`.
fn deliver(from: &mut Connection, to: &mut Connection, to_in: &mut BytesMut, to_events: &mut Vec<Event>, out: &[Transmit], now: Instant) {
    let n: usize = out.iter().map(Transmit::len).sum();
    for t in out {
        to_in.extend_from_slice(&t.to_vec());
    }
    from.handle_written(n, now);
    to.handle_input(to_in, now).unwrap();
    while let Some(e) = to.poll_event() {
        to_events.push(e);
    }
}

fn finished(events: &[Event], id: u64) -> Option<&Result<Body, CallError>> {
    events.iter().find_map(|e| match e {
        Event::Finished { id: i, result } if *i == id => Some(result),
        _ => None,
    })
}

#[test]
fn a_large_answer_goes_in_pieces_to_a_client_that_takes_them_and_arrives_whole() {
    let (mut p, id) = answering_pair();
    p.server.respond(id, Ok(large_answer()));
    let first = server_takes(&mut p);
    assert_eq!(first.len(), 2, "the header with the first piece, and the second");
    let h = header_of(&first[0]).unwrap();
    assert_eq!((h.kind, h.id, h.flags & FLAG_PIECED), (FrameKind::Response, id, FLAG_PIECED));
    let mut batch = first;
    let mut pieces = 0;
    while !batch.is_empty() {
        assert!(batch.len() <= 2, "the writer holds {} pieces", batch.len());
        pieces += batch.len();
        server_writes(&mut p, &batch);
        batch = server_takes(&mut p);
    }
    assert_eq!(pieces, 6);
    let Some(Ok(got)) = finished(&p.client_events, id) else { panic!("{:?}", finished(&p.client_events, id)) };
    assert_eq!(*got, large_answer(), "the pieces, markers cut out, are the answer");
    assert_eq!((p.client.decoder.aborted_frames(), p.server.held_bytes(), p.client.calls_in_flight()), (0, 0, 0));
}

#[test]
fn a_large_answer_goes_whole_to_a_client_that_does_not_take_pieces() {
    let (mut p, id) = answering_pair();
    p.server.peer.as_mut().expect("after the hello").capabilities &= !caps::PIECED_ANSWERS;
    p.server.respond(id, Ok(large_answer()));
    let out = server_takes(&mut p);
    assert_eq!(out.len(), 1, "one frame");
    let h = header_of(&out[0]).unwrap();
    assert_eq!((h.kind, h.flags & FLAG_PIECED), (FrameKind::Response, 0));
    assert!(p.server.pieced.is_empty());
    server_writes(&mut p, &out);
    assert_eq!(finished(&p.client_events, id), Some(&Ok(large_answer())));
}

#[test]
fn errors_stay_whole_and_small_answers_too() {
    let (mut p, id) = answering_pair();
    p.server.respond(id, Err(Status::new(Code::INTERNAL, "x".repeat(3 << 20))));
    assert!(p.server.pieced.is_empty(), "an error is never pieced");
    let small = p.call(1, body(b"get", b""), None);
    p.server.respond(small, Ok(body(b"small", b"answer")));
    assert!(p.server.pieced.is_empty());
    p.drive();
    assert_eq!(finished(&p.client_events, small), Some(&Ok(body(b"small", b"answer"))));
}

/// The client gives up while the server's writer is in the middle of a pieced answer: what the
/// writer holds still goes, then an abort marker, and nothing more of the answer. The client
/// drops the frame silently (its call is gone) and the connection carries on.
#[test]
fn a_cancel_mid_answer_ends_it_at_an_abort_marker_after_the_pieces_the_writer_holds() {
    let (mut p, id) = answering_pair();
    p.server.respond(id, Ok(large_answer()));
    let first = server_takes(&mut p);
    server_writes(&mut p, &first);
    let held = server_takes(&mut p);
    assert_eq!(held.len(), 2, "the writer holds two pieces");
    p.client.cancel_call(id);
    client_writes(&mut p);
    assert!(!p.server_events.iter().any(|e| matches!(e, Event::Abort { .. })), "no handler to abort: it answered");
    assert!(server_takes(&mut p).is_empty(), "nothing until the writer is done with what it holds");
    server_writes(&mut p, &held);
    let after = server_takes(&mut p);
    assert_eq!(after.len(), 1);
    assert_eq!((&after[0].head[..], after[0].segments.len()), (&Marker::Abort.encode()[..], 0), "the next thing is the abort marker");
    server_writes(&mut p, &after);
    assert!(server_takes(&mut p).is_empty(), "nothing more of the answer");
    assert_eq!(p.server.held_bytes(), 0, "its pieces no longer held");
    assert_eq!(p.client.decoder.aborted_frames(), 1);
    assert!(finished(&p.client_events, id).is_none(), "an abandoned answer for a call given up on is silent");
    // The connection carries on: the next call is answered.
    let next = p.call(1, body(b"get", b""), None);
    p.server.respond(next, Ok(body(b"next", b"")));
    p.drive();
    assert_eq!(finished(&p.client_events, next), Some(&Ok(body(b"next", b""))));
    assert!(p.client.is_open() && p.server.is_open());
}

#[test]
fn a_cancel_before_the_first_piece_left_withdraws_the_answer() {
    let (mut p, id) = answering_pair();
    p.server.respond(id, Ok(large_answer()));
    assert!(p.server.has_transmits());
    p.client.cancel_call(id);
    client_writes(&mut p);
    assert!(!p.server.has_transmits(), "withdrawn: not a byte of it goes");
    assert_eq!(p.server.held_bytes(), 0);
    let next = p.call(1, body(b"get", b""), None);
    p.server.respond(next, Ok(body(b"next", b"")));
    p.drive();
    assert_eq!(finished(&p.client_events, next), Some(&Ok(body(b"next", b""))));
    assert_eq!(p.client.decoder.aborted_frames(), 0);
}

/// A whole answer (a response under the pieced size, an error) the writer has not taken yet is
/// withdrawn on the client's cancel too; one queued behind a pieced answer as well.
#[test]
fn a_cancel_withdraws_a_whole_answer_not_yet_taken() {
    let (mut p, id) = answering_pair();
    p.server.respond(id, Ok(Body::new(Bytes::new(), vec![Payload::from(vec![1u8; 1 << 20])])));
    p.client.cancel_call(id);
    client_writes(&mut p);
    assert!(!p.server.has_transmits());
    assert_eq!(p.server.held_bytes(), 0);
    // Behind a pieced answer begun: the error for another call waits there, and is withdrawn.
    let big = p.call(1, body(b"get", b""), None);
    let failing = p.call(1, body(b"get", b""), None);
    p.server.respond(big, Ok(large_answer()));
    let first = server_takes(&mut p);
    p.server.respond(failing, Err(Status::new(Code::NOT_FOUND, "none")));
    let queued = p.server.held_bytes();
    p.client.cancel_call(failing);
    client_writes(&mut p);
    let error_len = queued - p.server.held_bytes();
    assert!(error_len > HEADER_LEN && error_len < 200, "the error frame withdrawn: {error_len} bytes");
    let mut batch = first;
    while !batch.is_empty() {
        server_writes(&mut p, &batch);
        batch = server_takes(&mut p);
    }
    assert_eq!(finished(&p.client_events, big), Some(&Ok(large_answer())));
    assert_eq!(p.server.held_bytes(), 0);
}

/// An abort marker ends the answer of a call the client still waits for (a server whose
/// connection failed, or one that misbehaves): the call fails at once with an error saying
/// what happened, instead of waiting for its deadline, and the connection carries on.
#[test]
fn an_abandoned_answer_fails_its_live_call_with_a_clear_error() {
    let (mut p, id) = answering_pair();
    let waiting = p.call(1, body(b"get", b""), None);
    p.server.respond(id, Ok(large_answer()));
    let first = server_takes(&mut p);
    server_writes(&mut p, &first);
    assert!(finished(&p.client_events, id).is_none());
    // Not our server's doing (it aborts only after a cancel or a failure): bytes of the wire.
    p.client_in.extend_from_slice(&Marker::Abort.encode());
    let now = p.now;
    p.client.handle_input(&mut p.client_in, now).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| p.client.poll_event()).collect();
    let Some(Err(CallError::Status(s))) = finished(&events, id) else { panic!("{events:?}") };
    assert_eq!(s.code, Code::ABORTED);
    assert!(s.message.contains("the server abandoned its answer part-way"), "{}", s.message);
    assert!(p.client.is_open(), "one call failed, not the connection");
    assert!(finished(&events, waiting).is_none() && p.client.calls_in_flight() == 1, "the other call still waits");
    // The server's own abort: its connection fails mid-answer, an abort marker closes the frame.
    let mut q = answering_pair().0;
    let again = q.call(1, body(b"get", b""), None);
    q.server.respond(again, Ok(large_answer()));
    let first = server_takes(&mut q);
    server_writes(&mut q, &first);
    q.server.close(ConnectionError::Io("the link went down".into()));
    let last = server_takes(&mut q);
    assert_eq!(last.len(), 1, "the abort marker, no more pieces");
    server_writes(&mut q, &last);
    let Some(Err(CallError::Status(s))) = finished(&q.client_events, again) else { panic!("{:?}", finished(&q.client_events, again)) };
    assert_eq!(s.code, Code::ABORTED);
}

/// A client does not send pieced answers, nor a server pieced requests: an aborted frame of
/// the kind the other side sends is read as what it is, a protocol violation.
#[test]
fn an_aborted_response_from_a_client_is_a_protocol_error() {
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, ConnConfig::default(), now);
    let mut input = BytesMut::from(&Connection::new(Side::Client, ConnConfig::default(), now).transmits[0].to_vec()[..]);
    let r = Response { id: 1, message: Bytes::new(), attachments: vec![Payload::from(vec![1u8; 1000])], meta: Default::default() };
    let mut head = BytesMut::from(&r.encode().unwrap().head[..HEADER_LEN]);
    head[1] |= FLAG_PIECED;
    input.extend_from_slice(&head);
    input.extend_from_slice(&Marker::Abort.encode());
    let e = server.handle_input(&mut input, now).expect_err("a response from a client");
    assert!(e.to_string().contains("response frame is not allowed from a client"), "{e}");
}
