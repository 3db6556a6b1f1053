//! TCP over tokio: the portable transport. Copies in the kernel, never in user space.

use std::io;
use std::net::SocketAddr;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use super::{Acceptor, StreamTransport};

/// A TCP connection as a transport.
pub type TcpTransport = StreamTransport<OwnedReadHalf, OwnedWriteHalf>;

/// Wraps a connected stream, with `TCP_NODELAY` on (frames are written whole; Nagle would only
/// delay small calls).
pub fn from_stream(stream: TcpStream) -> io::Result<TcpTransport> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    Ok(StreamTransport::new(r, w, "tcp"))
}

/// Connects to `addr`.
pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpTransport> {
    from_stream(TcpStream::connect(addr).await?)
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
