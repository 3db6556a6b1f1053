//! `FrameDecoder`: cuts frames out of a receive buffer, checking every length against the
//! limits before anything is allocated, and handing out message and attachments as slices of
//! that buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::header::{FrameHeader, HEADER_LEN};
use super::hello::{Hello, HELLO_LEN};
use super::raw::RawFrame;
use super::Frame;
use crate::error::DecodeError;

/// What this side accepts in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message + payload.
    pub max_frame: u32,
    /// Most attachments.
    pub max_attachments: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame: 256 << 20, max_attachments: 1024 }
    }
}

/// A buffer frames are cut from: the driver's own [`BytesMut`], or a [`Bytes`] chunk a
/// transport received into memory of its own (an io_uring provided-buffer ring), whose frames
/// then stay slices of that memory.
pub trait InputBuf: Buf + std::ops::Deref<Target = [u8]> {
    /// Takes the first `n` bytes as a shared, immutable slice (no copy).
    fn take_frozen(&mut self, n: usize) -> Bytes;
}

impl InputBuf for BytesMut {
    fn take_frozen(&mut self, n: usize) -> Bytes {
        self.split_to(n).freeze()
    }
}

impl InputBuf for Bytes {
    fn take_frozen(&mut self, n: usize) -> Bytes {
        self.split_to(n)
    }
}

/// Decodes a byte stream: first the peer's hello, then frames.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    hello_seen: bool,
    /// The header of the frame being received, validated, once its 40 bytes are in.
    pending: Option<(FrameHeader, usize)>,
}

impl FrameDecoder {
    /// A decoder that expects a hello first.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder { limits, hello_seen: false, pending: None }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decodes the peer's hello, once, before any frame.
    pub fn decode_hello<B: InputBuf>(&mut self, buf: &mut B) -> Result<Option<Hello>, DecodeError> {
        debug_assert!(!self.hello_seen);
        if buf.len() < HELLO_LEN {
            // Check the magic as soon as we have it so a foreign peer fails fast.
            let n = buf.len().min(4);
            if buf[..n] != super::hello::MAGIC[..n] {
                let mut found = [0u8; 4];
                found[..n].copy_from_slice(&buf[..n]);
                return Err(DecodeError::BadMagic { found, expected: super::hello::MAGIC });
            }
            return Ok(None);
        }
        let hello = Hello::decode(&buf[..HELLO_LEN])?;
        buf.advance(HELLO_LEN);
        self.hello_seen = true;
        Ok(Some(hello))
    }

    /// Decodes the next complete frame from the front of `buf`, or returns `None` when more
    /// bytes are needed ([`FrameDecoder::bytes_needed`] says how many in all).
    pub fn decode<B: InputBuf>(&mut self, buf: &mut B) -> Result<Option<Frame>, DecodeError> {
        let Some((header, body_len)) = self.pending_header(buf)? else { return Ok(None) };
        if buf.len() < HEADER_LEN + body_len {
            return Ok(None);
        }
        self.pending = None;
        buf.advance(HEADER_LEN);
        let body = buf.take_frozen(body_len);
        Frame::decode(RawFrame::from_body(header, body)?).map(Some)
    }

    /// Bytes the current frame needs in all, from the front of the buffer (header included);
    /// [`HEADER_LEN`] while the header itself is incomplete. Lets the caller size the receive
    /// buffer once so that a large payload lands in one allocation.
    pub fn bytes_needed(&self) -> usize {
        match self.pending {
            Some((_, body)) => HEADER_LEN + body,
            None if self.hello_seen => HEADER_LEN,
            None => HELLO_LEN,
        }
    }

    fn pending_header(&mut self, buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, DecodeError> {
        if let Some(p) = self.pending {
            return Ok(Some(p));
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = FrameHeader::decode(&buf[..HEADER_LEN])?;
        let body_len = self.check(&header)?;
        self.pending = Some((header, body_len));
        Ok(self.pending)
    }

    /// Every length against the limits, in u64 so that no claim can overflow.
    fn check(&self, h: &FrameHeader) -> Result<usize, DecodeError> {
        let max_frame = u64::from(self.limits.max_frame);
        if u32::from(h.attachments) > self.limits.max_attachments {
            return Err(DecodeError::TooManyAttachments {
                count: u64::from(h.attachments),
                limit: u64::from(self.limits.max_attachments),
            });
        }
        if h.payload_len > max_frame {
            return Err(DecodeError::TooLarge { what: "payload", len: h.payload_len, limit: max_frame });
        }
        let content = u64::from(h.message_len) + h.payload_len;
        if content > max_frame {
            return Err(DecodeError::TooLarge { what: "frame", len: content, limit: max_frame });
        }
        if h.attachments == 0 && h.payload_len != 0 {
            return Err(DecodeError::Malformed {
                kind: h.kind.name(),
                reason: format!("payload of {} bytes but no attachments", h.payload_len),
            });
        }
        let body = content + 8 * u64::from(h.attachments);
        usize::try_from(body).map_err(|_| DecodeError::TooLarge { what: "frame", len: body, limit: max_frame })
    }

    /// Call at end of stream: an error if a frame was cut off.
    pub fn finish(&self, buf: &[u8]) -> Result<(), DecodeError> {
        if buf.is_empty() {
            return Ok(());
        }
        Err(DecodeError::Truncated { have: buf.len(), need: self.bytes_needed().max(buf.len() + 1) })
    }
}
