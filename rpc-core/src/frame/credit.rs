//! Credit: flow control for streams. The message is the granted byte count, `u64` LE.

use bytes::Bytes;

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;
use crate::transmit::Transmit;

/// Grants `bytes` more bytes of stream data on stream `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Stream (call) id.
    pub id: u64,
    /// Bytes granted.
    pub bytes: u64,
}

impl Credit {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::Credit);
        f.header.id = self.id;
        f.message = Bytes::copy_from_slice(&self.bytes.to_le_bytes());
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(0)?;
        let bytes: [u8; 8] = f.message.as_ref().try_into().map_err(|_| DecodeError::Malformed {
            kind: "credit",
            reason: format!("message is {} bytes, expected 8", f.message.len()),
        })?;
        Ok(Credit { id: f.header.id, bytes: u64::from_le_bytes(bytes) })
    }
}
