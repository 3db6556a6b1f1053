//! `RawFrame`: a header with its message and attachments, before a kind gives them meaning.
//! Every kind's `encode` and `decode` goes through here, so lengths are computed in one place.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::align;
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
    ///
    /// A frame with attachments is padded (`docs/wire.md`, "Padding"): zeros after the message
    /// and after each attachment but the last, so that each attachment starts at a multiple of
    /// 64 bytes from the start of the frame. The padding after a short message goes into the
    /// head; every other pad is a segment of static zeros: the attachments' segments are still
    /// sent as they are. A frame without attachments has no padding.
    pub fn encode(mut self) -> Result<Transmit, EncodeError> {
        let n = self.attachments.len();
        self.header.attachments = u16::try_from(n).map_err(|_| EncodeError::TooManyAttachments(n))?;
        self.header.message_len =
            u32::try_from(self.message.len()).map_err(|_| EncodeError::MessageTooLong(self.message.len()))?;
        let prefix = (HEADER_LEN + 8 * n + self.message.len()) as u64;
        let lead = if n == 0 { 0 } else { align::pad_len(prefix) as usize };
        self.header.payload_len = payload_len(self.attachments.iter().map(|a| a.len() as u64));
        let inline = self.message.len() <= INLINE_MESSAGE_MAX;
        let mut head =
            BytesMut::with_capacity(HEADER_LEN + 8 * n + if inline { self.message.len() + lead } else { 0 });
        self.header.encode(&mut head);
        for a in &self.attachments {
            head.put_u64_le(a.len() as u64);
        }
        // A small frame with no attachments (a small call, a stream message, a control frame)
        // has no segments at all: no allocation for them. Otherwise exact: the attachments'
        // segments, a pad between each two, and a long message with the pad after it.
        let seg_count: usize = self.attachments.iter().map(|a| a.segments().len()).sum::<usize>()
            + n.saturating_sub(1)
            + if inline { 0 } else { 2 };
        let mut segments = Vec::with_capacity(seg_count);
        if inline {
            head.put_slice(&self.message);
            head.put_bytes(0, lead);
        } else {
            segments.push(Segment::Bytes(self.message));
            if lead > 0 {
                segments.push(Segment::Bytes(align::zeros(lead)));
            }
        }
        let last = n.saturating_sub(1);
        for (i, a) in self.attachments.into_iter().enumerate() {
            let pad = if i < last { align::pad_len(a.len() as u64) as usize } else { 0 };
            segments.extend(a.into_segments());
            if pad > 0 {
                segments.push(Segment::Bytes(align::zeros(pad)));
            }
        }
        Ok(Transmit { head: head.freeze(), segments })
    }

    /// Splits a complete frame body (everything after the header) into message and
    /// attachments, as slices of `body`: no copy, unless the payload does not lie at a
    /// 64-byte-aligned address (the frame was packed into a buffer behind other frames): then
    /// the payload is copied to aligned memory, and the second value says how many bytes.
    /// Checks the attachment table against `payload_len` and that every pad is zero.
    pub(crate) fn from_body(header: FrameHeader, mut body: Bytes) -> Result<(Self, usize), DecodeError> {
        let n = header.attachments as usize;
        let table = body.split_to(8 * n);
        let message = body.split_to(header.message_len as usize);
        if n == 0 {
            return Ok((RawFrame { header, message, attachments: Vec::new() }, 0));
        }
        let lengths = || table.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("chunks_exact(8)")));
        let mut sum = 0u64;
        for (i, len) in lengths().enumerate() {
            let len = if i + 1 < n { align::padded(len) } else { Some(len) };
            sum = match len.and_then(|l| sum.checked_add(l)) {
                Some(s) if s <= header.payload_len => s,
                _ => return Err(bad_table(&header, &table)),
            };
        }
        if sum != header.payload_len {
            return Err(bad_table(&header, &table));
        }
        // The decoder sized the body from the header: the lead pad, then `payload_len` bytes.
        let Some(lead) = body.len().checked_sub(header.payload_len as usize) else {
            return Err(bad_table(&header, &table));
        };
        if body[..lead].iter().any(|&b| b != 0) {
            return Err(bad_padding(header.kind, "after the message".into()));
        }
        body.advance(lead);
        let mut offset = 0usize;
        for (i, len) in lengths().enumerate().take(n - 1) {
            let start = offset + len as usize;
            offset = start + align::pad_len(len) as usize;
            if body[start..offset].iter().any(|&b| b != 0) {
                return Err(bad_padding(header.kind, format!("after attachment {i}")));
            }
        }
        let mut copied = 0;
        if !body.is_empty() && !align::is_aligned(body.as_ptr()) {
            copied = body.len();
            body = align::copy_aligned(&body);
        }
        let mut attachments = Vec::with_capacity(n);
        for len in lengths() {
            let len = len as usize;
            let a = body.split_to(len);
            attachments.push(Payload::from(a));
            let pad = align::pad_len(len as u64) as usize;
            body.advance(pad.min(body.len()));
        }
        Ok((RawFrame { header, message, attachments }, copied))
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

/// `payload_len` of attachments with these lengths: each but the last padded to 64 bytes.
pub(crate) fn payload_len(lengths: impl ExactSizeIterator<Item = u64>) -> u64 {
    let last = lengths.len().saturating_sub(1);
    lengths.enumerate().map(|(i, l)| if i < last { l + align::pad_len(l) } else { l }).sum()
}

fn bad_table(header: &FrameHeader, table: &[u8]) -> DecodeError {
    let lengths = table.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("chunks_exact(8)")));
    let n = lengths.len();
    let sum = lengths.clone().fold(0u64, u64::saturating_add);
    let padded = lengths
        .enumerate()
        .map(|(i, l)| if i + 1 < n { align::padded(l).unwrap_or(u64::MAX) } else { l })
        .fold(0u64, u64::saturating_add);
    let hint = if sum == header.payload_len { " (a sender that does not pad?)" } else { "" };
    DecodeError::Malformed {
        kind: header.kind.name(),
        reason: format!(
            "attachment table does not match the payload length: {n} attachments of {sum} bytes take {padded} \
             bytes with the padding to 64 bytes after all but the last, the header says {}{hint}",
            header.payload_len
        ),
    }
}

fn bad_padding(kind: FrameKind, place: String) -> DecodeError {
    DecodeError::Malformed { kind: kind.name(), reason: format!("padding {place} is not zero") }
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
