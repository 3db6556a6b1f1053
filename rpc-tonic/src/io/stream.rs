//! [`UringIo`]: a connection of the io_uring transport as a tokio byte stream (`AsyncRead` +
//! `AsyncWrite`), what hyper (and so h2 and tonic) reads and writes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rpc_core::transport::{RecvHalf, SendHalf, Transport};
use rpc_core::{Transmit, TransportStats};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};
use transport_uring::{UringRecv, UringSend, UringTransport};

/// The most one write takes (of the slices h2 hands over): what a connection holds of its
/// own beyond the kernel's socket buffer. h2 writes at most about this much at a time anyway.
pub const MAX_WRITE: usize = 1 << 20;

/// The receive buffer: how much one receive asks the kernel for.
pub const READ_CHUNK: usize = 64 * 1024;

type RecvFuture = Pin<Box<dyn Future<Output = (UringRecv, io::Result<usize>, BytesMut)> + Send>>;
type SendFuture = Pin<Box<dyn Future<Output = (UringSend, io::Result<()>)> + Send>>;

/// Counters of one [`UringIo`]: how h2's writes reached the engine.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Writes taken (`poll_write` and `poll_write_vectored` calls that took bytes); each is one
    /// send of the engine.
    pub writes: AtomicU64,
    /// Of those, writes of more than one slice: h2 passed its frames as they are (headers,
    /// data payloads), gathered here into one send.
    pub vectored_writes: AtomicU64,
    /// Slices taken, over all writes.
    pub slices: AtomicU64,
    /// Bytes taken.
    pub bytes: AtomicU64,
    /// Writes that waited (`Pending`) because the previous send had not completed: the
    /// backpressure a peer that reads slowly puts on h2.
    pub write_waits: AtomicU64,
}

impl IoStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A connection of the io_uring transport ([`UringTransport`]) as a byte stream:
/// `tokio::io::AsyncRead` + `AsyncWrite` (wrap it in `hyper_util::rt::TokioIo` for hyper, as
/// [`UringConnector`](super::UringConnector) does), and tonic's `Connected`.
///
/// **Writes** are vectored ([`AsyncWrite::is_write_vectored`] is true): all the slices of one
/// `poll_write_vectored` (h2's frame headers and its data payloads, not flattened into h2's
/// buffer first) are gathered into one owned buffer — one copy, the only one in user space —
/// and handed to the engine as one [`Transmit`], one send (a `SENDMSG_ZC` from 3 KiB on,
/// vectored `writev` below). The write reports the bytes taken at once; the next write waits
/// (`Pending`) until that send completed, so a connection holds at most one write
/// ([`MAX_WRITE`]) beyond the socket buffer, however slowly the peer reads. `poll_flush`
/// waits for the send in flight; `poll_shutdown` also for the kernel to release zero-copy
/// memory, then shuts the write side.
///
/// **Reads** receive into a buffer of the connection's ([`READ_CHUNK`]) in the transport's
/// receive mode and copy into the caller's buffer.
pub struct UringIo {
    read: ReadState,
    write: WriteState,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    stats: Arc<TransportStats>,
    io_stats: Arc<IoStats>,
    /// Until the peer's first bytes arrive: how long it may take, then its timer once a read
    /// waits (a connection accepted by [`super::UringIncoming`]).
    first_bytes: FirstBytes,
    /// The connection's place in its listener's count, given back on drop.
    _slot: Option<LiveSlot>,
}

/// The wait for a peer's first bytes.
enum FirstBytes {
    /// Not bounded, or the bytes came.
    Done,
    /// Bounded by this long from the first read that waits.
    Within(Duration),
    /// Running.
    Timer(Pin<Box<tokio::time::Sleep>>, Duration),
}

/// One connection counted in a listener's live connections; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct LiveSlot(Arc<AtomicUsize>);

impl LiveSlot {
    /// A place in `live` if fewer than `max` are taken.
    pub(super) fn take(live: &Arc<AtomicUsize>, max: usize) -> Option<LiveSlot> {
        live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(LiveSlot(live.clone()))
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

enum ReadState {
    Idle(UringRecv, BytesMut),
    Busy(RecvFuture),
    Eof(UringRecv),
    /// Only while a transition is under way.
    Empty,
}

enum WriteState {
    Idle(UringSend),
    Busy(SendFuture),
    ShuttingDown(SendFuture),
    Shut,
    Failed(io::ErrorKind, String),
}

impl std::fmt::Debug for UringIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIo")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("io_stats", &self.io_stats)
            .finish()
    }
}

impl UringIo {
    /// Wraps a connected transport; `local` is the socket's own address (for
    /// [`Connected::connect_info`]).
    pub fn new(transport: UringTransport, local: Option<SocketAddr>) -> UringIo {
        UringIo::with_stats(transport, local, Arc::default())
    }

    /// [`UringIo::new`], counting into `io_stats` (shared by the connections of a connector or
    /// a listener).
    pub fn with_stats(transport: UringTransport, local: Option<SocketAddr>, io_stats: Arc<IoStats>) -> UringIo {
        let peer = Transport::peer_addr(&transport);
        let stats = transport.stats();
        let (recv, send) = transport.split();
        UringIo {
            read: ReadState::Idle(recv, BytesMut::new()),
            write: WriteState::Idle(send),
            local,
            peer,
            stats,
            io_stats,
            first_bytes: FirstBytes::Done,
            _slot: None,
        }
    }

    /// Counted in a listener's connections by `slot`; its peer must send within
    /// `first_bytes` (timed from the first read that waits, which hyper makes at once).
    pub(super) fn bounded(mut self, slot: LiveSlot, first_bytes: Duration) -> UringIo {
        self._slot = Some(slot);
        self.first_bytes = FirstBytes::Within(first_bytes);
        self
    }

    /// While the peer's first bytes are awaited and a read waits: an error once they are late.
    fn poll_first_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if let FirstBytes::Within(d) = self.first_bytes {
            self.first_bytes = FirstBytes::Timer(Box::pin(tokio::time::sleep(d)), d);
        }
        let FirstBytes::Timer(timer, d) = &mut self.first_bytes else { return Poll::Pending };
        ready!(timer.as_mut().poll(cx));
        let message = format!("the peer sent nothing within {d:?} of connecting; closing");
        tracing::debug!(peer = ?self.peer, "{message}");
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, message))
    }

    /// The transport's counters (sends by path, bytes, ...).
    pub fn transport_stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    /// How writes reached the engine.
    pub fn io_stats(&self) -> Arc<IoStats> {
        self.io_stats.clone()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Waits for the send in flight, if any; then the write side is idle (or failed).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.write {
                WriteState::Idle(_) => return Poll::Ready(Ok(())),
                WriteState::Busy(fut) => {
                    let (send, r) = ready!(fut.as_mut().poll(cx));
                    self.write = WriteState::Idle(send);
                    if let Err(e) = r {
                        self.write = WriteState::Failed(e.kind(), e.to_string());
                        return Poll::Ready(Err(e));
                    }
                }
                WriteState::ShuttingDown(_) | WriteState::Shut => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "write after shutdown",
                    )))
                }
                WriteState::Failed(kind, msg) => {
                    return Poll::Ready(Err(io::Error::new(*kind, format!("an earlier send failed: {msg}"))))
                }
            }
        }
    }
}

/// Gathers `bufs` (up to [`MAX_WRITE`] bytes) into one buffer; returns it and the slices taken.
fn gather(bufs: &[io::IoSlice<'_>]) -> (Bytes, u64) {
    let total: usize = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
    let mut out = BytesMut::with_capacity(total);
    let mut slices = 0;
    for b in bufs {
        let room = total - out.len();
        if room == 0 {
            break;
        }
        if b.is_empty() {
            continue;
        }
        out.extend_from_slice(&b[..b.len().min(room)]);
        slices += 1;
    }
    (out.freeze(), slices)
}

impl AsyncWrite for UringIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let was_busy = matches!(this.write, WriteState::Busy(_));
        match this.poll_idle(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                if was_busy {
                    IoStats::add(&this.io_stats.write_waits, 1);
                }
                return Poll::Pending;
            }
        }
        let (data, slices) = gather(bufs);
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len();
        let WriteState::Idle(mut send) = std::mem::replace(&mut this.write, WriteState::Shut) else {
            unreachable!("poll_idle returned Ready(Ok)")
        };
        let s = &this.io_stats;
        IoStats::add(&s.writes, 1);
        IoStats::add(&s.slices, slices);
        IoStats::add(&s.bytes, n as u64);
        if slices > 1 {
            IoStats::add(&s.vectored_writes, 1);
        }
        let mut fut: SendFuture = Box::pin(async move {
            let mut batch = vec![Transmit { head: data, segments: Vec::new() }];
            let r = send.send(&mut batch).await;
            (send, r)
        });
        // Start it now (the engine submits when first polled); its completion wakes this task.
        match fut.as_mut().poll(cx) {
            Poll::Ready((send, Ok(()))) => this.write = WriteState::Idle(send),
            Poll::Ready((_, Err(e))) => {
                this.write = WriteState::Failed(e.kind(), e.to_string());
                return Poll::Ready(Err(e));
            }
            Poll::Pending => this.write = WriteState::Busy(fut),
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.write {
            WriteState::Shut => Poll::Ready(Ok(())),
            WriteState::ShuttingDown(_) => Poll::Ready(Ok(())),
            _ => this.poll_idle(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.write {
                WriteState::Shut => return Poll::Ready(Ok(())),
                WriteState::ShuttingDown(fut) => {
                    let (send, r) = ready!(fut.as_mut().poll(cx));
                    // Keep the half (and so the connection) until the stream is dropped.
                    drop(send);
                    this.write = WriteState::Shut;
                    return Poll::Ready(r);
                }
                WriteState::Idle(_) => {
                    let WriteState::Idle(mut send) = std::mem::replace(&mut this.write, WriteState::Shut) else {
                        unreachable!()
                    };
                    this.write = WriteState::ShuttingDown(Box::pin(async move {
                        let r = send.shutdown().await;
                        (send, r)
                    }));
                }
                _ => ready!(this.poll_idle(cx))?,
            }
        }
    }
}

impl AsyncRead for UringIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.read, ReadState::Empty) {
                ReadState::Idle(recv, mut buf) if !buf.is_empty() => {
                    let n = buf.len().min(out.remaining());
                    out.put_slice(&buf[..n]);
                    buf.advance(n);
                    this.read = ReadState::Idle(recv, buf);
                    return Poll::Ready(Ok(()));
                }
                ReadState::Idle(mut recv, mut buf) => {
                    if out.remaining() == 0 {
                        this.read = ReadState::Idle(recv, buf);
                        return Poll::Ready(Ok(()));
                    }
                    buf.clear();
                    buf.reserve(READ_CHUNK);
                    this.read = ReadState::Busy(Box::pin(async move {
                        let (r, buf) = recv.recv(buf).await;
                        (recv, r, buf)
                    }));
                }
                ReadState::Busy(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.read = ReadState::Busy(fut);
                        return match this.poll_first_bytes(cx) {
                            Poll::Ready(late) => Poll::Ready(Err(late)),
                            Poll::Pending => Poll::Pending,
                        };
                    }
                    Poll::Ready((recv, Ok(0), _)) => {
                        this.read = ReadState::Eof(recv);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready((recv, Ok(_), buf)) => {
                        this.first_bytes = FirstBytes::Done;
                        this.read = ReadState::Idle(recv, buf);
                    }
                    Poll::Ready((recv, Err(e), buf)) => {
                        this.read = ReadState::Idle(recv, buf);
                        return Poll::Ready(Err(e));
                    }
                },
                ReadState::Eof(recv) => {
                    this.read = ReadState::Eof(recv);
                    return Poll::Ready(Ok(()));
                }
                ReadState::Empty => {
                    return Poll::Ready(Err(io::Error::other("read after a panic mid-read")))
                }
            }
        }
    }
}

impl Connected for UringIo {
    type ConnectInfo = TcpConnectInfo;

    /// The addresses, as tonic's TCP server gives them: `Request::remote_addr` works.
    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo { local_addr: self.local, remote_addr: self.peer }
    }
}
