//! Large frames sent in pieces (`docs/wire.md`, "Pieces"): a client's requests, and a server's
//! answers to a client announcing `caps::PIECED_ANSWERS`. Cut into pieces of at most
//! [`PIECE_LEN`] bytes without copying, handed to the writer two at a time, and ended by an
//! abort marker when the call is given up part-way (the caller dropped it; the client cancelled
//! the answer), so that at most the pieces the writer holds still cross. Other calls' frames
//! queued behind one go between its pieces, to a peer that takes them there
//! (`caps::FRAMES_BETWEEN_PIECES`), instead of waiting for its last piece.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::{header_of, Connection};
use crate::frame::{caps, FrameHeader, FrameKind, Marker, FLAG_PIECED, HEADER_LEN, MARKER_LEN, MAX_BETWEEN, MIN_PIECE};
use crate::payload::Segment;
use crate::transmit::Transmit;

/// Body bytes in a piece, at most: what may still cross after a cancel is two of them (plus, at
/// most, a pool buffer each, which is never cut).
pub const PIECE_LEN: usize = 1 << 20;

/// Pieces of one frame handed to the writer and not yet written, at most.
const IN_WRITER: usize = 2;

/// Requests and answers of more than this many bytes go in pieces: a smaller one is all in the
/// writer's hands at once anyway, and pieces would only cost its receiver a marker's read.
pub const PIECED_FROM: u64 = (IN_WRITER * PIECE_LEN) as u64;

/// A pieced frame on its way out: a client's request or a server's answer.
#[derive(Debug)]
pub(super) struct PiecedOut {
    /// The call it belongs to.
    id: u64,
    /// Pieces not yet handed to the writer, in order; the first begins with the header.
    pieces: VecDeque<Transmit>,
    /// Where each piece handed to the writer and not yet written ends (in bytes taken).
    in_writer: VecDeque<u64>,
    /// A piece of it went to the writer: a cancel can only end it (abort), not withdraw it.
    started: bool,
    /// Body bytes in the pieces not yet handed out: frames sent between pieces may not be
    /// longer (the receiver holds them in the room the body's rest will take).
    body_left: usize,
    /// Frames queued after this one: they wait until its last piece is handed out, but for
    /// those that may go between its pieces ([`between`]).
    pub(super) behind: Vec<Transmit>,
}

impl Connection {
    /// Queues call `id`'s encoded frame `t` (a client's request, a server's response) in
    /// pieces.
    pub(super) fn push_pieced(&mut self, id: u64, t: Transmit) {
        self.seal_small_frames();
        let body_left = t.len() - HEADER_LEN;
        let pieces = cut(t, PIECE_LEN);
        self.out_bytes += pieces.iter().map(Transmit::len).sum::<usize>();
        self.pieced.push_back(PiecedOut { id, pieces, in_writer: VecDeque::new(), started: false, body_left, behind: Vec::new() });
    }

    /// Queues a whole frame (see [`queue`]).
    #[inline]
    pub(super) fn queue(&mut self, t: Transmit) {
        if self.pieced.is_empty() {
            self.transmits.push(t);
        } else {
            let between = self.takes_frames_between();
            queue(&mut self.pieced, &mut self.transmits, between, t);
        }
    }

    /// True when the peer takes whole frames between the pieces of a pieced frame.
    pub(super) fn takes_frames_between(&self) -> bool {
        self.peer.is_some_and(|h| h.capabilities & caps::FRAMES_BETWEEN_PIECES != 0)
    }

    /// Bytes of pieces not yet handed out that a frame queued now may go before, to a peer
    /// that takes frames between pieces: those of every pieced frame queued (the frame goes
    /// between the first one's pieces, or before it if it has not begun, see [`queue`]); 0 to
    /// another peer. A stream sender is not ahead of its writer by them
    /// ([`Connection::queued_bytes`]): its messages need not wait for them.
    pub(super) fn pieces_overtaken(&self) -> usize {
        if !self.takes_frames_between() {
            return 0;
        }
        self.pieced.iter().flat_map(|p| &p.pieces).map(Transmit::len).sum()
    }

    /// True when the writer may take pieces now.
    #[inline]
    pub(super) fn has_pieces_ready(&self) -> bool {
        self.pieced.front().is_some_and(|p| {
            p.in_writer.iter().filter(|&&end| end > self.written).count() < IN_WRITER
        })
    }

    /// Hands the writer pieces of the first pieced frame, up to [`IN_WRITER`] not yet written,
    /// each after a run of the frames waiting behind it that may go between its pieces; once
    /// its last piece is out, the frames still behind it follow, then the next pieced frame's
    /// pieces.
    pub(super) fn take_pieces(&mut self, out: &mut Vec<Transmit>) {
        let between_ok = self.takes_frames_between();
        while let Some(p) = self.pieced.front_mut() {
            while p.in_writer.front().is_some_and(|&end| end <= self.written) {
                p.in_writer.pop_front();
            }
            while p.in_writer.len() < IN_WRITER {
                if between_ok && p.started {
                    self.out_bytes += between(p, &mut self.taken, &mut self.commits, out);
                }
                let Some(piece) = p.pieces.pop_front() else { break };
                // The bytes of the body in it: what follows its marker (and the header, in
                // the first); none in an abort marker.
                p.body_left -= piece.len() - MARKER_LEN - if p.started { 0 } else { HEADER_LEN };
                self.taken += piece.len() as u64;
                p.in_writer.push_back(self.taken);
                p.started = true;
                out.push(piece);
            }
            if !p.pieces.is_empty() {
                return;
            }
            let done = self.pieced.pop_front().expect("front checked");
            // Complete (not aborted): a request's commit goes once its last piece is written
            // (a server has none to send).
            if let Some(entry) = self.commits.iter_mut().find(|(i, end)| *i == done.id && end.is_none()) {
                entry.1 = Some(self.taken);
            }
            let mut behind = done.behind;
            super::hand_out(&mut self.taken, &mut self.commits, &mut behind, out);
        }
    }

    /// Call `id` is over on our side (client: its caller gave up; server: the client
    /// cancelled it), so its pieced frame need not cross. One not begun is withdrawn (true);
    /// one begun ends at an abort marker in place of its next piece (true; for a request the
    /// server then sees no call, so no cancel need follow). False when `id` has no pieced
    /// frame queued (none, or its last piece already went to the writer).
    pub(super) fn withdraw_or_abort_pieced(&mut self, id: u64) -> bool {
        let Some(i) = self.pieced.iter().position(|p| p.id == id) else { return false };
        let p = &mut self.pieced[i];
        let unsent: usize = p.pieces.iter().map(Transmit::len).sum();
        if p.started {
            p.pieces.clear();
            let abort = abort_marker();
            self.out_bytes = self.out_bytes - unsent + abort.len();
            p.pieces.push_back(abort);
            return true;
        }
        self.out_bytes -= unsent;
        let gone = self.pieced.remove(i).expect("position found");
        // What waited behind it now waits behind the one before it, or goes to the queue.
        match i.checked_sub(1) {
            Some(before) => self.pieced[before].behind.extend(gone.behind),
            None => self.transmits.extend(gone.behind),
        }
        true
    }

    /// Client, at the server's goaway naming `last_id`: the pieced requests numbered up to it
    /// that have not begun. Later calls overtook them ([`queue`]), so the server saw those and
    /// not these; sent now, they would arrive after its goaway and be refused.
    pub(super) fn overtaken_unbegun(&self, last_id: u64) -> Vec<u64> {
        self.pieced.iter().filter(|p| !p.started && p.id <= last_id).map(|p| p.id).collect()
    }

    /// Drops every pieced frame and what waits behind them (the connection failed); returns
    /// their bytes. One the writer has begun ends at an abort marker, queued, so that what
    /// follows it (the goaway naming the failure) is read as a frame, not as its pieces.
    pub(super) fn drop_pieced(&mut self) -> usize {
        let begun = self.pieced.front().is_some_and(|p| p.started);
        let mut bytes = 0;
        for p in self.pieced.drain(..) {
            bytes += p.pieces.iter().chain(&p.behind).map(Transmit::len).sum::<usize>();
        }
        if begun {
            let abort = abort_marker();
            self.out_bytes += abort.len();
            self.transmits.push(abort);
        }
        bytes
    }
}

/// Before `p`'s next piece (a piece of it went already): the frames at the front of what
/// waits behind it that may go between its pieces, as one run behind a frames marker, handed
/// out through [`super::hand_out`] (so that a request among them gets its commit). In order,
/// up to the first that may not: a frame of `p`'s own call (its place is after `p`), a ping
/// (its timeout starts once `p` is out, see `Connection::take_transmits`) or a goaway; and no
/// more than [`MAX_BETWEEN`] bytes, nor than the body left after the pieces handed out, where
/// the receiver holds them. Returns the bytes it added (the marker's), for `out_bytes`.
fn between(p: &mut PiecedOut, taken: &mut u64, commits: &mut VecDeque<(u64, Option<u64>)>, out: &mut Vec<Transmit>) -> usize {
    if p.pieces.front().is_none_or(|next| next.len() == MARKER_LEN) {
        // Nothing left, or the abort marker next: what waits goes after it anyway.
        return 0;
    }
    let room = MAX_BETWEEN.min(p.body_left);
    let (mut n, mut bytes) = (0, 0);
    for t in &p.behind {
        let may = header_of(t).is_some_and(|h| match h.kind {
            FrameKind::Ping | FrameKind::GoAway => false,
            // Numbered as the ping it answers, not as a call: whatever its id, not `p`'s.
            FrameKind::Pong => true,
            _ => h.id != p.id,
        });
        if !may || bytes + t.len() > room {
            break;
        }
        n += 1;
        bytes += t.len();
    }
    if n == 0 {
        return 0;
    }
    let marker = Marker::Frames(u32::try_from(bytes).expect("at most MAX_BETWEEN")).encode();
    let mut run = Vec::with_capacity(n + 1);
    run.push(Transmit { head: marker, segments: Vec::new() });
    run.extend(p.behind.drain(..n));
    super::hand_out(taken, commits, &mut run, out);
    MARKER_LEN
}

/// The piece that ends a pieced frame part-way: an abort marker alone, in place of the next
/// data piece.
fn abort_marker() -> Transmit {
    Transmit { head: Marker::Abort.encode(), segments: Vec::new() }
}

/// Queues whole frame `t` on the two queues ([`Connection::queue`], here for a caller holding
/// another of the connection's fields). With no pieced frame queued, in `transmits`. Else, to
/// a peer that does not take frames between pieces (`between` false), behind the last pieced
/// frame, after everything queued before it. To one that does, frames keep their order within
/// each call, not across calls:
///
/// - a frame of a call whose pieced frame is queued waits behind that frame;
/// - a ping waits behind the last pieced frame (its timeout starts once it is written), and so
///   does a goaway (it never goes between pieces);
/// - any other frame goes behind the first pieced frame if it has begun, so between its next
///   pieces ([`between`]), or else in `transmits`, before it: a small call does not wait for
///   the pieced frames queued before it, only for the pieces the writer holds. A client's
///   pieced request may so be overtaken before it begins; should the server's goaway come
///   first, the request is withdrawn ([`Connection::overtaken_unbegun`]).
#[inline]
pub(super) fn queue(pieced: &mut VecDeque<PiecedOut>, transmits: &mut Vec<Transmit>, between: bool, t: Transmit) {
    if pieced.is_empty() {
        transmits.push(t);
        return;
    }
    let last = pieced.len() - 1;
    let at = if between { place(pieced, &t) } else { Some(last) };
    match at {
        Some(i) => pieced[i].behind.push(t),
        None => transmits.push(t),
    }
}

/// Where [`queue`] puts `t` to a peer that takes frames between pieces: behind pieced frame
/// `Some(i)`, or in `transmits` (`None`).
fn place(pieced: &VecDeque<PiecedOut>, t: &Transmit) -> Option<usize> {
    let last = pieced.len() - 1;
    let own = match header_of(t) {
        None => return Some(last),
        Some(h) => match h.kind {
            FrameKind::Ping | FrameKind::GoAway => return Some(last),
            // Numbered as the ping it answers, not as a call.
            FrameKind::Pong => None,
            _ => pieced.iter().position(|p| p.id == h.id),
        },
    };
    own.or_else(|| pieced[0].started.then_some(0))
}

/// `t` (an encoded request or response) as pieces: its header, flagged pieced, then its body
/// in pieces of `piece_len` bytes (the last one up to a sixteenth more, never under
/// [`MIN_PIECE`]), each behind its marker. Memory and file regions are cut where a piece ends, by reference; a pool
/// buffer (`Segment::External`) is never cut, so a piece may run past `piece_len` by one.
pub(crate) fn cut(t: Transmit, piece_len: usize) -> VecDeque<Transmit> {
    let mut head = BytesMut::from(&t.head[..]);
    head[1] |= FLAG_PIECED;
    debug_assert!(FrameHeader::decode(&head[..HEADER_LEN]).is_ok());
    let header = head.split_to(HEADER_LEN);
    let mut sources: VecDeque<Segment> =
        std::iter::once(Segment::Bytes(head.freeze())).chain(t.segments).filter(|s| !s.is_empty()).collect();
    let mut left: usize = sources.iter().map(Segment::len).sum();
    let mut pieces = VecDeque::new();
    let mut first = Some(header);
    while left > 0 {
        let mut segments = Vec::new();
        let mut n = 0;
        while n < left {
            let mut want = piece_len.saturating_sub(n);
            if want == 0 && left - n >= runt(piece_len) {
                break;
            }
            // Never leave a last piece shorter than a sixteenth of a piece (and never under
            // MIN_PIECE): this one takes it, saving the receiver a marker's read for a runt.
            if left - n - want.min(left - n) < runt(piece_len) {
                want = left - n;
            }
            let s = sources.pop_front().expect("bytes left");
            let (take, rest) = split(s, want);
            n += take.len();
            segments.push(take);
            if let Some(rest) = rest {
                sources.push_front(rest);
            }
        }
        left -= n;
        let marker = Marker::Data(u32::try_from(n).expect("a piece fits in u32")).encode();
        let head = match first.take() {
            Some(mut h) => {
                h.extend_from_slice(&marker);
                h.freeze()
            }
            None => marker,
        };
        pieces.push_back(Transmit { head, segments });
    }
    pieces
}

/// The shortest last piece [`cut`] leaves: less goes with the piece before.
fn runt(piece_len: usize) -> usize {
    (piece_len / 16).max(MIN_PIECE)
}

/// `s` cut after `at` bytes, by reference: the part up to `at` and the rest, if any. A pool
/// buffer is never cut (it is the whole first part).
fn split(s: Segment, at: usize) -> (Segment, Option<Segment>) {
    if s.len() <= at {
        return (s, None);
    }
    match s {
        Segment::Bytes(b) => (Segment::Bytes(b.slice(..at)), Some(Segment::Bytes(b.slice(at..)))),
        Segment::File(f) => {
            let len = f.len();
            let head = f.slice(0, at).expect("inside the region");
            let rest = f.slice(at, len - at).expect("inside the region");
            (Segment::File(head), Some(Segment::File(rest)))
        }
        other => (other, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::frame::{Marker, MARKER_LEN};

    /// The pieces' bytes with markers checked and cut out, and the piece lengths.
    fn reassemble(pieces: &VecDeque<Transmit>) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut lens = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let bytes = p.to_vec();
            let start = if i == 0 {
                out.extend_from_slice(&bytes[..HEADER_LEN]);
                HEADER_LEN
            } else {
                0
            };
            let Marker::Data(n) = Marker::decode(&bytes[start..start + MARKER_LEN]).unwrap() else { panic!("data") };
            assert_eq!(n as usize, bytes.len() - start - MARKER_LEN);
            lens.push(n as usize);
            out.extend_from_slice(&bytes[start + MARKER_LEN..]);
        }
        (out, lens)
    }

    fn frame(body: &[Bytes]) -> Transmit {
        let mut h = FrameHeader::new(crate::frame::FrameKind::Request);
        h.id = 7;
        let mut head = BytesMut::new();
        h.encode(&mut head);
        head.extend_from_slice(b"table");
        Transmit { head: head.freeze(), segments: body.iter().cloned().map(Segment::Bytes).collect() }
    }

    #[test]
    fn pieces_carry_the_frame_with_its_header_flagged_and_no_piece_under_the_minimum() {
        for (sizes, piece_len) in [
            (vec![100usize], 16usize),
            (vec![16, 16, 16], 16),
            (vec![3, 1000, 2], 100),
            (vec![95], 100),
            (vec![96, 1], 100), // 5 + 96 + 1 = 102: not a piece of 2
            (vec![1 << 20, 5], PIECE_LEN),
        ] {
            let body: Vec<Bytes> = sizes.iter().enumerate().map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n])).collect();
            let t = frame(&body);
            let whole = t.to_vec();
            let pieces = cut(t, piece_len);
            let (bytes, lens) = reassemble(&pieces);
            assert_eq!(bytes[1], whole[1] | FLAG_PIECED, "{sizes:?}");
            assert_eq!(bytes[..1], whole[..1]);
            assert_eq!(bytes[2..], whole[2..], "{sizes:?}: the body, markers cut out, is the frame's");
            assert!(lens.iter().all(|&n| n >= MIN_PIECE), "{sizes:?}: {lens:?}");
            assert!(lens.iter().all(|&n| n <= piece_len + runt(piece_len)), "{sizes:?}: {lens:?}");
        }
    }

    /// A decoder past its hello, taking frames up to 1 MiB.
    fn decoder() -> crate::frame::FrameDecoder {
        use crate::frame::{Hello, Limits, WIRE_VERSION};
        let mut d = crate::frame::FrameDecoder::new(Limits { max_frame: 1 << 20, max_attachments: 8 });
        let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 8, max_metadata: 0, stream_window: 0 };
        d.decode_hello(&mut BytesMut::from(&hello.encode()[..])).unwrap().unwrap();
        d
    }

    fn request(attachments: &[usize]) -> crate::frame::Request {
        crate::frame::Request {
            id: 9,
            method: 3,
            mode: Default::default(),
            await_commit: true,
            metadata: Bytes::new(),
            deadline: None,
            message: Bytes::from_static(b"the arguments"),
            attachments: attachments.iter().enumerate().map(|(i, &n)| crate::Payload::from(vec![i as u8 + 1; n])).collect(),
        }
    }

    /// Feeds `wire` to a decoder in reads of `step` bytes, each bounded as the driver bounds
    /// it (never past a piece or a marker), and returns what it decoded.
    fn decode_in_reads(wire: &[u8], step: usize) -> (Vec<crate::frame::Frame>, crate::frame::FrameDecoder) {
        let mut d = decoder();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let room = d.piece_room(buf.len()).unwrap_or(usize::MAX);
            let n = step.min(room).min(wire.len() - at);
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some(f) = d.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        (frames, d)
    }

    #[test]
    fn a_pieced_request_decodes_as_the_whole_one_however_its_bytes_arrive() {
        let r = request(&[1000, 3, 5000]);
        let whole = r.clone().encode().unwrap();
        let wire: Vec<u8> = cut(whole, 700).iter().flat_map(Transmit::to_vec).collect();
        for step in [1, 7, 8, 9, 64, 699, 700, 701, 4096, usize::MAX] {
            let (frames, _) = decode_in_reads(&wire, step);
            let [crate::frame::Frame::Request(got)] = &frames[..] else { panic!("step {step}: {frames:?}") };
            assert_eq!(got.message, r.message, "step {step}");
            assert_eq!(got.attachments.len(), 3);
            for (a, b) in got.attachments.iter().zip(&r.attachments) {
                assert_eq!(a.to_bytes(), b.to_bytes(), "step {step}");
            }
        }
    }

    #[test]
    fn an_abort_marker_ends_the_frame_unseen_and_the_next_frame_decodes() {
        let pieces = cut(request(&[5000]).encode().unwrap(), 1000);
        let mut wire: Vec<u8> = pieces.iter().take(2).flat_map(Transmit::to_vec).collect();
        wire.extend_from_slice(&Marker::Abort.encode());
        let mut next = request(&[10]);
        next.id = 10;
        next.await_commit = false;
        wire.extend_from_slice(&next.encode().unwrap().to_vec());
        for step in [1, 8, 100, 1000, usize::MAX] {
            let (frames, d) = decode_in_reads(&wire, step);
            let [crate::frame::Frame::Request(got)] = &frames[..] else { panic!("step {step}: {frames:?}") };
            assert_eq!(got.id, 10, "step {step}: only the frame after the abort");
            assert_eq!(d.aborted_frames(), 1);
        }
    }

    #[test]
    fn a_marker_that_breaks_the_rules_is_a_protocol_error_naming_it() {
        let pieces = cut(request(&[100]).encode().unwrap(), 1 << 20);
        let first = pieces[0].to_vec();
        let with_marker = |m: &[u8]| {
            let mut w = first[..HEADER_LEN].to_vec();
            w.extend_from_slice(m);
            w.extend_from_slice(&first[HEADER_LEN + MARKER_LEN..]);
            w
        };
        let body = first.len() - HEADER_LEN - MARKER_LEN;
        for (marker, says) in [
            ([4u8, 0, 0, 0, 0, 0, 0, 0], "a data piece of 4 bytes"),
            ([9, 0, 0, 0, 7, 0, 0, 0], "unknown marker kind 7"),
            ([1, 0, 0, 0, 1, 0, 0, 0], "an abort with a length of 1"),
            ((body as u32 + 1).to_le_bytes().iter().chain(&[0u8; 4]).copied().collect::<Vec<_>>().try_into().unwrap(), "remain"),
        ] {
            let mut d = decoder();
            let mut buf = BytesMut::from(&with_marker(&marker)[..]);
            let e = d.decode(&mut buf).expect_err(says).to_string();
            assert!(e.contains("piece marker") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_pieced_frame_is_not_decoded_from_memory_that_cannot_change() {
        let wire: Vec<u8> = cut(request(&[100]).encode().unwrap(), 50).iter().flat_map(Transmit::to_vec).collect();
        let mut d = decoder();
        let mut chunk = Bytes::from(wire.clone());
        assert!(d.decode(&mut chunk).unwrap().is_none(), "waits for a buffer of its own");
        assert_eq!(chunk.len(), wire.len(), "nothing taken from the chunk");
        let mut buf = BytesMut::from(&wire[..]);
        assert!(matches!(d.decode(&mut buf).unwrap(), Some(crate::frame::Frame::Request(_))));
    }
}
