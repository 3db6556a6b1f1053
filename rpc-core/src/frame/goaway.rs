//! GoAway: the sender takes no new calls. Calls up to `last_id` are still answered.

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::code::Code;
use crate::error::DecodeError;
use crate::transmit::Transmit;

/// The sender is going away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The highest call id the sender accepted and will still answer.
    pub last_id: u64,
    /// [`Code::OK`] for a graceful shutdown, an error code otherwise.
    pub code: Code,
    /// Human-readable reason.
    pub message: String,
}

impl GoAway {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::GoAway);
        f.header.id = self.last_id;
        f.header.code = self.code.0;
        f.message = self.message.into_bytes().into();
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        Ok(GoAway { last_id: f.header.id, code: Code(f.header.code), message: f.message_text() })
    }
}
