//! Commit: the whole of a large request has been written; the server may run it. Until then a
//! request sent with the await-commit flag is held, and a cancel discards it unrun.

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;
use crate::transmit::Transmit;

/// Commits call `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The call to run.
    pub id: u64,
}

impl Commit {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::Commit);
        f.header.id = self.id;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        Ok(Commit { id: f.header.id })
    }
}
