//! `UringTransport`: a TCP connection whose sends go through the zero-copy engine.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rpc_core::transport::{Acceptor, Transport};
use rpc_core::TransportStats;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::config::{Backend, UringConfig};
use crate::engine::close::CloseHandle;
use crate::engine::msgzc::MsgZc;
use crate::engine::{Shared, Submitter, UringSend};
use crate::recv::UringRecv;
use crate::sys::ring::{Ring, RingHandle};

/// Submission entries per connection ring (a send uses one at a time; receives one).
const RING_ENTRIES: u32 = 64;

/// A TCP connection with the zero-copy send engine. Split it (`Transport::split`) into
/// [`UringRecv`] and [`UringSend`].
pub struct UringTransport {
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    submitter: Submitter,
    ring: Option<RingHandle>,
    close: CloseHandle,
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
    config.validate()?;
    from_tcp(TcpStream::connect(addr).await?, config)
}

/// Wraps a connected tokio stream (after [`UringConfig::validate`]): `TCP_NODELAY`, the
/// configured `SO_SNDBUF`, and the backend resolved from the probe (falling back, and logging
/// why, when the one asked for is refused).
/// Must be called inside a tokio runtime (it starts the connection's completion reaper).
pub fn from_tcp(stream: TcpStream, config: UringConfig) -> io::Result<UringTransport> {
    from_tcp_as(stream, config, false)
}

/// [`from_tcp`]; with `tls`, the stats are named `<backend>+tls`.
pub(crate) fn from_tcp_as(stream: TcpStream, config: UringConfig, tls: bool) -> io::Result<UringTransport> {
    let shared_of = |config: UringConfig, backend: Backend| {
        let name = match (tls, backend) {
            (false, b) => b.name(),
            (true, Backend::Uring) => "uring+tls",
            (true, Backend::MsgZc) => "msgzc+tls",
            (true, _) => "tcp+tls",
        };
        Shared::named(config, backend, name)
    };
    config.validate()?;
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(&stream);
    if let Some(n) = config.sndbuf {
        sock.set_send_buffer_size(n)?;
    }
    if let Some(t) = config.tcp_user_timeout {
        sock.set_tcp_user_timeout(Some(t))?;
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
        let shared = shared_of(config.clone(), Backend::MsgZc);
        match MsgZc::start(&stream, &shared) {
            Ok((m, h)) => {
                msgzc = Some(m);
                reaper = Some(h);
                shared
            }
            Err(e) => {
                tracing::warn!("SO_ZEROCOPY refused ({e}); copying");
                shared_of(config, Backend::Copy)
            }
        }
    } else {
        shared_of(config, shared_backend)
    };
    let submitter = match (&ring, msgzc) {
        (Some(r), _) => Submitter::Uring(r.clone()),
        (None, Some(m)) => Submitter::MsgZc(m),
        (None, None) => Submitter::Copy,
    };
    let close = CloseHandle::new(stream.clone(), shared.clone(), reaper);
    Ok(UringTransport {
        stream,
        shared,
        submitter,
        ring,
        close,
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

    /// The socket's `TCP_USER_TIMEOUT` as the kernel has it (`None`: the kernel default).
    pub fn tcp_user_timeout(&self) -> io::Result<Option<std::time::Duration>> {
        socket2::SockRef::from(&*self.stream).tcp_user_timeout()
    }
}

impl UringTransport {
    /// The sending half, and what a receiving half of another kind needs: the socket, the
    /// counters, the close handle (`tls`: records are read on readiness, not by the ring) and
    /// whether the receiver sets its low-water mark ([`UringConfig::recv_lowat`]).
    pub(crate) fn split_send(self) -> (UringSend, Arc<TcpStream>, Arc<TransportStats>, CloseHandle, bool) {
        let lowat = self.shared.config.recv_lowat;
        let stream = self.stream.clone();
        let stats = self.shared.stats.clone();
        let close = self.close.clone();
        let (_recv, send) = Transport::split(self);
        (send, stream, stats, close, lowat)
    }
}

impl Transport for UringTransport {
    type Send = UringSend;
    type Recv = UringRecv;

    fn split(self) -> (UringRecv, UringSend) {
        let recv = UringRecv::new(
            self.stream.clone(),
            &self.shared.config,
            self.shared.stats.clone(),
            self.ring.as_ref(),
            self.close.clone(),
        );
        let send = UringSend {
            stream: self.stream,
            shared: self.shared,
            submitter: self.submitter,
            interrupted: false,
            pipe: None,
            failed: None,
            _close: self.close,
        };
        drop(self.ring);
        (recv, send)
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.shared.stats.clone()
    }

    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.peer_addr().ok()
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

    /// Binds `addr`; fails first if the configuration is invalid ([`UringConfig::validate`]).
    pub async fn bind(addr: impl ToSocketAddrs, config: UringConfig) -> io::Result<Self> {
        config.validate()?;
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
