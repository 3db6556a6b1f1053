//! Cancel: the caller no longer wants the result; the server drops the handler.

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;
use crate::transmit::Transmit;

/// Cancels call `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancel {
    /// The call to cancel.
    pub id: u64,
}

impl Cancel {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::Cancel);
        f.header.id = self.id;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        Ok(Cancel { id: f.header.id })
    }
}
