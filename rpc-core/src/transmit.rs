//! `Transmit`: one encoded frame, ready for a transport.

use bytes::Bytes;

use crate::payload::Segment;

/// One frame as the transport sees it: a small head (header, attachment table and, when
/// short, the message) followed by segments written as they are. A transport may copy the
/// head freely; the segments are the caller's memory and are what zero-copy is for.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// Header bytes, attachment table and short message.
    pub head: Bytes,
    /// The rest of the frame, in order: a long message, then every attachment's segments.
    pub segments: Vec<Segment>,
}

impl Transmit {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.segments.iter().map(Segment::len).sum::<usize>()
    }

    /// Never true for an encoded frame (the head is at least a header); here for clippy.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of the segments, not counting the head.
    pub fn segment_bytes(&self) -> usize {
        self.segments.iter().map(Segment::len).sum()
    }

    /// Every byte, gathered (tests and the copy fallback of transports that need it).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.head);
        for s in &self.segments {
            v.extend_from_slice(s.as_slice());
        }
        v
    }
}
