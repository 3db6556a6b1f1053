//! Stream data and stream end: one direction of a streaming call. (Wire v1 defines them; the
//! connection state machine answers them with a protocol error until streaming lands.)

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{FrameHeader, FrameKind};
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
}

impl StreamData {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::StreamData);
        f.header.id = self.id;
        f.message = self.message;
        f.attachments = self.attachments;
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
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        Ok(StreamData { id: f.header.id, message: f.message, attachments: f.attachments })
    }
}

/// The end of one direction of a stream, with a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// Stream (call) id.
    pub id: u64,
    /// [`Code::OK`] for a clean end.
    pub code: Code,
}

impl StreamEnd {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::StreamEnd);
        f.header.id = self.id;
        f.header.code = self.code.0;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        Ok(StreamEnd { id: f.header.id, code: Code(f.header.code) })
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
            let encoded = StreamData { id: 7, message, attachments: Vec::new() }.encode().unwrap();
            assert!(encoded.segments.is_empty());
            assert_eq!(&out[..6], b"before");
            assert_eq!(&out[6..], &encoded.to_vec()[..], "message of {len} bytes");
        }
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn a_message_over_the_inline_limit_is_not_a_small_frame() {
        StreamData::encode_small(1, &[0; INLINE_MESSAGE_MAX + 1], &mut BytesMut::new());
    }
}
