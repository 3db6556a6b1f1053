//! Stream data and stream end: one direction of a streaming call.

use std::fmt;

use bytes::buf::Take;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::header::{FrameHeader, FrameKind, HEADER_LEN};
use super::meta::MetadataBlocks;
use super::raw::{EncodeError, RawFrame, INLINE_MESSAGE_MAX};
use crate::code::Code;
use crate::error::DecodeError;
use crate::payload::Payload;
use crate::transmit::Transmit;

/// A chunk of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamData {
    /// Stream (call) id.
    pub id: u64,
    /// Encoded item.
    pub message: Bytes,
    /// Attachments.
    pub attachments: Vec<Payload>,
    /// Server: the response headers, on the first frame of its answer (never trailers).
    pub meta: MetadataBlocks,
}

impl StreamData {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::StreamData);
        f.header.id = self.id;
        f.message = self.message;
        f.attachments = self.attachments;
        self.meta.apply(&mut f)?;
        f.encode()
    }

    /// Appends the frame of a message with no attachments, of at most [`INLINE_MESSAGE_MAX`]
    /// bytes, to `out`: the same bytes as [`StreamData::encode`] gives, written where the caller
    /// wants them (back to back with other small frames, see `conn/small_frames.rs`).
    ///
    /// # Panics
    /// When `message` is longer than [`INLINE_MESSAGE_MAX`] (a bug in the caller).
    pub fn encode_small(id: u64, message: &[u8], out: &mut BytesMut) {
        assert!(message.len() <= INLINE_MESSAGE_MAX, "a small stream frame's message is at most {INLINE_MESSAGE_MAX} bytes");
        let mut header = FrameHeader::new(FrameKind::StreamData);
        header.id = id;
        header.message_len = message.len() as u32;
        header.encode(out);
        out.put_slice(message);
    }

    /// Decodes from a raw frame.
    pub fn decode(mut f: RawFrame) -> Result<Self, DecodeError> {
        let meta = MetadataBlocks::split(&mut f)?;
        Ok(StreamData { id: f.header.id, message: f.message, attachments: f.attachments, meta })
    }
}

/// Stream data flag: the frame is a [`StreamBatch`].
pub const FLAG_BATCH: u8 = 1 << 7;

/// Several small messages of one stream in one frame (stream data flagged [`FLAG_BATCH`], sent
/// only to a peer declaring [`super::caps::STREAM_BATCHES`]): the message area holds each
/// message as a u32 little-endian length and its bytes; no attachments. One header, one
/// decode and one credit check per batch instead of per message is what lets a stream of
/// 64-byte messages run at the rate of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamBatch {
    /// Stream (call) id.
    pub id: u64,
    /// The messages, in order (the received frame's message area, as it came).
    pub messages: BatchMessages,
}

/// Bytes in front of each message of a batch: its length.
pub const BATCH_PREFIX: usize = 4;

/// The messages of a [`StreamBatch`], in order: the frame's message area as it came (each
/// message behind its length, checked when decoded), taken from the front. Passing a batch on
/// costs nothing per message; a message's [`Bytes`] is cut from the area only when it is taken
/// (measured on `stream_64b`: splitting a batch into a vector of `Bytes`, then of bodies, was
/// over a fifth of the receiving side's instructions per message).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BatchMessages {
    /// The messages not taken yet, each behind its u32 little-endian length.
    area: Bytes,
    /// How many.
    count: usize,
    /// The last message's length (a batch is charged as its messages one by one).
    last_len: usize,
}

impl BatchMessages {
    /// Checks `area` (messages behind their lengths) and keeps it as it is: every length must
    /// fit what is left, and the messages must fill it exactly.
    pub fn from_area(area: Bytes) -> Result<Self, String> {
        let (mut rest, mut count, mut last_len) = (&area[..], 0, 0);
        while let Some((prefix, tail)) = rest.split_first_chunk::<BATCH_PREFIX>() {
            let len = u32::from_le_bytes(*prefix) as usize;
            if len > tail.len() {
                return Err(format!("a message of {len} bytes with {} left in the frame", tail.len()));
            }
            rest = &tail[len..];
            count += 1;
            last_len = len;
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes left where a message length belongs", rest.len()));
        }
        Ok(BatchMessages { area, count, last_len })
    }

    /// The area: the messages left, each behind its length.
    pub fn area(&self) -> &Bytes {
        &self.area
    }

    /// Messages left.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when every message was taken.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes in the messages left, without their lengths.
    pub fn message_bytes(&self) -> usize {
        self.area.len() - BATCH_PREFIX * self.count
    }

    /// The last message's length, as the batch came (what the batch is charged by; taking
    /// messages does not change it); zero for a batch of none.
    pub fn last_len(&self) -> usize {
        self.last_len
    }

    /// The first message left, without taking it (no `Bytes` made for it).
    pub fn first(&self) -> Option<&[u8]> {
        if self.count == 0 {
            return None;
        }
        Some(&self.area[BATCH_PREFIX..BATCH_PREFIX + self.first_len()])
    }

    /// The length in front of the first message left (there is one).
    fn first_len(&self) -> usize {
        u32::from_le_bytes(self.area[..BATCH_PREFIX].try_into().expect("checked when made")) as usize
    }

    /// Takes the first message left without cutting it out: what [`BatchMessages::first`]
    /// showed is gone.
    pub fn skip_first(&mut self) {
        if let Some(len) = self.first().map(<[u8]>::len) {
            self.count -= 1;
            self.area.advance(BATCH_PREFIX + len);
        }
    }

    /// Takes the first message left, handing it to `read` where it lies: the front of the area,
    /// limited to the message. A decoder reading from it slices `Bytes` fields out of the batch,
    /// and no `Bytes` is made for the message itself (an atomic increment and decrement each).
    /// The batch moves past the whole message, whatever `read` took of it.
    pub fn take_with<R>(&mut self, read: impl FnOnce(Take<&mut Bytes>) -> R) -> Option<R> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        let len = self.first_len();
        self.area.advance(BATCH_PREFIX);
        // Past the message even if `read` panics (a decoder's bug, caught by the application):
        // the next message is then read from its own length, not from this one's bytes.
        let rest = self.area.len() - len;
        let past = PastMessage { area: &mut self.area, rest };
        Some(read((&mut *past.area).take(len)))
    }

    /// The messages left, without taking them.
    pub fn iter(&self) -> impl Iterator<Item = Bytes> + '_ {
        self.clone()
    }
}

/// Moves a batch's area past the message being read when dropped: to `rest` bytes left. (`Take`
/// lets a reader have at most the message's bytes, so at least `rest` are left.)
struct PastMessage<'a> {
    area: &'a mut Bytes,
    rest: usize,
}

impl Drop for PastMessage<'_> {
    fn drop(&mut self) {
        let unread = self.area.len() - self.rest;
        self.area.advance(unread);
    }
}

impl Iterator for BatchMessages {
    type Item = Bytes;

    /// Takes the first message left: a slice of the area, which moves past it.
    fn next(&mut self) -> Option<Bytes> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        let len = self.first_len();
        self.area.advance(BATCH_PREFIX);
        if self.count == 0 {
            // The last one is the rest of the area: no slice cut, no handle left.
            return Some(std::mem::take(&mut self.area));
        }
        Some(self.area.split_to(len))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.count, Some(self.count))
    }
}

impl ExactSizeIterator for BatchMessages {}

/// Packs the messages into one area (a copy: for building a batch to send or to test).
///
/// # Panics
/// On a message of 4 GiB or more, which no frame can carry.
impl FromIterator<Bytes> for BatchMessages {
    fn from_iter<I: IntoIterator<Item = Bytes>>(messages: I) -> Self {
        let mut area = BytesMut::new();
        let (mut count, mut last_len) = (0, 0);
        for m in messages {
            area.put_u32_le(u32::try_from(m.len()).expect("a batch's message is under 4 GiB"));
            area.put_slice(&m);
            count += 1;
            last_len = m.len();
        }
        BatchMessages { area: area.freeze(), count, last_len }
    }
}

impl From<Vec<Bytes>> for BatchMessages {
    fn from(messages: Vec<Bytes>) -> Self {
        messages.into_iter().collect()
    }
}

impl fmt::Debug for BatchMessages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl StreamBatch {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::StreamData);
        f.header.id = self.id;
        f.header.flags = FLAG_BATCH;
        f.message = self.messages.area;
        f.encode()
    }

    /// Starts a batch at the end of `out`: room for its header, filled in by
    /// [`StreamBatch::finish_in_place`].
    pub fn start_in_place(out: &mut BytesMut) {
        out.put_bytes(0, HEADER_LEN);
    }

    /// Appends one message to the batch being written at the end of `out`.
    pub fn push_in_place(message: &[u8], out: &mut BytesMut) {
        out.put_u32_le(message.len() as u32);
        out.put_slice(message);
    }

    /// Writes the header of call `id`'s batch that fills `frame` (started with
    /// [`StreamBatch::start_in_place`]).
    pub fn finish_in_place(id: u64, frame: &mut [u8]) {
        let mut header = FrameHeader::new(FrameKind::StreamData);
        header.flags = FLAG_BATCH;
        header.id = id;
        header.message_len = u32::try_from(frame.len() - HEADER_LEN).expect("a batch is bounded by max_frame");
        header.encode(&mut &mut frame[..HEADER_LEN]);
    }

    /// Decodes from a raw frame flagged [`FLAG_BATCH`]: every length must fit what is left of
    /// the frame, and the messages must fill it exactly.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        let malformed = |reason: String| DecodeError::Malformed { kind: "stream batch", reason };
        if !f.attachments.is_empty() {
            return Err(malformed(format!("{} attachments in a batch", f.attachments.len())));
        }
        if f.header.flags & (super::meta::FLAG_HEADERS | super::meta::FLAG_TRAILERS) != 0 {
            return Err(malformed("response metadata on a batch (it goes on a frame of its own)".into()));
        }
        let messages = BatchMessages::from_area(f.message).map_err(malformed)?;
        if messages.is_empty() {
            return Err(malformed("an empty batch".into()));
        }
        Ok(StreamBatch { id: f.header.id, messages })
    }
}

/// Stream data flag: the frame carries the server's response headers and no message (a
/// [`StreamHeaders`]), sent only to a peer declaring [`super::caps::EARLY_HEADERS`].
pub const FLAG_HEADERS_ONLY: u8 = 1 << 5;

/// The server's response headers of a call, sent ahead of its first message (stream data
/// flagged [`FLAG_HEADERS_ONLY`]): the headers block as any frame carries it
/// ([`super::FLAG_HEADERS`], absent for empty headers), then nothing. It counts against no
/// credit. A call's answer carries one block of headers at most, on this frame or its first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeaders {
    /// Stream (call) id.
    pub id: u64,
    /// The encoded headers ([`crate::Metadata::encode`]); empty for none.
    pub headers: Bytes,
}

impl StreamHeaders {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::StreamData);
        f.header.id = self.id;
        f.header.flags = FLAG_HEADERS_ONLY;
        MetadataBlocks { headers: self.headers, trailers: Bytes::new() }.apply(&mut f)?;
        f.encode()
    }

    /// Decodes from a raw frame flagged [`FLAG_HEADERS_ONLY`]: headers at most, nothing else.
    pub fn decode(mut f: RawFrame) -> Result<Self, DecodeError> {
        let malformed = |reason: String| DecodeError::Malformed { kind: "stream headers", reason };
        if f.header.flags & FLAG_BATCH != 0 {
            return Err(malformed("flagged a batch too".into()));
        }
        f.expect_attachments(0)?;
        let meta = MetadataBlocks::split(&mut f)?;
        if !meta.trailers.is_empty() {
            return Err(malformed("trailers on a frame of headers (they end the call)".into()));
        }
        if !f.message.is_empty() {
            return Err(malformed(format!("{} bytes of message after the headers", f.message.len())));
        }
        Ok(StreamHeaders { id: f.header.id, headers: meta.headers })
    }
}

/// The end of one direction of a stream, with a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEnd {
    /// Stream (call) id.
    pub id: u64,
    /// [`Code::OK`] for a clean end.
    pub code: Code,
    /// Server: the call's trailers (and its headers, if it sent no frame before).
    pub meta: MetadataBlocks,
}

impl StreamEnd {
    /// A stream end without metadata.
    pub fn new(id: u64, code: Code) -> Self {
        StreamEnd { id, code, meta: MetadataBlocks::default() }
    }

    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::StreamEnd);
        f.header.id = self.id;
        f.header.code = self.code.0;
        self.meta.apply(&mut f)?;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(mut f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        let meta = MetadataBlocks::split(&mut f)?;
        Ok(StreamEnd { id: f.header.id, code: Code(f.header.code), meta })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_frame_written_in_place_is_the_frame_encode_gives() {
        for len in [0, 1, 64, INLINE_MESSAGE_MAX] {
            let message = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>());
            let mut out = BytesMut::from(&b"before"[..]);
            StreamData::encode_small(7, &message, &mut out);
            let encoded = StreamData { id: 7, message, attachments: Vec::new(), meta: MetadataBlocks::default() }.encode().unwrap();
            assert!(encoded.segments.is_empty());
            assert_eq!(&out[..6], b"before");
            assert_eq!(&out[6..], &encoded.to_vec()[..], "message of {len} bytes");
        }
    }

    #[test]
    fn a_batch_written_in_place_decodes_to_its_messages() {
        let messages = [Bytes::from_static(b"one"), Bytes::new(), Bytes::from(vec![7u8; 300])];
        let mut out = BytesMut::new();
        StreamBatch::start_in_place(&mut out);
        for m in &messages {
            StreamBatch::push_in_place(m, &mut out);
        }
        StreamBatch::finish_in_place(9, &mut out);
        let encoded = StreamBatch { id: 9, messages: messages.to_vec().into() }.encode().unwrap();
        assert_eq!(&out[..], &encoded.to_vec()[..]);
        let header = FrameHeader::decode(&out[..HEADER_LEN]).unwrap();
        assert_eq!((header.kind, header.flags, header.id), (FrameKind::StreamData, FLAG_BATCH, 9));
        let raw = RawFrame { header, message: Bytes::copy_from_slice(&out[HEADER_LEN..]), attachments: vec![] };
        assert_eq!(StreamBatch::decode(raw).unwrap().messages.collect::<Vec<_>>(), messages);
    }

    #[test]
    fn batch_messages_are_taken_from_the_front_and_count_what_is_left() {
        let messages = [Bytes::from_static(b"one"), Bytes::new(), Bytes::from_static(b"three")];
        let mut batch: BatchMessages = messages.iter().cloned().collect();
        assert_eq!((batch.len(), batch.message_bytes(), batch.last_len()), (3, 8, 5));
        assert_eq!(batch.iter().collect::<Vec<_>>(), messages, "iter takes nothing");
        let area = batch.area().clone();
        assert_eq!(batch.next().unwrap(), "one");
        assert_eq!((batch.len(), batch.message_bytes()), (2, 5));
        assert_eq!(batch, BatchMessages::from_area(area.slice(7..)).unwrap(), "the rest of the same area");
        assert_eq!(batch.next().unwrap(), "");
        let last = batch.next().unwrap();
        assert_eq!(last, "three");
        assert_eq!(last.as_ptr(), area[area.len() - 5..].as_ptr(), "a slice of the area, not a copy");
        assert!(batch.is_empty() && batch.next().is_none());
        assert_eq!((batch.len(), batch.message_bytes()), (0, 0));
    }

    #[test]
    fn batch_messages_are_shown_in_place_and_skipped_as_taking_them_would() {
        let messages = [Bytes::from_static(b"one"), Bytes::new(), Bytes::from_static(b"three")];
        let mut shown: BatchMessages = messages.iter().cloned().collect();
        let mut taken = shown.clone();
        let area = shown.area().clone();
        for m in &messages {
            let first = shown.first().expect("a message left");
            assert_eq!(first, &m[..]);
            assert!(area.as_ptr_range().contains(&first.as_ptr()) || first.is_empty(), "shown where it is, not copied");
            shown.skip_first();
            assert_eq!(taken.next().as_ref(), Some(m));
            assert_eq!((shown.len(), shown.message_bytes()), (taken.len(), taken.message_bytes()));
        }
        assert!(shown.first().is_none() && shown.is_empty());
        shown.skip_first();
        assert_eq!((shown.len(), shown.message_bytes()), (0, 0), "skipping none takes nothing");
    }

    #[test]
    fn batch_messages_are_read_where_they_lie_and_the_batch_moves_past_each_whole() {
        let messages = [Bytes::from_static(b"one"), Bytes::new(), Bytes::from_static(b"three"), Bytes::from_static(b"four")];
        let mut read: BatchMessages = messages.iter().cloned().collect();
        let mut taken = read.clone();
        let area = read.area().clone();
        // Each reader takes a different part of its message: all of it, none, a slice, a byte.
        let readers: [fn(Take<&mut Bytes>) -> Bytes; 4] = [
            |mut m| m.copy_to_bytes(m.remaining()),
            |_| Bytes::new(),
            |mut m| m.copy_to_bytes(2),
            |mut m| Bytes::from(vec![m.get_u8()]),
        ];
        let want: [&[u8]; 4] = [b"one", b"", b"th", b"f"];
        for (reader, want) in readers.into_iter().zip(want) {
            let got = read.take_with(reader).expect("a message left");
            assert_eq!(&got[..], want);
            if got.len() > 1 {
                assert!(area.as_ptr_range().contains(&got.as_ptr()), "a slice of the batch, not a copy");
            }
            taken.next();
            assert_eq!((read.len(), read.message_bytes(), read.area()), (taken.len(), taken.message_bytes(), taken.area()));
        }
        assert!(read.take_with(|_| ()).is_none() && read.is_empty());
    }

    #[test]
    fn a_reader_that_panics_leaves_the_batch_at_the_next_message() {
        let messages = [Bytes::from_static(b"first"), Bytes::from_static(b"second"), Bytes::from_static(b"third")];
        let mut read: BatchMessages = messages.iter().cloned().collect();
        // A decoder's bug, caught by the application, after reading part of its message.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read.take_with(|mut m| {
                m.advance(2);
                panic!("a decoder's bug");
            })
        }));
        assert!(caught.is_err());
        assert_eq!((read.len(), read.message_bytes()), (2, 11));
        let second = read.take_with(|mut m| m.copy_to_bytes(m.remaining()));
        assert_eq!(second.as_deref(), Some(&b"second"[..]));
        assert_eq!(read.next().as_deref(), Some(&b"third"[..]));
    }

    #[test]
    fn a_batch_whose_lengths_lie_is_malformed() {
        let raw = |area: &[u8]| {
            let mut f = RawFrame::new(FrameKind::StreamData);
            f.header.flags = FLAG_BATCH;
            f.message = Bytes::copy_from_slice(area);
            f
        };
        let e = StreamBatch::decode(raw(&[5, 0, 0, 0, 1, 2])).unwrap_err().to_string();
        assert!(e.contains("a message of 5 bytes with 2 left"), "{e}");
        let e = StreamBatch::decode(raw(&[0, 0, 0, 0, 1])).unwrap_err().to_string();
        assert!(e.contains("1 bytes left where a message length belongs"), "{e}");
        assert!(StreamBatch::decode(raw(&[])).unwrap_err().to_string().contains("empty batch"));
        let mut with_attachment = raw(&[0, 0, 0, 0]);
        with_attachment.attachments.push(crate::payload::Payload::from(Bytes::from_static(b"x")));
        assert!(StreamBatch::decode(with_attachment).unwrap_err().to_string().contains("attachments in a batch"));
        let mut with_headers = raw(&[0, 0, 0, 0]);
        with_headers.header.flags |= crate::frame::FLAG_HEADERS;
        assert!(StreamBatch::decode(with_headers).unwrap_err().to_string().contains("response metadata on a batch"));
    }

    #[test]
    fn headers_ahead_of_the_first_message_decode_to_their_block_and_nothing_else() {
        let block = crate::Metadata::from_iter([("region".to_string(), Bytes::from_static(b"eu"))]).encode();
        for headers in [block, Bytes::new()] {
            let t = StreamHeaders { id: 5, headers: headers.clone() }.encode().unwrap();
            let wire = t.to_vec();
            let header = FrameHeader::decode(&wire[..HEADER_LEN]).unwrap();
            assert_eq!(header.flags & FLAG_HEADERS_ONLY, FLAG_HEADERS_ONLY);
            let raw = RawFrame { header, message: Bytes::copy_from_slice(&wire[HEADER_LEN..]), attachments: vec![] };
            match crate::frame::Frame::decode(raw).unwrap() {
                crate::frame::Frame::StreamHeaders(h) => assert_eq!(h, StreamHeaders { id: 5, headers }),
                other => panic!("decoded as {other:?}"),
            }
        }
        let raw = |message: &[u8], flags: u8| {
            let mut f = RawFrame::new(FrameKind::StreamData);
            f.header.flags = FLAG_HEADERS_ONLY | flags;
            f.message = Bytes::copy_from_slice(message);
            f
        };
        let e = StreamHeaders::decode(raw(b"xy", 0)).unwrap_err().to_string();
        assert!(e.contains("2 bytes of message after the headers"), "{e}");
        let e = StreamHeaders::decode(raw(&[1, 0, 0, 0, 9], crate::frame::FLAG_TRAILERS)).unwrap_err().to_string();
        assert!(e.contains("trailers on a frame of headers"), "{e}");
        let e = StreamHeaders::decode(raw(&[], FLAG_BATCH)).unwrap_err().to_string();
        assert!(e.contains("flagged a batch too"), "{e}");
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn a_message_over_the_inline_limit_is_not_a_small_frame() {
        StreamData::encode_small(1, &[0; INLINE_MESSAGE_MAX + 1], &mut BytesMut::new());
    }
}
