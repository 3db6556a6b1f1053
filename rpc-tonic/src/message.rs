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
//! A chunk that ends with a large message (4 KiB or more) after smaller ones is sent as two
//! stream messages, the large message alone ([`Boundaries`]): then no stream message is more
//! than about 36 KiB larger than one gRPC message, and a message within the peer's frame limit
//! goes whatever came before it in its chunk.
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

/// Follows gRPC's message boundaries through a body's chunks, without cutting anything: where
/// a chunk's last message starts, and whether the body stopped inside a message.
#[derive(Debug, Default)]
pub(crate) struct Boundaries {
    /// Bytes of the current message's payload still to come (0 at a boundary).
    left: usize,
    /// The current message's prefix, when it is split across chunks: its bytes so far.
    prefix: [u8; PREFIX_LEN],
    have: usize,
}

impl Boundaries {
    /// Follows the boundaries through the body's next chunk. Returns where to cut it in two so
    /// that a large last message goes alone: `Some(at)` when the chunk ends at a boundary, its
    /// last message (of at least [`INLINE_MAX`] bytes with its prefix) starts at `at` in it, and
    /// something comes before it.
    pub(crate) fn split_point(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut pos = 0;
        let mut last_start = None;
        loop {
            let skip = self.left.min(chunk.len() - pos);
            pos += skip;
            self.left -= skip;
            if self.left > 0 || pos == chunk.len() {
                break;
            }
            // At a boundary: the next prefix, perhaps the rest of one begun in an earlier chunk.
            let started_here = self.have == 0;
            let take = (PREFIX_LEN - self.have).min(chunk.len() - pos);
            self.prefix[self.have..self.have + take].copy_from_slice(&chunk[pos..pos + take]);
            self.have += take;
            pos += take;
            if self.have < PREFIX_LEN {
                break;
            }
            self.have = 0;
            self.left = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
            last_start = started_here.then(|| pos - PREFIX_LEN);
        }
        let at = last_start.filter(|&at| at > 0 && chunk.len() - at >= INLINE_MAX)?;
        (!self.mid_message()).then_some(at)
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

    #[test]
    fn a_chunk_ending_with_a_large_message_after_small_ones_is_cut_before_it() {
        let large = vec![7u8; INLINE_MAX];
        let chunk = framed(&[b"abc", b"", &large]);
        let mut b = Boundaries::default();
        assert_eq!(b.split_point(&chunk), Some(2 * PREFIX_LEN + 3));
        assert!(!b.mid_message());
        // The large message alone, small ones alone, or a small one last: no cut.
        for payloads in [vec![&large[..]], vec![b"abc", b"de"], vec![&large[..], b"abc"]] {
            let mut b = Boundaries::default();
            assert_eq!(b.split_point(&framed(&payloads)), None, "{} messages", payloads.len());
            assert!(!b.mid_message());
        }
        // Just under the size: no cut.
        let mut b = Boundaries::default();
        assert_eq!(b.split_point(&framed(&[b"abc", &large[..INLINE_MAX - PREFIX_LEN - 1]])), None);
        assert_eq!(b.split_point(&framed(&[b"abc", &large[..INLINE_MAX - PREFIX_LEN]])), Some(PREFIX_LEN + 3));
    }

    #[test]
    fn boundaries_are_followed_across_chunks_cut_at_any_byte() {
        let large = vec![7u8; 5000];
        let all = framed(&[b"hello", &large, b"world!", &large]);
        let last = all.len() - PREFIX_LEN - large.len();
        for cut in 0..=all.len() {
            let mut b = Boundaries::default();
            let first = b.split_point(&all[..cut]);
            assert_eq!(b.mid_message(), ![0, 10, 10 + 5005, 10 + 5005 + 11, all.len()].contains(&cut), "cut at {cut}");
            let second = b.split_point(&all[cut..]);
            assert!(!b.mid_message(), "cut at {cut}");
            // The last large message is cut off where it starts in the second chunk, if after
            // something there.
            assert_eq!(second, (cut < last).then(|| last - cut).filter(|&at| at > 0), "cut at {cut}");
            if cut == 10 + 5005 {
                assert_eq!(first, Some(10), "the first chunk ends with a large message");
            }
        }
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
