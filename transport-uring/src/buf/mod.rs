//! The pinned buffer pool and its write protection.
//!
//! A [`BufferPool`] is one `mmap` region, pre-faulted (`MAP_POPULATE`) and `mlock`ed so a hot
//! loop never takes a minor fault, cut into page-aligned buffers of one size. It is registered
//! once as io_uring fixed buffers on a small ring of its own; each connection's ring clones
//! that registration (`IORING_REGISTER_CLONE_BUFFERS`) the first time it sends from the pool,
//! which shares the pinned pages instead of pinning them again and works even while some of the
//! pool's pages are write-protected (registering read-only pages anew fails with `EFAULT`).
//!
//! Each registration (at most 1 GiB) begins with a small arena of frame-head slots
//! ([`head`]): the engine copies a message's frame head there, so that head and pool buffers
//! lie in one fixed buffer and go out in one `SENDMSG_ZC` with one `buf_index`.
//!
//! A [`ZcBuf`] is one buffer, owned exclusively and writable. Turned into a
//! [`Segment`] it becomes immutable; the engine makes its pages read-only
//! (`mprotect`) from the submission of a zero-copy send until the kernel's notification, so a
//! stray write through a pointer kept from before faults instead of changing bytes the peer has
//! not received yet. When the last reference goes, the pages are writable again and the buffer
//! is back in the pool.

use std::any::Any;
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rpc_core::{ExternalSegment, Payload, Segment};

use crate::sys::ring::RegRing;

mod head;

pub(crate) use head::HeadSlot;
use head::{HeadArena, ARENA_BYTES};


/// The largest buffer one io_uring registration may cover (`SZ_1G` in `io_uring/rsrc.c`).
const MAX_REGISTRATION: usize = 1 << 30;

/// Why a pool could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Locking the pool's pages would exceed `RLIMIT_MEMLOCK`.
    #[error(
        "buffer pool of {asked} bytes does not fit RLIMIT_MEMLOCK ({limit}); raise it \
         (`ulimit -l`, systemd LimitMEMLOCK=) or ask for a smaller pool"
    )]
    MemLock {
        /// Bytes to lock: the buffers, and a 64 KiB frame-head arena per registration.
        asked: usize,
        /// The soft limit in force, in bytes, as text (`unlimited` when so).
        limit: String,
    },
    /// Sizes that make no pool (zero, or overflowing).
    #[error("invalid pool size: {0}")]
    InvalidSize(&'static str),
    /// `mmap` failed.
    #[error("mapping the buffer pool failed: {0}")]
    Map(#[source] io::Error),
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn memlock_limit() -> String {
    // SAFETY: an all-zero rlimit is a valid out-parameter.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes one rlimit into the live struct `rl`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return "unknown".into();
    }
    if rl.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} bytes", rl.rlim_cur)
    }
}

/// The mapping: owned, unmapped on drop.
struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: the region is plain process memory; which thread maps, reads, writes or unmaps it
// does not matter. Concurrent access is arbitrated by ZcBuf ownership (one writer) and `&`
// sharing (readers) — the same rules as a `Vec<u8>`.
unsafe impl Send for Region {}
// SAFETY: see `Send`; `&Region` only exposes the base pointer and length.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` is exactly the mapping made in `BufferPool::new`; nothing refers
        // to it any more (every ZcBuf holds the pool alive). Pages the kernel still pins (a
        // clone of the registration) stay allocated by their page references, not by the VMA.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct PoolInner {
    /// Declared first so it is dropped (unregistered) before the mapping goes.
    reg: Option<RegRing>,
    id: u64,
    region: Region,
    buf_size: usize,
    count: usize,
    /// Buffers per fixed-buffer registration (each ≤ 1 GiB, its head arena included).
    per_reg: usize,
    /// Per registration: its head arena, then `per_reg` buffers; this is its length in bytes.
    stride: usize,
    /// The head arena of each registration.
    arenas: Vec<HeadArena>,
    free: Mutex<Vec<u32>>,
    returned: tokio::sync::Notify,
    /// Per buffer: the sends holding it read-only, and what is still read-only of it.
    protect: Mutex<Vec<Protection>>,
    /// Buffers whose pages could not be made writable again (see [`BufferPool::read_only`]):
    /// kept out of the free list, retried on each take and return.
    read_only: Mutex<Vec<u32>>,
    /// `read_only.len()`, read without the lock on every take.
    read_only_count: AtomicUsize,
    /// Tests: this many coming unprotects fail as if `mprotect` said `ENOMEM`.
    #[cfg(test)]
    fail_unprotects: AtomicUsize,
}

/// The write protection of one buffer.
#[derive(Debug, Clone, Copy, Default)]
struct Protection {
    /// In-flight sends holding the buffer read-only.
    holders: u32,
    /// Bytes from the buffer's start that are read-only now (0: all writable). Stays non-zero
    /// after the last holder when `mprotect(PROT_READ|PROT_WRITE)` failed — `ENOMEM` once the
    /// process reaches `vm.max_map_count`, as each protected range splits the pool's mapping
    /// into up to three VMAs and restoring it must split or merge them again.
    read_only_len: usize,
}

/// A pool of page-aligned, pinned, registered buffers for zero-copy sends.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use transport_uring::BufferPool;
/// let pool = BufferPool::new(8 << 20, 1 << 20)?; // 8 buffers of 1 MiB
/// let mut buf = pool.take().expect("free buffer");
/// buf.set_len(5);
/// buf.copy_from_slice(b"hello");
/// let payload = rpc_core::Payload::from(buf); // sent zero-copy, write-protected in flight
/// # drop(payload); Ok(()) }
/// ```
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("buf_size", &self.inner.buf_size)
            .field("count", &self.inner.count)
            .field("available", &self.available())
            .field("registered", &self.inner.reg.is_some())
            .finish()
    }
}

impl BufferPool {
    /// Maps `total_bytes` (rounded down to whole buffers) as buffers of `buf_size` bytes (rounded
    /// up to whole pages), pre-faults and locks them, and registers them with io_uring when it
    /// is available (a refused registration only costs the fixed-buffer fast path). Each
    /// registration (up to 1 GiB of buffers) adds a 64 KiB arena for frame heads, locked too.
    pub fn new(total_bytes: usize, buf_size: usize) -> Result<BufferPool, PoolError> {
        let page = page_size();
        if buf_size == 0 {
            return Err(PoolError::InvalidSize("buffer size is zero"));
        }
        let buf_size = buf_size
            .checked_next_multiple_of(page)
            .ok_or(PoolError::InvalidSize("buffer size overflows"))?;
        let count = total_bytes / buf_size;
        if count == 0 {
            return Err(PoolError::InvalidSize("pool smaller than one buffer"));
        }
        if count > u32::MAX as usize {
            return Err(PoolError::InvalidSize("too many buffers"));
        }
        // One registration per group of `per_reg` buffers, each group after its head arena.
        let per_reg = ((MAX_REGISTRATION - ARENA_BYTES) / buf_size).clamp(1, count);
        let groups = count.div_ceil(per_reg);
        let stride = ARENA_BYTES + per_reg * buf_size;
        let len = (groups - 1) * stride + ARENA_BYTES + (count - (groups - 1) * per_reg) * buf_size;
        // SAFETY: anonymous private mapping at an address of the kernel's choosing; no existing
        // memory is affected. MAP_POPULATE pre-faults every page.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(PoolError::Map(io::Error::last_os_error()));
        }
        let region = Region {
            base: base as *mut u8,
            len,
        };
        // SAFETY: `region` is the mapping just made, `len` bytes long.
        if unsafe { libc::mlock(region.base as *const libc::c_void, len) } != 0 {
            let e = io::Error::last_os_error();
            tracing::debug!("mlock of {len} bytes failed: {e}");
            return Err(PoolError::MemLock {
                asked: len,
                limit: memlock_limit(),
            });
        }
        let fits = ARENA_BYTES + buf_size <= MAX_REGISTRATION;
        let reg = if !fits || crate::probe::probe().backend != crate::Backend::Uring {
            None
        } else {
            let regions: Vec<(*mut u8, usize)> = (0..groups)
                .map(|g| {
                    let n = per_reg.min(count - g * per_reg);
                    // SAFETY: g < groups, so the group's start is inside the mapping.
                    (unsafe { region.base.add(g * stride) }, ARENA_BYTES + n * buf_size)
                })
                .collect();
            // SAFETY: every region lies in our writable, not yet protected mapping, which
            // outlives the RegRing (PoolInner drops `reg` before `region`); rings that cloned
            // the registration hold their own page pins.
            match unsafe { RegRing::new(&regions) } {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::info!("registering the buffer pool with io_uring failed ({e}); pool buffers are sent unregistered");
                    None
                }
            }
        };
        let arenas = (0..groups)
            // SAFETY: g < groups: the arena (ARENA_BYTES at the group's start) is in the mapping.
            .map(|g| HeadArena::new(unsafe { region.base.add(g * stride) }))
            .collect();
        let inner = PoolInner {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            region,
            buf_size,
            count,
            per_reg,
            stride,
            arenas,
            free: Mutex::new((0..count as u32).rev().collect()),
            returned: tokio::sync::Notify::new(),
            protect: Mutex::new(vec![Protection::default(); count]),
            read_only: Mutex::new(Vec::new()),
            read_only_count: AtomicUsize::new(0),
            #[cfg(test)]
            fail_unprotects: AtomicUsize::new(0),
            reg,
        };
        Ok(BufferPool {
            inner: Arc::new(inner),
        })
    }

    /// A free buffer (length 0, capacity [`BufferPool::buf_size`]), if any.
    pub fn take(&self) -> Option<ZcBuf> {
        self.inner.retry_read_only();
        let index = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()?;
        Some(ZcBuf {
            pool: self.inner.clone(),
            index,
            len: 0,
        })
    }

    /// Waits for a free buffer.
    pub async fn take_wait(&self) -> ZcBuf {
        loop {
            let notified = self.inner.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(b) = self.take() {
                return b;
            }
            notified.await;
        }
    }

    /// Bytes per buffer (a multiple of the page size).
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Number of buffers.
    pub fn capacity(&self) -> usize {
        self.inner.count
    }

    /// Buffers free right now.
    pub fn available(&self) -> usize {
        self.inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Buffers kept out of the pool because their pages could not be made writable again
    /// after a send (`mprotect` failed, e.g. `ENOMEM` at `vm.max_map_count`). Handing one out
    /// would make its next owner's first write fault; each is retried on every take and
    /// return and comes back once writable.
    pub fn read_only(&self) -> usize {
        self.inner.read_only_count.load(Ordering::Acquire)
    }

    /// Whether the pool is registered as io_uring fixed buffers.
    pub fn is_registered(&self) -> bool {
        self.inner.reg.is_some()
    }
}

/// One pool buffer, owned exclusively: write into it, then send it (see [`ZcBuf::into_segment`]
/// or `Payload::from`). Dereferences to its first [`len`](ZcBuf::len) bytes.
pub struct ZcBuf {
    pool: Arc<PoolInner>,
    index: u32,
    len: usize,
}

impl fmt::Debug for ZcBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZcBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .finish()
    }
}

impl ZcBuf {
    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's size.
    pub fn capacity(&self) -> usize {
        self.pool.buf_size
    }

    /// Sets the bytes in use. The pool's memory is always initialised (zero-filled by `mmap`,
    /// or earlier contents), so growing exposes old bytes, never uninitialised memory.
    ///
    /// # Panics
    /// When `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "ZcBuf::set_len({len}) beyond capacity {}",
            self.capacity()
        );
        self.len = len;
    }

    /// The whole buffer, regardless of `len`.
    pub fn as_full_mut(&mut self) -> &mut [u8] {
        // SAFETY: the slot is in bounds of the live mapping, initialised, and this ZcBuf is its
        // only owner (taken from the free list), so no other reference aliases it. It is not
        // write-protected: protection happens only after `into_segment` consumed the ZcBuf, and
        // a buffer returns to the free list only once unprotected.
        unsafe {
            std::slice::from_raw_parts_mut(self.pool.slot_ptr(self.index), self.pool.buf_size)
        }
    }

    /// Copies `data` into the buffer and sets the length to its size.
    ///
    /// # Panics
    /// When `data` is longer than the capacity.
    pub fn fill_from(&mut self, data: &[u8]) {
        self.set_len(data.len());
        self.copy_from_slice(data);
    }

    /// Turns the buffer into a payload segment. From here it is immutable; the transport keeps
    /// it (read-only while a zero-copy send of it is in flight) and it returns to the pool when
    /// the last reference is dropped.
    pub fn into_segment(self) -> Segment {
        Segment::External(Arc::new(ZcSegment { buf: self }))
    }
}

impl Deref for ZcBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: in bounds of the live mapping, initialised; shared borrow of our own slot.
        unsafe { std::slice::from_raw_parts(self.pool.slot_ptr(self.index), self.len) }
    }
}

impl DerefMut for ZcBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.as_full_mut()[..len]
    }
}

impl Drop for ZcBuf {
    fn drop(&mut self) {
        let pool = &self.pool;
        pool.retry_read_only();
        let writable = {
            let mut prot = pool.protect.lock().unwrap_or_else(|e| e.into_inner());
            pool.make_writable(&mut prot[self.index as usize], self.index)
        };
        if !writable {
            // A read-only buffer in the free list would fault its next owner's first write.
            pool.read_only
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.index);
            pool.read_only_count.fetch_add(1, Ordering::AcqRel);
            return;
        }
        pool.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.index);
        pool.returned.notify_one();
    }
}

impl From<ZcBuf> for Segment {
    fn from(b: ZcBuf) -> Segment {
        b.into_segment()
    }
}

impl From<ZcBuf> for Payload {
    fn from(b: ZcBuf) -> Payload {
        let mut p = Payload::new();
        p.push(b.into_segment());
        p
    }
}

/// A sent (immutable) pool buffer: what `Segment::External` holds.
pub(crate) struct ZcSegment {
    buf: ZcBuf,
}

impl ExternalSegment for ZcSegment {
    fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl ZcSegment {
    /// Makes the buffer read-only until the guard is dropped (counted: the same segment may be
    /// in several sends at once). `None` when `mprotect` refused.
    pub(crate) fn protect(&self) -> Option<ProtectGuard> {
        let pool = &self.buf.pool;
        // Only the pages that hold the bytes being sent: mprotect's cost (page-table walk and
        // a TLB shootdown on every CPU running this process) grows with the range, and a
        // 4 KiB message in a 1 MiB buffer should not pay for 256 pages. The segment is
        // immutable, so every send of it protects the same range.
        let len = self
            .buf
            .len
            .next_multiple_of(page_size())
            .min(pool.buf_size);
        if len == 0 {
            return None;
        }
        let mut prot = pool.protect.lock().unwrap_or_else(|e| e.into_inner());
        let p = &mut prot[self.buf.index as usize];
        if p.holders == 0 {
            // SAFETY: the range starts page-aligned at the slot and is a whole number of pages
            // no longer than the slot, inside our mapping. No `&mut` to it exists (the ZcBuf is
            // inside this shared segment), so read-only cannot invalidate a live mutable borrow.
            let r = unsafe {
                libc::mprotect(
                    pool.slot_ptr(self.buf.index) as *mut libc::c_void,
                    len,
                    libc::PROT_READ,
                )
            };
            if r != 0 {
                tracing::warn!(
                    "mprotect(PROT_READ) of a pool buffer failed: {}",
                    io::Error::last_os_error()
                );
                return None;
            }
            p.read_only_len = p.read_only_len.max(len);
        }
        p.holders += 1;
        Some(ProtectGuard {
            pool: pool.clone(),
            index: self.buf.index,
            len,
        })
    }

    /// A copy of `head` in the head arena of this buffer's registration, so that both go out in
    /// one fixed-buffer send; `None` when the head is too large or the arena is full.
    pub(crate) fn head_slot(&self, head: &[u8]) -> Option<HeadSlot> {
        let pool = &self.buf.pool;
        let group = self.buf.index as usize / pool.per_reg;
        HeadSlot::take(pool.clone(), group, head)
    }

    /// (pool id, registration ring fd, registrations, which registration holds this buffer).
    pub(crate) fn fixed(&self) -> Option<FixedInfo> {
        let pool = &self.buf.pool;
        let reg = pool.reg.as_ref()?;
        Some(FixedInfo {
            pool_id: pool.id,
            reg_fd: reg.fd(),
            nr: reg.nr(),
            which: (self.buf.index as usize / pool.per_reg) as u32,
        })
    }
}

/// Where a pool buffer sits among io_uring fixed buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedInfo {
    pub pool_id: u64,
    pub reg_fd: std::os::fd::RawFd,
    pub nr: u32,
    pub which: u32,
}

/// Holds a pool buffer read-only; makes it writable again when the last guard of it goes.
pub(crate) struct ProtectGuard {
    pool: Arc<PoolInner>,
    index: u32,
    /// Bytes made read-only (whole pages from the slot's start).
    len: usize,
}

impl Drop for ProtectGuard {
    fn drop(&mut self) {
        let mut prot = self.pool.protect.lock().unwrap_or_else(|e| e.into_inner());
        let p = &mut prot[self.index as usize];
        debug_assert!(p.read_only_len >= self.len);
        p.holders = p.holders.saturating_sub(1);
        // A failure leaves `read_only_len` set: the buffer's return to the pool retries, and
        // keeps it out of the free list while it stays read-only.
        self.pool.make_writable(p, self.index);
    }
}

impl PoolInner {
    /// Makes buffer `index` writable again if no send holds it read-only; true when it is
    /// writable. Called with the `protect` lock held (`p` is its entry).
    fn make_writable(&self, p: &mut Protection, index: u32) -> bool {
        if p.read_only_len == 0 {
            return true;
        }
        if p.holders > 0 {
            return false;
        }
        #[cfg(test)]
        let injected = self
            .fail_unprotects
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        #[cfg(not(test))]
        let injected = false;
        let r = if injected {
            Err(io::Error::from_raw_os_error(libc::ENOMEM))
        } else {
            // SAFETY: the range is the one `protect` made read-only: page-aligned at the
            // slot's start, whole pages, inside our mapping; restoring the mapping's
            // original protection cannot invalidate any reference.
            let r = unsafe {
                libc::mprotect(
                    self.slot_ptr(index) as *mut libc::c_void,
                    p.read_only_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        match r {
            Ok(()) => {
                p.read_only_len = 0;
                true
            }
            Err(e) => {
                tracing::warn!(
                    "mprotect(PROT_READ|PROT_WRITE) of pool buffer {index} failed ({e}); it \
                     stays out of the pool until a retry succeeds"
                );
                false
            }
        }
    }

    /// Retries the buffers kept out for being read-only; those writable again go back to the
    /// free list.
    fn retry_read_only(&self) {
        if self.read_only_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut waiting = self.read_only.lock().unwrap_or_else(|e| e.into_inner());
        let mut back = Vec::new();
        {
            let mut prot = self.protect.lock().unwrap_or_else(|e| e.into_inner());
            waiting.retain(|&i| {
                let ok = self.make_writable(&mut prot[i as usize], i);
                if ok {
                    back.push(i);
                }
                !ok
            });
        }
        self.read_only_count.store(waiting.len(), Ordering::Release);
        drop(waiting);
        if !back.is_empty() {
            let n = back.len();
            self.free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(back);
            for _ in 0..n {
                self.returned.notify_one();
            }
        }
    }

    fn slot_ptr(&self, index: u32) -> *mut u8 {
        debug_assert!((index as usize) < self.count);
        let (group, at) = (index as usize / self.per_reg, index as usize % self.per_reg);
        // SAFETY: index < count, so its group and place in it are inside the mapping laid out
        // in `BufferPool::new` (each group: the head arena, then `per_reg` buffers).
        unsafe { self.region.base.add(group * self.stride + ARENA_BYTES + at * self.buf_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer whose pages cannot be made writable again (`mprotect` failing, as it does with
    /// `ENOMEM` at `vm.max_map_count`) stays out of the pool until a retry succeeds.
    #[test]
    fn read_only_buffer_kept_out_until_writable() {
        let page = page_size();
        let pool = BufferPool::new(2 * page, page).unwrap();
        let mut b = pool.take().unwrap();
        b.fill_from(b"in flight");
        let seg = ZcSegment { buf: b };
        let guard = seg.protect().expect("mprotect(PROT_READ)");
        // The unprotect at the notification, the retry when the buffer returns and the retry
        // at the next take all fail.
        pool.inner.fail_unprotects.store(3, Ordering::Release);
        drop(guard);
        drop(seg);
        assert_eq!((pool.available(), pool.read_only()), (1, 1));
        // What is handed out meanwhile is writable (a read-only buffer would fault here).
        let mut other = pool.take().unwrap();
        other.as_full_mut().fill(1);
        assert_eq!((pool.available(), pool.read_only()), (0, 1));
        // The failures are over: the next take brings it back, writable.
        let mut y = pool.take().expect("the buffer came back once writable");
        assert_eq!(pool.read_only(), 0);
        y.as_full_mut().fill(3);
    }
}
