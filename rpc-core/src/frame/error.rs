//! Error: a call's failure status. Message = UTF-8 text; at most one attachment = details.

use super::header::FrameKind;
use super::meta::MetadataBlocks;
use super::raw::{EncodeError, RawFrame};
use crate::code::Code;
use crate::error::{DecodeError, Status};
use crate::payload::Payload;
use crate::transmit::Transmit;

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The call id it answers.
    pub id: u64,
    /// The status.
    pub status: Status,
    /// Response headers (if this is the call's first frame from the server) and trailers.
    pub meta: MetadataBlocks,
}

impl ErrorFrame {
    /// An error frame without metadata.
    pub fn new(id: u64, status: Status) -> Self {
        ErrorFrame { id, status, meta: MetadataBlocks::default() }
    }

    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::Error);
        f.header.id = self.id;
        f.header.code = self.status.code.0;
        f.message = self.status.message.into_bytes().into();
        if !self.status.details.is_empty() {
            f.attachments.push(Payload::from(self.status.details));
        }
        self.meta.apply(&mut f)?;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(mut f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(1)?;
        let meta = MetadataBlocks::split(&mut f)?;
        let message = f.message_text();
        let details = f.attachments.first().map(Payload::to_bytes).unwrap_or_default();
        Ok(ErrorFrame { id: f.header.id, status: Status { code: Code(f.header.code), message, details }, meta })
    }
}
