//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, 5.19): buffers the kernel picks from
//! when a multishot receive has data, so that a receive needs no buffer of its own.
//!
//! The ring is shared memory: an array of `struct io_uring_buf { addr, len, bid, resv }` whose
//! first entry's `resv` is the tail. The kernel consumes entries from its head; this side (the
//! only producer) writes an entry at `tail & mask` and then publishes `tail + 1` with a release
//! store. A buffer the kernel filled is handed out as a [`Bytes`] whose owner puts it back in
//! the ring when the last slice of it is dropped: frames parsed in place keep the buffer out of
//! the kernel's reach for exactly as long as they live.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::ring::Ring;

/// `struct io_uring_buf` (`include/uapi/linux/io_uring.h`).
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    /// In entry 0: the ring's tail.
    resv: u16,
}

/// One anonymous private mapping, unmapped on drop.
struct Mapping {
    base: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing aliases
        // no memory of this process; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { base: p.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.base.is_null() {
            return;
        }
        // SAFETY: `base`/`len` are exactly what mmap returned; the owners of this mapping
        // (`Inner`) drop it only after the kernel has let go of it (see `Inner::drop`).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

struct Inner {
    ring: Arc<Ring>,
    bgid: u16,
    entries: u16,
    buf_size: usize,
    /// The `io_uring_buf` array (page-aligned, as the kernel requires).
    entries_map: Mapping,
    /// `entries` buffers of `buf_size` bytes, back to back.
    bufs: Mapping,
    /// The producer's tail; the lock orders concurrent returns (slices drop on any thread).
    tail: Mutex<u16>,
    /// Buffers the kernel can pick from now.
    in_kernel: AtomicUsize,
    /// The kernel took the registration (only then is there anything to unregister).
    registered: bool,
}

// SAFETY: the raw pointers are to mappings `Inner` owns; the kernel writes a buffer only while
// it is in the ring, and this process reads a buffer only after the kernel handed it out (a CQE)
// and before it goes back, so no byte is read and written at once; entry writes and the tail
// store are serialised by the `tail` mutex.
unsafe impl Send for Inner {}
// SAFETY: as above; shared access goes through the mutex and atomics.
unsafe impl Sync for Inner {}

/// A registered provided-buffer ring. Cloning shares it.
#[derive(Clone)]
pub(crate) struct BufRing(Arc<Inner>);

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.0.bgid)
            .field("entries", &self.0.entries)
            .field("buf_size", &self.0.buf_size)
            .field("in_kernel", &self.in_kernel())
            .finish()
    }
}

impl BufRing {
    /// Maps `entries` (a power of two) buffers of `buf_size` bytes, fills the ring with all of
    /// them and registers it on `ring` as buffer group `bgid`.
    pub(crate) fn new(ring: &Arc<Ring>, bgid: u16, entries: u16, buf_size: usize) -> io::Result<BufRing> {
        // Buffers lie back to back in a page-aligned mapping: a size that is a multiple of 64
        // starts every buffer 64-byte aligned, where a frame's attachments are aligned too.
        if !entries.is_power_of_two() || entries > 32768 || buf_size == 0 || buf_size > u32::MAX as usize || buf_size % 64 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a buffer ring needs a power-of-two count up to 32768 and a size that is a multiple of 64 up to \
                     4 GiB (got {entries} x {buf_size})"
                ),
            ));
        }
        let entries_map = Mapping::new(entries as usize * std::mem::size_of::<RawBuf>())?;
        let bufs = Mapping::new(entries as usize * buf_size)?;
        let mut inner = Inner {
            ring: ring.clone(),
            bgid,
            entries,
            buf_size,
            entries_map,
            bufs,
            tail: Mutex::new(0),
            in_kernel: AtomicUsize::new(0),
            registered: false,
        };
        for bid in 0..entries {
            inner.give_back(bid);
        }
        // SAFETY: IORING_REGISTER_PBUF_RING needs the entry array to stay mapped until the
        // group is unregistered or the ring is closed. `Inner` owns the mapping and unregisters
        // before unmapping (`Inner::drop`), and it outlives every receive armed on the group:
        // each multishot receive keeps a clone until its final completion. A refused
        // registration leaves the kernel nothing of the memory: `inner` drops it at once.
        unsafe { ring.register_buf_ring(inner.entries_map.base as u64, entries, bgid)? };
        inner.registered = true;
        Ok(BufRing(Arc::new(inner)))
    }

    /// The buffer group id receives name.
    pub(crate) fn bgid(&self) -> u16 {
        self.0.bgid
    }

    /// Size of each buffer: the largest chunk.
    pub(crate) fn buf_size(&self) -> usize {
        self.0.buf_size
    }

    /// Buffers the kernel can fill now.
    pub(crate) fn in_kernel(&self) -> usize {
        self.0.in_kernel.load(Ordering::Acquire)
    }

    /// Takes buffer `bid`, which a completion said holds `len` received bytes, out of the ring:
    /// it comes back when the last slice of the returned `Bytes` is dropped.
    pub(crate) fn take(&self, bid: u16, len: usize) -> io::Result<Bytes> {
        if bid >= self.0.entries || len > self.0.buf_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("completion names buffer {bid} with {len} bytes; the ring has {} of {}", self.0.entries, self.0.buf_size),
            ));
        }
        self.0.in_kernel.fetch_sub(1, Ordering::AcqRel);
        Ok(Bytes::from_owner(Lease { ring: self.0.clone(), bid, len }))
    }

    /// Puts back a buffer a completion selected but did not fill (end of stream, an error).
    pub(crate) fn put_back(&self, bid: u16) {
        if bid < self.0.entries {
            self.0.in_kernel.fetch_sub(1, Ordering::AcqRel);
            self.0.give_back(bid);
        }
    }

    /// Whether `p` points into this ring's buffers (for tests: a chunk was not copied).
    pub(crate) fn contains(&self, p: *const u8) -> bool {
        let base = self.0.bufs.base as usize;
        (base..base + self.0.bufs.len).contains(&(p as usize))
    }
}

impl Inner {
    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // In bounds: bid < entries and the mapping holds entries * buf_size bytes.
        self.bufs.base.wrapping_add(bid as usize * self.buf_size)
    }

    /// Appends buffer `bid` to the ring and publishes it to the kernel.
    fn give_back(&self, bid: u16) {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let mask = self.entries - 1;
        let base = self.entries_map.base as *mut RawBuf;
        // SAFETY: the kernel reads entries only below the published tail, so the slot at
        // `tail & mask` is this side's to write (it was consumed, or never published). Fields
        // are written through raw pointers, never a reference, because entry 0's `resv` (the
        // tail) is read by the kernel at any time. The index is masked into the mapping.
        unsafe {
            let e = base.add((*tail & mask) as usize);
            ptr::addr_of_mut!((*e).addr).write(self.buf_ptr(bid) as u64);
            ptr::addr_of_mut!((*e).len).write(self.buf_size as u32);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        *tail = tail.wrapping_add(1);
        self.in_kernel.fetch_add(1, Ordering::AcqRel);
        // SAFETY: entry 0's `resv` is the ring tail, a naturally aligned u16 in the mapping;
        // the kernel reads it with an acquire load (`smp_load_acquire(&br->tail)`), so the
        // release store orders the entry written above before the new tail.
        let tail_field = unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*base).resv)) };
        tail_field.store(*tail, Ordering::Release);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every receive armed on the group has had its final completion (each held a clone),
        // and no slice is alive: unregister, then the mappings go. A registration the kernel
        // refused is not unregistered: that would fail and leak the mappings, or, were the
        // group id taken by another ring, unregister that one.
        if !self.registered {
            return;
        }
        if let Err(e) = self.ring.unregister_buf_ring(self.bgid) {
            // The kernel still knows the memory: leak it rather than unmap it under it.
            tracing::warn!("unregistering buffer ring {} failed ({e}); leaking it", self.bgid);
            std::mem::forget(std::mem::replace(&mut self.entries_map, Mapping { base: ptr::null_mut(), len: 0 }));
            std::mem::forget(std::mem::replace(&mut self.bufs, Mapping { base: ptr::null_mut(), len: 0 }));
        }
    }
}

/// A filled buffer lent out; back to the ring on drop.
struct Lease {
    ring: Arc<Inner>,
    bid: u16,
    len: usize,
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the kernel wrote `len` bytes at the start of buffer `bid` before posting the
        // completion that named it, and writes it again only after `give_back` republishes it,
        // which happens when this lease drops; the memory stays mapped while `ring` lives.
        unsafe { std::slice::from_raw_parts(self.ring.buf_ptr(self.bid), self.len) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.ring.give_back(self.bid);
    }
}
