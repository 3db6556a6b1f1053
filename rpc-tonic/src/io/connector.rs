//! [`UringConnector`]: the client side, for `Endpoint::connect_with_connector`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use transport_uring::UringConfig;

use super::{IoStats, UringIo};

/// Connects tonic's channels over the io_uring transport: a `tower::Service<http::Uri>`
/// yielding [`UringIo`] (in hyper's `TokioIo`), for
/// `tonic::transport::Endpoint::connect_with_connector` (or `_lazy`). The URI's host and port
/// (80 when absent) are resolved and connected with `transport_uring::connect`, in `config`.
#[derive(Debug, Clone, Default)]
pub struct UringConnector {
    config: UringConfig,
    io_stats: Arc<IoStats>,
}

impl UringConnector {
    /// A connector whose connections use `config` (`UringConfig::default()`: the best backend
    /// the kernel offers).
    pub fn new(config: UringConfig) -> UringConnector {
        UringConnector { config, io_stats: Arc::default() }
    }

    /// The write counters of every connection it made.
    pub fn io_stats(&self) -> Arc<IoStats> {
        self.io_stats.clone()
    }
}

impl tower::Service<http::Uri> for UringConnector {
    type Response = TokioIo<UringIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<UringIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        let io_stats = self.io_stats.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            // An IPv6 literal comes bracketed.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(80);
            config.validate()?;
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let local = stream.local_addr().ok();
            let transport = transport_uring::from_tcp(stream, config)?;
            Ok(TokioIo::new(UringIo::with_stats(transport, local, io_stats)))
        })
    }
}
