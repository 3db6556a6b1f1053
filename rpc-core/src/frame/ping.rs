//! Ping and pong: keepalive. A pong echoes the ping's id.

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;
use crate::transmit::Transmit;

/// A keepalive probe (`pong == false`) or its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Opaque id, echoed by the pong.
    pub id: u64,
    /// True for the answer.
    pub pong: bool,
}

impl Ping {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(if self.pong { FrameKind::Pong } else { FrameKind::Ping });
        f.header.id = self.id;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        Ok(Ping { id: f.header.id, pong: f.header.kind == FrameKind::Pong })
    }
}
