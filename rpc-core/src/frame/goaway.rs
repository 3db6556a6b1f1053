//! GoAway: the sender takes no new calls. Calls up to `last_id` are still answered.

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::code::Code;
use crate::error::DecodeError;
use crate::transmit::Transmit;

/// Goaway flag bit 0: the header's `deadline_us` field carries [`GoAway::last_pieced`].
pub const FLAG_LAST_PIECED: u8 = 1;

/// The sender is going away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The highest call id the sender accepted and will still answer.
    pub last_id: u64,
    /// Server: the highest id of a request whose header reached it in pieces (`Some(0)`: none
    /// did); `None` when the goaway does not say (a peer before this amendment of v1). A client
    /// sends its pieced requests in id order, so one of its pieced requests numbered above this
    /// and at most `last_id` had not begun to reach the server: overtaken by later calls, it
    /// will be refused (`docs/wire.md`, "Calls").
    pub last_pieced: Option<u64>,
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
        if let Some(last_pieced) = self.last_pieced {
            f.header.flags |= FLAG_LAST_PIECED;
            f.header.deadline_us = last_pieced;
        }
        f.message = self.message.into_bytes().into();
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        let last_pieced = (f.header.flags & FLAG_LAST_PIECED != 0).then_some(f.header.deadline_us);
        Ok(GoAway { last_id: f.header.id, last_pieced, code: Code(f.header.code), message: f.message_text() })
    }
}
