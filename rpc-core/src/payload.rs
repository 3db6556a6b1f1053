//! `Payload`: the zero-copy attachment type.
//!
//! A payload is an ordered list of segments: memory (`Bytes`, pool buffers) or regions of open
//! files. The sender's segments are written to the transport as they are (scatter-gather, no
//! gathering copy in user space; file regions by `sendfile` or splice); the receiver gets the
//! attachment back as one `Bytes` slice of its receive buffer.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::file_region::FileRegion;

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
    /// A region of an open file: never read into memory by a transport that can send it from
    /// the page cache (`sendfile`, splice); read (and counted as a copy) by one that cannot.
    File(FileRegion),
}

impl Segment {
    /// The segment's bytes when it is memory; `None` for a file region, whose bytes are had
    /// only by asking for them ([`FileRegion::read_to_bytes`]), a copy.
    #[inline]
    pub fn memory(&self) -> Option<&[u8]> {
        match self {
            Segment::Bytes(b) => Some(b),
            Segment::External(e) => Some(e.as_slice()),
            Segment::File(_) => None,
        }
    }

    /// The file region, if the segment is one.
    #[inline]
    pub fn file(&self) -> Option<&FileRegion> {
        match self {
            Segment::File(f) => Some(f),
            _ => None,
        }
    }

    /// Length in bytes (for a file region, known without reading it).
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Segment::Bytes(b) => b.len(),
            Segment::External(e) => e.as_slice().len(),
            Segment::File(f) => f.len(),
        }
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
            Segment::File(r) => write!(f, "Segment::File({r:?})"),
        }
    }
}

impl From<Bytes> for Segment {
    fn from(b: Bytes) -> Self {
        Segment::Bytes(b)
    }
}

impl From<FileRegion> for Segment {
    fn from(f: FileRegion) -> Self {
        Segment::File(f)
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

    /// Appends a region of an open file.
    pub fn push_file(&mut self, region: FileRegion) {
        self.push(Segment::File(region));
    }

    /// True when some segment is a file region (its bytes are not in memory).
    pub fn has_files(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::File(_)))
    }

    /// The payload as one contiguous `Bytes`: free when it has a single `Bytes` segment (the
    /// usual case on the receiving side), a gathering copy otherwise. An empty payload gives
    /// an empty slice at a 64-byte-aligned address, like every received attachment.
    ///
    /// File regions are read here (blocking). A region that can no longer be read in full
    /// (its file shrank) makes the result empty, with a warning logged;
    /// [`Payload::read_to_bytes`] returns that error instead.
    pub fn to_bytes(&self) -> Bytes {
        match self.read_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("Payload::to_bytes: a file region could not be read: {e}");
                Bytes::new()
            }
        }
    }

    /// [`Payload::to_bytes`], with the error of a file region that cannot be read in full.
    pub fn read_to_bytes(&self) -> std::io::Result<Bytes> {
        match self.segments.as_slice() {
            [] => Ok(crate::frame::aligned_empty()),
            [Segment::Bytes(b)] => Ok(b.clone()),
            [Segment::File(f)] => f.read_to_bytes(),
            segs => {
                let mut out = BytesMut::zeroed(self.len);
                let mut at = 0;
                for s in segs {
                    let dst = &mut out[at..at + s.len()];
                    match s {
                        Segment::File(f) => {
                            f.read_at(0, dst)?;
                        }
                        s => dst.copy_from_slice(s.memory().unwrap_or_default()),
                    }
                    at += s.len();
                }
                Ok(out.freeze())
            }
        }
    }

    /// Iterates over the bytes of the memory segments; file regions are not read, and so not
    /// among them (see [`Payload::has_files`], [`Payload::read_to_bytes`]).
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segments.iter().filter_map(Segment::memory)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload").field("len", &self.len).field("segments", &self.segments.len()).finish()
    }
}

impl PartialEq for Payload {
    /// Content equality, whatever the segmentation. File regions are read to compare them;
    /// one that cannot be read equals nothing.
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        if self.has_files() || other.has_files() {
            return matches!((self.read_to_bytes(), other.read_to_bytes()), (Ok(a), Ok(b)) if a == b);
        }
        self.chunks().flatten().eq(other.chunks().flatten())
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

impl From<FileRegion> for Payload {
    fn from(f: FileRegion) -> Self {
        let mut p = Payload::new();
        p.push_file(f);
        p
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
