//! TCP over tokio: the portable transport. Copies in the kernel, never in user space.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use super::socket::SocketWrite;
use super::stream::StreamSend;
use super::{Acceptor, RecvHalf, Transport, TransportStats};

/// The writing side of a [`TcpTransport`].
pub type TcpWrite = SocketWrite<TcpStream>;

/// A TCP connection as a transport: vectored writes (as [`super::StreamTransport`]) and reads
/// that learn the socket is empty without an extra syscall ([`read_ready`]).
#[derive(Debug)]
pub struct TcpTransport {
    /// Shared by the two halves (tokio lets one task wait to read while another writes) and
    /// by the driver's direct path ([`super::DirectWrite`]).
    stream: Arc<TcpStream>,
    stats: Arc<TransportStats>,
}

/// How long sent data may stay unacknowledged before the kernel gives up on the peer
/// (`TCP_USER_TIMEOUT`), set on every connection: without it a peer that vanished without a
/// reset keeps a socket retransmitting for about 15 minutes (`tcp_retries2`).
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Wraps a connected stream, with `TCP_NODELAY` on (frames are written whole; Nagle would only
/// delay small calls) and `TCP_USER_TIMEOUT` at [`USER_TIMEOUT`] where the OS has it.
pub fn from_stream(stream: TcpStream) -> io::Result<TcpTransport> {
    from_stream_with(stream, Some(USER_TIMEOUT))
}

/// [`from_stream`] with another `TCP_USER_TIMEOUT` (`None` leaves the kernel's default).
pub fn from_stream_with(stream: TcpStream, user_timeout: Option<Duration>) -> io::Result<TcpTransport> {
    configure(&stream, user_timeout)?;
    Ok(TcpTransport { stream: Arc::new(stream), stats: Arc::new(TransportStats::new("tcp")) })
}

impl TcpTransport {
    /// The connection's `TCP_USER_TIMEOUT` (see [`user_timeout`]).
    pub fn user_timeout(&self) -> io::Result<Option<Duration>> {
        user_timeout(&self.stream)
    }
}

impl Transport for TcpTransport {
    type Send = StreamSend<TcpWrite>;
    type Recv = TcpRecv;

    fn split(self) -> (TcpRecv, StreamSend<TcpWrite>) {
        let recv = TcpRecv { stream: self.stream.clone(), stats: self.stats.clone() };
        (recv, StreamSend::on_socket(self.stream, self.stats, |w| super::sendfile::FileSocket::Tcp(&w.0)))
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.peer_addr().ok()
    }
}

/// Receiving half of a [`TcpTransport`].
#[derive(Debug)]
pub struct TcpRecv {
    stream: Arc<TcpStream>,
    stats: Arc<TransportStats>,
}

impl RecvHalf for TcpRecv {
    async fn recv(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let r = read_ready(&self.stream, &mut buf).await;
        if let Ok(n) = r {
            TransportStats::add(&self.stats.recv_bytes, n as u64);
        }
        (r, buf)
    }
}

/// `TCP_NODELAY` on and `TCP_USER_TIMEOUT` at `user_timeout`: what every connection of the TCP
/// (and TLS) transport gets.
pub(crate) fn configure(stream: &TcpStream, user_timeout: Option<Duration>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    set_user_timeout(stream, user_timeout)
}

/// Sets `TCP_USER_TIMEOUT` (Linux and Android; elsewhere it does nothing).
pub fn set_user_timeout(stream: &TcpStream, timeout: Option<Duration>) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if timeout.is_some() {
        socket2::SockRef::from(stream).set_tcp_user_timeout(timeout)?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, timeout);
    Ok(())
}

/// The `TCP_USER_TIMEOUT` a stream has (Linux and Android; `None` elsewhere or when unset).
pub fn user_timeout(stream: &TcpStream) -> io::Result<Option<Duration>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return socket2::SockRef::from(stream).tcp_user_timeout();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = stream;
        Ok(None)
    }
}

/// Connects to `addr`.
pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpTransport> {
    from_stream(TcpStream::connect(addr).await?)
}

/// Reads what `stream` has into the spare capacity of `buf` (never growing it), waiting for
/// readiness when there is nothing; `Ok(0)` at the end of the stream.
///
/// A read that returns less than the room it was given emptied the socket's receive queue, so
/// the readiness tokio caches is cleared right there: the next call waits for the reactor
/// instead of spending a `read` syscall to learn `EAGAIN`. Safe against lost wake-ups: tokio
/// clears readiness only if no new readiness event arrived since it was sampled, before the read.
pub async fn read_ready(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        match try_read_ready(stream, buf) {
            Some(r) => return r,
            None => stream.readable().await?,
        }
    }
}

/// One try of [`read_ready`] without waiting: `None` when there is nothing to read (the
/// caller waits for readiness its own way, as a transport setting its socket's low-water mark
/// does, then tries again).
pub fn try_read_ready(stream: &TcpStream, buf: &mut BytesMut) -> Option<io::Result<usize>> {
    let room = buf.capacity() - buf.len();
    let mut drained = None;
    let r = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        if n > 0 && n < room {
            drained = Some(n);
            // Tells tokio the socket is not readable any more (the count is kept above).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, drained) {
        (_, Some(n)) | (Ok(n), None) => Some(Ok(n)),
        (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => None,
        (Err(e), None) => Some(Err(e)),
    }
}

/// A TCP listener as an [`Acceptor`].
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: TcpListener,
    user_timeout: Option<Duration>,
}

impl TcpAcceptor {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener) -> Self {
        TcpAcceptor { listener, user_timeout: Some(USER_TIMEOUT) }
    }

    /// The `TCP_USER_TIMEOUT` of accepted connections (default [`USER_TIMEOUT`]; `None` leaves
    /// the kernel's).
    pub fn with_user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.user_timeout = timeout;
        self
    }

    /// Binds `addr`.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(TcpAcceptor::new(TcpListener::bind(addr).await?))
    }

    /// The bound address (the port, when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl TcpAcceptor {
    /// The next connection as a configured stream (`TCP_NODELAY`, `TCP_USER_TIMEOUT`), with
    /// its peer's address: for transports layered on TCP (TLS).
    #[cfg(feature = "tls")]
    pub(crate) async fn accept_stream(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = self.listener.accept().await?;
        configure(&stream, self.user_timeout)?;
        Ok((stream, addr))
    }
}

impl Acceptor for TcpAcceptor {
    type Transport = TcpTransport;

    async fn accept(&mut self) -> io::Result<TcpTransport> {
        let (stream, _) = self.listener.accept().await?;
        from_stream_with(stream, self.user_timeout)
    }
}
