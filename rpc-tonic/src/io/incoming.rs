//! [`UringIncoming`]: the server side, for `Server::serve_with_incoming`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::net::{TcpListener, ToSocketAddrs};
use transport_uring::UringConfig;

use super::{IoStats, UringIo};

/// The connections of a listener, each over the io_uring transport: a stream of
/// `io::Result<`[`UringIo`]`>` for `tonic::transport::Server::serve_with_incoming`.
/// An accepted connection the transport cannot set up is yielded as its error (tonic logs it
/// and carries on).
#[derive(Debug)]
pub struct UringIncoming {
    listener: TcpListener,
    config: UringConfig,
    io_stats: Arc<IoStats>,
}

impl UringIncoming {
    /// Binds `addr`; fails first if `config` is invalid.
    pub async fn bind(addr: impl ToSocketAddrs, config: UringConfig) -> io::Result<UringIncoming> {
        config.validate()?;
        UringIncoming::new(TcpListener::bind(addr).await?, config)
    }

    /// Serves a bound listener.
    pub fn new(listener: TcpListener, config: UringConfig) -> io::Result<UringIncoming> {
        config.validate()?;
        Ok(UringIncoming { listener, config, io_stats: Arc::default() })
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
        let (stream, _) = match this.listener.poll_accept(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(accepted)) => accepted,
        };
        let local = stream.local_addr().ok();
        Poll::Ready(Some(
            transport_uring::from_tcp(stream, this.config.clone()).map(|t| UringIo::with_stats(t, local, this.io_stats.clone())),
        ))
    }
}
