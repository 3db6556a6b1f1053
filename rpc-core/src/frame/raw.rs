//! `RawFrame`: a header with its message and attachments, before a kind gives them meaning.
//! Every kind's `encode` and `decode` goes through here, so lengths are computed in one place.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{FrameHeader, FrameKind, HEADER_LEN};
use crate::error::DecodeError;
use crate::payload::{Payload, Segment};
use crate::transmit::Transmit;

/// A message up to this length is copied into the head (one iovec fewer); a longer one is sent
/// as its own segment.
pub const INLINE_MESSAGE_MAX: usize = 512;

/// A frame split into its parts.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// The header (lengths are recomputed on encode).
    pub header: FrameHeader,
    /// The message bytes.
    pub message: Bytes,
    /// The attachments.
    pub attachments: Vec<Payload>,
}

impl RawFrame {
    /// A frame of `kind` with no message and no attachments.
    pub fn new(kind: FrameKind) -> Self {
        RawFrame { header: FrameHeader::new(kind), message: Bytes::new(), attachments: Vec::new() }
    }

    /// Encodes into a transmit. Fails only when the frame cannot be described on the wire
    /// (more than 65535 attachments or a message over 4 GiB): user misuse, caught before IO.
    pub fn encode(mut self) -> Result<Transmit, EncodeError> {
        let n = self.attachments.len();
        self.header.attachments = u16::try_from(n).map_err(|_| EncodeError::TooManyAttachments(n))?;
        self.header.message_len =
            u32::try_from(self.message.len()).map_err(|_| EncodeError::MessageTooLong(self.message.len()))?;
        self.header.payload_len = self.attachments.iter().map(|a| a.len() as u64).sum();
        let inline = self.message.len() <= INLINE_MESSAGE_MAX;
        let mut head =
            BytesMut::with_capacity(HEADER_LEN + 8 * n + if inline { self.message.len() } else { 0 });
        self.header.encode(&mut head);
        for a in &self.attachments {
            head.put_u64_le(a.len() as u64);
        }
        let seg_count: usize = self.attachments.iter().map(|a| a.segments().len()).sum();
        let mut segments = Vec::with_capacity(seg_count + 1);
        if inline {
            head.put_slice(&self.message);
        } else {
            segments.push(Segment::Bytes(self.message));
        }
        for a in self.attachments {
            segments.extend(a.into_segments());
        }
        Ok(Transmit { head: head.freeze(), segments })
    }

    /// Splits a complete frame body (everything after the header) into message and
    /// attachments, as slices of `body`: no copy.
    pub(crate) fn from_body(header: FrameHeader, mut body: Bytes) -> Result<Self, DecodeError> {
        let n = header.attachments as usize;
        let table = body.split_to(8 * n);
        let message = body.split_to(header.message_len as usize);
        let mut attachments = Vec::with_capacity(n);
        let mut sum = 0u64;
        for chunk in table.chunks_exact(8) {
            let len = u64::from_le_bytes(chunk.try_into().expect("chunks_exact(8)"));
            sum = sum.checked_add(len).ok_or_else(|| bad_table(header.kind))?;
            if sum > header.payload_len {
                return Err(bad_table(header.kind));
            }
            attachments.push(Payload::from(body.split_to(len as usize)));
        }
        if sum != header.payload_len {
            return Err(bad_table(header.kind));
        }
        Ok(RawFrame { header, message, attachments })
    }

    /// Checks that the frame has no more than `max` attachments (per kind).
    pub(crate) fn expect_attachments(&self, max: usize) -> Result<(), DecodeError> {
        if self.attachments.len() > max {
            return Err(DecodeError::Malformed {
                kind: self.header.kind.name(),
                reason: format!("{} attachments, at most {max} allowed", self.attachments.len()),
            });
        }
        Ok(())
    }

    /// The message as UTF-8 text (error and goaway reasons); invalid bytes are replaced.
    pub(crate) fn message_text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }
}

fn bad_table(kind: FrameKind) -> DecodeError {
    DecodeError::Malformed {
        kind: kind.name(),
        reason: "attachment lengths do not add up to the payload length".into(),
    }
}

/// A frame that cannot be put on the wire: caller misuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// More than 65535 attachments.
    #[error("{0} attachments in one frame; the wire allows 65535")]
    TooManyAttachments(usize),
    /// A message of 4 GiB or more.
    #[error("message of {0} bytes; the wire allows 4 GiB - 1")]
    MessageTooLong(usize),
}
