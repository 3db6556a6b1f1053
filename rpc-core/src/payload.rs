//! `Payload`: the zero-copy attachment type.
//!
//! A payload is an ordered list of segments. The sender's segments are written to the
//! transport as they are (scatter-gather, no gathering copy in user space); the receiver gets
//! the attachment back as one `Bytes` slice of its receive buffer.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// Memory owned outside `bytes`, for example a pinned, registered pool buffer (`ZcBuf` in
/// `transport-uring`). The transport that understands the concrete type downcasts it through
/// [`ExternalSegment::as_any`] (to use a fixed-buffer index or write-protect it); every other
/// transport just reads [`ExternalSegment::as_slice`].
pub trait ExternalSegment: Send + Sync + 'static {
    /// The bytes to send. Must not change while the segment is alive and shared.
    fn as_slice(&self) -> &[u8];
    /// For downcasting by a transport that knows the concrete type.
    fn as_any(&self) -> &dyn Any;
}

/// One piece of a [`Payload`].
#[derive(Clone)]
#[non_exhaustive]
pub enum Segment {
    /// Immutable, reference-counted bytes: the snapshot is guaranteed by the type.
    Bytes(Bytes),
    /// Memory owned by someone else (a pool buffer); kept alive by the `Arc` until the
    /// transport says the kernel is done with it.
    External(Arc<dyn ExternalSegment>),
}

impl Segment {
    /// The segment's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Segment::Bytes(b) => b,
            Segment::External(e) => e.as_slice(),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// True when the segment holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Bytes(b) => write!(f, "Segment::Bytes({} bytes)", b.len()),
            Segment::External(e) => write!(f, "Segment::External({} bytes)", e.as_slice().len()),
        }
    }
}

impl From<Bytes> for Segment {
    fn from(b: Bytes) -> Self {
        Segment::Bytes(b)
    }
}

/// An ordered list of segments travelling as one attachment.
///
/// ```
/// use rpc_core::Payload;
/// use bytes::Bytes;
///
/// let mut p = Payload::new();
/// p.push(Bytes::from_static(b"hello, "));
/// p.push(Bytes::from(vec![b'w'; 3]));
/// assert_eq!(p.len(), 10);
/// assert_eq!(p.segments().len(), 2);
/// assert_eq!(&p.to_bytes()[..], b"hello, www");
/// ```
#[derive(Clone, Default)]
pub struct Payload {
    segments: Vec<Segment>,
    len: usize,
}

impl Payload {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty payload with room for `n` segments.
    pub fn with_capacity(n: usize) -> Self {
        Payload { segments: Vec::with_capacity(n), len: 0 }
    }

    /// Appends a segment. Empty segments are dropped: they carry nothing on the wire.
    pub fn push(&mut self, segment: impl Into<Segment>) {
        let segment = segment.into();
        if segment.is_empty() {
            return;
        }
        self.len += segment.len();
        self.segments.push(segment);
    }

    /// Appends an external (pool) segment.
    pub fn push_external(&mut self, segment: Arc<dyn ExternalSegment>) {
        self.push(Segment::External(segment));
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the payload holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Takes the segments out.
    pub fn into_segments(self) -> Vec<Segment> {
        self.segments
    }

    /// The payload as one contiguous `Bytes`: free when it has a single `Bytes` segment (the
    /// usual case on the receiving side), a gathering copy otherwise. An empty payload gives
    /// an empty slice at a 64-byte-aligned address, like every received attachment.
    pub fn to_bytes(&self) -> Bytes {
        match self.segments.as_slice() {
            [] => crate::frame::aligned_empty(),
            [Segment::Bytes(b)] => b.clone(),
            segs => {
                let mut out = BytesMut::with_capacity(self.len);
                for s in segs {
                    out.extend_from_slice(s.as_slice());
                }
                out.freeze()
            }
        }
    }

    /// Iterates over the segments' bytes.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segments.iter().map(Segment::as_slice)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload").field("len", &self.len).field("segments", &self.segments.len()).finish()
    }
}

impl PartialEq for Payload {
    /// Content equality, whatever the segmentation.
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.chunks().flatten().eq(other.chunks().flatten())
    }
}

impl Eq for Payload {}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        let mut p = Payload::new();
        p.push(b);
        p
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload::from(Bytes::from(v))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(v: &'static [u8]) -> Self {
        Payload::from(Bytes::from_static(v))
    }
}

impl FromIterator<Bytes> for Payload {
    fn from_iter<I: IntoIterator<Item = Bytes>>(iter: I) -> Self {
        let mut p = Payload::new();
        for b in iter {
            p.push(b);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_ignores_segmentation() {
        let a: Payload = [Bytes::from_static(b"ab"), Bytes::from_static(b"cd")].into_iter().collect();
        let b = Payload::from(Bytes::from_static(b"abcd"));
        assert_eq!(a, b);
        assert_ne!(a, Payload::from(Bytes::from_static(b"abce")));
    }

    #[test]
    fn empty_segments_are_dropped() {
        let mut p = Payload::new();
        p.push(Bytes::new());
        assert!(p.segments().is_empty());
        assert!(p.is_empty());
    }

    #[test]
    fn single_segment_to_bytes_is_free() {
        let b = Bytes::from(vec![7u8; 100]);
        let p = Payload::from(b.clone());
        assert_eq!(p.to_bytes().as_ptr(), b.as_ptr());
    }
}
