//! gRPC's message stream on zcrpc streams: each zcrpc stream message carries a chunk of the
//! body as tonic's encoder yields it, gRPC's 5-byte length prefixes included, and the other
//! side hands each chunk to tonic's decoder as it came (what HTTP/2 would carry in DATA
//! frames). A stream of small messages then costs the adapter nothing per message: tonic's
//! encoder gathers them into chunks of about 32 KiB, and its decoder cuts them out again.
//!
//! | zcrpc message | attachments | chunk |
//! |---|---|---|
//! | the chunk (1 to 4095 bytes) | none | that chunk |
//! | empty | one: the chunk | a chunk of 4 KiB or more, sent from tonic's own buffer and received as a slice of the receive buffer |
//! | empty | none | no data: a request without its first message (older servers also sent one to carry the response headers alone; a client skips it) |
//!
//! A chunk is sent in pieces cut at message boundaries ([`Boundaries::pieces`]): runs of small
//! messages of at most [`RUN_MAX`] bytes (within the smallest frame limit a peer may declare),
//! and each large message alone. A message within the peer's frame limit then goes whatever
//! came before it, and one over it fails alone, as over HTTP/2 with a message size limit.
//!
//! The server copies a small chunk out of the buffer tonic encoded it into (8 KiB at least,
//! one per call) before it answers with it ([`owned_chunk_body`]): the answer is held a while
//! (a unary answer until the batch of answers it is part of is written, a held stream chunk
//! until the next one), and 128 calls in flight each holding such a buffer made glibc's
//! allocator grow its heap, trim it and fault it back in on every batch (measured on
//! `qps_64b`: about 4 µs of system time per call). The copy of a chunk under 4 KiB costs far
//! less.

use bytes::Bytes;
use rpc_core::{Body, Payload};

/// Length of gRPC's message prefix: a compressed flag and a `u32` BE length.
pub(crate) const PREFIX_LEN: usize = 5;

/// Chunks (and messages) this long or longer travel as an attachment.
pub(crate) const INLINE_MAX: usize = 4096;

/// The zcrpc body that carries `chunk` (the empty body for an empty one).
pub(crate) fn chunk_body(chunk: Bytes) -> Body {
    match chunk.len() < INLINE_MAX {
        true => Body::message(chunk),
        false => Body::new(Bytes::new(), vec![Payload::from(chunk)]),
    }
}

/// As [`chunk_body`], but a small chunk is copied out of the buffer it is a slice of, which is
/// then free at once: for a body held a while (see the module's documentation).
pub(crate) fn owned_chunk_body(chunk: Bytes) -> Body {
    match chunk.len() < INLINE_MAX {
        true => Body::message(Bytes::copy_from_slice(&chunk)),
        false => chunk_body(chunk),
    }
}

/// The chunk a zcrpc body carries (empty for none).
pub(crate) fn chunk_of(body: Body) -> Result<Bytes, String> {
    let Body { message, mut attachments } = body;
    match (message.len(), attachments.len()) {
        (_, 0) => Ok(message),
        (0, 1) => Ok(attachments.pop().expect("one").to_bytes()),
        (m, a) => Err(format!(
            "a stream message of {m} bytes with {a} attachments is not a chunk of gRPC messages as rpc-tonic sends them \
             (the chunk alone, or an empty message and the chunk as one attachment)"
        )),
    }
}

/// Small messages go in runs of at most this many bytes: within the smallest `max_frame` a
/// peer may declare ([`rpc_core::frame::MIN_MAX_FRAME`]).
pub(crate) const RUN_MAX: usize = 4000;

/// Follows gRPC's message boundaries through a body's chunks, without cutting messages out:
/// where to cut each chunk into pieces, and whether the body stopped inside a message.
#[derive(Debug, Default)]
pub(crate) struct Boundaries {
    /// Bytes of the current message's payload still to come (0 at a boundary).
    left: usize,
    /// The current message is large (it goes alone).
    large: bool,
    /// The current message's prefix, when it is split across chunks: its bytes so far.
    prefix: [u8; PREFIX_LEN],
    have: usize,
}

impl Boundaries {
    /// Cuts the body's next chunk into pieces, in order, each given to `piece` (a slice of
    /// `chunk`): runs of small messages of at most [`RUN_MAX`] bytes, and each large message
    /// (of [`INLINE_MAX`] bytes or more with its prefix) alone. A message split across chunks
    /// belongs, in each chunk, to the piece its bytes there are in.
    pub(crate) fn pieces(&mut self, chunk: &Bytes, mut piece: impl FnMut(Bytes)) {
        let (mut pos, mut start) = (0, 0);
        loop {
            let skip = self.left.min(chunk.len() - pos);
            pos += skip;
            self.left -= skip;
            if self.left > 0 {
                break;
            }
            if self.large && self.have == 0 {
                // A large message ended here: it goes alone.
                self.large = false;
                if pos > start {
                    piece(chunk.slice(start..pos));
                    start = pos;
                }
            }
            if pos == chunk.len() {
                break;
            }
            // At a boundary: the next prefix, perhaps the rest of one begun in an earlier chunk.
            let started_here = self.have == 0;
            let take = (PREFIX_LEN - self.have).min(chunk.len() - pos);
            self.prefix[self.have..self.have + take].copy_from_slice(&chunk[pos..pos + take]);
            self.have += take;
            if self.have < PREFIX_LEN {
                break;
            }
            self.have = 0;
            self.left = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
            let whole = PREFIX_LEN.saturating_add(self.left);
            self.large = whole >= INLINE_MAX;
            // A message that starts here goes after a cut when it is large or would make the
            // run too long.
            if started_here && pos > start && (self.large || pos - start + whole > RUN_MAX) {
                piece(chunk.slice(start..pos));
                start = pos;
            }
            pos += take;
        }
        if chunk.len() > start {
            piece(chunk.slice(start..));
        }
    }

    /// True when the chunks so far stopped inside a message (or its prefix).
    pub(crate) fn mid_message(&self) -> bool {
        self.left > 0 || self.have > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            out.push(0);
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    /// The pieces of `chunks` (one body), as byte vectors, and whether it stopped mid-message.
    fn pieces_of(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
        let mut b = Boundaries::default();
        let mut out = Vec::new();
        for c in chunks {
            b.pieces(&Bytes::copy_from_slice(c), |p| out.push(p.to_vec()));
        }
        (out, b.mid_message())
    }

    #[test]
    fn small_messages_go_in_runs_and_each_large_one_alone() {
        let large = vec![7u8; INLINE_MAX];
        let small = vec![1u8; 1000];
        let chunk = framed(&[b"abc", b"", &large, &small, &small, &small, &small, &small, b"x"]);
        let (pieces, mid) = pieces_of(&[&chunk]);
        assert!(!mid);
        let want = [
            framed(&[b"abc", b""]),
            framed(&[&large]),
            framed(&[&small, &small, &small]),
            framed(&[&small, &small, b"x"]),
        ];
        assert_eq!(pieces, want);
        // A run of exactly RUN_MAX bytes is one piece; one more byte, two.
        let fill = vec![2u8; RUN_MAX - 2 * PREFIX_LEN - 1];
        assert_eq!(pieces_of(&[&framed(&[b"a", &fill])]).0.len(), 1);
        assert_eq!(pieces_of(&[&framed(&[b"ab", &fill])]).0.len(), 2);
    }

    #[test]
    fn boundaries_are_followed_across_chunks_cut_at_any_byte() {
        let large = vec![7u8; 5000];
        let all = framed(&[b"hello", &large, b"world!", &large, b"end"]);
        let whole = pieces_of(&[&all]).0;
        assert_eq!(whole, [framed(&[b"hello"]), framed(&[&large]), framed(&[b"world!"]), framed(&[&large]), framed(&[b"end"])]);
        let bounds = [0, 10, 5015, 5026, 10031, all.len()];
        for cut in 0..=all.len() {
            let mut b = Boundaries::default();
            let mut pieces = Vec::new();
            b.pieces(&Bytes::copy_from_slice(&all[..cut]), |p| pieces.push(p.to_vec()));
            assert_eq!(b.mid_message(), !bounds.contains(&cut), "cut at {cut}");
            b.pieces(&Bytes::copy_from_slice(&all[cut..]), |p| pieces.push(p.to_vec()));
            assert!(!b.mid_message(), "cut at {cut}");
            // The same bytes, in order, and a large message's bytes never share a piece with a
            // small message's.
            assert_eq!(pieces.concat(), all, "cut at {cut}");
            for p in &pieces {
                let has_large = p.contains(&7);
                let has_small = p.iter().any(u8::is_ascii_lowercase);
                assert!(!(has_large && has_small), "cut at {cut}: a large message shares a piece");
            }
        }
        // A huge length announced: no panic, and the body is mid-message.
        let (_, mid) = pieces_of(&[&[0, 0xff, 0xff, 0xff, 0xff, 1, 2]]);
        assert!(mid);
    }

    #[test]
    fn bodies_round_trip_small_large_and_empty_chunks() {
        for len in [1, INLINE_MAX - 1, INLINE_MAX, 0, 100_000] {
            let chunk = Bytes::from(vec![7u8; len]);
            for body in [chunk_body(chunk.clone()), owned_chunk_body(chunk.clone())] {
                assert_eq!(body.attachments.len(), usize::from(len >= INLINE_MAX));
                assert_eq!(chunk_of(body).unwrap(), chunk);
            }
        }
        assert!(chunk_of(Body::default()).unwrap().is_empty());
        let odd = Body::new(Bytes::from_static(b"xy"), vec![Payload::new()]);
        assert!(chunk_of(odd).unwrap_err().contains("not a chunk of gRPC messages"));
    }
}
