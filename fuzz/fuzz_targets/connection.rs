//! Arbitrary bytes into a server connection state machine, with time moving: no panic, and a
//! closed connection stays closed. The peer's hello declares a stream window and a metadata
//! limit, and the handler side sets response headers and trailers, streams back, consumes and
//! answers, so stream, credit and metadata frames reach every branch of the machine. The same
//! bytes then go to a client with calls of every mode in flight: answers with response
//! metadata (flags 0x04 and 0x10, good and bad blocks) reach the client's side too.
//!
//! The first byte chooses whether the peers' hellos announce pieces (`caps::PIECES`) and
//! whether the server first gets a request in pieces (`docs/wire.md`, "Pieces";
//! `shared/pieces.rs`) built from the next bytes: of input-chosen piece lengths, perhaps with
//! pings, cancels and small requests of other calls between its pieces (frames markers),
//! perhaps breaking a rule of those, perhaps ended by an abort marker, perhaps with a byte
//! changed, then its commit (or, aborted, a cancel that crossed the abort) and an ordinary
//! request, in input-chosen reads bounded by `piece_room` as the driver bounds them.
//! Unchanged, the calls between its pieces arrive first (each ping there answered by a pong),
//! then the call with the message, metadata and attachments (aligned) it was sent with, then
//! the ordinary one; aborted, the ordinary one instead and the connection stays open; bytes
//! the rules refuse (a marker, frames between pieces) close the connection, and only the calls
//! between pieces before them arrive. The arbitrary bytes follow.
//!
//! When the first byte says so, the input then drives a client whose server announces pieces
//! (`client_pieces`), and perhaps frames between pieces (`caps::FRAMES_BETWEEN_PIECES`):
//! requests of more than 2 MiB (in pieces) and small ones, transmits taken, partly written,
//! calls cancelled or answered early, the connection failed by a bad frame, in any order; a
//! server's decoder reads what it wrote without error, every call not cancelled arrives whole
//! once (a large one with its commit, unless answered first), an abort marker comes only as
//! the first bytes taken after a cancel or the failure, and the failure's goaway last; frames
//! come between pieces only to a server taking them, and never a frame of the pieced frame's
//! own call, a ping or a goaway.
//!
//! When it says otherwise, the input drives a server whose client announces pieced answers
//! (`server_pieces`), and perhaps frames between pieces: requests arriving, answers of more than
//! 2 MiB (in pieces) and small ones, transmits taken, partly written, calls cancelled before or
//! after their answer, the connection failed by a bad frame, in any order; a client's decoder
//! reads what it wrote without error, every answer not cancelled arrives whole once, and the
//! same rules hold for abort markers, frames between pieces and the failure's goaway.
#![no_main]

#[path = "shared/pieces.rs"]
#[allow(dead_code)]
mod pieces;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pieces::{Expect, Input, Then};
use rpc_core::conn::{ConnConfig, Connection, Event, MetadataKind, Side};
use rpc_core::frame::{caps, CallMode, Cancel, Commit, Frame, FrameDecoder, Hello, Limits, Ping, Request, MARKER_LEN, MAX_BETWEEN, WIRE_VERSION};
use rpc_core::frame::ErrorFrame;
use rpc_core::{Code, Metadata, Payload, Status, Transmit};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let sel = data.first().copied().unwrap_or(0);
    let capabilities = if sel & 1 != 0 { caps::PIECES | caps::COMMIT } else { 0 };
    // With a pieced request first: the bytes that build it, then the arbitrary ones.
    let (pieced, data) = match data {
        [s, k, rest @ ..] if s & 2 != 0 => rest.split_at(usize::from(*k).min(rest.len())),
        _ => (&[][..], data),
    };
    let config = ConnConfig { max_frame: 1 << 16, max_attachments: 8, max_calls_in_flight: 4, ..ConnConfig::default() };
    let mut conn = Connection::new(Side::Server, config, now);
    let hello = Hello { version: WIRE_VERSION, capabilities, max_frame: 1 << 16, max_calls_in_flight: 4, max_attachments: 8, max_metadata: 1024, stream_window: 4096 };
    let mut buf = BytesMut::from(&hello.encode()[..]);
    let mut t = now;
    if sel & 2 != 0 {
        pieced_request(&mut conn, &mut buf, pieced, now);
    }
    for (i, chunk) in data.chunks(61).enumerate() {
        buf.extend_from_slice(chunk);
        let was_open = conn.is_open();
        let _ = conn.handle_input(&mut buf, t);
        assert!(was_open || !conn.is_open());
        t += Duration::from_millis(u64::from(chunk[0]));
        conn.handle_timeout(t);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Request { id, mode, .. } => {
                    let _ = conn.set_response_metadata(id, MetadataKind::Headers, "h", vec![1u8; usize::from(chunk[0]) * 8].into());
                    let _ = conn.set_response_metadata(id, MetadataKind::Trailers, "t", "v".into());
                    if mode.server_stream {
                        let _ = conn.send_message(id, rpc_core::Body::message(vec![0u8; 3000].into()));
                    }
                    if i % 2 == 0 {
                        conn.respond(id, Ok(rpc_core::Body::default()));
                    }
                }
                Event::StreamData { id, body } if i % 3 != 0 => conn.consumed(id, body.len() as usize),
                Event::StreamMessages { id, messages } if i % 3 != 0 => {
                    conn.consumed_many(id, messages.len(), messages.message_bytes())
                }
                Event::SendReady { id } => {
                    let _ = conn.send_message(id, rpc_core::Body::default());
                }
                _ => {}
            }
        }
        conn.take_transmits(&mut Vec::new());
    }
    conn.handle_eof(&buf);
    assert!(!conn.is_open());
    client(data, capabilities, now);
    match sel & 0x0c {
        0x0c => client_pieces(data, sel & 0x10 != 0, now),
        0x08 => server_pieces(data, sel & 0x10 != 0, now),
        _ => {}
    }
});

/// Requests of more than this go in pieces to a peer announcing them (`conn::pieced`, internal);
/// they await a commit too (`conn::AWAIT_COMMIT_FROM`).
const PIECED_FROM: usize = 2 << 20;
const _: () = assert!(PIECED_FROM as u64 >= rpc_core::conn::AWAIT_COMMIT_FROM);
/// Body bytes in a piece, at most (the last may take up to a sixteenth more).
const PIECE_LEN: usize = 1 << 20;
/// The large calls' attachments: slices of one static, so a run allocates nothing for them.
static ZEROS: [u8; PIECED_FROM + (256 << 10)] = [0; PIECED_FROM + (256 << 10)];

/// A client sending to a server that announces pieces, as `data` says: large calls (in pieces)
/// and small ones started, transmits taken, some of their bytes written, calls cancelled or
/// answered by the server, the connection failed by a frame of an unknown kind, in any order;
/// then the rest taken and written. What it wrote, read by a server's decoder in reads bounded
/// as the driver bounds them, follows the rules: no error; without a failure, every call not
/// cancelled arrives once, whole, a large one with its commit after it unless it was answered
/// first; a cancel or commit only for a call that arrived before it, and no commit for a
/// small one; a pieced request cancelled or cut by the failure either arrived whole or is cut
/// off by an abort marker that is the first thing taken after the cancel or failure (so that at
/// most the pieces the writer held cross), and the failure's goaway comes last; the writer
/// holds at most two pieces of a frame (so of two frames, at the turn from one to the next).
fn client_pieces(data: &[u8], between: bool, now: Instant) {
    let config = ConnConfig { max_frame: 1 << 16, max_attachments: 8, ..ConnConfig::default() };
    let mut conn = Connection::new(Side::Client, config, now);
    let capabilities = caps::PIECES | caps::COMMIT | caps::STREAMS | if between { caps::FRAMES_BETWEEN_PIECES } else { 0 };
    let hello = Hello { version: WIRE_VERSION, capabilities, max_frame: 4 << 20, max_calls_in_flight: 8, max_attachments: 8, max_metadata: 1024, stream_window: 4096 };
    let _ = conn.handle_input(&mut BytesMut::from(&hello.encode()[..]), now);
    assert!(conn.is_open());
    let mut input = Input(data);
    let mut out = Out::default();
    // Calls started: id, attachment lengths, cancelled, answered by the server.
    let mut calls: Vec<(u64, Vec<usize>, bool, bool)> = Vec::new();
    // Where the stream stood (bytes taken) at each cancel, and at the connection's failure.
    let mut stops_at = Vec::new();
    let mut failed = false;
    let mut large = 0;
    for _ in 0..48 {
        if input.0.is_empty() {
            break;
        }
        match input.byte() % 7 {
            0 if large < 2 => {
                // More than PIECED_FROM bytes in one to three attachments.
                let lens = large_lens(&mut input);
                let attachments = lens.iter().map(|&n| Payload::from(Bytes::from_static(&ZEROS[..n]))).collect();
                let body = rpc_core::Body { message: Bytes::from_static(b"large"), attachments };
                if let Ok(id) = conn.start_call(1, body, CallMode::UNARY, &Metadata::default(), None, now) {
                    calls.push((id, lens, false, false));
                    large += 1;
                }
            }
            0 | 1 => {
                let body = rpc_core::Body { message: Bytes::from_static(b"small"), attachments: Vec::new() };
                if let Ok(id) = conn.start_call(2, body, CallMode::UNARY, &Metadata::default(), None, now) {
                    calls.push((id, Vec::new(), false, false));
                }
            }
            2 => {
                out.take(&mut conn);
            }
            3 => {
                out.write_part(&mut conn, input.byte(), now);
            }
            4 => {
                let Some(c) = (!calls.is_empty()).then(|| usize::from(input.byte()) % calls.len()) else { continue };
                if !calls[c].2 {
                    calls[c].2 = true;
                    conn.cancel_call(calls[c].0);
                    stops_at.push(out.taken_len);
                }
            }
            5 => {
                // The server answers a call early (its request perhaps still on its way): the
                // request still goes whole, and no commit follows once it is written.
                let Some(c) = (!calls.is_empty()).then(|| usize::from(input.byte()) % calls.len()) else { continue };
                calls[c].3 = true;
                let answer = Frame::Error(ErrorFrame::new(calls[c].0, Status::new(Code::INTERNAL, "no")));
                failed |= conn.handle_input(&mut BytesMut::from(&answer.encode().unwrap().to_vec()[..]), now).is_err();
            }
            _ => {
                // The server sends a frame of an unknown kind: the connection fails, a pieced
                // request begun ends at an abort marker, and the goaway naming the failure
                // follows it.
                let mut bad = BytesMut::from(&[0xeeu8; 40][..]);
                if conn.is_open() {
                    assert!(conn.handle_input(&mut bad, now).is_err());
                    stops_at.push(out.taken_len);
                    failed = true;
                }
            }
        }
        assert_writer_holds_little(out.taken_len - out.written, between);
    }
    out.write_out(&mut conn, now);
    let (frames, aborts) = read_as_peer(&out.taken, out.taken_len, between, &stops_at);
    let mut arrived = Vec::new();
    let mut commits = Vec::new();
    let last = frames.len().wrapping_sub(1);
    for (i, f) in frames.into_iter().enumerate() {
        match f {
            Frame::Request(r) => {
                let (_, lens, ..) = calls.iter().find(|c| c.0 == r.id).expect("a request for a call started");
                assert!(!arrived.contains(&r.id), "call {} arrived twice", r.id);
                assert_eq!(r.attachments.iter().map(Payload::len).collect::<Vec<_>>(), *lens);
                arrived.push(r.id);
            }
            Frame::Cancel(c) => assert!(arrived.contains(&c.id), "a cancel for call {}, which never arrived", c.id),
            Frame::Commit(c) => {
                assert!(arrived.contains(&c.id), "a commit for call {}, which never arrived", c.id);
                assert!(!commits.contains(&c.id), "two commits for call {}", c.id);
                commits.push(c.id);
            }
            Frame::GoAway(g) => {
                assert!(failed && i == last && g.code == Code::PROTOCOL, "a goaway, not last or without a failure: {g:?}");
            }
            other => panic!("a client sent {other:?}"),
        }
    }
    for (id, lens, cancelled, answered) in &calls {
        if !cancelled && !failed {
            assert!(arrived.contains(id), "call {id}, not cancelled, never arrived");
            // Every large call awaits a commit (AWAIT_COMMIT_FROM); a small one none. One
            // answered may have been answered before it was written.
            if !answered {
                assert_eq!(commits.contains(id), !lens.is_empty(), "call {id}: a commit iff it is large");
            }
        }
        if lens.is_empty() {
            assert!(!commits.contains(id), "a commit for small call {id}");
        }
    }
    let stopped = calls.iter().filter(|c| (c.2 || failed) && !c.1.is_empty() && !arrived.contains(&c.0)).count();
    assert!(aborts <= stopped, "{aborts} aborts for {stopped} large calls stopped before they arrived");
}

/// A server answering a client that announces pieced answers (`caps::PIECED_ANSWERS`), and
/// perhaps frames between pieces, as `data` says: requests arriving, answers of more than
/// `PIECED_FROM` bytes (in pieces) and small ones, transmits taken, some of their bytes
/// written, calls cancelled by the client before or after their answer, the connection failed
/// by a frame of an unknown kind, in any order; then the rest taken and written. What it wrote,
/// read by a client's decoder as the driver reads, follows the rules (`read_as_peer`): without
/// a failure, every call answered and not cancelled gets its answer once, whole; no answer for
/// a call that never arrived or comes twice; a pieced answer cancelled or cut by the failure
/// either arrived whole or ends at an abort marker, the first thing taken after the cancel or
/// failure; the failure's goaway comes last; the writer holds at most two pieces of a frame.
fn server_pieces(data: &[u8], between: bool, now: Instant) {
    let config = ConnConfig { max_frame: 1 << 16, max_attachments: 8, max_calls_in_flight: 8, ..ConnConfig::default() };
    let mut conn = Connection::new(Side::Server, config, now);
    let capabilities = caps::PIECES | caps::PIECED_ANSWERS | caps::COMMIT | caps::STREAMS | if between { caps::FRAMES_BETWEEN_PIECES } else { 0 };
    let hello = Hello { version: WIRE_VERSION, capabilities, max_frame: 4 << 20, max_calls_in_flight: 8, max_attachments: 8, max_metadata: 1024, stream_window: 4096 };
    let _ = conn.handle_input(&mut BytesMut::from(&hello.encode()[..]), now);
    assert!(conn.is_open());
    let mut input = Input(data);
    let mut out = Out::default();
    // Calls that arrived: id, the attachment lengths of their answer once answered, cancelled.
    let mut calls: Vec<(u64, Option<Vec<usize>>, bool)> = Vec::new();
    let mut stops_at = Vec::new();
    let (mut failed, mut next_id, mut large) = (false, 1u64, 0);
    for _ in 0..48 {
        if input.0.is_empty() {
            break;
        }
        match input.byte() % 7 {
            0 => {
                let request = Request {
                    id: next_id,
                    method: 1,
                    mode: CallMode::UNARY,
                    await_commit: false,
                    deadline: None,
                    metadata: Bytes::new(),
                    message: Bytes::from_static(b"ask"),
                    attachments: Vec::new(),
                };
                next_id += 1;
                let (f, arrived) = from_client(&mut conn, Frame::Request(request), now);
                failed |= f;
                calls.extend(arrived.into_iter().map(|id| (id, None, false)));
            }
            1 | 2 => {
                // Answers a call not answered yet: large (more than PIECED_FROM bytes, in one to
                // three attachments) at most twice, else small.
                let Some(c) = calls.iter().position(|c| c.1.is_none()) else { continue };
                let lens = if input.byte() % 2 == 0 && large < 2 {
                    large += 1;
                    large_lens(&mut input)
                } else {
                    Vec::new()
                };
                let attachments = lens.iter().map(|&n| Payload::from(Bytes::from_static(&ZEROS[..n]))).collect();
                conn.respond(calls[c].0, Ok(rpc_core::Body { message: Bytes::from_static(b"answer"), attachments }));
                calls[c].1 = Some(lens);
            }
            3 => {
                out.take(&mut conn);
            }
            4 => {
                out.write_part(&mut conn, input.byte(), now);
            }
            5 => {
                // The client cancels a call, answered or not.
                let Some(c) = (!calls.is_empty()).then(|| usize::from(input.byte()) % calls.len()) else { continue };
                if !calls[c].2 && conn.is_open() {
                    calls[c].2 = true;
                    failed |= from_client(&mut conn, Frame::Cancel(Cancel { id: calls[c].0 }), now).0;
                    stops_at.push(out.taken_len);
                }
            }
            _ => {
                // The client sends a frame of an unknown kind: the connection fails, a pieced
                // answer begun ends at an abort marker, and the goaway naming the failure
                // follows it.
                if conn.is_open() {
                    assert!(conn.handle_input(&mut BytesMut::from(&[0xeeu8; 40][..]), now).is_err());
                    stops_at.push(out.taken_len);
                    failed = true;
                }
            }
        }
        assert_writer_holds_little(out.taken_len - out.written, between);
    }
    out.write_out(&mut conn, now);
    let (frames, aborts) = read_as_peer(&out.taken, out.taken_len, between, &stops_at);
    let mut answered = Vec::new();
    let last = frames.len().wrapping_sub(1);
    for (i, f) in frames.into_iter().enumerate() {
        let id = match f {
            Frame::Response(r) => {
                let lens = r.attachments.iter().map(Payload::len).collect::<Vec<_>>();
                let call = calls.iter().find(|c| c.0 == r.id).expect("an answer for a call that arrived");
                assert_eq!(call.1.as_ref(), Some(&lens), "call {}: the answer given", r.id);
                r.id
            }
            // A refusal (more calls than the limit) or a cancelled call's answer, never two.
            Frame::Error(e) => e.id,
            Frame::GoAway(g) => {
                assert!(failed && i == last && g.code == Code::PROTOCOL, "a goaway, not last or without a failure: {g:?}");
                continue;
            }
            other => panic!("a server sent {other:?}"),
        };
        assert!(!answered.contains(&id), "call {id} answered twice");
        answered.push(id);
    }
    for (id, lens, cancelled) in &calls {
        if lens.is_some() && !cancelled && !failed {
            assert!(answered.contains(id), "call {id}, answered and not cancelled, never got its answer");
        }
    }
    let stopped = calls.iter().filter(|c| (c.2 || failed) && c.1.as_ref().is_some_and(|l| !l.is_empty()) && !answered.contains(&c.0)).count();
    assert!(aborts <= stopped, "{aborts} aborts for {stopped} large answers stopped before they arrived");
}

/// The server reads `frame` from its client: whether that failed the connection, and the ids
/// of the requests that arrived.
fn from_client(conn: &mut Connection, frame: Frame, now: Instant) -> (bool, Vec<u64>) {
    let failed = conn.handle_input(&mut BytesMut::from(&frame.encode().unwrap().to_vec()[..]), now).is_err();
    let mut arrived = Vec::new();
    while let Some(ev) = conn.poll_event() {
        if let Event::Request { id, .. } = ev {
            arrived.push(id);
        }
    }
    (failed, arrived)
}

/// The writer holds at most two pieces of a pieced frame (each at most a piece and a sixteenth,
/// behind a marker), so of two frames (the last pieces of one, the first of the next), besides
/// their headers and the small frames between them; to a peer taking frames between pieces, a
/// run of them (at most MAX_BETWEEN) before each piece.
fn assert_writer_holds_little(in_writer: usize, between: bool) {
    let runs = if between { 4 * (MAX_BETWEEN + MARKER_LEN) } else { 0 };
    assert!(in_writer <= 4 * (PIECE_LEN + PIECE_LEN / 16 + 8) + (64 << 10) + runs, "{in_writer} bytes in the writer");
}

/// What a connection's writer took (`taken`, `taken_len` bytes in all) and wrote (`written`).
#[derive(Default)]
struct Out {
    taken: Vec<Transmit>,
    taken_len: usize,
    written: usize,
}

impl Out {
    /// The writer takes what is queued.
    fn take(&mut self, conn: &mut Connection) -> usize {
        let before = self.taken.len();
        conn.take_transmits(&mut self.taken);
        let n = self.taken[before..].iter().map(Transmit::len).sum::<usize>();
        self.taken_len += n;
        n
    }

    /// A write of part of what the writer holds: `byte + 1` 256ths of it.
    fn write_part(&mut self, conn: &mut Connection, byte: u8, now: Instant) {
        let n = (self.taken_len - self.written) * (usize::from(byte) + 1) / 256;
        conn.handle_written(n, now);
        self.written += n;
    }

    /// Takes and writes whatever `conn` still has to write, until it has nothing left.
    fn write_out(&mut self, conn: &mut Connection, now: Instant) {
        for _ in 0..64 {
            let n = self.take(conn);
            conn.handle_written(self.taken_len - self.written, now);
            self.written = self.taken_len;
            if n == 0 && !conn.has_transmits() {
                break;
            }
        }
        assert!(!conn.has_transmits(), "transmits still waiting");
    }
}

/// The attachment lengths of a large call or answer: more than `PIECED_FROM` bytes in one to
/// three attachments, as `input` says.
fn large_lens(input: &mut Input) -> Vec<usize> {
    let total = PIECED_FROM + 1 + usize::from(input.byte()) * 1024;
    let parts = 1 + usize::from(input.byte() % 3);
    (0..parts).map(|i| total / parts + usize::from(i == 0) * (total % parts)).collect()
}

/// What was `taken` (`taken_len` bytes, hello first), read by the peer's decoder in reads
/// bounded as the driver bounds them: no error; a frame between a pieced frame's pieces only to
/// a peer taking them (`between`), never one of the pieced frame's own call, a ping or a goaway;
/// an abort marker only as the first bytes taken after a stop (a cancel or the failure, at the
/// offsets `stops_at`). The frames, and how many pieced frames ended at an abort marker.
fn read_as_peer(taken: &[Transmit], taken_len: usize, between: bool, stops_at: &[usize]) -> (Vec<Frame>, usize) {
    // What was taken, in order, as slices of the callers' memory (no copy of the large ones).
    let mut wire: VecDeque<&[u8]> = VecDeque::new();
    for t in taken {
        wire.push_back(&t.head);
        wire.extend(t.segments.iter().map(|s| s.memory().expect("memory")));
    }
    assert_eq!(wire.iter().map(|s| s.len()).sum::<usize>(), taken_len);
    let mut d = FrameDecoder::new(Limits { max_frame: 4 << 20, max_attachments: 8 });
    let mut buf = BytesMut::new();
    let (mut at, mut hello_in) = (0, false);
    let mut frames = Vec::new();
    let mut abort_ends = Vec::new();
    while at < taken_len {
        // The buffer sized for the frame, as the driver sizes it.
        buf.reserve(d.bytes_needed().saturating_sub(buf.len()));
        let n = d.piece_room(buf.len()).unwrap_or(64 << 10).min(taken_len - at);
        let mut want = n;
        while want > 0 {
            let s = wire.front_mut().expect("bytes left");
            let k = want.min(s.len());
            buf.extend_from_slice(&s[..k]);
            *s = &s[k..];
            if s.is_empty() {
                wire.pop_front();
            }
            want -= k;
        }
        at += n;
        if !hello_in {
            hello_in = d.decode_hello(&mut buf).expect("the peer's hello").is_some();
            if !hello_in {
                continue;
            }
        }
        let aborted = d.aborted_frames();
        while let Some(f) = d.decode(&mut buf).expect("the bytes follow the rules") {
            if let Some((_, pieced)) = d.pending_pieced() {
                assert!(between, "a frame between pieces to a peer that does not take them: {f:?}");
                let id = match &f {
                    Frame::Request(r) => r.id,
                    Frame::Response(r) => r.id,
                    Frame::Error(e) => e.id,
                    Frame::Cancel(c) => c.id,
                    Frame::Commit(c) => c.id,
                    other => panic!("{other:?} between pieces"),
                };
                assert_ne!(id, pieced, "a frame of call {id} between its own pieces");
            }
            frames.push(f);
        }
        if d.aborted_frames() > aborted {
            // A read bounded by piece_room ends at the marker's end.
            assert_eq!(d.aborted_frames(), aborted + 1);
            abort_ends.push(at);
        }
    }
    assert!(buf.is_empty(), "{} bytes of a frame left", buf.len());
    assert!(between || d.frames_between_pieces() == 0);
    for end in &abort_ends {
        assert!(stops_at.contains(&(end - MARKER_LEN)), "an abort marker at {} where no cancel or failure was (at {stops_at:?})", end - MARKER_LEN);
    }
    (frames, abort_ends.len())
}

/// The server gets the peer's hello, then a pieced request built from `data` (id 1), its
/// commit (or, aborted, a cancel), and an ordinary request (id 3); checked against the rules.
fn pieced_request(conn: &mut Connection, buf: &mut BytesMut, data: &[u8], now: Instant) {
    let _ = conn.handle_input(buf, now);
    assert!(buf.is_empty() && conn.is_open(), "the hello is taken");
    let mut input = Input(data);
    let mut p = pieces::build(&mut input, 1);
    let (how, lo, hi, xor, step) = (input.byte(), input.byte(), input.byte(), input.byte(), input.byte());
    let changed = how & 1 != 0 && xor != 0;
    let expect = if changed { p.mutate(usize::from(u16::from_le_bytes([lo, hi])), xor) } else { p.unchanged() };
    let held = p.req.await_commit && !p.req.mode.client_stream;
    let after = match (p.aborted, held) {
        // A cancel that crossed the abort: dropped, as any for a call the server does not know.
        (true, _) => Some(Frame::Cancel(Cancel { id: 1 })),
        (false, true) => Some(Frame::Commit(Commit { id: 1 })),
        (false, false) => None,
    };
    let next = Request {
        id: 3,
        method: 9,
        mode: CallMode::UNARY,
        await_commit: false,
        deadline: None,
        metadata: Bytes::new(),
        message: Bytes::from_static(b"next"),
        attachments: vec![Payload::from(Bytes::from_static(b"abc"))],
    };
    let mut wire = p.wire.clone();
    for f in after.into_iter().chain([Frame::Request(next)]) {
        wire.extend_from_slice(&f.encode().unwrap().to_vec());
    }
    let boundaries = if matches!(expect, Expect::Decodes { .. }) { p.boundaries() } else { Vec::new() };
    let mut calls = Vec::new();
    let mut out = Vec::new();
    let mut failed = false;
    let mut at = 0;
    while at < wire.len() && conn.is_open() {
        // Reads as the driver makes them: never past a piece's end, a marker's or a run's.
        let room = conn.piece_room(buf.len());
        let n = usize::from(step.max(1)).min(room.unwrap_or(usize::MAX)).min(wire.len() - at);
        if room.is_some() {
            if let Some(b) = boundaries.iter().find(|&&b| at < b && b < at + n) {
                panic!("a read of {n} bytes at {at}, bounded by piece_room {room:?}, crosses the piece boundary at {b}");
            }
        }
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        failed |= conn.handle_input(buf, now).is_err();
        while let Some(ev) = conn.poll_event() {
            if let Event::Request { id, method, mode, metadata, body, .. } = ev {
                for a in &body.attachments {
                    assert_eq!(a.to_bytes().as_ptr() as usize % 64, 0, "attachment of {} bytes not aligned", a.len());
                }
                // A call that came between the pieces is answered at once: the calls in
                // flight stay within the limit.
                if id != 1 && id != 3 {
                    conn.respond(id, Ok(rpc_core::Body::default()));
                }
                calls.push((id, method, mode, metadata, body));
            }
        }
        conn.take_transmits(&mut out);
    }
    let ids: Vec<u64> = calls.iter().map(|c| c.0).collect();
    let Expect::Decodes { between, then } = expect else { return respond_all(conn, calls) };
    // Requests between the pieces arrive first, once each; a ping there is answered.
    let between_ids: Vec<u64> = between.iter().filter_map(|f| if let Frame::Request(r) = f { Some(r.id) } else { None }).collect();
    let pings: Vec<u64> = between.iter().filter_map(|f| if let Frame::Ping(Ping { id, pong: false }) = f { Some(*id) } else { None }).collect();
    match then {
        Then::AsWhole(w) if w == p.whole && !changed => {
            assert!(!failed && conn.is_open(), "a valid pieced request closed the connection");
            assert_eq!(ids, [&between_ids[..], &[1, 3]].concat());
            let (_, method, mode, metadata, body) = &calls[between_ids.len()];
            assert_eq!((*method, *mode), (p.req.method, p.req.mode));
            assert_eq!(*metadata, Metadata::decode(p.req.metadata.clone()).unwrap());
            assert_eq!(body.message, p.req.message);
            assert_eq!(body.attachments, p.req.attachments);
            assert_eq!(pongs(&out), pings, "a pong for each ping between the pieces");
        }
        Then::Aborted if !changed => {
            assert!(!failed && conn.is_open(), "a valid aborted request closed the connection");
            assert_eq!(ids, [&between_ids[..], &[3]].concat(), "an aborted request never arrives; the next one does");
            assert_eq!(pongs(&out), pings, "a pong for each ping between the pieces");
        }
        Then::MarkerError { .. } | Then::Refused { .. } => {
            assert!(failed && !conn.is_open(), "bytes the rules refuse were accepted");
            assert_eq!(ids, between_ids, "only the calls between the pieces before the refused bytes arrive");
        }
        Then::AsWhole(_) | Then::Aborted => {}
    }
    respond_all(conn, calls);
}

/// The ids of the pongs among what the server wrote (`out`, from its hello on).
fn pongs(out: &[Transmit]) -> Vec<u64> {
    let mut bytes = BytesMut::new();
    for t in out {
        bytes.extend_from_slice(&t.to_vec());
    }
    let mut d = FrameDecoder::new(Limits::default());
    d.decode_hello(&mut bytes).expect("the server's hello").expect("whole");
    let mut ids = Vec::new();
    while let Some(f) = d.decode(&mut bytes).expect("the server's frames") {
        if let Frame::Ping(Ping { id, pong: true }) = f {
            ids.push(id);
        }
    }
    ids
}

/// The server answers every call that arrived; the arbitrary bytes follow in the same buffer,
/// after whatever is left of the pieced request's.
fn respond_all(conn: &mut Connection, calls: Vec<(u64, u32, CallMode, Metadata, rpc_core::Body)>) {
    for (id, ..) in calls {
        conn.respond(id, Ok(rpc_core::Body::default()));
    }
}

fn client(data: &[u8], capabilities: u64, now: Instant) {
    let config = ConnConfig { max_frame: 1 << 16, max_attachments: 8, max_metadata: 1024, ..ConnConfig::default() };
    let mut conn = Connection::new(Side::Client, config, now);
    let hello = Hello { version: WIRE_VERSION, capabilities, max_frame: 1 << 16, max_calls_in_flight: 4, max_attachments: 8, max_metadata: 1024, stream_window: 4096 };
    let mut buf = BytesMut::from(&hello.encode()[..]);
    let _ = conn.handle_input(&mut buf, now);
    for mode in [CallMode::UNARY, CallMode::SERVER_STREAMING, CallMode::CLIENT_STREAMING, CallMode::BIDI] {
        let _ = conn.start_call(1, rpc_core::Body::default(), mode, &Metadata::default(), None, now);
    }
    for chunk in data.chunks(61) {
        buf.extend_from_slice(chunk);
        let was_open = conn.is_open();
        let _ = conn.handle_input(&mut buf, now);
        assert!(was_open || !conn.is_open());
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::StreamData { id, body } => conn.consumed(id, body.len() as usize),
                Event::StreamMessages { id, messages } => {
                    conn.consumed_many(id, messages.len(), messages.message_bytes())
                }
                _ => {}
            }
        }
        conn.take_transmits(&mut Vec::new());
    }
    conn.handle_eof(&buf);
    assert!(!conn.is_open());
}
