//! Response metadata on the server's frames of a call: the headers (on its first frame) and the
//! trailers (on its last), each an encoded [`crate::Metadata`] block at the front of the
//! frame's message, as a request carries its metadata (`docs/wire.md`, "Metadata").

use bytes::{BufMut, Bytes, BytesMut};

use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;

/// Response, error, stream data and stream end flag: the message begins with the call's
/// response headers: a `u32` LE length, then that many bytes of metadata block. The same bit as
/// a request's [`super::FLAG_METADATA`]: "the message begins with the sender's headers".
pub const FLAG_HEADERS: u8 = 1 << 2;

/// Response, error and stream end flag: the message begins (after the headers, if
/// [`FLAG_HEADERS`] is set too) with the call's trailers: a `u32` LE length, then the block.
pub const FLAG_TRAILERS: u8 = 1 << 4;

/// The encoded response headers and trailers a frame carries; empty bytes for none (no flag,
/// not a byte on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataBlocks {
    /// The response headers' block ([`crate::Metadata::encode`]), or empty.
    pub headers: Bytes,
    /// The trailers' block, or empty.
    pub trailers: Bytes,
}

impl MetadataBlocks {
    /// True when the frame carries neither.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.trailers.is_empty()
    }

    /// Bytes the blocks add to the message (each present block with its length word).
    pub fn wire_len(&self) -> usize {
        [&self.headers, &self.trailers].iter().filter(|b| !b.is_empty()).map(|b| 4 + b.len()).sum()
    }

    /// Puts the blocks in front of `f`'s message and sets their flags. Metadata is small and
    /// rare: one copy joins it to the message (none at all without metadata).
    pub(super) fn apply(self, f: &mut RawFrame) -> Result<(), EncodeError> {
        if self.is_empty() {
            return Ok(());
        }
        let mut m = BytesMut::with_capacity(self.wire_len() + f.message.len());
        for (block, flag) in [(&self.headers, FLAG_HEADERS), (&self.trailers, FLAG_TRAILERS)] {
            if !block.is_empty() {
                let len = u32::try_from(block.len()).map_err(|_| EncodeError::MessageTooLong(block.len()))?;
                m.put_u32_le(len);
                m.put_slice(block);
                f.header.flags |= flag;
            }
        }
        m.put_slice(&f.message);
        f.message = m.freeze();
        Ok(())
    }

    /// Takes the blocks its flags announce off the front of `f`'s message (slices, no copy).
    /// A length word that does not fit the message is a malformed frame; what is inside the
    /// blocks is checked by the connection, which ends only the call for it.
    pub(super) fn split(f: &mut RawFrame) -> Result<Self, DecodeError> {
        let mut out = MetadataBlocks::default();
        for (flag, slot, what) in [(FLAG_HEADERS, 0, "headers"), (FLAG_TRAILERS, 1, "trailers")] {
            if f.header.flags & flag == 0 {
                continue;
            }
            let m = &f.message;
            let malformed = |reason: String| DecodeError::Malformed { kind: f.header.kind.name(), reason };
            if m.len() < 4 {
                return Err(malformed(format!("{what} flag set but {} bytes of message are left", m.len())));
            }
            let len = u32::from_le_bytes(m[..4].try_into().expect("4 bytes")) as usize;
            if len > m.len() - 4 {
                return Err(malformed(format!("{what} block of {len} bytes in {} bytes of message", m.len() - 4)));
            }
            let block = m.slice(4..4 + len);
            f.message = m.slice(4 + len..);
            if slot == 0 {
                out.headers = block;
            } else {
                out.trailers = block;
            }
        }
        Ok(out)
    }
}
