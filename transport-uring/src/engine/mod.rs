//! The send engine: plans each message (copy, zero-copy, coalesce, file), submits it through
//! the backend (io_uring `SENDMSG_ZC` or `MSG_ZEROCOPY`), resubmits short sends, falls back to
//! copy on `ENOBUFS`, and keeps every segment alive (and pool buffers read-only) until the
//! kernel's notification. Frames with file regions go by splice or `sendfile` ([`mod@file`]).

pub(crate) mod close;
mod file;
pub(crate) mod msgzc;
pub mod plan;

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rpc_core::transport::SendHalf;
use rpc_core::{ExternalSegment, Segment, Transmit, TransportStats};
use tokio::net::TcpStream;

use crate::buf::{FixedInfo, HeadSlot, ProtectGuard, ZcSegment};
use crate::config::{Backend, SnapshotPolicy, UringConfig};
use crate::sys::ring::{NotifSink, RingHandle, SendOpts};
use crate::sys::UIO_MAXIOV;
use plan::{Adaptive, Path};

/// State shared by a connection's halves, its reaper and its in-flight messages.
pub(crate) struct Shared {
    pub stats: Arc<TransportStats>,
    pub config: UringConfig,
    pub backend: Backend,
    pub threshold: usize,
    pub adaptive: Adaptive,
    /// Messages whose segments the kernel may still read.
    flights: AtomicUsize,
    /// Bytes of pool buffers in those messages (bounded by
    /// [`UringConfig::max_pool_bytes_in_flight`]).
    pool_bytes: AtomicUsize,
    drained: tokio::sync::Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("backend", &self.backend)
            .field("flights", &self.flights)
            .finish()
    }
}

impl Shared {
    #[cfg(test)]
    pub(crate) fn new(config: UringConfig, backend: Backend) -> Arc<Shared> {
        Shared::named(config, backend, backend.name())
    }

    /// The shared state, with the stats under `name` (the backend's, or `uring+tls`).
    pub(crate) fn named(config: UringConfig, backend: Backend, name: &'static str) -> Arc<Shared> {
        Arc::new(Shared {
            stats: Arc::new(TransportStats::new(name)),
            threshold: config.threshold_for(backend),
            adaptive: Adaptive::new(config.mode, config.reprobe_every),
            backend,
            config,
            flights: AtomicUsize::new(0),
            pool_bytes: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
        })
    }

    /// Waits until no message is in flight.
    pub(crate) async fn wait_drained(&self) {
        loop {
            let n = self.drained.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.flights.load(Ordering::Acquire) == 0 {
                return;
            }
            n.await;
        }
    }

    /// Messages in flight right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.load(Ordering::Acquire)
    }

    /// Counts `n` notifications (one per zero-copy send or resubmission); those of sends that
    /// moved bytes feed the adaptive switch.
    pub(crate) fn count_notifications(&self, n: u64, copied: bool, sent: bool) {
        TransportStats::add(&self.stats.notifications, n);
        if copied {
            TransportStats::add(&self.stats.notifications_copied, n);
        }
        if sent {
            self.adaptive.notified(copied, &self.stats);
        }
    }
}

impl NotifSink for Shared {
    fn notified(&self, copied: bool, sent: bool) {
        self.count_notifications(1, copied, sent);
    }
}

/// One piece of a message, owning its memory.
pub(crate) enum Chunk {
    Bytes(Bytes),
    External(Arc<dyn ExternalSegment>),
    /// A coalescing buffer.
    Owned(Vec<u8>),
    /// The frame head, copied into the head arena of the registration its pool buffers are in.
    Head(HeadSlot, FixedInfo),
}

impl Chunk {
    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Bytes(b) => b,
            Chunk::External(e) => e.as_slice(),
            Chunk::Owned(v) => v,
            Chunk::Head(h, _) => h.as_slice(),
        }
    }

    /// Where this piece lies among io_uring fixed buffers, if it does.
    fn fixed(&self) -> Option<FixedInfo> {
        match self {
            Chunk::Head(_, f) => Some(*f),
            _ => self.zc_segment()?.fixed(),
        }
    }

    fn zc_segment(&self) -> Option<&ZcSegment> {
        match self {
            Chunk::External(e) => e.as_any().downcast_ref::<ZcSegment>(),
            _ => None,
        }
    }
}

/// A zero-copy message in flight: its pieces and the write protection of its pool buffers.
/// Dropped when the last operation that reads it had its notification — that drop is what
/// releases `Bytes`, unprotects pool buffers and returns them.
pub(crate) struct Flight {
    guards: Vec<ProtectGuard>,
    chunks: Vec<Chunk>,
    shared: Arc<Shared>,
    /// Bytes of pool buffers among `chunks`.
    pool_bytes: usize,
}

impl Flight {
    fn new(chunks: Vec<Chunk>, guards: Vec<ProtectGuard>, shared: Arc<Shared>) -> Flight {
        let pool_bytes = chunks
            .iter()
            .filter(|c| c.zc_segment().is_some())
            .map(|c| c.as_slice().len())
            .sum();
        shared.flights.fetch_add(1, Ordering::AcqRel);
        shared.pool_bytes.fetch_add(pool_bytes, Ordering::AcqRel);
        Flight {
            guards,
            chunks,
            shared,
            pool_bytes,
        }
    }

    /// The slices of chunks `range`, skipping the first `skip` bytes.
    fn slices(&self, range: std::ops::Range<usize>, mut skip: usize) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(range.len());
        for c in &self.chunks[range] {
            let s = c.as_slice();
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            out.push(&s[skip..]);
            skip = 0;
        }
        out
    }

    fn len(&self, range: std::ops::Range<usize>) -> usize {
        self.chunks[range].iter().map(|c| c.as_slice().len()).sum()
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // Unprotect first, then release the pieces (a pool buffer goes back writable).
        self.guards.clear();
        self.chunks.clear();
        self.shared.pool_bytes.fetch_sub(self.pool_bytes, Ordering::AcqRel);
        if self.shared.flights.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.drained.notify_waiters();
        }
    }
}

/// How a sender waits for room in the socket buffer.
#[derive(Clone, Copy)]
pub(crate) enum Room<'a> {
    /// tokio's readiness (sockets without `SO_ZEROCOPY`).
    Tokio,
    /// A private epoll (see [`WriteWaiter`](crate::sys::sock::WriteWaiter)).
    Epoll(&'a crate::sys::sock::WriteWaiter),
}

impl Room<'_> {
    pub(crate) async fn wait(self, stream: &TcpStream) -> io::Result<()> {
        match self {
            Room::Tokio => stream.writable().await,
            Room::Epoll(w) => w.wait().await,
        }
    }
}

/// Writes every slice by copy (`writev`), at most `UIO_MAXIOV` per call, counting what each
/// call took in `sent_bytes`.
pub(crate) async fn write_all_vectored(
    stream: &TcpStream,
    room: Room<'_>,
    stats: &TransportStats,
    slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    let mut rest = slices;
    while !rest.is_empty() {
        let take = rest.len().min(UIO_MAXIOV);
        let r = match room {
            Room::Tokio => stream.try_write_vectored(&rest[..take]),
            // tokio's write readiness is not trusted on these sockets: write directly.
            Room::Epoll(_) => {
                crate::sys::sock::sendmsg(socket2::SockRef::from(stream), &rest[..take], 0)
            }
        };
        match r {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket accepted no bytes",
                ))
            }
            Ok(n) => {
                TransportStats::add(&stats.sent_bytes, n as u64);
                IoSlice::advance_slices(&mut rest, n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => room.wait(stream).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The zero-copy submission side of a backend.
pub(crate) enum Submitter {
    /// io_uring: one ring per connection.
    Uring(RingHandle),
    /// `MSG_ZEROCOPY`.
    MsgZc(msgzc::MsgZc),
    /// Copy only.
    Copy,
}

/// The sending half of a [`UringTransport`](crate::UringTransport).
pub struct UringSend {
    pub(crate) stream: Arc<TcpStream>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) submitter: Submitter,
    /// Set while a `send` runs: a send future dropped mid-message leaves the stream with part
    /// of a frame, so later sends refuse.
    pub(crate) interrupted: bool,
    pub(crate) failed: Option<(io::ErrorKind, String)>,
    /// The pipe file regions are spliced through (io_uring backend), made on first use.
    pub(crate) pipe: Option<crate::sys::splice::Pipe>,
    /// Closes the connection (within the close deadline) when both halves are gone.
    pub(crate) _close: close::CloseHandle,
}

impl std::fmt::Debug for UringSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSend")
            .field("backend", &self.shared.backend)
            .finish()
    }
}

impl UringSend {
    /// The connection's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.shared.stats.clone()
    }

    /// Zero-copy messages whose notification has not arrived yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Waits until the kernel is done with every segment sent so far.
    pub async fn flush_notifications(&self) {
        self.shared.wait_drained().await
    }

    fn room(&self) -> Room<'_> {
        match &self.submitter {
            Submitter::MsgZc(m) => Room::Epoll(m.waiter()),
            _ => Room::Tokio,
        }
    }

    fn plan(&self, t: &Transmit) -> Path {
        if t.has_files() {
            return Path::File;
        }
        if matches!(self.submitter, Submitter::Copy) || t.len() < self.shared.threshold {
            return Path::Copy;
        }
        if self.shared.config.snapshot == SnapshotPolicy::AlwaysCopy
            && t.segments.iter().any(|s| matches!(s, Segment::External(_)))
        {
            return Path::Copy;
        }
        self.shared.adaptive.choose()
    }

    /// Whether sending `t` zero-copy would take this connection's pool bytes awaiting their
    /// notification (some already) past [`UringConfig::max_pool_bytes_in_flight`]; then it
    /// goes by copy,
    /// which hands its buffers back once the socket has taken the bytes, so that a peer that
    /// stops reading cannot keep the pool's buffers from every other connection.
    fn over_pool_cap(&self, t: &Transmit) -> bool {
        let bytes: usize = t
            .segments
            .iter()
            .filter_map(|s| match s {
                Segment::External(e) if e.as_any().is::<ZcSegment>() => Some(e.as_slice().len()),
                _ => None,
            })
            .sum();
        // With nothing in flight, any one message may go zero-copy: a single message larger
        // than the cap should not lose the zero-copy path, and what it holds is bounded by
        // its own size.
        let held = self.shared.pool_bytes.load(Ordering::Acquire);
        let over = bytes > 0
            && held > 0
            && held.saturating_add(bytes) > self.shared.config.max_pool_bytes_in_flight;
        if over {
            tracing::trace!(bytes, "pool bytes in flight at the connection's cap; sending by copy");
        }
        over
    }

    async fn send_copy(&self, batch: &[Transmit]) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> =
            Vec::with_capacity(batch.iter().map(|t| 1 + t.segments.len()).sum());
        let mut bytes = 0u64;
        for t in batch {
            slices.push(IoSlice::new(&t.head));
            slices.extend(
                t.segments
                    .iter()
                    .filter_map(|s| s.memory())
                    .filter(|s| !s.is_empty())
                    .map(IoSlice::new),
            );
            bytes += t.len() as u64;
        }
        TransportStats::add(&self.shared.stats.sends_copy, batch.len() as u64);
        TransportStats::add(&self.shared.stats.bytes_copy, bytes);
        write_all_vectored(&self.stream, self.room(), &self.shared.stats, &mut slices).await
    }

    /// Builds the in-flight record of one zero-copy message: pieces, coalesced to the iovec
    /// limit, pool buffers write-protected.
    fn prepare(&self, t: Transmit) -> Arc<Flight> {
        let stats = &self.shared.stats;
        let mut pieces: Vec<Chunk> = Vec::with_capacity(1 + t.segments.len());
        if !t.head.is_empty() {
            pieces.push(self.head_chunk(t.head, t.segments.first()));
        }
        for s in t.segments {
            match s {
                Segment::Bytes(b) if b.is_empty() => {}
                Segment::Bytes(b) => pieces.push(Chunk::Bytes(b)),
                Segment::External(e) if e.as_slice().is_empty() => {}
                Segment::External(e) => pieces.push(Chunk::External(e)),
                // File regions take the file path (`plan`), never this one; other kinds a newer
                // rpc-core may add are copied.
                other => pieces.push(Chunk::Bytes(Bytes::copy_from_slice(
                    other.memory().unwrap_or_default(),
                ))),
            }
        }
        let total: usize = pieces.iter().map(|c| c.as_slice().len()).sum();
        let max_iov = self.shared.config.max_iov.clamp(1, UIO_MAXIOV);
        let chunks = if pieces.len() > max_iov {
            let lens: Vec<usize> = pieces.iter().map(|c| c.as_slice().len()).collect();
            let groups = plan::coalesce(&lens, max_iov);
            let mut out = Vec::with_capacity(groups.len());
            let mut it = pieces.into_iter();
            let mut merged = 0u64;
            for g in groups {
                if g.len() == 1 {
                    out.extend(it.next());
                } else {
                    let parts: Vec<Chunk> = it.by_ref().take(g.len()).collect();
                    let mut v = Vec::with_capacity(parts.iter().map(|c| c.as_slice().len()).sum());
                    for p in &parts {
                        v.extend_from_slice(p.as_slice());
                    }
                    merged += parts.len() as u64;
                    out.push(Chunk::Owned(v));
                }
            }
            TransportStats::add(&stats.sends_coalesced, 1);
            TransportStats::add(&stats.bytes_coalesced, total as u64);
            TransportStats::add(&stats.coalesced_segments, merged);
            out
        } else {
            TransportStats::add(&stats.sends_zc, 1);
            TransportStats::add(&stats.bytes_zc, total as u64);
            pieces
        };
        let mut guards = Vec::new();
        if self.shared.config.snapshot == SnapshotPolicy::WriteProtect {
            for c in &chunks {
                if let Some(g) = c.zc_segment().and_then(ZcSegment::protect) {
                    TransportStats::add(&stats.write_protects, 1);
                    guards.push(g);
                }
            }
        }
        Arc::new(Flight::new(chunks, guards, self.shared.clone()))
    }

    /// The frame head as a piece: in the head arena of the first segment's registration when
    /// that segment is a registered pool buffer (then head and buffers go in one fixed-buffer
    /// send), as it is otherwise.
    fn head_chunk(&self, head: Bytes, first: Option<&Segment>) -> Chunk {
        let in_arena = || {
            if !matches!(self.submitter, Submitter::Uring(_)) || !crate::probe::probe().vectored_fixed {
                return None;
            }
            let Some(Segment::External(e)) = first else { return None };
            let seg = e.as_any().downcast_ref::<ZcSegment>()?;
            let fixed = seg.fixed()?;
            Some(Chunk::Head(seg.head_slot(&head)?, fixed))
        };
        in_arena().unwrap_or(Chunk::Bytes(head))
    }

    /// Splits a flight into runs that one send can carry: consecutive pool buffers of one
    /// fixed-buffer registration (sent with its `buf_index`), or anything else.
    fn runs(
        &self,
        flight: &Flight,
        ring: &RingHandle,
    ) -> Vec<(std::ops::Range<usize>, Option<u16>)> {
        let use_fixed = crate::probe::probe().vectored_fixed;
        let mut pools: HashMap<u64, Option<u16>> = HashMap::new();
        let key = |c: &Chunk, pools: &mut HashMap<u64, Option<u16>>| -> Option<u16> {
            if !use_fixed {
                return None;
            }
            let f = c.fixed()?;
            let base = *pools
                .entry(f.pool_id)
                .or_insert_with(|| ring.ring().pool_base(f.pool_id, f.reg_fd, f.nr));
            base.map(|b| b + f.which as u16)
        };
        let mut runs: Vec<(std::ops::Range<usize>, Option<u16>)> = Vec::new();
        for (i, c) in flight.chunks.iter().enumerate() {
            let k = key(c, &mut pools);
            match runs.last_mut() {
                Some((r, last)) if *last == k => r.end = i + 1,
                _ => runs.push((i..i + 1, k)),
            }
        }
        runs
    }

    async fn send_zc_uring(&self, ring: &RingHandle, flight: Arc<Flight>) -> io::Result<()> {
        let runs = self.runs(&flight, ring);
        let n_runs = runs.len();
        for (ri, (range, mut buf_index)) in runs.into_iter().enumerate() {
            let total = flight.len(range.clone());
            let mut sent = 0usize;
            let more = if ri + 1 < n_runs { libc::MSG_MORE } else { 0 };
            while sent < total {
                let r = range.clone();
                let skip = sent;
                let op = ring.ring().sendmsg(
                    self.stream.clone(),
                    flight.clone(),
                    move |f: &Flight| f.slices(r, skip),
                    SendOpts {
                        zero_copy: true,
                        flags: libc::MSG_NOSIGNAL | more,
                        buf_index,
                    },
                    Some(self.shared.clone() as Arc<dyn NotifSink>),
                )?;
                let c = op.await;
                if c.res >= 0 {
                    // The write-stall timeout watches this move.
                    TransportStats::add(&self.shared.stats.sent_bytes, c.res as u64);
                    sent += c.res as usize;
                    if sent < total {
                        TransportStats::add(&self.shared.stats.short_sends, 1);
                    }
                    continue;
                }
                match -c.res {
                    libc::EINTR => {}
                    libc::EAGAIN => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                    // No kernel memory for this zero-copy send: ENOBUFS, or ENOMEM when the
                    // pages it would pin exceed RLIMIT_MEMLOCK (io_uring charges them to the
                    // user unless the process has CAP_IPC_LOCK). The copy path needs neither.
                    libc::ENOBUFS | libc::ENOMEM => {
                        TransportStats::add(&self.shared.stats.enobufs_fallbacks, 1);
                        if -c.res == libc::ENOMEM {
                            warn_memlock_once();
                        }
                        return self.copy_rest(&flight, range.start, sent).await;
                    }
                    libc::EFAULT | libc::EINVAL if buf_index.is_some() => {
                        // The kernel refused the fixed-buffer form (a registration it does not
                        // take for these iovecs): the same pages go as ordinary user memory.
                        tracing::debug!(
                            "fixed-buffer send refused ({}); resending unregistered",
                            -c.res
                        );
                        buf_index = None;
                    }
                    e => return Err(io::Error::from_raw_os_error(e)),
                }
            }
        }
        Ok(())
    }

    /// Sends the rest of a message by copy, from chunk `from` skipping `skip` bytes of it.
    async fn copy_rest(&self, flight: &Flight, from: usize, skip: usize) -> io::Result<()> {
        let slices = flight.slices(from..flight.chunks.len(), skip);
        let mut io: Vec<IoSlice<'_>> = slices.into_iter().map(IoSlice::new).collect();
        write_all_vectored(&self.stream, self.room(), &self.shared.stats, &mut io).await
    }

    async fn send_inner(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        if let Submitter::MsgZc(m) = &self.submitter {
            m.poll_completions(&self.stream, &self.shared);
        }
        // Plans are made once per transmit, in order (the adaptive switch counts them).
        let other = batch.iter().enumerate().find_map(|(i, t)| match self.plan(t) {
            Path::Copy => None,
            path => Some((i, path)),
        });
        let Some((first, path)) = other else {
            // Every frame by copy (small calls, runs of stream messages): one vectored write, and
            // the caller's batch keeps its allocation for the next one.
            let r = self.send_copy(batch).await;
            batch.clear();
            return r;
        };
        let paths: Vec<Path> = (0..batch.len())
            .map(|i| match i.cmp(&first) {
                std::cmp::Ordering::Less => Path::Copy,
                std::cmp::Ordering::Equal => path,
                std::cmp::Ordering::Greater => self.plan(&batch[i]),
            })
            .collect();
        let mut items: Vec<Option<Transmit>> = batch.drain(..).map(Some).collect();
        let mut start = 0;
        for i in 0..=items.len() {
            if i < items.len() && paths[i] == Path::Copy {
                continue;
            }
            // Flush the copy run [start, i) first: order on the stream is the batch's order.
            if start < i {
                let run: Vec<Transmit> = items[start..i]
                    .iter_mut()
                    .filter_map(Option::take)
                    .collect();
                self.send_copy(&run).await?;
            }
            start = i + 1;
            if i == items.len() {
                break;
            }
            let Some(t) = items[i].take() else { continue };
            if paths[i] == Path::File {
                self.send_file_frame(t).await?;
                continue;
            }
            if self.over_pool_cap(&t) {
                self.send_copy(std::slice::from_ref(&t)).await?;
                continue;
            }
            let flight = self.prepare(t);
            match &self.submitter {
                Submitter::Uring(ring) => self.send_zc_uring(ring, flight).await?,
                Submitter::MsgZc(m) => m.send(&self.stream, &self.shared, flight).await?,
                Submitter::Copy => self.copy_rest(&flight, 0, 0).await?,
            }
        }
        Ok(())
    }
}

impl Drop for UringSend {
    fn drop(&mut self) {
        // The connection's counters are emitted by rpc-core when it ends; what only this half
        // knows is how much the kernel still holds.
        let in_flight = self.shared.in_flight();
        if in_flight > 0 {
            tracing::debug!(in_flight, "send half closed with zero-copy sends awaiting their notification");
        }
    }
}

/// The driver's direct path on this socket: a non-blocking `sendmsg`, as the copy path makes,
/// for frames below the zero-copy threshold.
#[derive(Debug)]
struct UringDirect {
    stream: Arc<TcpStream>,
    limit: usize,
}

impl rpc_core::transport::DirectWrite for UringDirect {
    fn try_write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::sys::sock::sendmsg(socket2::SockRef::from(&*self.stream), slices, 0)
    }

    fn limit(&self) -> usize {
        self.limit
    }
}

impl SendHalf for UringSend {
    fn direct(&self) -> Option<Arc<dyn rpc_core::transport::DirectWrite>> {
        let limit = match self.submitter {
            Submitter::Copy => usize::MAX,
            _ => self.shared.threshold,
        };
        Some(Arc::new(UringDirect { stream: self.stream.clone(), limit }))
    }

    async fn send(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        if let Some((kind, msg)) = &self.failed {
            batch.clear();
            return Err(io::Error::new(*kind, msg.clone()));
        }
        if self.interrupted {
            batch.clear();
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier send was cancelled mid-message; the stream holds a partial frame",
            ));
        }
        self.interrupted = true;
        let r = self.send_inner(batch).await;
        self.interrupted = false;
        if let Err(e) = &r {
            self.failed = Some((e.kind(), format!("earlier send failed: {e}")));
        }
        r
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.shared.wait_drained().await;
        socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write)
    }
}

/// Says once per process why zero-copy sends are being refused with `ENOMEM`.
fn warn_memlock_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "io_uring refused a zero-copy send with ENOMEM: the pages it pins are charged to \
             RLIMIT_MEMLOCK (this process lacks CAP_IPC_LOCK); such sends go by copy. Raise \
             the limit (ulimit -l, LimitMEMLOCK=) to keep them zero-copy"
        )
    });
}

pub(crate) fn raw_fd(s: &TcpStream) -> RawFd {
    s.as_raw_fd()
}
