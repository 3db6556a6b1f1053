//! Response: a call's successful result.

use bytes::Bytes;

use super::header::FrameKind;
use super::meta::MetadataBlocks;
use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;
use crate::payload::Payload;
use crate::transmit::Transmit;

/// A successful result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The call id it answers.
    pub id: u64,
    /// Encoded result.
    pub message: Bytes,
    /// Attachments.
    pub attachments: Vec<Payload>,
    /// Response headers (if this is the call's first frame from the server) and trailers.
    pub meta: MetadataBlocks,
}

impl Response {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::Response);
        f.header.id = self.id;
        f.message = self.message;
        f.attachments = self.attachments;
        self.meta.apply(&mut f)?;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(mut f: RawFrame) -> Result<Self, DecodeError> {
        let meta = MetadataBlocks::split(&mut f)?;
        Ok(Response { id: f.header.id, message: f.message, attachments: f.attachments, meta })
    }
}
