//! Attachment alignment: the wire's padding rule (`docs/wire.md`, "Padding") and the aligned
//! memory the receiver puts frames in, so that every attachment handed to the application starts
//! at a 64-byte-aligned address — what Arrow IPC buffers and SIMD readers take as they are
//! (Arrow Flight in Rust copies any body that is not 64-byte aligned).
//!
//! Safe code only: aligned memory is a `BytesMut` over-allocated by up to 63 bytes whose start
//! is advanced to the next multiple of 64.

use bytes::{Buf, Bytes, BytesMut};

/// Alignment of every attachment, from the start of its frame on the wire and in memory.
pub const ATTACHMENT_ALIGN: usize = 64;

/// The zero bytes padding segments point to: sent as they are, never copied per frame.
#[repr(C, align(64))]
struct Zeros([u8; ATTACHMENT_ALIGN]);

static ZEROS: Zeros = Zeros([0; ATTACHMENT_ALIGN]);

/// Zero bytes that take `offset` up to the next multiple of [`ATTACHMENT_ALIGN`] (0 to 63).
#[inline]
pub(crate) fn pad_len(offset: u64) -> u64 {
    offset.wrapping_neg() % ATTACHMENT_ALIGN as u64
}

/// `len` rounded up to a multiple of [`ATTACHMENT_ALIGN`], `None` on overflow.
#[inline]
pub(crate) fn padded(len: u64) -> Option<u64> {
    len.checked_add(pad_len(len))
}

/// `n` (< 64) zero bytes of static memory: a padding segment.
pub(crate) fn zeros(n: usize) -> Bytes {
    Bytes::from_static(&ZEROS.0[..n])
}

/// An empty slice at a 64-byte-aligned address: what an empty attachment reads as (an empty
/// `Bytes::new()` points anywhere).
pub(crate) fn aligned_empty() -> Bytes {
    zeros(0)
}

/// Whether `p` is 64-byte aligned.
#[inline]
pub(crate) fn is_aligned(p: *const u8) -> bool {
    (p as usize) % ATTACHMENT_ALIGN == 0
}

/// Moves the write position of an empty buffer up to the next 64-byte-aligned address, giving
/// up at most 63 bytes of its room. False (nothing changed) when the room is too small.
pub(crate) fn align_empty(buf: &mut BytesMut) -> bool {
    debug_assert!(buf.is_empty());
    let skip = pad_len(buf.as_ptr() as u64) as usize;
    if skip == 0 {
        return true;
    }
    if buf.capacity() < skip {
        return false;
    }
    buf.resize(skip, 0);
    buf.advance(skip);
    true
}

/// An empty buffer whose write position is 64-byte aligned, with room for at least `cap` bytes.
pub(crate) fn aligned_with_capacity(cap: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(cap + ATTACHMENT_ALIGN - 1);
    let aligned = align_empty(&mut b);
    debug_assert!(aligned && b.capacity() >= cap);
    b
}

/// A copy of `bytes` at a 64-byte-aligned address.
pub(crate) fn copy_aligned(bytes: &[u8]) -> Bytes {
    let mut b = aligned_with_capacity(bytes.len());
    b.extend_from_slice(bytes);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_rounds_up_to_64() {
        assert_eq!(pad_len(0), 0);
        assert_eq!(pad_len(1), 63);
        assert_eq!(pad_len(63), 1);
        assert_eq!(pad_len(64), 0);
        assert_eq!(pad_len(65), 63);
        assert_eq!(padded(100), Some(128));
        assert_eq!(padded(u64::MAX), None);
    }

    #[test]
    fn aligned_memory_is_aligned() {
        for cap in [0, 1, 63, 64, 65, 4095, 1 << 20] {
            let b = aligned_with_capacity(cap);
            assert!(is_aligned(b.as_ptr()) && b.capacity() >= cap, "{cap}");
            let c = copy_aligned(&vec![7u8; cap]);
            assert!(is_aligned(c.as_ptr()) && c.len() == cap && c.iter().all(|&x| x == 7), "{cap}");
        }
        assert!(is_aligned(aligned_empty().as_ptr()));
        assert_eq!(&zeros(63)[..], &[0u8; 63][..]);
    }
}
