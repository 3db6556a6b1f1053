//! Stream data and stream end: one direction of a streaming call.

use bytes::Bytes;

use super::header::FrameKind;
use super::meta::MetadataBlocks;
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

    /// Decodes from a raw frame.
    pub fn decode(mut f: RawFrame) -> Result<Self, DecodeError> {
        let meta = MetadataBlocks::split(&mut f)?;
        Ok(StreamData { id: f.header.id, message: f.message, attachments: f.attachments, meta })
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
