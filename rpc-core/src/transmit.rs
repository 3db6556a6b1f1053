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

    /// True when a segment is a file region (the transport sends it by `sendfile` or splice,
    /// or reads it).
    pub fn has_files(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::File(_)))
    }

    /// Every byte, gathered (tests and the copy fallback of transports that need it). File
    /// regions are read (blocking); one that cannot be read in full ends the result there, so
    /// it comes out shorter than [`Transmit::len`].
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.head);
        for s in &self.segments {
            match s {
                Segment::File(f) => match f.read_to_bytes() {
                    Ok(b) => v.extend_from_slice(&b),
                    Err(_) => break,
                },
                s => v.extend_from_slice(s.memory().unwrap_or_default()),
            }
        }
        v
    }
}
