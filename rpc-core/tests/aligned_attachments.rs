//! Every attachment handed to the application — the server's handler and the client's caller —
//! starts at a 64-byte-aligned address (`docs/wire.md`, "Padding"), across attachment sizes and
//! counts, over the in-memory and TCP transports, with small reads (a pipe that holds little)
//! and large ones, one call at a time and many in flight (frames packed into one read).
//! transport-uring's receive modes have the same test in `transport-uring/tests/aligned.rs`.

mod common;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::{mem, Transport};
use rpc_core::{Client, ClientConfig, Server};

#[path = "shared/aligned.rs"]
mod aligned;

use aligned::*;

async fn over_mem(capacity: usize, what: &str) {
    let (a, b) = mem::pair_with_capacity(capacity);
    let service = AlignCheck::default();
    tokio::spawn(Server::builder().build(service.clone()).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    exercise(&client, &service, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_large_reads() {
    over_mem(mem::PIPE_CAPACITY, "mem, 1 MiB pipe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_small_reads() {
    // A pipe of 1000 bytes: every read is short and frames arrive cut at arbitrary points.
    over_mem(1000, "mem, 1000-byte pipe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let service = AlignCheck::default();
    let handle = Server::builder().build(service.clone()).serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    exercise(&client, &service, "tcp").await;
    drop(client);
    handle.shutdown().await;
}

#[test]
fn a_transport_reports_align_copies_in_its_stats() {
    let (a, _b) = mem::pair();
    let s = a.stats().snapshot();
    assert_eq!((s.align_copies, s.align_copy_bytes), (0, 0));
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"align_copies\":0") && json.contains("\"align_copy_bytes\":0"), "{json}");
}
