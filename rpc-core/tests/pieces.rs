//! Large requests sent in pieces (`docs/pieces.md`) received over every transport of this
//! crate: the server's handler sees each attachment as one 64-byte-aligned slice with the
//! bytes sent, and the server's receive side moves at most a read block's worth per frame
//! (`recv_copied_bytes`), however the reads cut the pieces.

use std::sync::Arc;
use std::time::Duration;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::tls::TlsAcceptor;
use rpc_core::transport::{mem, tcp, unix, Acceptor, Transport};
use rpc_core::{Client, ClientConfig, Server, StatsSnapshot, TransportStats};

#[path = "shared/aligned.rs"]
mod aligned;
#[path = "tls_support/mod.rs"]
mod tls_support;

use aligned::*;

/// Bodies over the pieced size (2 MiB): one attachment, several, odd sizes and messages that
/// shift the attachments' starts, one with its pieces cut inside attachments of every size.
fn bodies() -> Vec<rpc_core::Body> {
    vec![
        body(9 << 20, 1, false, 1),
        body((1 << 20) + 3, 7, false, 2),
        body((1 << 20) + 3, 7, true, 3),
        body(3 << 20, 2, true, 5),
        body((2 << 20) + 1, 1, false, 4),
    ]
}

/// Calls with every body, one at a time then all at once, and returns the server's stats.
async fn exercise_pieces(client: &Client, service: &AlignCheck, server: &Arc<TransportStats>, what: &str) -> StatsSnapshot {
    let all = bodies();
    for (i, b) in all.iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(60), client.call(1, b.clone(), rpc_core::CallOptions::default()))
            .await
            .unwrap_or_else(|_| panic!("{what}: body {i} timed out"))
            .unwrap();
        check_reply(b, &got, &format!("{what}: body {i}"));
    }
    let mut calls = tokio::task::JoinSet::new();
    for b in all.iter().cloned() {
        let client = client.clone();
        calls.spawn(async move { (b.clone(), client.call(1, b, rpc_core::CallOptions::default()).await) });
    }
    while let Some(r) = tokio::time::timeout(Duration::from_secs(60), calls.join_next()).await.expect("pipelined calls") {
        let (sent, got) = r.unwrap();
        check_reply(&sent, &got.unwrap(), &format!("{what}: pipelined"));
    }
    let _ = service;
    let st = server.snapshot();
    eprintln!("{what}: server recv_copied_bytes {} align_copies {} ({} bytes)", st.recv_copied_bytes, st.align_copies, st.align_copy_bytes);
    let frames = 2 * all.len() as u64;
    assert!(st.recv_copied_bytes <= frames * (64 << 10), "{what}: the server moved {} bytes for {frames} frames", st.recv_copied_bytes);
    assert_eq!(st.align_copy_bytes, 0, "{what}: {st:?}");
    st
}

async fn over<T: Transport>(server: T, client: impl Transport, what: &str) {
    let stats = server.stats();
    let service = AlignCheck::default();
    tokio::spawn(Server::builder().build(service.clone()).serve_connection(server));
    let client = Client::connect(client, ClientConfig::default()).await.unwrap();
    exercise_pieces(&client, &service, &stats, what).await;
    exercise(&client, &service, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_over_mem() {
    let (a, b) = mem::pair();
    over(b, a, "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_over_a_mem_pipe_of_1000_bytes() {
    // Every read short: markers and pieces cut at arbitrary points.
    let (a, b) = mem::pair_with_capacity(1000);
    over(b, a, "mem, 1000-byte pipe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_over_a_mem_pipe_of_13_bytes() {
    let (a, b) = mem::pair_with_capacity(13);
    let stats = b.stats();
    let service = AlignCheck::default();
    tokio::spawn(Server::builder().build(service.clone()).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    let sent = body((2 << 20) + 77, 3, true, 9);
    let got = tokio::time::timeout(Duration::from_secs(120), client.call(1, sent.clone(), rpc_core::CallOptions::default()))
        .await
        .expect("a pieced request through a 13-byte pipe")
        .unwrap();
    check_reply(&sent, &got, "13-byte pipe");
    assert!(stats.snapshot().recv_copied_bytes <= 64 << 10, "{:?}", stats.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_over_tcp() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
    over(tcp::from_stream(s.unwrap().0).unwrap(), tcp::from_stream(c.unwrap()).unwrap(), "tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_over_unix() {
    let dir = std::env::temp_dir().join(format!("zcrpc-pieces-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("s");
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let (c, s) = tokio::join!(tokio::net::UnixStream::connect(&path), l.accept());
    over(unix::from_stream(s.unwrap().0, &path), unix::from_stream(c.unwrap(), &path), "unix").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_over_tls() {
    let ca = tls_support::Ca::new("pieces");
    let mut acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls_support::plain(&ca)).unwrap();
    let addr = acceptor.local_addr().unwrap();
    let service = AlignCheck::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let svc = service.clone();
    tokio::spawn(async move {
        let server = acceptor.accept().await.unwrap();
        let _ = tx.send(server.stats());
        Server::builder().build(svc).serve_connection(server).await
    });
    let client = Client::connect_tls(addr, "localhost", tls_support::trust(&ca), tls_support::config()).await.unwrap();
    let stats = rx.await.unwrap();
    exercise_pieces(&client, &service, &stats, "tls").await;
}
