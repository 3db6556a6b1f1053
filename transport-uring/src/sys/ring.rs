//! The io_uring driver: one ring per connection, its completions reaped by a tokio task that
//! waits on the ring's file descriptor through [`AsyncFd`] (the ring fd polls readable when the
//! completion queue is not empty), so it runs in any tokio runtime, multi-threaded or not.
//!
//! Ownership rule: every operation parks the memory the kernel may touch (`keep`) in a slot of
//! the ring's slab, and the slot is freed only after the operation's *final* completion — the
//! notification (`IORING_CQE_F_NOTIF`) for a zero-copy send whose first CQE carried
//! `IORING_CQE_F_MORE`. Dropping the future that waits for an operation only marks the slot
//! abandoned; the memory still waits for the kernel. That is what makes every operation
//! cancellation-safe.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use io_uring::types::CloneBuffersFlags;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{IORING_NOTIF_USAGE_ZC_COPIED, IORING_SEND_ZC_REPORT_USAGE};

/// A completion: the CQE's `res` and `flags`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub res: i32,
    #[allow(dead_code)]
    pub flags: u32,
}

/// Receives zero-copy notifications of the operations it was attached to.
pub(crate) trait NotifSink: Send + Sync + 'static {
    /// One notification; `copied` is the kernel's `IORING_NOTIF_USAGE_ZC_COPIED`; `sent` says
    /// whether the send it closes moved any byte (a failed send's notification says nothing
    /// about the path).
    fn notified(&self, copied: bool, sent: bool);
}

/// `user_data` of operations nobody waits for (cancellations).
const UNTRACKED: u64 = u64::MAX;

/// A socket (or any descriptor) an operation names: the operation keeps it open until its
/// final completion, so that neither a queued SQE nor one in the kernel can reach another
/// file that reused the number after a close.
pub(crate) type FdOwner = Arc<dyn AsRawFd + Send + Sync>;

/// `user_data` of an operation: its slab key in the low 32 bits, the slot's generation in
/// the high 32. A completion or an `AsyncCancel` that names a slot by a stale `user_data` (the
/// key freed and reused since) then matches nothing, instead of another operation.
fn user_data(key: usize, generation: u32) -> u64 {
    (key as u64 & 0xffff_ffff) | (generation as u64) << 32
}

struct Slot {
    /// See [`user_data`].
    generation: u32,
    /// Keeps the descriptor the operation names open (dropped with `keep`).
    fd_owner: Option<FdOwner>,
    waker: Option<Waker>,
    result: Option<Completion>,
    main_done: bool,
    /// The future took the result or was dropped.
    user_gone: bool,
    /// The first CQE said a notification follows.
    notif_pending: bool,
    notif_seen: bool,
    /// `res` of the first CQE (bytes sent, or -errno).
    main_res: i32,
    keep: Option<Box<dyn Any + Send>>,
    sink: Option<Arc<dyn NotifSink>>,
    /// A multishot operation's completions not yet taken (`None` for single-shot ones).
    multi: Option<VecDeque<Completion>>,
}

impl Slot {
    /// Keeps `cx`'s waker to be woken by the next completion.
    fn wait(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }

    /// The waiting future took its last completion: nobody waits any more.
    fn taken(&mut self) {
        self.user_gone = true;
        self.waker = None;
    }
}

struct State {
    uring: IoUring,
    slots: Slab<Slot>,
    handles: usize,
    /// Wakes the reaper when something other than a CQE needs it: to see whether it can end
    /// (the last handle or the last slot can go from a thread that reaps nothing: an `Op`
    /// dropped after its completion was reaped, and then no CQE would ever wake it again), or
    /// to submit entries a submit left queued (`EBUSY`, `EAGAIN`).
    attention: Arc<tokio::sync::Notify>,
    /// Generation of the next slot.
    next_generation: u32,
    /// Tests: this many coming submits fail with `EBUSY` as with a CQ overflow backlog.
    #[cfg(test)]
    fail_submits: usize,
    /// Pool id → first index of its clone in this ring's fixed-buffer table.
    pools: HashMap<u64, Option<u16>>,
    next_buf: u32,
}

/// Work to do after the lock is released: user code (wakers, `Drop` of payload owners,
/// notification sinks) never runs under the ring's lock.
#[derive(Default)]
struct After {
    notifs: Vec<(Arc<dyn NotifSink>, bool, bool)>,
    drops: Vec<Box<dyn Any + Send>>,
    wakers: Vec<Waker>,
    /// The ring has no handle and no slot left: its reaper may end.
    reaper_exit: Option<Arc<tokio::sync::Notify>>,
}

impl After {
    fn run(self) {
        for (sink, copied, sent) in self.notifs {
            sink.notified(copied, sent);
        }
        drop(self.drops);
        for w in self.wakers {
            w.wake();
        }
        if let Some(n) = self.reaper_exit {
            // notify_one keeps a permit when the reaper is not waiting yet: never lost.
            n.notify_one();
        }
    }
}

/// Whether the ring is unused for good (no handle can be made without one, and no operation
/// is left whose completion could arrive); if so, `after` wakes the reaper to end.
fn check_exit(st: &State, after: &mut After) {
    if st.handles == 0 && st.slots.is_empty() {
        after.reaper_exit = Some(st.attention.clone());
    }
}

/// One io_uring instance with its slab of in-flight operations.
pub(crate) struct Ring {
    fd: RawFd,
    state: Mutex<State>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("fd", &self.fd).finish()
    }
}

impl Ring {
    /// Sets up a ring with room for `entries` submissions; no special setup flags, so
    /// completions wake pollers of the ring fd from any thread.
    pub(crate) fn new(entries: u32) -> io::Result<Arc<Ring>> {
        let uring = IoUring::builder()
            .setup_cqsize(entries * 4)
            .build(entries)?;
        let fd = uring.as_raw_fd();
        Ok(Arc::new(Ring {
            fd,
            state: Mutex::new(State {
                uring,
                slots: Slab::new(),
                handles: 0,
                attention: Arc::new(tokio::sync::Notify::new()),
                next_generation: 0,
                #[cfg(test)]
                fail_submits: 0,
                pools: HashMap::new(),
                next_buf: 0,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the reaper task on the current tokio runtime and returns the first handle. The
    /// task ends once every handle is gone and every operation has had its final completion.
    pub(crate) fn start(self: &Arc<Self>) -> io::Result<RingHandle> {
        // SAFETY: AsyncFd requires the fd to stay open and the same for the AsyncFd's life:
        // `RingFd` owns an `Arc<Ring>`, and the ring's fd is closed only when the last Arc
        // (this one included) is dropped.
        let afd =
            unsafe { AsyncFd::register_with_interest(RingFd(self.clone()), Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let attention = {
            let mut st = self.lock();
            st.handles += 1;
            st.attention.clone()
        };
        tokio::spawn(async move {
            // Entries a submit left queued: retried now and then until the kernel takes them.
            let mut backlog = false;
            loop {
                let retry = async {
                    if backlog {
                        tokio::time::sleep(SUBMIT_RETRY).await
                    } else {
                        std::future::pending().await
                    }
                };
                tokio::select! {
                    r = afd.readable() => match r {
                        Ok(mut guard) => guard.clear_ready(),
                        Err(e) => {
                            tracing::error!("io_uring reaper: polling the ring failed: {e}");
                            break;
                        }
                    },
                    () = attention.notified() => {}
                    () = retry => {}
                }
                let ring = &afd.get_ref().0;
                let mut after = After::default();
                let exit = {
                    let mut st = ring.lock();
                    reap_locked(&mut st, &mut after);
                    if !st.uring.submission().is_empty() {
                        let _ = submit_locked(&mut st);
                        reap_locked(&mut st, &mut after);
                    }
                    backlog = !st.uring.submission().is_empty();
                    st.handles == 0 && st.slots.is_empty()
                };
                after.run();
                if exit {
                    break;
                }
            }
        });
        Ok(RingHandle { ring: self.clone() })
    }

    /// Pushes one entry (its `user_data` set to a fresh slot) and submits it.
    fn push(
        self: &Arc<Self>,
        entry: squeue::Entry,
        fd_owner: FdOwner,
        keep: Box<dyn Any + Send>,
        sink: Option<Arc<dyn NotifSink>>,
        multishot: bool,
    ) -> Result<Op, (io::Error, Option<Box<dyn Any + Send>>)> {
        let mut after = After::default();
        let r = {
            let mut st = self.lock();
            let generation = st.next_generation;
            st.next_generation = generation.wrapping_add(1);
            let key = st.slots.insert(Slot {
                generation,
                fd_owner: Some(fd_owner),
                waker: None,
                result: None,
                main_done: false,
                user_gone: false,
                notif_pending: false,
                notif_seen: false,
                main_res: 0,
                keep: Some(keep),
                sink,
                multi: multishot.then(VecDeque::new),
            });
            let entry = entry.user_data(user_data(key, generation));
            match push_entry(&mut st, &entry) {
                Ok(()) => {
                    let r = submit_locked(&mut st);
                    reap_locked(&mut st, &mut after);
                    match r {
                        // The entry is in the queue; the kernel takes it with this submit or,
                        // after `EBUSY`/`EAGAIN`, with the reaper's retry.
                        Ok(()) => Ok((key, generation)),
                        Err(e) => {
                            if let Some(slot) = st.slots.get_mut(key) {
                                slot.user_gone = true;
                            }
                            maybe_free(&mut st, key, &mut after);
                            Err((e, None))
                        }
                    }
                }
                Err(e) => {
                    // Never reached the kernel: nothing to wait for.
                    let slot = st.slots.remove(key);
                    after.drops.extend(slot.fd_owner.map(|f| Box::new(f) as Box<dyn Any + Send>));
                    Err((e, slot.keep))
                }
            }
        };
        after.run();
        r.map(|(key, generation)| Op {
            ring: self.clone(),
            key,
            generation,
            done: false,
        })
    }

    /// `IORING_OP_SENDMSG_ZC` over the slices `iov` borrows from `owner` (or a plain
    /// `IORING_OP_SENDMSG` when `zero_copy` is false). `owner` stays alive until the final
    /// completion, the notification included; `sink` hears the notification.
    pub(crate) fn sendmsg<O: Send + Sync + 'static>(
        self: &Arc<Self>,
        sock: FdOwner,
        owner: Arc<O>,
        iov: impl for<'a> FnOnce(&'a O) -> Vec<&'a [u8]>,
        opts: SendOpts,
        sink: Option<Arc<dyn NotifSink>>,
    ) -> io::Result<Op> {
        let iovecs: Vec<libc::iovec> = iov(&owner)
            .into_iter()
            .map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        // SAFETY: an all-zero msghdr is valid (no name, no control, no iovecs).
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_iov = iovecs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iovecs.len();
        let fd = sock.as_raw_fd();
        let entry = if opts.zero_copy {
            let mut op = opcode::SendMsgZc::new(types::Fd(fd), &*msg as *const libc::msghdr)
                .flags(opts.flags as u32)
                .ioprio(IORING_SEND_ZC_REPORT_USAGE);
            if let Some(idx) = opts.buf_index {
                op = op.buf_index(Some(idx));
            }
            op.build()
        } else {
            opcode::SendMsg::new(types::Fd(fd), &*msg as *const libc::msghdr)
                .flags(opts.flags as u32)
                .build()
        };
        let keep = MsgKeep {
            _msg: msg,
            _iov: iovecs,
            _owner: owner,
        };
        self.push(entry, sock, Box::new(keep), sink, false).map_err(|(e, _)| e)
    }

    /// `IORING_OP_SPLICE` of up to `len` bytes from `fd_in` (at `off_in`, or its position
    /// when -1, as for a pipe) to `fd_out` (a pipe or a socket; its position). Both
    /// descriptors stay open until the completion. The kernel runs it in an io-wq worker; to a
    /// non-blocking socket whose buffer is full it completes with `-EAGAIN`.
    pub(crate) fn splice(
        self: &Arc<Self>,
        fd_in: FdOwner,
        off_in: i64,
        fd_out: FdOwner,
        len: u32,
    ) -> io::Result<Op> {
        let entry = opcode::Splice::new(
            types::Fd(fd_in.as_raw_fd()),
            off_in,
            types::Fd(fd_out.as_raw_fd()),
            -1,
            len,
        )
        .build();
        self.push(entry, fd_out, Box::new(fd_in), None, false)
            .map_err(|(e, _)| e)
    }

    /// One-shot `IORING_OP_POLL_ADD` for `POLLOUT`: completes when `sock` has room to write
    /// (at once if it has now).
    pub(crate) fn poll_writable(self: &Arc<Self>, sock: FdOwner) -> io::Result<Op> {
        let entry =
            opcode::PollAdd::new(types::Fd(sock.as_raw_fd()), libc::POLLOUT as u32).build();
        self.push(entry, sock, Box::new(()), None, false)
            .map_err(|(e, _)| e)
    }

    /// `IORING_OP_RECV` into the spare capacity of `buf` (ownership-passing: the buffer lives
    /// in the slab until the completion, whatever happens to the future).
    pub(crate) fn recv(
        self: &Arc<Self>,
        sock: FdOwner,
        mut buf: BytesMut,
    ) -> Result<RecvOp, (io::Error, BytesMut)> {
        let fd = sock.as_raw_fd();
        let spare = buf.spare_capacity_mut();
        let (ptr, len) = (
            spare.as_mut_ptr() as *mut u8,
            spare.len().min(u32::MAX as usize) as u32,
        );
        let entry = opcode::Recv::new(types::Fd(fd), ptr, len).build();
        let holder = RecvBuf(Some(buf));
        match self.push(entry, sock, Box::new(holder), None, false) {
            Ok(op) => Ok(RecvOp { op }),
            Err((e, keep)) => {
                let buf = keep
                    .and_then(|k| k.downcast::<RecvBuf>().ok())
                    .and_then(|mut h| h.0.take())
                    .unwrap_or_default();
                Err((e, buf))
            }
        }
    }

    /// Multishot `IORING_OP_RECV` with buffers picked from group `bgid` (6.0): one completion
    /// per filled buffer, each with `IORING_CQE_F_MORE` until the last. `keep` (the buffer
    /// ring) stays alive until that last completion.
    pub(crate) fn recv_multi(
        self: &Arc<Self>,
        sock: FdOwner,
        bgid: u16,
        keep: Box<dyn Any + Send>,
    ) -> io::Result<MultiOp> {
        let entry = opcode::RecvMulti::new(types::Fd(sock.as_raw_fd()), bgid).build();
        self.push(entry, sock, keep, None, true)
            .map(|op| MultiOp { op })
            .map_err(|(e, _)| e)
    }

    /// Registers a provided-buffer ring as group `bgid`.
    ///
    /// # Safety
    ///
    /// `addr` must point to `entries` page-aligned `io_uring_buf` entries that stay mapped
    /// until [`Ring::unregister_buf_ring`] succeeds or the ring is closed.
    pub(crate) unsafe fn register_buf_ring(&self, addr: u64, entries: u16, bgid: u16) -> io::Result<()> {
        let st = self.lock();
        // SAFETY: forwarded from this function's contract.
        unsafe { st.uring.submitter().register_buf_ring_with_flags(addr, entries, bgid, 0) }
    }

    /// Unregisters group `bgid`: the kernel lets go of its ring memory.
    pub(crate) fn unregister_buf_ring(&self, bgid: u16) -> io::Result<()> {
        self.lock().uring.submitter().unregister_buf_ring(bgid)
    }

    /// Installs pool `pool_id`'s fixed buffers (registered on the ring `src_fd`, `nr` of them)
    /// into this ring's table by `IORING_REGISTER_CLONE_BUFFERS` (6.12), once. Cloning shares
    /// the kernel's pinned pages, so it works even while some pool pages are read-only — a
    /// fresh registration of read-only pages would fail with `EFAULT`. Returns the index of the
    /// pool's first buffer in this ring, or `None` when it cannot be had (then the engine sends
    /// the pool's pages as ordinary user memory).
    pub(crate) fn pool_base(&self, pool_id: u64, src_fd: RawFd, nr: u32) -> Option<u16> {
        let mut st = self.lock();
        if let Some(b) = st.pools.get(&pool_id) {
            return *b;
        }
        let base = st.next_buf;
        let flags = if base == 0 {
            CloneBuffersFlags::empty()
        } else {
            CloneBuffersFlags::DST_REPLACE
        };
        let r = if base + nr > u16::MAX as u32 {
            Err(io::Error::other("fixed-buffer table full"))
        } else {
            st.uring
                .submitter()
                .register_buffers_clone_offset(src_fd, 0, base, nr, flags)
        };
        let out = match r {
            Ok(()) => {
                st.next_buf = base + nr;
                Some(base as u16)
            }
            Err(e) => {
                tracing::debug!("cloning pool {pool_id}'s fixed buffers into ring failed: {e}; sending its pages unregistered");
                None
            }
        };
        st.pools.insert(pool_id, out);
        out
    }

    /// Asks the kernel to cancel operation `key` of generation `generation` (its completion,
    /// `-ECANCELED` or the result it reached first, still arrives and frees the slot). The
    /// cancel names the operation by its full `user_data`, so if the slot is freed and reused
    /// before the kernel sees the cancel, it matches nothing.
    fn cancel(&self, key: usize, generation: u32) {
        let mut st = self.lock();
        if st
            .slots
            .get(key)
            .is_some_and(|s| s.generation == generation && !s.main_done)
        {
            let e = opcode::AsyncCancel::new(user_data(key, generation))
                .build()
                .user_data(UNTRACKED);
            if push_entry(&mut st, &e).is_ok() {
                let _ = submit_locked(&mut st);
            }
        }
    }

    /// Operations whose final completion has not arrived yet.
    #[allow(dead_code)]
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().slots.len()
    }
}

/// Options of one send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendOpts {
    pub zero_copy: bool,
    /// `MSG_*` flags (`MSG_MORE`, `MSG_NOSIGNAL`, ...).
    pub flags: i32,
    /// Fixed buffer every slice lies in (vectored fixed sends: 6.15).
    pub buf_index: Option<u16>,
}

struct MsgKeep<O> {
    _msg: Box<libc::msghdr>,
    _iov: Vec<libc::iovec>,
    _owner: Arc<O>,
}

// SAFETY: the raw pointers in the msghdr and iovecs point into `_iov` and into memory `_owner`
// keeps alive; they are only read by the kernel, never dereferenced by this process, so moving
// the holder to another thread moves nothing that is thread-bound. `O: Send + Sync`.
unsafe impl<O: Send + Sync> Send for MsgKeep<O> {}

struct RecvBuf(Option<BytesMut>);

fn push_entry(st: &mut State, entry: &squeue::Entry) -> io::Result<()> {
    for _ in 0..2 {
        // SAFETY: io_uring requires every pointer an SQE carries to stay valid until its final
        // CQE. Each entry pushed here was built by this module from memory parked in its slot's
        // `keep`, which is dropped only after that final CQE (see `maybe_free`).
        if unsafe { st.uring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        // Queue full: hand what is queued to the kernel and try again.
        submit_locked(st)?;
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "io_uring submission queue full",
    ))
}

/// How often the reaper retries entries that a submit left queued.
const SUBMIT_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

fn submit_locked(st: &mut State) -> io::Result<()> {
    loop {
        #[cfg(test)]
        let r = if st.fail_submits > 0 {
            st.fail_submits -= 1;
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        } else {
            st.uring.submit()
        };
        #[cfg(not(test))]
        let r = st.uring.submit();
        match r {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // CQ overflow backlog (the reaper's next reap flushes it) or no memory for now: the
            // entries stay queued and the reaper retries them until the kernel takes them.
            // Notify only schedules the reaper task; no user code runs under the lock.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
                st.attention.notify_one();
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

fn reap_locked(st: &mut State, after: &mut After) {
    let mut cqes: Vec<cqueue::Entry> = st.uring.completion().collect();
    // With IORING_FEAT_NODROP, completions that found the CQ full wait in the kernel's overflow
    // list, and only an io_uring_enter(GETEVENTS) moves them back: no new poll wake-up comes
    // for them. Flush and drain again until the flag clears.
    for _ in 0..16 {
        if !st.uring.submission().cq_overflow() {
            break;
        }
        let _ = submit_locked(st);
        cqes.extend(st.uring.completion());
    }
    for cqe in cqes {
        let ud = cqe.user_data();
        if ud == UNTRACKED {
            continue;
        }
        let (key, generation) = ((ud & 0xffff_ffff) as usize, (ud >> 32) as u32);
        let Some(slot) = st.slots.get_mut(key).filter(|s| s.generation == generation) else {
            tracing::warn!("io_uring completion for unknown operation {key} (generation {generation})");
            continue;
        };
        let (res, flags) = (cqe.result(), cqe.flags());
        if cqueue::notif(flags) {
            slot.notif_pending = false;
            slot.notif_seen = true;
            if let Some(sink) = &slot.sink {
                let copied = (res as u32) & IORING_NOTIF_USAGE_ZC_COPIED != 0;
                after.notifs.push((sink.clone(), copied, slot.main_res > 0));
            }
        } else if let Some(queue) = slot.multi.as_mut() {
            // A multishot operation: every completion is queued; the last one (no
            // IORING_CQE_F_MORE) ends it.
            if !slot.user_gone {
                queue.push_back(Completion { res, flags });
                after.wakers.extend(slot.waker.take());
            }
            slot.main_done = !cqueue::more(flags);
        } else {
            slot.main_done = true;
            slot.main_res = res;
            slot.notif_pending = cqueue::more(flags) && !slot.notif_seen;
            if !slot.user_gone {
                slot.result = Some(Completion { res, flags });
                after.wakers.extend(slot.waker.take());
            }
        }
        maybe_free(st, key, after);
    }
}

fn maybe_free(st: &mut State, key: usize, after: &mut After) {
    let free = match st.slots.get(key) {
        Some(s) => s.main_done && !s.notif_pending && s.user_gone,
        None => false,
    };
    if free {
        let slot = st.slots.remove(key);
        after.drops.extend(slot.keep);
        // The descriptor may close only now that the kernel is done with the operation.
        after.drops.extend(slot.fd_owner.map(|f| Box::new(f) as Box<dyn Any + Send>));
        check_exit(st, after);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            // The ring goes away (its runtime shut down) with operations the kernel may still be
            // working on: their memory is leaked rather than freed under the kernel's feet.
            tracing::debug!(
                "io_uring dropped with {} operations in flight; leaking their buffers",
                self.slots.len()
            );
            for slot in self.slots.drain() {
                std::mem::forget(slot.keep);
                std::mem::forget(slot.fd_owner);
            }
        }
    }
}

/// A counted user of the ring (the transport's halves). When the last goes, the reaper task is
/// woken to see whether it can end (and again when the last slot is freed, wherever that
/// happens).
pub(crate) struct RingHandle {
    ring: Arc<Ring>,
}

impl RingHandle {
    pub(crate) fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }
}

impl fmt::Debug for RingHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ring.fmt(f)
    }
}

impl Clone for RingHandle {
    fn clone(&self) -> Self {
        self.ring.lock().handles += 1;
        RingHandle {
            ring: self.ring.clone(),
        }
    }
}

impl Drop for RingHandle {
    fn drop(&mut self) {
        let mut after = After::default();
        {
            let mut st = self.ring.lock();
            st.handles -= 1;
            check_exit(&st, &mut after);
        }
        after.run();
    }
}

struct RingFd(Arc<Ring>);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd
    }
}

/// The future of one operation's first completion.
pub(crate) struct Op {
    ring: Arc<Ring>,
    key: usize,
    generation: u32,
    done: bool,
}

impl Op {
    /// Asks the kernel to cancel the operation if its completion has not been taken yet.
    fn cancel_unless_done(&self) {
        if !self.done {
            self.ring.cancel(self.key, self.generation);
        }
    }

    /// Polls for the first completion; on it, also hands back what the slot keeps when no
    /// notification is pending (the receive buffer).
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
        take_keep: bool,
    ) -> Poll<(Completion, Option<Box<dyn Any + Send>>)> {
        let mut after = After::default();
        let out = {
            let mut st = self.ring.lock();
            reap_locked(&mut st, &mut after);
            let slot = &mut st.slots[self.key];
            if let Some(c) = slot.result.take() {
                slot.taken();
                let keep = if take_keep && !slot.notif_pending {
                    slot.keep.take()
                } else {
                    None
                };
                self.done = true;
                maybe_free(&mut st, self.key, &mut after);
                Poll::Ready((c, keep))
            } else {
                slot.wait(cx);
                Poll::Pending
            }
        };
        after.run();
        out
    }
}

impl Future for Op {
    type Output = Completion;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        self.get_mut().poll_inner(cx, false).map(|(c, _)| c)
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut after = After::default();
        {
            let mut st = self.ring.lock();
            if let Some(slot) = st.slots.get_mut(self.key) {
                slot.user_gone = true;
                slot.waker = None;
            }
            maybe_free(&mut st, self.key, &mut after);
        }
        after.run();
    }
}

/// The future of an `IORING_OP_RECV`: the byte count and the buffer, grown by that count.
pub(crate) struct RecvOp {
    op: Op,
}

impl RecvOp {
    /// Ring slot of this operation (for diagnostics).
    #[allow(dead_code)]
    pub(crate) fn key(&self) -> usize {
        self.op.key
    }
}

impl Drop for RecvOp {
    fn drop(&mut self) {
        // A receive nobody will read must not sit in the kernel holding the socket open.
        self.op.cancel_unless_done();
    }
}

impl Future for RecvOp {
    type Output = (io::Result<usize>, BytesMut);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (c, keep) = match self.get_mut().op.poll_inner(cx, true) {
            Poll::Ready(v) => v,
            Poll::Pending => return Poll::Pending,
        };
        let mut buf = keep
            .and_then(|k| k.downcast::<RecvBuf>().ok())
            .and_then(|mut h| h.0.take())
            .unwrap_or_default();
        if c.res < 0 {
            return Poll::Ready((Err(io::Error::from_raw_os_error(-c.res)), buf));
        }
        let n = c.res as usize;
        let new_len = buf.len() + n;
        assert!(
            new_len <= buf.capacity(),
            "kernel wrote past the receive buffer"
        );
        // The kernel wrote those bytes through the ring, where memcheck cannot see it.
        super::valgrind::mark_defined(buf.spare_capacity_mut().as_ptr() as *const u8, n);
        // SAFETY: IORING_OP_RECV reported writing `n` bytes at the start of the spare capacity
        // we gave it (ptr = spare start, len = spare length), so those bytes are initialised.
        unsafe { buf.set_len(new_len) };
        Poll::Ready((Ok(n), buf))
    }
}

/// A multishot operation: a stream of completions, ending with one without
/// `IORING_CQE_F_MORE`. Dropping it asks the kernel to cancel; the slot (and what it keeps)
/// lives until the last completion.
pub(crate) struct MultiOp {
    op: Op,
}

impl MultiOp {
    /// The next completion; after one without `IORING_CQE_F_MORE`, the operation is over and
    /// this must not be polled again. Cancel-safe: a completion is taken only when returned.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Completion> {
        let op = &mut self.op;
        let mut after = After::default();
        let out = {
            let mut st = op.ring.lock();
            reap_locked(&mut st, &mut after);
            let slot = &mut st.slots[op.key];
            match slot.multi.as_mut().and_then(VecDeque::pop_front) {
                Some(c) => {
                    if !cqueue::more(c.flags) {
                        slot.taken();
                        op.done = true;
                        maybe_free(&mut st, op.key, &mut after);
                    }
                    Poll::Ready(c)
                }
                None => {
                    slot.wait(cx);
                    Poll::Pending
                }
            }
        };
        after.run();
        out
    }

    /// Waits for the next completion (see [`MultiOp::poll_next`]).
    pub(crate) async fn next(&mut self) -> Completion {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Asks the kernel to stop; the completions up to the last still arrive.
    pub(crate) fn cancel(&self) {
        self.op.ring.cancel(self.op.key, self.op.generation);
    }

    /// True once the last completion was taken.
    pub(crate) fn is_done(&self) -> bool {
        self.op.done
    }
}

impl Drop for MultiOp {
    fn drop(&mut self) {
        // Nobody will take its completions: stop it (the `Op` inside marks the slot abandoned).
        self.op.cancel_unless_done();
    }
}

/// A tiny ring that only holds a buffer pool's fixed-buffer registration, so that connection
/// rings can clone it (see [`Ring::pool_base`]). Registering pins the pages once.
pub(crate) struct RegRing {
    uring: IoUring,
    nr: u32,
}

impl fmt::Debug for RegRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegRing")
            .field("fd", &self.uring.as_raw_fd())
            .field("nr", &self.nr)
            .finish()
    }
}

impl RegRing {
    /// Registers `regions` (pointer, length) as fixed buffers 0..n.
    ///
    /// # Safety
    ///
    /// Each region must be a writable mapping that stays mapped for as long as any ring that
    /// clones this registration may send from it (the pool keeps its mapping alive for the
    /// life of the process' use of it, and the kernel holds its own page references).
    pub(crate) unsafe fn new(regions: &[(*mut u8, usize)]) -> io::Result<RegRing> {
        let uring = IoUring::new(2)?;
        let iovecs: Vec<libc::iovec> = regions
            .iter()
            .map(|&(p, l)| libc::iovec {
                iov_base: p as *mut libc::c_void,
                iov_len: l,
            })
            .collect();
        // SAFETY: the caller guarantees the regions are valid writable mappings (the kernel
        // pins them with FOLL_WRITE|FOLL_LONGTERM, which fails with EFAULT otherwise).
        unsafe { uring.submitter().register_buffers(&iovecs)? };
        Ok(RegRing {
            uring,
            nr: iovecs.len() as u32,
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.uring.as_raw_fd()
    }

    pub(crate) fn nr(&self) -> u32 {
        self.nr
    }
}

/// Whether the kernel lets this process set up a ring at all, and which opcodes it knows.
pub(crate) struct RingFeatures {
    pub send_zc: bool,
    pub sendmsg_zc: bool,
    pub recv: bool,
    pub provide_buffers: bool,
}

/// Probes io_uring: `Err` when ring setup is refused (`kernel.io_uring_disabled`, seccomp,
/// no kernel support).
pub(crate) fn probe_ring() -> io::Result<RingFeatures> {
    let uring = IoUring::new(4)?;
    let mut probe = io_uring::Probe::new();
    uring.submitter().register_probe(&mut probe)?;
    Ok(RingFeatures {
        send_zc: probe.is_supported(opcode::SendZc::CODE),
        sendmsg_zc: probe.is_supported(opcode::SendMsgZc::CODE),
        recv: probe.is_supported(opcode::Recv::CODE),
        provide_buffers: probe.is_supported(opcode::ProvideBuffers::CODE),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn entries_left_queued_by_ebusy_are_submitted() {
        let ring = Ring::new(8).unwrap();
        let _handle = ring.start().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"hi").unwrap();
        // The submit after the push fails as with a CQ overflow backlog: the entry stays
        // queued, and no other operation comes to submit it.
        ring.lock().fail_submits = 1;
        let op = ring.recv(Arc::new(a), BytesMut::with_capacity(16)).map_err(|(e, _)| e).unwrap();
        let (r, buf) = tokio::time::timeout(LIMIT, op).await.expect("the queued receive was never submitted");
        assert_eq!(r.unwrap(), 2);
        assert_eq!(&buf[..], b"hi");
    }

    #[tokio::test]
    async fn stale_user_data_matches_nothing() {
        let ring = Ring::new(8).unwrap();
        let _handle = ring.start().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let a: FdOwner = Arc::new(a);
        b.write_all(b"1").unwrap();
        let first = ring.recv(a.clone(), BytesMut::with_capacity(16)).map_err(|(e, _)| e).unwrap();
        let (key, stale) = (first.op.key, user_data(first.op.key, first.op.generation));
        assert_eq!(first.await.0.unwrap(), 1);
        // The slot is reused by the next operation.
        let mut second = ring.recv(a.clone(), BytesMut::with_capacity(16)).map_err(|(e, _)| e).unwrap();
        assert_eq!(second.op.key, key);
        // A completion naming the first operation, as a late CQE or a cancel aimed at it
        // would: a NOP completes during the submit that carries it.
        {
            let mut st = ring.lock();
            push_entry(&mut st, &opcode::Nop::new().build().user_data(stale)).unwrap();
            submit_locked(&mut st).unwrap();
        }
        assert!(futures::poll!(&mut second).is_pending(), "a stale completion finished another operation");
        b.write_all(b"2").unwrap();
        let (r, buf) = tokio::time::timeout(LIMIT, second).await.unwrap();
        assert_eq!((r.unwrap(), &buf[..]), (1, &b"2"[..]));
    }

    #[tokio::test]
    async fn operation_keeps_its_descriptor_open() {
        let ring = Ring::new(8).unwrap();
        let _handle = ring.start().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let is_open = || std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok();
        // The only owner of the socket goes into the operation.
        let op = ring.recv(Arc::new(a), BytesMut::with_capacity(16)).map_err(|(e, _)| e).unwrap();
        assert!(is_open());
        b.write_all(b"x").unwrap();
        let (r, _) = tokio::time::timeout(LIMIT, op).await.unwrap();
        assert_eq!(r.unwrap(), 1);
    }
}
