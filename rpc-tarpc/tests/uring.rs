//! A tarpc service over zcrpc's io_uring engine (`rpc_tarpc::uring`, transport-uring with its
//! default configuration: the best backend this kernel offers): small calls, errors, large
//! messages both ways and in flight together, the re-dial after the server closes its
//! connection, and the errors of a bad configuration or a missing server.

#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::{client, context};
use transport_uring::UringConfig;

#[tarpc::service]
pub trait Blobs {
    async fn echo(data: Bytes) -> Bytes;
    /// `len` bytes counting up from `seed`.
    async fn fill(seed: u8, len: u64) -> Bytes;
    async fn check(key: String) -> Result<u64, String>;
}

#[derive(Clone)]
struct Impl;

impl Blobs for Impl {
    async fn echo(self, _: context::Context, data: Bytes) -> Bytes {
        data
    }

    async fn fill(self, _: context::Context, seed: u8, len: u64) -> Bytes {
        counting(seed, len as usize)
    }

    async fn check(self, _: context::Context, key: String) -> Result<u64, String> {
        if key == "ok" {
            Ok(7)
        } else {
            Err(format!("no key {key}"))
        }
    }
}

fn counting(seed: u8, len: usize) -> Bytes {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect::<Vec<u8>>().into()
}

fn within(d: Duration) -> context::Context {
    let mut ctx = context::current();
    ctx.deadline = Instant::now() + d;
    ctx
}

/// A listener on the engine; its address and its connections as tarpc transports.
async fn listen() -> (SocketAddr, rpc_tarpc::Incoming<BlobsRequest, BlobsResponse>) {
    let incoming = rpc_tarpc::uring::listen("127.0.0.1:0", UringConfig::default()).await.unwrap();
    (incoming.local_addr().unwrap(), incoming)
}

/// Serves one connection's channel, each request in a task of its own.
fn serve_channel(transport: rpc_tarpc::ServerTransport<BlobsRequest, BlobsResponse>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(BaseChannel::with_defaults(transport).execute(Impl.serve()).for_each(|response| async {
        tokio::spawn(response);
    }))
}

/// A tarpc client on the engine (it dials `addr` again whenever its connection is lost), and
/// the zcrpc client under it.
async fn connect(addr: SocketAddr) -> (rpc_core::Client, BlobsClient) {
    let transport = rpc_tarpc::uring::connect(addr, UringConfig::default()).await.unwrap();
    let zc = transport.client().clone();
    (zc, BlobsClient::new(client::Config::default(), transport).spawn())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_calls_go_over_the_engine() {
    let (addr, incoming) = listen().await;
    tokio::spawn(incoming.filter_map(|r| async { r.ok() }).for_each(|t| async {
        serve_channel(t);
    }));
    let (zc, client) = connect(addr).await;
    // The engine's best backend here carries the calls (`uring` where io_uring's zero-copy
    // send is offered, as on the machines CI runs on).
    assert_eq!(zc.stats().transport, transport_uring::probe().backend.name());

    assert_eq!(client.check(context::current(), "ok".into()).await.unwrap(), Ok(7));
    assert_eq!(client.check(context::current(), "k".into()).await.unwrap(), Err("no key k".to_owned()));

    // Eight 1 MiB answers in flight at once (small requests: on the `tarpc/stream` call), each
    // of its own bytes.
    let downloads: Vec<_> = (0..8u8)
        .map(|k| {
            let client = client.clone();
            tokio::spawn(async move {
                let len = (1 << 20) + k as usize;
                let got = client.fill(within(Duration::from_secs(60)), k, len as u64).await.unwrap();
                assert!(got == counting(k, len), "answer {k} came back changed");
            })
        })
        .collect();
    for d in downloads {
        d.await.unwrap();
    }
    // A 16 MiB request (a `tarpc/call` of its own) and its echo.
    let data = counting(9, 16 << 20);
    let back = client.echo(within(Duration::from_secs(60)), data.clone()).await.unwrap();
    assert!(back == data, "the 16 MiB echo came back changed");
    let stats = zc.stats();
    assert!(stats.recv_bytes >= (8 << 20) + (16 << 20), "received {} bytes", stats.recv_bytes);
    assert!(stats.sent_bytes >= 16 << 20, "sent {} bytes", stats.sent_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_dials_the_engine_again_after_the_server_closes_its_connection() {
    let (addr, mut incoming) = listen().await;
    let (_zc, client) = connect(addr).await;
    let transport = incoming.next().await.unwrap().unwrap();
    // tarpc's `max_channels_per_key` keys on it, as over tarpc's own transport.
    assert_eq!(transport.peer_addr().unwrap().ip(), addr.ip());
    let first = serve_channel(transport);
    assert_eq!(client.check(context::current(), "ok".into()).await.unwrap(), Ok(7));
    // The server drops the channel, which closes its connection; the next one is served.
    first.abort();
    let _ = first.await;
    tokio::spawn(incoming.filter_map(|r| async { r.ok() }).for_each(|t| async {
        serve_channel(t);
    }));
    let mut last = None;
    for _ in 0..100 {
        match client.fill(within(Duration::from_secs(5)), 1, 3 << 20).await {
            Ok(got) => {
                assert!(got == counting(1, 3 << 20), "the answer on the new connection came back changed");
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the client never reached the next connection: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_or_a_missing_server_is_an_error_that_says_which() {
    // A configuration the engine refuses: the error names the field, before anything binds.
    let bad = UringConfig { tcp_user_timeout: Some(Duration::ZERO), ..UringConfig::default() };
    let e = rpc_tarpc::uring::listen::<BlobsRequest, BlobsResponse>("127.0.0.1:0", bad.clone()).await.unwrap_err();
    assert!(e.to_string().contains("tcp_user_timeout"), "{e}");
    let (addr, incoming) = listen().await;
    let e = rpc_tarpc::uring::connect::<BlobsRequest, BlobsResponse>(addr, bad).await.unwrap_err();
    assert!(e.to_string().contains("tcp_user_timeout"), "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "the error names the address: {e}");
    // Nobody listens any more (the listener closes once its task has gone): the error names
    // the address and the engine.
    drop(incoming);
    let mut closed = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the listener still accepts 2 s after its Incoming was dropped");
    let e = rpc_tarpc::uring::connect::<BlobsRequest, BlobsResponse>(addr, UringConfig::default()).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&format!("{addr} (io_uring engine)")), "{text}");
}
