//! Pieced frames for the fuzz targets (`docs/wire.md`, "Pieces"): a request built from the
//! input, encoded whole, then cut into pieces at input-chosen lengths by the rules (written
//! here from the rules, not with the crate's cutter, which is internal), perhaps ended by an
//! abort marker at an input-chosen piece, perhaps with one byte changed; and what the rules
//! say a receiver makes of it. Included by `frame_decoder.rs` and `connection.rs`.

use std::time::Duration;

use bytes::Bytes;
use rpc_core::frame::{CallMode, Frame, Request, FLAG_PIECED, HEADER_LEN, MARKER_LEN, MIN_PIECE};
use rpc_core::{Metadata, Payload};

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

pub struct Pieced {
    /// The request, as the decoder must give it back.
    pub req: Request,
    /// Its whole (unpieced) encoding.
    pub whole: Vec<u8>,
    /// The pieced frame: header flagged, then markers and pieces.
    pub wire: Vec<u8>,
    pub markers: Vec<MarkerAt>,
    pub spans: Vec<Span>,
    /// It ends at an abort marker.
    pub aborted: bool,
}

/// What the rules say a receiver makes of a pieced frame with one byte changed.
#[derive(Debug)]
pub enum Expect {
    /// What it makes of the unchanged frame.
    Same,
    /// What it makes of the whole frame with the same byte changed: a body byte, or a header
    /// field the pieces do not depend on.
    AsWhole(Vec<u8>),
    /// A `piece marker` error, raised once the marker ending at `end` is in, whose reason
    /// `says` which rule it broke: a changed kind byte, a reserved byte not zero, an abort's
    /// length, or a data length under `MIN_PIECE`, past the body, or leaving 1 to 7 bytes of it.
    MarkerError { end: usize, says: &'static str },
    /// A length the rules allow but that no longer matches the pieces, or a header field the
    /// frame is sized by: anything but a panic.
    Anything,
}

/// A request whose shape comes from `input`, id `id`, cut into pieces of `MIN_PIECE` to
/// `MIN_PIECE + 255` bytes as `input` says, perhaps ended by an abort marker.
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
    let mut wire = whole[..HEADER_LEN].to_vec();
    wire[1] |= FLAG_PIECED;
    let (mut markers, mut spans, mut aborted) = (Vec::new(), Vec::new(), false);
    let mut done = 0;
    while done < body.len() {
        let left = body.len() - done;
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
    Pieced { req, whole, wire, markers, spans, aborted }
}

impl Pieced {
    /// Where markers start and end in the pieced frame, and where it ends: a read bounded by
    /// the decoder's `piece_room` never crosses one.
    pub fn boundaries(&self) -> Vec<usize> {
        let mut b: Vec<usize> = self.markers.iter().flat_map(|m| [m.at, m.at + MARKER_LEN]).collect();
        b.push(self.wire.len());
        b
    }

    /// Xors the byte at `at` (modulo the frame's length) with `xor` (not 0), and says what the
    /// rules make of it.
    pub fn mutate(&mut self, at: usize, xor: u8) -> Expect {
        debug_assert_ne!(xor, 0);
        let at = at % self.wire.len();
        self.wire[at] ^= xor;
        let aborted = self.aborted;
        let as_whole = |whole: &[u8], i: usize| {
            if aborted {
                // Dropped at its abort marker before anything in it is decoded.
                return Expect::Same;
            }
            let mut w = whole.to_vec();
            w[i] ^= xor;
            Expect::AsWhole(w)
        };
        if at < HEADER_LEN {
            // The kind, the attachment count, the lengths or the pieced flag: the decoder then
            // expects other pieces than the ones that follow.
            let sizes = at == 0 || (2..4).contains(&at) || (24..28).contains(&at) || (32..40).contains(&at);
            if sizes || (at == 1 && xor & FLAG_PIECED != 0) {
                return Expect::Anything;
            }
            return as_whole(&self.whole, at);
        }
        if let Some(m) = self.markers.iter().find(|m| (m.at..m.at + MARKER_LEN).contains(&at)) {
            let (k, end) = (at - m.at, m.at + MARKER_LEN);
            let error = |says| Expect::MarkerError { end, says };
            return match (k, m.data) {
                // Reserved: sent as zeros, and checked.
                (5.., _) => error("reserved bytes"),
                // The kind: another is unknown; data turned abort has a length (at least
                // MIN_PIECE); an abort turned data is a data piece of 0 bytes.
                // Kind 2 announces frames between pieces: the piece's bytes are then read as
                // frames (an error, as a rule, but which one depends on the bytes).
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
        let s = self.spans.iter().find(|s| (s.at..s.at + s.len).contains(&at)).expect("a header, marker or piece byte");
        as_whole(&self.whole, s.whole_at + (at - s.at))
    }
}
