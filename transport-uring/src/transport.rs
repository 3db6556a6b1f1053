//! `UringTransport`: a TCP connection whose sends go through the zero-copy engine.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rpc_core::transport::{Acceptor, RecvHalf, Transport};
use rpc_core::TransportStats;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::config::{Backend, UringConfig};
use crate::engine::msgzc::{MsgZc, ReaperHandle};
use crate::engine::{raw_fd, Shared, Submitter, UringSend};
use crate::sys::ring::{RecvOp, Ring, RingHandle};

/// Submission entries per connection ring (a send uses one at a time; receives one).
const RING_ENTRIES: u32 = 64;

/// A TCP connection with the zero-copy send engine. Split it (`Transport::split`) into
/// [`UringRecv`] and [`UringSend`].
pub struct UringTransport {
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    submitter: Submitter,
    ring: Option<RingHandle>,
    reaper: Option<ReaperHandle>,
}

impl std::fmt::Debug for UringTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringTransport")
            .field("backend", &self.shared.backend)
            .finish()
    }
}

/// Connects to `addr` and wraps the stream (see [`from_tcp`]).
pub async fn connect(addr: impl ToSocketAddrs, config: UringConfig) -> io::Result<UringTransport> {
    from_tcp(TcpStream::connect(addr).await?, config)
}

/// Wraps a connected tokio stream: `TCP_NODELAY`, the configured `SO_SNDBUF`, and the backend
/// resolved from the probe (falling back, and logging why, when the one asked for is refused).
/// Must be called inside a tokio runtime (it starts the connection's completion reaper).
pub fn from_tcp(stream: TcpStream, config: UringConfig) -> io::Result<UringTransport> {
    stream.set_nodelay(true)?;
    if let Some(n) = config.sndbuf {
        socket2::SockRef::from(&stream).set_send_buffer_size(n)?;
    }
    let stream = Arc::new(stream);
    let (mut backend, why) = crate::probe::resolve(config.backend);
    if let Some(why) = why {
        tracing::warn!(
            "backend {} unavailable ({why}); using {backend}",
            config.backend
        );
    }
    let mut ring = None;
    if backend == Backend::Uring {
        match Ring::new(RING_ENTRIES).and_then(|r| r.start()) {
            Ok(h) => ring = Some(h),
            Err(e) => {
                backend = if crate::probe::probe().msg_zerocopy {
                    Backend::MsgZc
                } else {
                    Backend::Copy
                };
                tracing::warn!(
                    "setting up this connection's io_uring failed ({e}); using {backend}"
                );
            }
        }
    }
    let mut reaper = None;
    let mut msgzc = None;
    let shared_backend = backend;
    let shared = if backend == Backend::MsgZc {
        let shared = Shared::new(config.clone(), Backend::MsgZc);
        match MsgZc::start(&stream, &shared) {
            Ok((m, h)) => {
                msgzc = Some(m);
                reaper = Some(h);
                shared
            }
            Err(e) => {
                tracing::warn!("SO_ZEROCOPY refused ({e}); copying");
                Shared::new(config, Backend::Copy)
            }
        }
    } else {
        Shared::new(config, shared_backend)
    };
    let submitter = match (&ring, msgzc) {
        (Some(r), _) => Submitter::Uring(r.clone()),
        (None, Some(m)) => Submitter::MsgZc(m),
        (None, None) => Submitter::Copy,
    };
    Ok(UringTransport {
        stream,
        shared,
        submitter,
        ring,
        reaper,
    })
}

impl UringTransport {
    /// The backend this connection actually uses.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// The copy threshold in force.
    pub fn copy_threshold(&self) -> usize {
        self.shared.threshold
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }
}

impl Transport for UringTransport {
    type Send = UringSend;
    type Recv = UringRecv;

    fn split(self) -> (UringRecv, UringSend) {
        let use_ring = self.shared.config.uring_recv && self.ring.is_some();
        let recv = UringRecv {
            stream: self.stream.clone(),
            stats: self.shared.stats.clone(),
            ring: if use_ring { self.ring.clone() } else { None },
            pending: None,
            leftover: BytesMut::new(),
            _reaper: self.reaper.clone(),
        };
        let send = UringSend {
            stream: self.stream,
            shared: self.shared,
            submitter: self.submitter,
            interrupted: false,
            failed: None,
            _reaper: self.reaper,
        };
        drop(self.ring);
        (recv, send)
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.shared.stats.clone()
    }
}

/// The receiving half: `IORING_OP_RECV` straight into the caller's spare capacity on the
/// io_uring backend (the kernel's one copy, none in user space), readiness + `read` otherwise.
///
/// A provided-buffer ring (multishot receive) would need a second copy here, from the ring's
/// buffer into the caller's `BytesMut`, because `RecvHalf` appends to the caller's buffer; it
/// pays only when frames are parsed in place in ring buffers, which `rpc-core`'s receive path
/// does not do. So plain single-shot `RECV` into the caller's buffer is used.
pub struct UringRecv {
    stream: Arc<TcpStream>,
    stats: Arc<TransportStats>,
    ring: Option<RingHandle>,
    /// A receive whose future was dropped: its bytes belong to the stream, so the next call
    /// picks them up.
    pending: Option<RecvOp>,
    /// Bytes an abandoned receive got that did not fit the next caller's buffer.
    leftover: BytesMut,
    _reaper: Option<ReaperHandle>,
}

impl std::fmt::Debug for UringRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringRecv")
            .field("uring", &self.ring.is_some())
            .finish()
    }
}

impl UringRecv {
    fn take_leftover(&mut self, buf: &mut BytesMut) -> usize {
        let n = self.leftover.len().min(buf.capacity() - buf.len());
        buf.extend_from_slice(&self.leftover.split_to(n));
        TransportStats::add(&self.stats.recv_copied_bytes, n as u64);
        n
    }

    async fn recv_ready(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let fd = raw_fd(&self.stream);
        loop {
            match self.stream.try_read_buf(&mut buf) {
                Ok(n) => {
                    tracing::trace!(fd, n, "recv");
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.stream.readable().await {
                        return (Err(e), buf);
                    }
                }
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn recv_uring(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let Some(ring) = self.ring.as_ref().map(|r| r.ring().clone()) else {
            return self.recv_ready(buf).await;
        };
        if let Some(op) = self.pending.as_mut() {
            let (r, mut old) = op.await;
            self.pending = None;
            match r {
                Ok(0) => return (Ok(0), buf),
                Ok(n) => {
                    self.leftover = old.split_off(old.len() - n);
                    let k = self.take_leftover(&mut buf);
                    return (Ok(k), buf);
                }
                Err(e) => return (Err(e), buf),
            }
        }
        match ring.recv(raw_fd(&self.stream), buf) {
            Ok(op) => {
                let op = self.pending.insert(op);
                let out = op.await;
                self.pending = None;
                out
            }
            Err((e, buf)) => (Err(e), buf),
        }
    }
}

impl RecvHalf for UringRecv {
    async fn recv(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() == buf.len() {
            return (
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "recv needs spare capacity",
                )),
                buf,
            );
        }
        if !self.leftover.is_empty() {
            let n = self.take_leftover(&mut buf);
            TransportStats::add(&self.stats.recv_bytes, n as u64);
            return (Ok(n), buf);
        }
        let (r, buf) = if self.ring.is_some() {
            self.recv_uring(buf).await
        } else {
            self.recv_ready(buf).await
        };
        if let Ok(n) = r {
            TransportStats::add(&self.stats.recv_bytes, n as u64);
        }
        (r, buf)
    }
}

/// A listener whose connections use the zero-copy engine.
#[derive(Debug)]
pub struct UringAcceptor {
    listener: TcpListener,
    config: UringConfig,
}

impl UringAcceptor {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener, config: UringConfig) -> Self {
        UringAcceptor { listener, config }
    }

    /// Binds `addr`.
    pub async fn bind(addr: impl ToSocketAddrs, config: UringConfig) -> io::Result<Self> {
        Ok(UringAcceptor {
            listener: TcpListener::bind(addr).await?,
            config,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Acceptor for UringAcceptor {
    type Transport = UringTransport;

    async fn accept(&mut self) -> io::Result<UringTransport> {
        let (stream, _) = self.listener.accept().await?;
        from_tcp(stream, self.config.clone())
    }
}
