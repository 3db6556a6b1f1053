//! Error: a call's failure status. Message = UTF-8 text; at most one attachment = details.

use super::header::FrameKind;
use super::meta::MetadataBlocks;
use super::raw::{EncodeError, RawFrame};
use crate::code::Code;
use crate::error::{DecodeError, Status};
use crate::payload::Payload;
use crate::transmit::Transmit;

/// Flag bit of an error frame: the server refused the call and never ran it (a draining
/// server's answer to a request that came after its goaway). The client may send it again
/// elsewhere.
pub const FLAG_REFUSED: u8 = 1 << 0;

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The call id it answers.
    pub id: u64,
    /// The status.
    pub status: Status,
    /// Response headers (if this is the call's first frame from the server) and trailers.
    pub meta: MetadataBlocks,
    /// The call never ran ([`FLAG_REFUSED`]).
    pub refused: bool,
}

impl ErrorFrame {
    /// An error frame without metadata.
    pub fn new(id: u64, status: Status) -> Self {
        ErrorFrame { id, status, meta: MetadataBlocks::default(), refused: false }
    }

    /// A refusal: call `id` was not run, and will not be ([`FLAG_REFUSED`]).
    pub fn refused(id: u64, status: Status) -> Self {
        ErrorFrame { refused: true, ..ErrorFrame::new(id, status) }
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
        if self.refused {
            f.header.flags |= FLAG_REFUSED;
        }
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(mut f: RawFrame) -> Result<Self, DecodeError> {
        f.expect_attachments(1)?;
        let meta = MetadataBlocks::split(&mut f)?;
        let message = f.message_text();
        let details = f.attachments.first().map(Payload::to_bytes).unwrap_or_default();
        let refused = f.header.flags & FLAG_REFUSED != 0;
        Ok(ErrorFrame { id: f.header.id, status: Status { code: Code(f.header.code), message, details }, meta, refused })
    }
}
