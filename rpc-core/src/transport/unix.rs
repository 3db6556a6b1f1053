//! Unix-domain stream sockets: the transport for peers on the same host. The bytes go through
//! the same vectored writes as TCP ([`super::StreamTransport`]'s halves), without the TCP/IP
//! stack; the file system's permissions on the socket decide who may connect
//! (`docs/security.md`).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use rpc_core::transport::unix::UnixAcceptor;
//! use rpc_core::{Body, BoxFuture, CallOptions, Client, ClientConfig, Server, ServerRequest, Service, Status};
//!
//! struct Echo;
//! impl Service for Echo {
//!     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
//!         Box::pin(async move { Ok(req.body) })
//!     }
//! }
//!
//! let dir = std::env::temp_dir().join(format!("zcrpc-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("echo.sock");
//! let handle = Server::builder().build(Echo).serve(UnixAcceptor::bind(&path).await.unwrap());
//! let client = Client::connect_unix(&path, ClientConfig::default()).await.unwrap();
//! let reply = client.call(1, Body::message("hi".into()), CallOptions::default()).await.unwrap();
//! assert_eq!(&reply.message[..], b"hi");
//! handle.shutdown().await;
//! assert!(!path.exists(), "the socket file goes with the server");
//! # std::fs::remove_dir(&dir).unwrap();
//! # });
//! ```

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};

use super::socket::{SocketRead, SocketWrite};
use super::stream::{StreamRecv, StreamSend};
use super::{Acceptor, Transport, TransportStats};
use crate::service::Peer;

/// A Unix-socket connection as a transport.
#[derive(Debug)]
pub struct UnixTransport {
    /// Shared by the two halves and the driver's direct path ([`super::DirectWrite`]).
    stream: Arc<UnixStream>,
    stats: Arc<TransportStats>,
    /// The path handlers see as the peer ([`Peer::unix`]).
    peer: Arc<Path>,
}

/// Wraps a connected stream; `socket` names the connection when the peer's end has no path of
/// its own (the path connected to, or the listener's).
pub fn from_stream(stream: UnixStream, socket: &Path) -> UnixTransport {
    let named = stream.peer_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let peer: Arc<Path> = named.as_deref().unwrap_or(socket).into();
    UnixTransport { stream: Arc::new(stream), stats: Arc::new(TransportStats::new("unix")), peer }
}

/// Connects to the socket at `path`. A failure names the path.
pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixTransport> {
    let path = path.as_ref();
    let stream = UnixStream::connect(path).await.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(from_stream(stream, path))
}

impl Transport for UnixTransport {
    type Send = StreamSend<SocketWrite<UnixStream>>;
    type Recv = StreamRecv<SocketRead<UnixStream>>;

    fn split(self) -> (Self::Recv, Self::Send) {
        let recv = StreamRecv::new(SocketRead(self.stream.clone()), self.stats.clone());
        (recv, StreamSend::on_socket(self.stream, self.stats, |w| super::sendfile::FileSocket::Unix(&w.0)))
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    fn peer(&self) -> Peer {
        Peer::unix(self.peer.clone())
    }
}

/// A Unix-socket listener as an [`Acceptor`]. It removes its socket file when dropped (when the
/// server's accept loop ends), unless another socket has replaced it since.
#[derive(Debug)]
pub struct UnixAcceptor {
    listener: UnixListener,
    path: Arc<Path>,
    /// The socket file's device and inode, so that only our own file is removed.
    file: Option<(u64, u64)>,
}

impl UnixAcceptor {
    /// Binds a socket at `path`. A socket file left there by a server that is gone (nobody
    /// accepts on it) is replaced; a server still listening there, or a file that is not a
    /// socket, is an error naming the path, and nothing is removed.
    pub async fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let named = |e: io::Error| io::Error::new(e.kind(), format!("binding unix:{}: {e}", path.display()));
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                clear_stale(path).await?;
                UnixListener::bind(path).map_err(named)?
            }
            Err(e) => return Err(named(e)),
        };
        let file = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        Ok(UnixAcceptor { listener, path: path.into(), file })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the socket file at `path` if it is stale (a socket nobody accepts on); otherwise
/// says what is there.
async fn clear_stale(path: &Path) -> io::Result<()> {
    let shown = path.display();
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("binding unix:{shown}: the path exists and is not a socket; not removing it"),
        ));
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("binding unix:{shown}: a server is already listening on this socket"),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!("unix:{shown}: removing a stale socket file (nobody accepts on it)");
            std::fs::remove_file(path)
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("binding unix:{shown}: the path is taken, and probing it failed: {e}"))),
    }
}

impl Acceptor for UnixAcceptor {
    type Transport = UnixTransport;

    async fn accept(&mut self) -> io::Result<UnixTransport> {
        let (stream, _) = self.listener.accept().await?;
        Ok(from_stream(stream, &self.path))
    }
}

impl Drop for UnixAcceptor {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.file {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
