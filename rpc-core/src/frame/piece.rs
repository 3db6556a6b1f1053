//! Pieces: a large request or response sent as pieces inside one frame, each behind an 8-byte
//! marker, so that the sender can stop it part-way (an abort marker) and the receiver still gets
//! its body in one buffer, attachments as single aligned slices; whole frames of other calls may
//! come between its pieces (a frames marker ahead of them), so that they do not wait for its
//! end. Layout and rules: `docs/wire.md`, "Pieces"; why this shape: `docs/pieces.md`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;

/// Request and response flag: the body follows the header in pieces, each behind a
/// [`Marker`]. Sent on a request only to a peer announcing [`super::caps::PIECES`], on a
/// response only to one announcing [`super::caps::PIECED_ANSWERS`]; on any other kind it means
/// nothing.
pub const FLAG_PIECED: u8 = 1 << 6;

/// Bytes of a marker.
pub const MARKER_LEN: usize = 8;

/// Fewest bytes in a data piece: the room a marker needs behind what has arrived of the body
/// is then always there (what is left of the body is at least one piece).
pub const MIN_PIECE: usize = 8;

/// Most bytes of whole frames one frames marker announces: a run of small frames
/// (`conn/small_frames.rs` seals one at 64 KiB) with room to spare. The receiver copies them
/// out of the pieced frame's buffer, so this bounds that copy too.
pub const MAX_BETWEEN: usize = 128 << 10;

const WHAT_DATA: u8 = 0;
const WHAT_ABORT: u8 = 1;
const WHAT_FRAMES: u8 = 2;

/// What a marker says comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `n` bytes of the frame's body.
    Data(u32),
    /// The frame ends here, unfinished: the receiver discards it.
    Abort,
    /// `n` bytes of whole frames, not this frame's: frames of other calls sent between its
    /// pieces (to a peer announcing [`super::caps::FRAMES_BETWEEN_PIECES`]).
    Frames(u32),
}

impl Marker {
    /// The marker's bytes.
    pub fn encode(self) -> Bytes {
        let mut b = BytesMut::with_capacity(MARKER_LEN);
        let (len, what) = match self {
            Marker::Data(n) => (n, WHAT_DATA),
            Marker::Abort => (0, WHAT_ABORT),
            Marker::Frames(n) => (n, WHAT_FRAMES),
        };
        b.put_u32_le(len);
        b.put_u8(what);
        b.put_slice(&[0; 3]);
        b.freeze()
    }

    /// Reads a marker from exactly [`MARKER_LEN`] bytes; an unknown kind, a data piece under
    /// [`MIN_PIECE`], an abort with a length, frames shorter than a frame header or longer than
    /// [`MAX_BETWEEN`], or a reserved byte that is not zero is malformed
    /// (as a pad byte that is not zero is: a later amendment may give them a meaning, which a
    /// peer that ignored them would misread).
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        debug_assert_eq!(b.len(), MARKER_LEN);
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let malformed = |reason: String| DecodeError::Malformed { kind: "piece marker", reason };
        if b[5..8] != [0; 3] {
            return Err(malformed(format!("reserved bytes {:02x?} (zeros)", &b[5..8])));
        }
        match b[4] {
            WHAT_DATA if (len as usize) < MIN_PIECE => Err(malformed(format!("a data piece of {len} bytes (at least {MIN_PIECE})"))),
            WHAT_DATA => Ok(Marker::Data(len)),
            WHAT_ABORT if len != 0 => Err(malformed(format!("an abort with a length of {len}"))),
            WHAT_ABORT => Ok(Marker::Abort),
            WHAT_FRAMES if (len as usize) < super::HEADER_LEN || len as usize > MAX_BETWEEN => Err(malformed(format!(
                "frames of {len} bytes between pieces (at least a frame header, {}, and at most {MAX_BETWEEN})",
                super::HEADER_LEN
            ))),
            WHAT_FRAMES => Ok(Marker::Frames(len)),
            other => Err(malformed(format!("unknown marker kind {other}"))),
        }
    }
}

/// A pieced frame being received: where its clean bytes (header and body so far, markers cut
/// out) end in the receive buffer, and what is still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pieces {
    /// Bytes from the frame's start that are its own (header included).
    pub(crate) clean: usize,
    /// Bytes left of the current piece; 0 while a marker is due.
    pub(crate) left: usize,
    /// Bytes of the body not yet received.
    pub(crate) body_left: usize,
    /// Bytes of whole frames between pieces, announced by the last marker and not yet cut
    /// out; 0 when none are due. They wait behind the clean bytes, in the room the body's rest
    /// will take (a frames marker may announce no more than that).
    pub(crate) between: usize,
}

/// What [`Pieces::strip`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stripped {
    /// The body is not complete yet.
    Partial,
    /// The body is complete and clean at the front of the buffer.
    Whole,
    /// An abort marker: the frame and the marker end `consumed` bytes into the buffer.
    Aborted { consumed: usize },
    /// Whole frames of other calls, sent between two pieces: copied out of the buffer, which
    /// goes on with the pieced frame.
    Between(Bytes),
}

impl Pieces {
    pub(crate) fn new(body_len: usize) -> Self {
        Pieces { clean: super::HEADER_LEN, left: 0, body_left: body_len, between: 0 }
    }

    /// Walks what arrived after the clean bytes: piece bytes join them (moved down over a
    /// marker cut out before them, when one read brought both), complete markers are checked
    /// and cut out, a partial marker's bytes wait in place for the rest, and so do frames
    /// between pieces until all their bytes are in; then they are copied out and returned (one
    /// run of them per call). Bytes past the frame's end (the next frame's) move down behind it.
    pub(crate) fn strip(&mut self, b: &mut BytesMut) -> Result<Stripped, DecodeError> {
        let len = b.len();
        let (mut read, mut write) = (self.clean, self.clean);
        let outcome = loop {
            if self.between > 0 {
                if len - read < self.between {
                    break Stripped::Partial;
                }
                // Aligned: a run of one frame is that frame's memory (`FrameDecoder::decode_between`).
                let frames = super::align::copy_aligned(&b[read..read + self.between]);
                read += self.between;
                self.between = 0;
                break Stripped::Between(frames);
            }
            if self.body_left == 0 {
                break Stripped::Whole;
            }
            if self.left > 0 {
                let n = self.left.min(len - read);
                if n == 0 {
                    break Stripped::Partial;
                }
                if read != write {
                    b.copy_within(read..read + n, write);
                }
                read += n;
                write += n;
                self.left -= n;
                self.body_left -= n;
                continue;
            }
            if len - read < MARKER_LEN {
                break Stripped::Partial;
            }
            match Marker::decode(&b[read..read + MARKER_LEN])? {
                Marker::Abort => return Ok(Stripped::Aborted { consumed: read + MARKER_LEN }),
                Marker::Data(n) if n as usize > self.body_left => {
                    return Err(DecodeError::Malformed {
                        kind: "piece marker",
                        reason: format!("a data piece of {n} bytes where {} of the frame remain", self.body_left),
                    })
                }
                // What it leaves is a piece too, of at least MIN_PIECE: the room for the next
                // marker behind the clean bytes depends on it.
                Marker::Data(n) if (1..MIN_PIECE).contains(&(self.body_left - n as usize)) => {
                    return Err(DecodeError::Malformed {
                        kind: "piece marker",
                        reason: format!("a data piece of {n} bytes leaves {} of the frame (at least {MIN_PIECE})", self.body_left - n as usize),
                    })
                }
                Marker::Data(n) => self.left = n as usize,
                Marker::Frames(n) if n as usize > self.body_left => {
                    return Err(DecodeError::Malformed {
                        kind: "piece marker",
                        reason: format!("frames of {n} bytes between pieces where {} of the frame remain (they wait in its room)", self.body_left),
                    })
                }
                Marker::Frames(n) => self.between = n as usize,
            }
            read += MARKER_LEN;
        };
        if read != write {
            b.copy_within(read..len, write);
            b.truncate(write + (len - read));
        }
        self.clean = write;
        Ok(outcome)
    }

    /// Bytes the next read may bring into the frame's buffer (holding `have` bytes from the
    /// frame's start) without passing the end of the current piece or of the next marker.
    pub(crate) fn room(&self, have: usize) -> usize {
        let waiting = have.saturating_sub(self.clean);
        let until = if self.between > 0 {
            self.between
        } else if self.left > 0 {
            self.left
        } else {
            MARKER_LEN
        };
        until.saturating_sub(waiting).max(1)
    }
}
