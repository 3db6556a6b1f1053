//! gRPC messages on zcrpc streams: the 5-byte length prefix of gRPC over HTTP/2 taken off on one
//! side and put back on the other, each message one zcrpc stream message.
//!
//! A message of at least [`INLINE_MAX`] bytes (or a compressed one, or an empty one) travels as
//! an attachment, sent from the buffer tonic encoded it into and received as a slice of the
//! receive buffer; a smaller one travels as the zcrpc message itself (one frame, no padding):
//!
//! | zcrpc message | attachments | gRPC message |
//! |---|---|---|
//! | the payload (1 to 4095 bytes) | none | that payload, uncompressed |
//! | one byte of flags (bit 0: compressed) | one: the payload | that payload |
//! | empty | none | no message: a request without its first message (older servers also sent one to carry the response headers alone; a client skips it) |
//!
//! The server copies a small message out of the buffer tonic encoded it into (8 KiB at least,
//! one per call) before it answers with it ([`GrpcMessage::into_owned_body`]): the answer is
//! held a while (a unary answer until the batch of answers it is part of is written, a held
//! stream message until the next one), and 128 calls in flight each holding such a buffer made
//! glibc's allocator grow its heap, trim it and fault it back in on every batch (measured on
//! `qps_64b`: about 4 µs of system time per call). The copy of a message under 4 KiB costs far
//! less.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rpc_core::{Body, Payload};

/// Length of gRPC's message prefix: a compressed flag and a `u32` BE length.
pub(crate) const PREFIX_LEN: usize = 5;

/// Messages this long or longer travel as an attachment.
pub(crate) const INLINE_MAX: usize = 4096;

/// Flags byte: the payload is compressed (with the call's `grpc-encoding`).
const FLAG_COMPRESSED: u8 = 1;

/// One gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrpcMessage {
    /// The prefix's compressed flag.
    pub(crate) compressed: bool,
    /// The message's bytes.
    pub(crate) payload: Bytes,
}

impl GrpcMessage {
    /// The zcrpc body that carries this message (never an empty one).
    pub(crate) fn into_body(self) -> Body {
        if !self.compressed && !self.payload.is_empty() && self.payload.len() < INLINE_MAX {
            return Body::message(self.payload);
        }
        let flags = if self.compressed { &[FLAG_COMPRESSED] } else { &[0u8] };
        Body::new(Bytes::from_static(flags), vec![Payload::from(self.payload)])
    }

    /// As [`GrpcMessage::into_body`], but a small message is copied out of the buffer it is a
    /// slice of, which is then free at once: for a body held a while (see the module's
    /// documentation).
    pub(crate) fn into_owned_body(self) -> Body {
        if !self.compressed && !self.payload.is_empty() && self.payload.len() < INLINE_MAX {
            return Body::message(Bytes::copy_from_slice(&self.payload));
        }
        self.into_body()
    }

    /// The message a zcrpc body carries; `None` for the empty body (no message).
    pub(crate) fn from_body(body: Body) -> Result<Option<GrpcMessage>, String> {
        let Body { message, mut attachments } = body;
        match (message.len(), attachments.len()) {
            (0, 0) => Ok(None),
            (_, 0) => Ok(Some(GrpcMessage { compressed: false, payload: message })),
            (1, 1) if message[0] & !FLAG_COMPRESSED == 0 => {
                let payload = attachments.pop().expect("one").to_bytes();
                Ok(Some(GrpcMessage { compressed: message[0] == FLAG_COMPRESSED, payload }))
            }
            (m, a) => Err(format!(
                "a stream message of {m} bytes with {a} attachments is not a gRPC message as rpc-tonic sends them \
                 (the payload alone, or one flags byte and the payload as one attachment)"
            )),
        }
    }

    /// The prefix gRPC puts in front of this message.
    pub(crate) fn prefix(&self) -> [u8; PREFIX_LEN] {
        let mut p = [0u8; PREFIX_LEN];
        p[0] = u8::from(self.compressed);
        p[1..].copy_from_slice(&(self.payload.len() as u32).to_be_bytes());
        p
    }

    /// Appends the message, with its prefix, to `chunk`.
    pub(crate) fn put_into(self, chunk: &mut BytesMut) {
        chunk.put_slice(&self.prefix());
        chunk.put_slice(&self.payload);
    }

    /// The message as HTTP/2 data: one chunk (prefix and payload copied together) for a small
    /// message, the prefix then the payload itself for a large one (no copy of it here).
    pub(crate) fn into_chunks(self) -> (Bytes, Option<Bytes>) {
        if self.payload.len() < INLINE_MAX {
            let mut b = BytesMut::with_capacity(PREFIX_LEN + self.payload.len());
            b.put_slice(&self.prefix());
            b.put_slice(&self.payload);
            (b.freeze(), None)
        } else {
            (Bytes::copy_from_slice(&self.prefix()), Some(self.payload))
        }
    }
}

/// Cuts gRPC messages out of a body's data chunks: a message inside one chunk is a slice of it
/// (no copy, the usual case: tonic's encoder yields whole messages); one split across chunks is
/// gathered.
#[derive(Debug, Default)]
pub(crate) struct Deframer {
    /// The chunk being cut.
    current: Bytes,
    /// The start of a message split across chunks.
    partial: BytesMut,
    /// The next message cut and not yet taken (most bodies carry one: no queue to allocate).
    first: Option<GrpcMessage>,
    /// The messages cut behind `first` (empty while `first` is `None`).
    rest: VecDeque<GrpcMessage>,
}

impl Deframer {
    /// Takes the next data chunk, cutting every whole message in it.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if self.partial.is_empty() {
            self.current = chunk;
        } else {
            self.partial.extend_from_slice(&chunk);
        }
        self.cut();
    }

    fn cut(&mut self) {
        if !self.partial.is_empty() {
            match whole_len(&self.partial) {
                Some(n) if self.partial.len() >= n => {
                    let frame = self.partial.split_to(n).freeze();
                    self.put(split_message(frame));
                    // What follows the message in `partial` is cut as a chunk of its own.
                    self.current = self.partial.split().freeze();
                }
                _ => return,
            }
        }
        loop {
            match whole_len(&self.current) {
                Some(n) if self.current.len() >= n => {
                    let frame = self.current.split_to(n);
                    self.put(split_message(frame));
                }
                _ => break,
            }
        }
        if !self.current.is_empty() {
            self.partial.extend_from_slice(&self.current);
            self.current = Bytes::new();
        }
    }

    fn put(&mut self, m: GrpcMessage) {
        match self.first {
            None => self.first = Some(m),
            Some(_) => self.rest.push_back(m),
        }
    }

    /// The next whole message.
    pub(crate) fn next(&mut self) -> Option<GrpcMessage> {
        let m = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(m)
    }

    /// Messages cut and not yet taken.
    pub(crate) fn ready(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Bytes of a message begun and not finished (an error at the body's end).
    pub(crate) fn unfinished(&self) -> usize {
        self.partial.len()
    }
}

/// The length of the message (prefix included) at the start of `b`, once its prefix is there.
fn whole_len(b: &[u8]) -> Option<usize> {
    if b.len() < PREFIX_LEN {
        return None;
    }
    let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
    Some(PREFIX_LEN + len)
}

fn split_message(mut frame: Bytes) -> GrpcMessage {
    let compressed = frame[0] & 1 == 1;
    frame.advance(PREFIX_LEN);
    GrpcMessage { compressed, payload: frame }
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
    fn messages_in_one_chunk_are_slices_of_it() {
        let chunk = Bytes::from(framed(&[b"abc", b"", b"defg"]));
        let mut d = Deframer::default();
        d.push(chunk.clone());
        let a = d.next().unwrap();
        assert_eq!(&a.payload[..], b"abc");
        assert_eq!(a.payload.as_ptr(), chunk[5..].as_ptr(), "a slice, not a copy");
        assert_eq!(d.next().unwrap().payload.len(), 0);
        assert_eq!(&d.next().unwrap().payload[..], b"defg");
        assert!(d.next().is_none());
        assert_eq!(d.unfinished(), 0);
    }

    #[test]
    fn a_message_split_across_chunks_at_any_byte_is_gathered() {
        let all = framed(&[b"hello", b"world!"]);
        for cut in 0..=all.len() {
            let mut d = Deframer::default();
            d.push(Bytes::copy_from_slice(&all[..cut]));
            d.push(Bytes::copy_from_slice(&all[cut..]));
            let got: Vec<_> = std::iter::from_fn(|| d.next()).map(|m| m.payload).collect();
            assert_eq!(got, [Bytes::from_static(b"hello"), Bytes::from_static(b"world!")], "cut at {cut}");
            assert_eq!(d.unfinished(), 0);
        }
        let mut d = Deframer::default();
        d.push(Bytes::copy_from_slice(&all[..7]));
        assert!(d.next().is_none());
        assert_eq!(d.unfinished(), 7);
    }

    #[test]
    fn bodies_round_trip_small_large_empty_and_compressed() {
        for (compressed, len) in [(false, 1), (false, INLINE_MAX - 1), (false, INLINE_MAX), (false, 0), (true, 10)] {
            let m = GrpcMessage { compressed, payload: Bytes::from(vec![7u8; len]) };
            let body = m.clone().into_body();
            assert!(!body.is_empty() || body.attachments.len() == 1, "never the empty body");
            assert_eq!(body.attachments.len(), usize::from(compressed || len == 0 || len >= INLINE_MAX));
            assert_eq!(GrpcMessage::from_body(body).unwrap(), Some(m));
        }
        assert_eq!(GrpcMessage::from_body(Body::default()).unwrap(), None);
        let odd = Body::new(Bytes::from_static(b"xy"), vec![Payload::new()]);
        assert!(GrpcMessage::from_body(odd).unwrap_err().contains("not a gRPC message"));
    }
}
