//! [`UringIncoming`]: the server side, for `Server::serve_with_incoming`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use std::future::Future;

use futures::Stream;
use tokio::net::{TcpListener, ToSocketAddrs};
use transport_uring::UringConfig;

use super::{IoStats, UringIo};

/// The connections of a listener, each over the io_uring transport: a stream of
/// `io::Result<`[`UringIo`]`>` for `tonic::transport::Server::serve_with_incoming`.
///
/// It yields no errors (tonic's server stops at most): a connection the transport cannot set
/// up is closed and logged, and when `accept` itself fails (out of descriptors, say) the
/// listener is retried after [`ACCEPT_BACKOFF`], logged.
pub struct UringIncoming {
    listener: TcpListener,
    config: UringConfig,
    io_stats: Arc<IoStats>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for UringIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIncoming").field("listener", &self.listener).finish()
    }
}

/// How long the listener rests after `accept` failed for a reason of its own (`EMFILE`, ...).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl UringIncoming {
    /// Binds `addr`; fails first if `config` is invalid.
    pub async fn bind(addr: impl ToSocketAddrs, config: UringConfig) -> io::Result<UringIncoming> {
        config.validate()?;
        UringIncoming::new(TcpListener::bind(addr).await?, config)
    }

    /// Serves a bound listener.
    pub fn new(listener: TcpListener, config: UringConfig) -> io::Result<UringIncoming> {
        config.validate()?;
        Ok(UringIncoming { listener, config, io_stats: Arc::default(), backoff: None })
    }

    /// The write counters of every connection it accepted.
    pub fn io_stats(&self) -> Arc<IoStats> {
        self.io_stats.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Stream for UringIncoming {
    type Item = io::Result<UringIo>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<UringIo>>> {
        let this = self.get_mut();
        loop {
            if let Some(backoff) = &mut this.backoff {
                ready!(backoff.as_mut().poll(cx));
                this.backoff = None;
            }
            let (stream, peer) = match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(accepted)) => accepted,
                // A connection that went away before it was accepted.
                Poll::Ready(Err(e)) if gone(e.kind()) => continue,
                Poll::Ready(Err(e)) => {
                    tracing::warn!("accepting a connection failed ({e}); retrying in {ACCEPT_BACKOFF:?}");
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                    continue;
                }
            };
            let local = stream.local_addr().ok();
            match transport_uring::from_tcp(stream, this.config.clone()) {
                Ok(t) => return Poll::Ready(Some(Ok(UringIo::with_stats(t, local, this.io_stats.clone())))),
                Err(e) => tracing::warn!(%peer, "setting up the io_uring transport of a connection failed ({e}); closing it"),
            }
        }
    }
}

/// Accept errors that concern one connection, not the listener.
fn gone(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}
