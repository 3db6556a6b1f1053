//! TCP over tokio: the portable transport. Copies in the kernel, never in user space.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use super::stream::StreamSend;
use super::{Acceptor, RecvHalf, Transport, TransportStats};

/// A TCP connection as a transport: vectored writes (as [`super::StreamTransport`]) and reads
/// that learn the socket is empty without an extra syscall ([`read_ready`]).
#[derive(Debug)]
pub struct TcpTransport {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    stats: Arc<TransportStats>,
}

/// Wraps a connected stream, with `TCP_NODELAY` on (frames are written whole; Nagle would only
/// delay small calls).
pub fn from_stream(stream: TcpStream) -> io::Result<TcpTransport> {
    stream.set_nodelay(true)?;
    let (reader, writer) = stream.into_split();
    Ok(TcpTransport { reader, writer, stats: Arc::new(TransportStats::new("tcp")) })
}

impl Transport for TcpTransport {
    type Send = StreamSend<OwnedWriteHalf>;
    type Recv = TcpRecv;

    fn split(self) -> (TcpRecv, StreamSend<OwnedWriteHalf>) {
        (TcpRecv { reader: self.reader, stats: self.stats.clone() }, StreamSend::new(self.writer, self.stats))
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }
}

/// Receiving half of a [`TcpTransport`].
#[derive(Debug)]
pub struct TcpRecv {
    reader: OwnedReadHalf,
    stats: Arc<TransportStats>,
}

impl RecvHalf for TcpRecv {
    async fn recv(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let r = read_ready(self.reader.as_ref(), &mut buf).await;
        if let Ok(n) = r {
            TransportStats::add(&self.stats.recv_bytes, n as u64);
        }
        (r, buf)
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
            (_, Some(n)) | (Ok(n), None) => return Ok(n),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => stream.readable().await?,
            (Err(e), None) => return Err(e),
        }
    }
}

/// A TCP listener as an [`Acceptor`].
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: TcpListener,
}

impl TcpAcceptor {
    /// Wraps a bound listener.
    pub fn new(listener: TcpListener) -> Self {
        TcpAcceptor { listener }
    }

    /// Binds `addr`.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(TcpAcceptor { listener: TcpListener::bind(addr).await? })
    }

    /// The bound address (the port, when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Acceptor for TcpAcceptor {
    type Transport = TcpTransport;

    async fn accept(&mut self) -> io::Result<TcpTransport> {
        let (stream, _) = self.listener.accept().await?;
        from_stream(stream)
    }
}
