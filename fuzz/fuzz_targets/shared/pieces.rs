//! Pieced frames for the fuzz targets (`docs/wire.md`, "Pieces"): a request built from the
//! input, encoded whole, then cut into pieces at input-chosen lengths by the rules (written
//! here from the rules, not with the crate's cutter, which is internal), perhaps with whole
//! frames of other calls between its pieces (frames markers, `what = 2`), perhaps breaking one
//! rule of those on purpose, perhaps ended by an abort marker at an input-chosen piece, perhaps
//! with one byte changed; and what the rules say a receiver makes of it. Included by
//! `frame_decoder.rs` and `connection.rs`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::frame::{
    CallMode, Cancel, Frame, FrameDecoder, Hello, Limits, Ping, Request, FLAG_PIECED, HEADER_LEN, MARKER_LEN, MAX_BETWEEN, MIN_PIECE, WIRE_VERSION,
};
use rpc_core::{DecodeError, Metadata, Payload};

/// The input, a byte at a time; zeros once it is used up.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

/// A marker's bytes, from the table: `len` u32 LE, `what` (0 data, 1 abort, 2 frames), 3 zero
/// bytes.
pub fn marker(len: u32, what: u8) -> [u8; MARKER_LEN] {
    let l = len.to_le_bytes();
    [l[0], l[1], l[2], l[3], what, 0, 0, 0]
}

/// A marker in the pieced frame: where it starts, the body bytes still to come before it, and
/// its length (`None` for an abort).
pub struct MarkerAt {
    pub at: usize,
    pub body_left: usize,
    pub data: Option<usize>,
}

/// A piece's bytes: where they start in the pieced frame, where in the whole frame, how many.
pub struct Span {
    pub at: usize,
    pub whole_at: usize,
    pub len: usize,
}

/// A whole frame of another call between the pieces: where it starts in the pieced frame, its
/// bytes, and the frame a receiver must give back.
pub struct Between {
    pub at: usize,
    pub bytes: Vec<u8>,
    pub frame: Frame,
}

/// A frames marker (`what = 2`) and the whole frames of other calls it announces, between two
/// pieces.
pub struct Run {
    /// Where its marker starts in the pieced frame.
    pub at: usize,
    /// The bytes its marker announces.
    pub len: usize,
    /// The body bytes still to come before it: `len` may not be more.
    pub body_left: usize,
    /// The bytes that follow its marker: `len`, or none after a marker the rules refuse.
    pub sent: usize,
    /// Its frames that a receiver gives back, in order: all of them, or, in a run that breaks
    /// a rule, those before the bytes that break it.
    pub frames: Vec<Between>,
    /// It breaks a rule on purpose.
    pub broken: bool,
}

impl Run {
    /// Where its bytes end in the pieced frame.
    pub fn end(&self) -> usize {
        self.at + MARKER_LEN + self.sent
    }
}

/// A rule of frames between pieces that a pieced frame breaks on purpose: the `piece marker`
/// error it must give once its bytes up to `end` are in, whose reason `says` which.
pub struct Broken {
    pub end: usize,
    pub says: String,
}

pub struct Pieced {
    /// The request, as the decoder must give it back.
    pub req: Request,
    /// Its whole (unpieced) encoding.
    pub whole: Vec<u8>,
    /// The pieced frame: header flagged, then markers and pieces, and runs of frames between
    /// pieces.
    pub wire: Vec<u8>,
    /// Its data and abort markers.
    pub markers: Vec<MarkerAt>,
    pub spans: Vec<Span>,
    /// Frames between its pieces, in order.
    pub runs: Vec<Run>,
    /// It ends at an abort marker.
    pub aborted: bool,
    /// The rule it breaks on purpose, if any: nothing after that is read.
    pub broken: Option<Broken>,
}

/// What the rules say a receiver makes of a pieced frame, perhaps with one byte changed.
#[derive(Debug)]
pub enum Expect {
    /// The frames between its pieces come out first, in order (`between`: those before the
    /// bytes that end it, when an error does), then `then`.
    Decodes { between: Vec<Frame>, then: Then },
    /// A length the rules allow but that no longer matches the pieces or the frames between
    /// them, or a header field the frame is sized by: anything but a panic.
    Anything,
}

/// What comes of a pieced frame after the frames between its pieces.
#[derive(Debug)]
pub enum Then {
    /// What its whole encoding gives, here with a body byte (or a header field the pieces do
    /// not depend on) changed, or not.
    AsWhole(Vec<u8>),
    /// Nothing: an abort marker ended it.
    Aborted,
    /// A `piece marker` error, raised once the marker or run ending at `end` is in, whose
    /// reason `says` which rule was broken: a changed kind byte, a reserved byte not zero, an
    /// abort's length, a data length under `MIN_PIECE`, past the body or leaving 1 to 7 bytes
    /// of it; frames of under a header's bytes or over `MAX_BETWEEN`, or more than the body
    /// left, a run ending inside a frame, a pieced frame in a run.
    MarkerError { end: usize, says: String },
    /// The error that a frame between pieces (with a byte changed) gives alone, raised once its
    /// run, ending at `end`, is in.
    Refused { end: usize, error: DecodeError },
}

/// A rule of frames between pieces that a run breaks on purpose.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Its `len` is more than the body still to come.
    PastBody,
    /// Its `len` is under a frame header's.
    Short,
    /// Its `len` is over `MAX_BETWEEN`.
    Long,
    /// Fewer than a header's bytes follow its last frame.
    Junk,
    /// Its last frame is cut short.
    Cut,
    /// A pieced request follows its frames.
    PiecedFrame,
}

impl Rule {
    /// The rule `b` picks, or none.
    fn pick(b: u8) -> Option<Rule> {
        [Rule::PastBody, Rule::Short, Rule::Long, Rule::Junk, Rule::Cut, Rule::PiecedFrame].get(usize::from(b % 8)).copied()
    }
}

/// A unary request of another call, id `id`: a message of `message` bytes, perhaps an
/// attachment of so many.
pub fn small_request(id: u64, message: usize, attachment: Option<usize>) -> Request {
    Request {
        id,
        method: 5,
        mode: CallMode::UNARY,
        await_commit: false,
        deadline: None,
        metadata: Bytes::new(),
        message: Bytes::from(vec![b'b'; message]),
        attachments: attachment.map(|n| Payload::from(vec![0xb0; n])).into_iter().collect(),
    }
}

/// A small whole frame of another call, as `input` says: a ping or a pong, a cancel (of call
/// `id + 1000`, which no one started), or a request of id `id`, perhaps with an attachment.
fn small_frame(input: &mut Input, id: u64) -> Frame {
    let b = input.byte();
    match b % 4 {
        0 => Frame::Ping(Ping { id, pong: b & 0x80 != 0 }),
        1 => Frame::Cancel(Cancel { id: id + 1000 }),
        k => Frame::Request(small_request(id, usize::from(b >> 2) % 48, (k == 3).then_some(usize::from(b >> 3)))),
    }
}

/// Before a piece, with `left` body bytes still to come: as `input` says, no run or a frames
/// marker and 1 to 3 small frames, as many as fit in `left` (ids after `last_id`); breaking
/// `rule` instead if it is due and can be broken here. The run and the rule it broke, appended
/// to `wire`.
fn run(input: &mut Input, wire: &mut Vec<u8>, left: usize, rule: &mut Option<Rule>, last_id: &mut u64) -> Option<(Run, Option<Broken>)> {
    let count = input.byte() % 4;
    if count == 0 {
        return None;
    }
    let at = wire.len();
    let (mut frames, mut bytes) = (Vec::new(), Vec::new());
    for _ in 0..count {
        *last_id += 1;
        let frame = small_frame(input, *last_id);
        let b = frame.clone().encode().unwrap().to_vec();
        if bytes.len() + b.len() > left {
            break;
        }
        frames.push(Between { at: at + MARKER_LEN + bytes.len(), bytes: b.clone(), frame });
        bytes.extend_from_slice(&b);
    }
    let refused = |wire: &mut Vec<u8>, len: usize, says: String| {
        wire.extend_from_slice(&marker(len as u32, 2));
        let run = Run { at, len, body_left: left, sent: 0, frames: Vec::new(), broken: true };
        Some((run, Some(Broken { end: at + MARKER_LEN, says })))
    };
    let says = match rule.take() {
        Some(Rule::PastBody) => {
            let len = (left + 1 + usize::from(input.byte())).max(HEADER_LEN);
            return refused(wire, len, format!("frames of {len} bytes between pieces where {left} of the frame remain"));
        }
        Some(Rule::Short) => {
            let len = usize::from(input.byte()) % HEADER_LEN;
            return refused(wire, len, format!("frames of {len} bytes between pieces (at least a frame header"));
        }
        Some(Rule::Long) => {
            let len = MAX_BETWEEN + 1 + usize::from(input.byte()) * 4099;
            return refused(wire, len, format!("frames of {len} bytes between pieces (at least a frame header"));
        }
        Some(Rule::Junk) if !frames.is_empty() && bytes.len() < left => {
            let k = 1 + usize::from(input.byte()) % (HEADER_LEN - 1).min(left - bytes.len());
            bytes.extend((0..k).map(|_| input.byte()));
            Some(format!("frames between pieces end with {k} bytes of a frame header"))
        }
        Some(Rule::Cut) if frames.last().is_some_and(|f| bytes.len() - HEADER_LEN >= 1 && f.bytes.len() > 1) => {
            let last = frames.pop().expect("checked");
            // Cut by 1 byte at least, leaving a header's bytes in the run at least.
            let most = (last.bytes.len() - 1).min(bytes.len() - HEADER_LEN);
            let cut = 1 + usize::from(input.byte()) % most;
            bytes.truncate(bytes.len() - cut);
            let kept = last.bytes.len() - cut;
            Some(if kept < HEADER_LEN {
                format!("frames between pieces end with {kept} bytes of a frame header")
            } else {
                format!("of {} bytes between pieces, where the marker left {kept}", last.bytes.len())
            })
        }
        Some(Rule::PiecedFrame) => {
            *last_id += 1;
            let mut b = Frame::Request(small_request(*last_id, usize::from(input.byte()) % 32, None)).encode().unwrap().to_vec();
            b[1] |= FLAG_PIECED;
            if bytes.len() + b.len() <= left {
                bytes.extend_from_slice(&b);
                Some("a pieced request between the pieces of another frame".to_string())
            } else {
                *rule = Some(Rule::PiecedFrame);
                None
            }
        }
        // Not here: perhaps before a later piece.
        other => {
            *rule = other;
            None
        }
    };
    if bytes.is_empty() {
        return None;
    }
    wire.extend_from_slice(&marker(bytes.len() as u32, 2));
    wire.extend_from_slice(&bytes);
    let run = Run { at, len: bytes.len(), body_left: left, sent: bytes.len(), frames, broken: says.is_some() };
    let broken = says.map(|says| Broken { end: run.end(), says });
    Some((run, broken))
}

/// A request whose shape comes from `input`, id `id`, cut into pieces of `MIN_PIECE` to
/// `MIN_PIECE + 255` bytes as `input` says, perhaps with runs of 1 to 3 whole frames of other
/// calls before pieces after the first (ids from `id + 100`, as many as fit in the body still
/// to come), perhaps breaking a rule of those on purpose, perhaps ended by an abort marker.
pub fn build(input: &mut Input, id: u64) -> Pieced {
    let shape = input.byte();
    let n = usize::from(input.byte() % 5);
    let msg = usize::from(input.byte());
    let attachments = (0..n).map(|i| Payload::from(vec![0xa0 | i as u8; usize::from(input.byte()) * 3])).collect();
    let metadata = if shape & 0x04 != 0 {
        let mut m = Metadata::new();
        m.insert("k", "v").unwrap();
        m.encode()
    } else {
        Bytes::new()
    };
    let req = Request {
        id,
        method: 7,
        mode: CallMode::from_flags(shape),
        // A client sends only await-commit requests in pieces; the decoder does not care.
        await_commit: shape & 0x08 == 0,
        deadline: (shape & 0x10 != 0).then(|| Duration::from_micros(msg as u64 + 1)),
        metadata,
        message: Bytes::from(vec![b'm'; msg]),
        attachments,
    };
    let whole = Frame::Request(req.clone()).encode().unwrap().to_vec();
    let body = &whole[HEADER_LEN..];
    // A body of 1 to 7 bytes cannot go in pieces of at least MIN_PIECE: only an abort ends it.
    let abort_after = if (1..MIN_PIECE).contains(&body.len()) {
        Some(0)
    } else {
        (shape & 0x20 != 0).then(|| usize::from(input.byte() % 8))
    };
    let between = shape & 0x40 != 0;
    let mut rule = if between && shape & 0x80 != 0 { Rule::pick(input.byte()) } else { None };
    let mut last_id = id + 99;
    let mut wire = whole[..HEADER_LEN].to_vec();
    wire[1] |= FLAG_PIECED;
    let (mut markers, mut spans, mut runs, mut aborted, mut broken) = (Vec::new(), Vec::new(), Vec::new(), false, None);
    let mut done = 0;
    while done < body.len() {
        let left = body.len() - done;
        if between && !markers.is_empty() && broken.is_none() {
            if let Some((r, b)) = run(input, &mut wire, left, &mut rule, &mut last_id) {
                runs.push(r);
                broken = b;
            }
        }
        if abort_after == Some(markers.len()) {
            markers.push(MarkerAt { at: wire.len(), body_left: left, data: None });
            wire.extend_from_slice(&marker(0, 1));
            aborted = true;
            break;
        }
        let mut len = (MIN_PIECE + usize::from(input.byte())).min(left);
        // Never leave fewer than MIN_PIECE bytes of the body: this piece takes them.
        if left - len < MIN_PIECE {
            len = left;
        }
        markers.push(MarkerAt { at: wire.len(), body_left: left, data: Some(len) });
        wire.extend_from_slice(&marker(len as u32, 0));
        spans.push(Span { at: wire.len(), whole_at: HEADER_LEN + done, len });
        wire.extend_from_slice(&body[done..done + len]);
        done += len;
    }
    Pieced { req, whole, wire, markers, spans, runs, aborted, broken }
}

/// What a receiver makes of `bytes`, one whole frame, alone after a hello.
fn alone(bytes: &[u8]) -> Result<Frame, DecodeError> {
    let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 };
    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&hello.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    buf.extend_from_slice(bytes);
    let frame = d.decode(&mut buf)?.expect("a whole frame");
    assert!(buf.is_empty(), "one frame");
    Ok(frame)
}

impl Pieced {
    /// Where markers start and end in the pieced frame, where the frames between pieces end,
    /// and where it ends: a read bounded by the decoder's `piece_room` never crosses one.
    pub fn boundaries(&self) -> Vec<usize> {
        let mut b: Vec<usize> = self.markers.iter().flat_map(|m| [m.at, m.at + MARKER_LEN]).collect();
        b.extend(self.runs.iter().flat_map(|r| [r.at, r.at + MARKER_LEN, r.end()]));
        b.push(self.wire.len());
        b
    }

    /// The frames between pieces that come out once the bytes up to `end` are in.
    fn between_before(&self, end: usize) -> Vec<Frame> {
        self.runs.iter().filter(|r| r.end() <= end).flat_map(|r| r.frames.iter().map(|f| f.frame.clone())).collect()
    }

    /// What the rules say a receiver makes of the frame as built: the frames between its
    /// pieces, then the request, or nothing (aborted), or the error of the rule it breaks on
    /// purpose.
    pub fn unchanged(&self) -> Expect {
        let then = match &self.broken {
            Some(b) => return Expect::Decodes { between: self.between_before(b.end), then: Then::MarkerError { end: b.end, says: b.says.clone() } },
            None if self.aborted => Then::Aborted,
            None => Then::AsWhole(self.whole.clone()),
        };
        Expect::Decodes { between: self.between_before(usize::MAX), then }
    }

    /// The body byte (or header field) at `i` of the whole frame changed by `xor`: what that
    /// frame gives, after the frames between pieces; unless the frame is dropped (aborted) or
    /// refused (a rule broken) before it is decoded.
    fn as_whole(&self, i: usize, xor: u8) -> Expect {
        if self.aborted || self.broken.is_some() {
            return self.unchanged();
        }
        let mut w = self.whole.clone();
        w[i] ^= xor;
        Expect::Decodes { between: self.between_before(usize::MAX), then: Then::AsWhole(w) }
    }

    /// Xors the byte at `at` (modulo the frame's length) with `xor` (not 0), and says what the
    /// rules make of it.
    pub fn mutate(&mut self, at: usize, xor: u8) -> Expect {
        debug_assert_ne!(xor, 0);
        let at = at % self.wire.len();
        self.wire[at] ^= xor;
        if self.broken.as_ref().is_some_and(|b| at >= b.end) {
            // Past the rule broken on purpose: never read.
            return self.unchanged();
        }
        if at < HEADER_LEN {
            // The kind, the attachment count, the lengths or the pieced flag: the decoder then
            // expects other pieces than the ones that follow.
            let sizes = at == 0 || (2..4).contains(&at) || (24..28).contains(&at) || (32..40).contains(&at);
            if sizes || (at == 1 && xor & FLAG_PIECED != 0) {
                return Expect::Anything;
            }
            return self.as_whole(at, xor);
        }
        if let Some(r) = self.runs.iter().find(|r| (r.at..r.end()).contains(&at)) {
            return self.mutate_run(r, at, xor);
        }
        if let Some(m) = self.markers.iter().find(|m| (m.at..m.at + MARKER_LEN).contains(&at)) {
            let (k, end) = (at - m.at, m.at + MARKER_LEN);
            let error = |says: &str| Expect::Decodes { between: self.between_before(end), then: Then::MarkerError { end, says: says.to_string() } };
            return match (k, m.data) {
                // Reserved: sent as zeros, and checked.
                (5.., _) => error("reserved bytes"),
                // The kind: another is unknown; data turned abort has a length (at least
                // MIN_PIECE); an abort turned data is a data piece of 0 bytes.
                // Kind 2 announces frames between pieces: fewer than a header's bytes (an
                // abort's 0) are refused; more, the piece's bytes are read as frames (an error,
                // as a rule, but which one depends on the bytes).
                (4, data) if self.wire[at] == 2 && data.unwrap_or(0) < HEADER_LEN => {
                    error(&format!("frames of {} bytes between pieces (at least a frame header", data.unwrap_or(0)))
                }
                (4, _) if self.wire[at] == 2 => Expect::Anything,
                (4, _) if self.wire[at] > 2 => error("unknown marker kind"),
                (4, Some(_)) => error("an abort with a length"),
                (4, None) => error("bytes (at least"),
                (_, None) => error("an abort with a length"),
                (_, Some(len)) => {
                    let mut l = (len as u32).to_le_bytes();
                    l[k] ^= xor;
                    let l = u32::from_le_bytes(l) as usize;
                    if l < MIN_PIECE {
                        error("bytes (at least")
                    } else if l > m.body_left {
                        error("of the frame remain")
                    } else if (1..MIN_PIECE).contains(&(m.body_left - l)) {
                        error("leaves")
                    } else {
                        Expect::Anything
                    }
                }
            };
        }
        let s = self.spans.iter().find(|s| (s.at..s.at + s.len).contains(&at)).expect("a header, marker, frame between pieces or piece byte");
        self.as_whole(s.whole_at + (at - s.at), xor)
    }

    /// The byte at `at` of run `r` (its marker or a frame in it) changed by `xor`.
    fn mutate_run(&self, r: &Run, at: usize, xor: u8) -> Expect {
        if r.broken {
            // A run that breaks a rule already: changed, it may break another or none.
            return Expect::Anything;
        }
        let end = r.end();
        let error = |between: Vec<Frame>, end: usize, says: String| Expect::Decodes { between, then: Then::MarkerError { end, says } };
        if at < r.at + MARKER_LEN {
            let marker_end = r.at + MARKER_LEN;
            let before = self.between_before(marker_end);
            let k = at - r.at;
            return match k {
                5.. => error(before, marker_end, "reserved bytes".into()),
                4 => match self.wire[at] {
                    // A data piece as long as the run: the frames are read as the body.
                    0 if (1..MIN_PIECE).contains(&(r.body_left - r.len)) => {
                        error(before, marker_end, format!("a data piece of {} bytes leaves {}", r.len, r.body_left - r.len))
                    }
                    0 => Expect::Anything,
                    1 => error(before, marker_end, format!("an abort with a length of {}", r.len)),
                    other => error(before, marker_end, format!("unknown marker kind {other}")),
                },
                _ => {
                    let mut l = (r.len as u32).to_le_bytes();
                    l[k] ^= xor;
                    let l = u32::from_le_bytes(l) as usize;
                    if !(HEADER_LEN..=MAX_BETWEEN).contains(&l) {
                        error(before, marker_end, format!("frames of {l} bytes between pieces (at least a frame header"))
                    } else if l > r.body_left {
                        error(before, marker_end, format!("frames of {l} bytes between pieces where {} of the frame remain", r.body_left))
                    } else {
                        // Other frames than were sent: the bytes decide.
                        Expect::Anything
                    }
                }
            };
        }
        let i = r.frames.iter().position(|f| (f.at..f.at + f.bytes.len()).contains(&at)).expect("a run is its frames");
        let f = &r.frames[i];
        let j = at - f.at;
        if (2..4).contains(&j) || (24..28).contains(&j) || (32..40).contains(&j) {
            // Its lengths: the run no longer holds the frames it announced.
            return Expect::Anything;
        }
        let mut changed = f.bytes.clone();
        changed[j] ^= xor;
        let earlier: usize = self.runs.iter().take_while(|x| x.at < r.at).map(|x| x.frames.len()).sum();
        let mut before = self.between_before(r.at);
        before.extend(r.frames[..i].iter().map(|f| f.frame.clone()));
        if changed[1] & FLAG_PIECED != 0 && matches!(changed[0], 1 | 2) {
            let kind = if changed[0] == 1 { "request" } else { "response" };
            return error(before, end, format!("a pieced {kind} between the pieces of another frame"));
        }
        // Any other byte: the frame is read as it would be alone.
        match alone(&changed) {
            Ok(frame) => {
                let mut e = self.unchanged();
                if let Expect::Decodes { between, .. } = &mut e {
                    between[earlier + i] = frame;
                }
                e
            }
            Err(error) => Expect::Decodes { between: before, then: Then::Refused { end, error } },
        }
    }
}
