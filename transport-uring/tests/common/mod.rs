//! Helpers shared by the integration tests: a connected pair over 127.0.0.1, a reader that
//! collects the peer's bytes, deterministic patterns, and the feature check.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use rpc_core::{Body, BoxFuture, Client, ClientConfig, Segment, Server, ServerHandle, ServerRequest, Service, Status, Transmit};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use transport_uring::{Backend, UringAcceptor, UringConfig, UringTransport};

/// Every test is bounded in time.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Skips (returns false, printing why) when the backend is missing; on this project's machines
/// nothing skips.
pub fn require(backend: Backend) -> bool {
    let p = transport_uring::probe();
    let ok = match backend {
        Backend::Uring => p.backend == Backend::Uring,
        Backend::MsgZc => p.msg_zerocopy,
        _ => true,
    };
    if !ok {
        eprintln!("SKIP: backend {backend} unavailable: {}", p.reason);
    }
    ok
}

/// A transport connected to a plain tokio stream (the peer).
pub async fn pair(config: UringConfig) -> (UringTransport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (t, peer) = tokio::join!(transport_uring::connect(addr, config), listener.accept());
    (t.unwrap(), peer.unwrap().0)
}

/// Reads everything until EOF.
pub async fn read_all(mut s: TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).await.unwrap();
    v
}

/// `n` bytes of a pattern that differs per `seed`.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

/// A transmit with a small head and the given segments.
pub fn transmit(head: &[u8], segs: Vec<Bytes>) -> Transmit {
    Transmit {
        head: Bytes::copy_from_slice(head),
        segments: segs.into_iter().map(Segment::Bytes).collect(),
    }
}

/// Method id of [`Echo`].
pub const ECHO: u32 = 1;

/// A service that answers method [`ECHO`] with the request's body.
pub struct Echo;

impl Service for Echo {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move {
            match req.method {
                ECHO => Ok(req.body),
                m => Err(Status::unimplemented(m)),
            }
        })
    }
}

/// An [`Echo`] server on 127.0.0.1 over this transport with `cfg`, and a client of it with the
/// same `cfg`.
pub async fn echo_over(cfg: UringConfig) -> (ServerHandle, Client) {
    let acceptor = UringAcceptor::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(Echo).serve(acceptor);
    let transport = transport_uring::connect(addr, cfg).await.unwrap();
    let client = Client::connect(transport, ClientConfig::default()).await.unwrap();
    (handle, client)
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
