//! [`UringIncoming`]: the server side, for `Server::serve_with_incoming`.

use std::io;
use std::net::SocketAddr;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, ToSocketAddrs};
use transport_uring::UringConfig;

use super::stream::LiveSlot;
use super::{IoStats, UringIo};

/// The connections of a listener, each over the io_uring transport: a stream of
/// `io::Result<`[`UringIo`]`>` for `tonic::transport::Server::serve_with_incoming`.
///
/// It yields no errors (tonic's server stops at most): a connection the transport cannot set
/// up is closed and logged, and when `accept` itself fails (out of descriptors, say) the
/// listener is retried after [`ACCEPT_BACKOFF`], logged.
///
/// What a peer can make it hold is bounded, as zcrpc's own server bounds it (tonic's server
/// has neither bound): at most [`UringIncoming::max_connections`] connections at once (default
/// [`MAX_CONNECTIONS`]; one more is accepted and closed at once, logged, so its client sees
/// the refusal instead of waiting in the listen backlog), and a connection whose peer sends
/// nothing within [`UringIncoming::first_bytes_timeout`] (default [`FIRST_BYTES_TIMEOUT`];
/// an HTTP/2 client sends its preface first) ends with a read error, which ends it in hyper.
/// A connection that went quiet later is tonic's to bound (`Server::http2_keepalive_interval`
/// and `http2_keepalive_timeout`, `Server::timeout` per request).
pub struct UringIncoming {
    listener: TcpListener,
    config: UringConfig,
    io_stats: Arc<IoStats>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Connections accepted and not yet dropped.
    live: Arc<AtomicUsize>,
    max_connections: usize,
    first_bytes_timeout: Duration,
}

impl std::fmt::Debug for UringIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringIncoming")
            .field("listener", &self.listener)
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("max_connections", &self.max_connections)
            .field("first_bytes_timeout", &self.first_bytes_timeout)
            .finish()
    }
}

/// How long the listener rests after `accept` failed for a reason of its own (`EMFILE`, ...).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections a [`UringIncoming`] holds at once unless told otherwise (zcrpc's server's
/// default too).
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a new connection's peer may take to send its first bytes unless told otherwise
/// (zcrpc's handshake timeout too).
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

impl UringIncoming {
    /// Binds `addr`; fails first if `config` is invalid.
    pub async fn bind(addr: impl ToSocketAddrs, config: UringConfig) -> io::Result<UringIncoming> {
        config.validate()?;
        UringIncoming::new(TcpListener::bind(addr).await?, config)
    }

    /// Serves a bound listener.
    pub fn new(listener: TcpListener, config: UringConfig) -> io::Result<UringIncoming> {
        config.validate()?;
        Ok(UringIncoming {
            listener,
            config,
            io_stats: Arc::default(),
            backoff: None,
            live: Arc::default(),
            max_connections: MAX_CONNECTIONS,
            first_bytes_timeout: FIRST_BYTES_TIMEOUT,
        })
    }

    /// Holds at most `n` connections at once (at least 1); one more is closed as soon as it is
    /// accepted. Default [`MAX_CONNECTIONS`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Ends a connection whose peer sent nothing within `d` of its accept. Default
    /// [`FIRST_BYTES_TIMEOUT`].
    pub fn first_bytes_timeout(mut self, d: Duration) -> Self {
        self.first_bytes_timeout = d;
        self
    }

    /// The count of connections accepted and still open (read it with `load`); it outlives
    /// the stream, which `serve_with_incoming` takes.
    pub fn live_connections(&self) -> Arc<AtomicUsize> {
        self.live.clone()
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
            let Some(slot) = LiveSlot::take(&this.live, this.max_connections) else {
                let max = this.max_connections;
                tracing::warn!(%peer, "at the limit of {max} connections; closing a new one");
                drop(stream);
                continue;
            };
            let local = stream.local_addr().ok();
            match transport_uring::from_tcp(stream, this.config.clone()) {
                Ok(t) => {
                    let io = UringIo::with_stats(t, local, this.io_stats.clone()).bounded(slot, this.first_bytes_timeout);
                    return Poll::Ready(Some(Ok(io)));
                }
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
