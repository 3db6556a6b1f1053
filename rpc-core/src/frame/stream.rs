//! Stream data and stream end: one direction of a streaming call. (Wire v1 defines them; the
//! connection state machine answers them with a protocol error until streaming lands.)

use bytes::Bytes;

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
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
