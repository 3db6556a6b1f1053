//! `UringRecv`: the receiving half, in the mode [`RecvMode`] names.
//!
//! - `Read`: readiness + `read` into the driver's buffer.
//! - `Uring`: one `IORING_OP_RECV` per read into the driver's buffer (ownership passing: the
//!   buffer sits in the ring's slab until the completion). A receive whose future is dropped
//!   stays in the kernel; the next call takes its bytes.
//! - `BufferRing`: one multishot `IORING_OP_RECV` armed for many receives, the kernel picking a
//!   buffer from a provided-buffer ring for each; the buffer is handed to the driver as a chunk
//!   and frames inside it are decoded in place. When the driver asks for a buffer of its own
//!   instead (a frame larger than a ring buffer), the multishot receive is cancelled, what it
//!   already received is handed over first (copied), and readiness + `read` takes the rest
//!   straight into the driver's buffer (`read` rather than single-shot `RECV`: measured
//!   faster, see [`RecvMode`]). The stream's order holds across every switch: reads start only
//!   after the multishot receive's last completion, and a `read` leaves nothing in the kernel
//!   when its future is dropped.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use io_uring::cqueue;
use rpc_core::transport::tcp::try_read_ready;
use rpc_core::transport::{Chunk, RecvHalf};
use rpc_core::TransportStats;
use tokio::net::TcpStream;

use crate::config::{RecvMode, UringConfig};
use crate::engine::close::CloseHandle;
use crate::lowat::RecvLowat;
use crate::sys::buf_ring::BufRing;
use crate::sys::ring::{Completion, MultiOp, RecvOp, RingHandle};

/// The buffer group id of a connection's receive ring (one group per connection ring).
const RECV_BGID: u16 = 0;

/// The receiving half of a [`UringTransport`](crate::UringTransport).
pub struct UringRecv {
    stream: Arc<TcpStream>,
    stats: Arc<TransportStats>,
    mode: Mode,
    /// The socket's low-water mark (`Read` mode, and `BufferRing` mode's reads into the
    /// caller's buffer; `Uring` mode does not wait on readiness).
    lowat: RecvLowat,
    _close: CloseHandle,
}

enum Mode {
    Read,
    Single(Single),
    Ring(RingRecv),
}

impl std::fmt::Debug for UringRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringRecv").field("mode", &self.mode()).finish()
    }
}

impl UringRecv {
    /// The receiving half for `stream`; `ring` is the connection's ring on the uring backend.
    /// A mode the kernel refuses falls back (logged): ring → single-shot → read.
    pub(crate) fn new(
        stream: Arc<TcpStream>,
        config: &UringConfig,
        stats: Arc<TransportStats>,
        ring: Option<&RingHandle>,
        close: CloseHandle,
    ) -> UringRecv {
        let probe = crate::probe::probe();
        let mode = match (config.recv, ring) {
            (RecvMode::Read, _) | (_, None) => Mode::Read,
            (RecvMode::Uring, Some(r)) => Mode::Single(Single::new(r)),
            (RecvMode::BufferRing, Some(r)) if !(probe.recv_multishot && probe.buf_ring) => {
                tracing::warn!("this kernel lacks multishot receive (6.0) or buffer rings (5.19); receiving with single-shot IORING_OP_RECV");
                Mode::Single(Single::new(r))
            }
            (RecvMode::BufferRing, Some(r)) => {
                match BufRing::new(r.ring(), RECV_BGID, config.recv_ring_buffers, config.recv_ring_buf_size) {
                    Ok(bufs) => Mode::Ring(RingRecv {
                        ring: r.clone(),
                        bufs,
                        armed: None,
                        cancelling: false,
                        held: None,
                    }),
                    Err(e) => {
                        tracing::warn!("receive buffer ring refused ({e}); receiving with single-shot IORING_OP_RECV");
                        Mode::Single(Single::new(r))
                    }
                }
            }
        };
        let lowat = RecvLowat::new(stream.as_raw_fd(), config.recv_lowat);
        UringRecv { stream, stats, mode, lowat, _close: close }
    }

    /// The receive mode in force (after any fallback).
    pub fn mode(&self) -> RecvMode {
        match &self.mode {
            Mode::Read => RecvMode::Read,
            Mode::Single(_) => RecvMode::Uring,
            Mode::Ring(_) => RecvMode::BufferRing,
        }
    }

    /// Whether `p` points into this connection's receive ring (tests: a chunk's frames were
    /// decoded where the kernel put them).
    pub fn ring_contains(&self, p: *const u8) -> bool {
        matches!(&self.mode, Mode::Ring(r) if r.bufs.contains(p))
    }

    /// Ring buffers the kernel can fill now (`None` outside `BufferRing` mode).
    pub fn ring_buffers_free(&self) -> Option<usize> {
        match &self.mode {
            Mode::Ring(r) => Some(r.bufs.in_kernel()),
            _ => None,
        }
    }
}

impl RecvHalf for UringRecv {
    async fn recv(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() == buf.len() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "recv needs spare capacity");
            return (Err(e), buf);
        }
        match &mut self.mode {
            // tokio's readiness, as the TCP transport: no budget of its own to take.
            Mode::Read => {
                let certain = self.lowat.take_expected();
                recv_ready(&self.stream, &self.stats, &mut self.lowat, certain, buf).await
            }
            Mode::Single(s) => {
                cooperate().await;
                s.recv(&self.stream, &self.stats, buf).await
            }
            Mode::Ring(r) => {
                cooperate().await;
                let certain = self.lowat.take_expected();
                r.recv(&self.stream, &self.stats, &mut self.lowat, certain, buf).await
            }
        }
    }

    fn expect_bytes(&mut self, bytes: usize) {
        self.lowat.expect(bytes);
    }

    fn chunk_size(&self) -> usize {
        match &self.mode {
            Mode::Ring(r) => r.bufs.buf_size(),
            _ => 0,
        }
    }

    async fn recv_chunk(&mut self) -> io::Result<Chunk> {
        cooperate().await;
        match &mut self.mode {
            Mode::Ring(r) => {
                // The multishot receive waits on the socket's readiness too: a mark left from a
                // large frame read into the driver's buffer would hold back the small frames
                // that follow. Back to the kernel's default (a no-op when it is).
                self.lowat.before_wait(0);
                r.recv_chunk(&self.stream, &self.stats).await
            }
            _ => Ok(Chunk::Unavailable),
        }
    }
}

/// One unit of tokio's cooperative budget per receive of the io_uring modes, taken before
/// anything is received (so a future dropped while it yields loses nothing; `Read` receives
/// through tokio's readiness, as the TCP transport, and takes none). The io_uring modes never
/// ask tokio's reactor: a single-shot receive whose bytes are already queued completes during its submit,
/// and a multishot receive's completions wait in its queue, so a connection that always has
/// data would otherwise complete receives back to back and never let its worker run anything
/// else.
async fn cooperate() {
    tokio::task::coop::consume_budget().await;
}

/// Readiness + `read` ([`rpc_core::transport::tcp::try_read_ready`]), each wait for the
/// `certain` bytes to come (one read: none arrived before) under the socket's low-water mark
/// ([`RecvLowat::wait_readable`]), and the mark's cap adjusted to how long it took.
async fn recv_ready(
    stream: &TcpStream,
    stats: &TransportStats,
    lowat: &mut RecvLowat,
    mut certain: usize,
    mut buf: BytesMut,
) -> (io::Result<usize>, BytesMut) {
    let r = loop {
        if let Some(r) = try_read_ready(stream, &mut buf) {
            break r;
        }
        if let Err(e) = lowat.wait_readable(stream, &mut certain).await {
            break Err(e);
        }
    };
    if let Ok(n) = r {
        TransportStats::add(&stats.recv_bytes, n as u64);
        lowat.after_read();
    }
    (r, buf)
}

/// Moves what fits of bytes received earlier (the front of `from`) into the spare room of the
/// caller's `buf`, counted as a user-space copy; returns how many.
fn hand_over<B: Buf + std::ops::Deref<Target = [u8]>>(from: &mut B, buf: &mut BytesMut, stats: &TransportStats) -> usize {
    let n = from.len().min(buf.capacity() - buf.len());
    buf.extend_from_slice(&from[..n]);
    from.advance(n);
    TransportStats::add(&stats.recv_copied_bytes, n as u64);
    n
}

/// Single-shot `IORING_OP_RECV` into the caller's buffer.
struct Single {
    ring: RingHandle,
    /// A receive whose future was dropped: its bytes belong to the stream, so the next call
    /// picks them up.
    pending: Option<RecvOp>,
    /// Bytes an abandoned receive got that did not fit the next caller's buffer.
    leftover: BytesMut,
}

impl Single {
    fn new(ring: &RingHandle) -> Single {
        Single { ring: ring.clone(), pending: None, leftover: BytesMut::new() }
    }

    fn take_leftover(&mut self, stats: &TransportStats, buf: &mut BytesMut) -> usize {
        hand_over(&mut self.leftover, buf, stats)
    }

    async fn recv(
        &mut self,
        stream: &Arc<TcpStream>,
        stats: &TransportStats,
        mut buf: BytesMut,
    ) -> (io::Result<usize>, BytesMut) {
        if !self.leftover.is_empty() {
            let n = self.take_leftover(stats, &mut buf);
            return (Ok(n), buf);
        }
        if let Some(op) = self.pending.as_mut() {
            let (r, mut old) = op.await;
            self.pending = None;
            return match r {
                Ok(0) => (Ok(0), buf),
                Ok(n) => {
                    TransportStats::add(&stats.recv_bytes, n as u64);
                    self.leftover = old.split_off(old.len() - n);
                    let k = self.take_leftover(stats, &mut buf);
                    (Ok(k), buf)
                }
                Err(e) => (Err(e), buf),
            };
        }
        match self.ring.ring().recv(stream.clone(), buf) {
            Ok(op) => {
                let op = self.pending.insert(op);
                let (r, buf) = op.await;
                self.pending = None;
                if let Ok(n) = r {
                    TransportStats::add(&stats.recv_bytes, n as u64);
                }
                (r, buf)
            }
            Err((e, buf)) => (Err(e), buf),
        }
    }
}

/// Multishot receive into a provided-buffer ring, `read` for frames too large for it.
struct RingRecv {
    ring: RingHandle,
    bufs: BufRing,
    /// The multishot receive, from arming to its last completion.
    armed: Option<MultiOp>,
    /// A cancel was asked for the armed receive.
    cancelling: bool,
    /// The rest of a chunk partly copied into a caller's buffer: it comes next.
    held: Option<Bytes>,
}

/// What one multishot completion brought.
enum Arrival {
    Data(Bytes),
    Eof,
    /// The receive stopped without data: cancelled, or the ring was empty (`ENOBUFS`).
    Stopped { ring_empty: bool },
    Failed(io::Error),
}

impl RingRecv {
    fn arm(&mut self, stream: &Arc<TcpStream>) -> io::Result<()> {
        let keep = Box::new(self.bufs.clone());
        self.armed = Some(self.ring.ring().recv_multi(stream.clone(), self.bufs.bgid(), keep)?);
        self.cancelling = false;
        Ok(())
    }

    /// The next completion of the armed receive.
    async fn next(&mut self, stats: &TransportStats) -> Arrival {
        let Some(op) = self.armed.as_mut() else {
            return Arrival::Stopped { ring_empty: false };
        };
        let c = op.next().await;
        if op.is_done() {
            self.armed = None;
        }
        self.arrival(c, stats)
    }

    fn arrival(&self, c: Completion, stats: &TransportStats) -> Arrival {
        let bid = cqueue::buffer_select(c.flags);
        if c.res > 0 {
            let n = c.res as usize;
            let Some(bid) = bid else {
                return Arrival::Failed(io::Error::other("multishot receive completed without a buffer"));
            };
            return match self.bufs.take(bid, n) {
                Ok(bytes) => {
                    TransportStats::add(&stats.recv_ring_chunks, 1);
                    TransportStats::add(&stats.recv_bytes, n as u64);
                    Arrival::Data(bytes)
                }
                Err(e) => Arrival::Failed(e),
            };
        }
        if let Some(bid) = bid {
            self.bufs.put_back(bid);
        }
        match -c.res {
            0 => Arrival::Eof,
            libc::ECANCELED => Arrival::Stopped { ring_empty: false },
            libc::ENOBUFS => Arrival::Stopped { ring_empty: true },
            e => Arrival::Failed(io::Error::from_raw_os_error(e)),
        }
    }

    async fn recv_chunk(&mut self, stream: &Arc<TcpStream>, stats: &TransportStats) -> io::Result<Chunk> {
        loop {
            if let Some(held) = self.held.take() {
                return Ok(Chunk::Data(held));
            }
            if self.armed.is_none() {
                if self.bufs.in_kernel() == 0 {
                    TransportStats::add(&stats.recv_ring_empty, 1);
                    return Ok(Chunk::Unavailable);
                }
                self.arm(stream)?;
            }
            match self.next(stats).await {
                Arrival::Data(bytes) => return Ok(Chunk::Data(bytes)),
                Arrival::Eof => return Ok(Chunk::Eof),
                Arrival::Stopped { ring_empty: true } => {
                    TransportStats::add(&stats.recv_ring_empty, 1);
                    return Ok(Chunk::Unavailable);
                }
                // Cancelled by an earlier `recv`: arm again.
                Arrival::Stopped { ring_empty: false } => {}
                Arrival::Failed(e) => return Err(e),
            }
        }
    }

    async fn recv(
        &mut self,
        stream: &Arc<TcpStream>,
        stats: &TransportStats,
        lowat: &mut RecvLowat,
        certain: usize,
        mut buf: BytesMut,
    ) -> (io::Result<usize>, BytesMut) {
        loop {
            if let Some(held) = self.held.as_mut() {
                let n = hand_over(held, &mut buf, stats);
                if held.is_empty() {
                    self.held = None;
                }
                return (Ok(n), buf);
            }
            let Some(op) = self.armed.as_ref() else {
                return recv_ready(stream, stats, lowat, certain, buf).await;
            };
            // The caller wants the bytes in its own buffer: stop the multishot receive and hand
            // over what it got first.
            if !self.cancelling {
                op.cancel();
                self.cancelling = true;
            }
            match self.next(stats).await {
                Arrival::Data(bytes) => self.held = Some(bytes),
                Arrival::Eof => return (Ok(0), buf),
                Arrival::Stopped { .. } => {}
                Arrival::Failed(e) => return (Err(e), buf),
            }
        }
    }
}
