//! Large requests and answers sent in pieces (`docs/pieces.md`) over this transport: every
//! receive mode and TLS on the engine hand the handler (and the client, its echoes) aligned
//! attachments with the bytes sent, moving at most a read block's worth per frame; a pieced
//! request that fits in one ring buffer is decoded; a 60 MiB request given up on while on the
//! wire never runs and stops part-way, and so does a 60 MiB download given up on.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rpc_core::frame::{FrameHeader, FrameKind, Hello, Marker, Request, FLAG_PIECED, HEADER_LEN, HELLO_LEN, WIRE_VERSION};
use rpc_core::transport::Transport;
use rpc_core::{Body, BoxFuture, Bytes, CallMode, CallOptions, Client, ClientConfig, Payload, Server, ServerRequest, Service, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use transport_uring::{Backend, RecvMode, UringConfig};

#[path = "../../rpc-core/tests/shared/abandoned_download.rs"]
mod abandoned_download;
#[path = "../../rpc-core/tests/shared/frames_between.rs"]
mod frames_between;
#[path = "../../rpc-core/tests/shared/aligned.rs"]
mod aligned;
#[path = "../../rpc-core/tests/shared/given_up.rs"]
mod given_up;
#[path = "../../rpc-core/tests/tls_support/mod.rs"]
mod tls_support;

fn uring(recv: RecvMode) -> UringConfig {
    UringConfig { backend: Backend::Uring, recv, ..Default::default() }
}

/// A server over this transport with `cfg` on one accepted connection, and a client with the
/// same `cfg`; the server's transport stats.
async fn served(cfg: UringConfig, service: impl Service) -> (Client, Arc<rpc_core::TransportStats>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(transport_uring::connect(addr, cfg.clone()), l.accept());
    let server = transport_uring::from_tcp(s.unwrap().0, cfg).unwrap();
    let stats = server.stats();
    tokio::spawn(Server::builder().build(service).serve_connection(server));
    (Client::connect(c.unwrap(), ClientConfig::default()).await.unwrap(), stats)
}

async fn pieced_bodies(cfg: UringConfig, what: &str) {
    let service = aligned::AlignCheck::default();
    let (client, stats) = served(cfg, service.clone()).await;
    let bodies = [
        aligned::body(9 << 20, 1, false, 1),
        aligned::body((1 << 20) + 3, 7, true, 3),
        aligned::body((2 << 20) + 1, 1, false, 4),
    ];
    for (i, b) in bodies.iter().enumerate() {
        let got = client.call(1, b.clone(), CallOptions::default()).await.unwrap();
        aligned::check_reply(b, &got, &format!("{what}: body {i}"));
    }
    let st = stats.snapshot();
    eprintln!("{what}: server recv_copied_bytes {} align_copy_bytes {}", st.recv_copied_bytes, st.align_copy_bytes);
    // The ring's chunks received before a large frame's header are handed over by copy
    // (as for whole frames); the other modes move at most a read block's worth per frame.
    if !what.starts_with("ring") {
        assert!(st.recv_copied_bytes <= bodies.len() as u64 * (64 << 10), "{what}: {st:?}");
    }
    aligned::exercise(&client, &service, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_in_every_receive_mode() {
    if !require(Backend::Uring) {
        return;
    }
    for (cfg, what) in [
        (uring(RecvMode::Read), "read"),
        (uring(RecvMode::Uring), "single-shot recv"),
        (uring(RecvMode::BufferRing), "ring"),
        (UringConfig { recv_ring_buf_size: 1024, recv_ring_buffers: 256, ..uring(RecvMode::BufferRing) }, "ring of 1 KiB"),
    ] {
        tokio::time::timeout(LIMIT, pieced_bodies(cfg, what)).await.unwrap_or_else(|_| panic!("{what}: timed out"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieced_requests_over_tls_on_the_engine() {
    if !require(Backend::Uring) {
        return;
    }
    let ca = tls_support::Ca::new("pieces");
    let acceptor = transport_uring::tls::UringTlsAcceptor::bind("127.0.0.1:0", tls_support::plain(&ca), uring(RecvMode::Read)).await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let service = aligned::AlignCheck::default();
    let _handle = Server::builder().build(service.clone()).serve(acceptor);
    let client = transport_uring::tls::client(addr, "localhost", tls_support::trust(&ca), uring(RecvMode::Read), tls_support::config()).await.unwrap();
    let b = aligned::body((1 << 20) + 3, 7, true, 3);
    let got = tokio::time::timeout(LIMIT, client.call(1, b.clone(), CallOptions::default())).await.unwrap().unwrap();
    aligned::check_reply(&b, &got, "uring tls");
    let b = aligned::body(9 << 20, 1, false, 1);
    let got = tokio::time::timeout(LIMIT, client.call(1, b.clone(), CallOptions::default())).await.unwrap().unwrap();
    aligned::check_reply(&b, &got, "uring tls");
}

/// A pieced request is a request like any other on the wire: nothing says it must be large
/// (`docs/pieces.md`: the sender's choice). One small enough to arrive inside one ring buffer,
/// with nothing after it, is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_pieced_request_inside_one_ring_buffer_is_answered() {
    if !require(Backend::Uring) {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
    let server = transport_uring::from_tcp(s.unwrap().0, uring(RecvMode::BufferRing)).unwrap();
    tokio::spawn(Server::builder().build(Echo).serve_connection(server));
    let mut c = c.unwrap();
    let hello = Hello {
        version: WIRE_VERSION,
        capabilities: rpc_core::frame::caps::PIECES,
        max_frame: 1 << 20,
        max_calls_in_flight: 16,
        max_attachments: 8,
        max_metadata: 0,
        stream_window: 0,
    };
    c.write_all(&hello.encode()).await.unwrap();
    let mut theirs = [0u8; HELLO_LEN];
    tokio::time::timeout(LIMIT, c.read_exact(&mut theirs)).await.unwrap().unwrap();
    let r = Request {
        id: 1,
        method: ECHO,
        mode: CallMode::UNARY,
        await_commit: false,
        deadline: None,
        metadata: Bytes::new(),
        message: Bytes::from_static(b"small"),
        attachments: vec![Payload::from(vec![7u8; 300])],
    };
    let whole = r.encode().unwrap().to_vec();
    let body = &whole[HEADER_LEN..];
    // Two pieces: the header flagged pieced, then each piece behind its marker.
    let mut wire = whole[..HEADER_LEN].to_vec();
    wire[1] |= FLAG_PIECED;
    let cut = body.len() / 2;
    wire.extend_from_slice(&Marker::Data(cut as u32).encode());
    wire.extend_from_slice(&body[..cut]);
    wire.extend_from_slice(&Marker::Data((body.len() - cut) as u32).encode());
    wire.extend_from_slice(&body[cut..]);
    c.write_all(&wire).await.unwrap();
    let mut head = [0u8; HEADER_LEN];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut head))
        .await
        .expect("the pieced request is answered")
        .unwrap();
    let h = FrameHeader::decode(&head).unwrap();
    assert_eq!((h.kind, h.id), (FrameKind::Response, 1));
}

/// Counts the handlers that ran.
#[derive(Clone, Default)]
struct Counting {
    started: Arc<AtomicUsize>,
}

impl Service for Counting {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(req.body)))
    }
}

/// `rpc-core/tests/calls.rs`'s experiment of issue 9 over this transport, in each receive
/// mode: a 60 MiB put under a timeout of 0 µs to 5 ms never runs on the server, and what
/// crosses of it after the cancel is bounded (the pieces the writer holds, not the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_given_up_on_while_on_the_wire_never_runs_on_the_server() {
    if !require(Backend::Uring) {
        return;
    }
    for (cfg, what) in [(uring(RecvMode::Read), "read"), (uring(RecvMode::BufferRing), "ring")] {
        let svc = Counting::default();
        let (client, _) = served(cfg, svc.clone()).await;
        given_up::large_puts_given_up_on(&client, ECHO, || svc.started.load(Ordering::SeqCst), what).await;
    }
}

/// Pool buffers (`Segment::External`, never cut) in a pieced request: the echo is byte-exact,
/// and every buffer comes back to the pool, for a request that completes and for ones given up
/// on part-way (aborted) at several points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_buffers_inside_pieces_arrive_exact_and_all_come_back() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pool = transport_uring::BufferPool::new(32 << 20, 256 << 10).unwrap();
        let cfg = UringConfig { mode: transport_uring::ZcMode::AlwaysZc, ..uring(RecvMode::Read) };
        let (client, _) = served(cfg, Echo).await;
        let (p, expect) = payload(&pool, 1).await;
        let back = client.call(ECHO, Body::new(Bytes::from_static(b"m"), vec![p]), CallOptions::default()).await.unwrap();
        assert!(back.attachments[0].to_bytes() == expect, "echo differs");
        for micros in [0u64, 50, 200, 1000, 3000] {
            let (p, _) = payload(&pool, micros as u8).await;
            let call = client.call(ECHO, Body::new(Bytes::new(), vec![p]), CallOptions::default());
            let _ = tokio::time::timeout(Duration::from_micros(micros), call).await;
        }
        let (p, expect) = payload(&pool, 9).await;
        let back = client.call(ECHO, Body::new(Bytes::new(), vec![p]), CallOptions::default()).await.unwrap();
        assert!(back.attachments[0].to_bytes() == expect, "echo after the aborted ones differs");
        drop(back);
        for _ in 0..400 {
            if pool.available() == pool.capacity() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.available(), pool.capacity(), "pool buffers not returned");
    })
    .await
    .expect("bounded");
}

/// 13 pool buffers of 256 KiB minus a little: pieces end inside none of them.
async fn payload(pool: &transport_uring::BufferPool, seed: u8) -> (Payload, Vec<u8>) {
    let mut p = Payload::new();
    let mut expect = Vec::new();
    for i in 0..13u8 {
        let mut b = pool.take_wait().await;
        let data = pattern((256 << 10) - 7 * i as usize, seed ^ i);
        b.fill_from(&data);
        expect.extend_from_slice(&data);
        p.push(b.into_segment());
    }
    (p, expect)
}

/// As `rpc-core/tests/pieces.rs`: once the caller gives up on a 60 MiB request, at most the two
/// pieces the writer holds (and the abort marker) still cross, on the engine too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cancel_at_most_two_pieces_cross_on_the_engine() {
    if !require(Backend::Uring) {
        return;
    }
    for (cfg, what) in [(uring(RecvMode::Read), "copy"), (UringConfig { mode: transport_uring::ZcMode::AlwaysZc, ..uring(RecvMode::Read) }, "zero-copy")] {
        let (client, _) = served(cfg, Echo).await;
        let blob = Payload::from(vec![3u8; 60 << 20]);
        for micros in [0, 100, 1_000, 3_000, 10_000] {
            let call = client.call(ECHO, Body::new(Bytes::new(), vec![blob.clone()]), CallOptions::default());
            assert!(tokio::time::timeout(Duration::from_micros(micros), call).await.is_err());
            let after = given_up::sent_until_quiet(&client).await;
            eprintln!("{what}, {micros} µs: {after} bytes after the cancel");
            assert!(after <= given_up::AFTER_CANCEL_MAX, "{what}, {micros} µs: {after} bytes crossed after the cancel");
        }
        let back = tokio::time::timeout(LIMIT, client.call(ECHO, Body::new(Bytes::new(), vec![blob]), CallOptions::default()));
        assert_eq!(back.await.unwrap().unwrap().attachments[0].len(), 60 << 20, "{what}");
    }
}

/// The engine's copy and zero-copy sends, read by `read` and from the ring.
fn copy_ring_and_zero_copy() -> [(UringConfig, &'static str); 3] {
    [
        (uring(RecvMode::Read), "read"),
        (uring(RecvMode::BufferRing), "ring"),
        (UringConfig { mode: transport_uring::ZcMode::AlwaysZc, ..uring(RecvMode::Read) }, "zero-copy"),
    ]
}

/// As `rpc-core/tests/pieces.rs` over tcp: a client gives up on a 60 MiB download once its
/// first MiB arrived, and the answer, in pieces, stops part-way on the engine too (copy and
/// zero-copy sends; the client reading by `read` and from the ring), then the connection
/// carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_given_up_on_stops_part_way_on_the_engine() {
    if !require(Backend::Uring) {
        return;
    }
    for (cfg, what) in copy_ring_and_zero_copy() {
        let (client, stats) = served(cfg, abandoned_download::Download::default()).await;
        let run = abandoned_download::large_download_given_up_on(&client, &stats, what);
        tokio::time::timeout(LIMIT, run).await.unwrap_or_else(|_| panic!("{what}: timed out"));
    }
}

/// As `rpc-core/tests/pieces.rs` over tcp: a small call made during a 64 MiB upload, then during
/// a 64 MiB download, goes between the large frame's pieces and is answered before it ends, on
/// the engine too (copy and zero-copy sends; reading by `read` and from the ring).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_overtake_large_transfers_on_the_engine() {
    if !require(Backend::Uring) {
        return;
    }
    for (cfg, what) in copy_ring_and_zero_copy() {
        let (client, stats) = served(cfg, frames_between::Overtaken::default()).await;
        let run = frames_between::small_calls_overtake_large_transfers(&client, || stats.recv_bytes.load(Ordering::Acquire), what);
        tokio::time::timeout(LIMIT, run).await.unwrap_or_else(|_| panic!("{what}: timed out"));
    }
}

/// The same over TLS on the engine: records are opened where they land, and a read stops at a
/// piece's end or at the end of the frames between pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_overtake_large_transfers_over_tls_on_the_engine() {
    if !require(Backend::Uring) {
        return;
    }
    let ca = tls_support::Ca::new("pieces");
    let acceptor = transport_uring::tls::UringTlsAcceptor::bind("127.0.0.1:0", tls_support::plain(&ca), uring(RecvMode::Read)).await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let server = Server::builder().build(frames_between::Overtaken::default());
    let _handle = server.serve(acceptor);
    let client = transport_uring::tls::client(addr, "localhost", tls_support::trust(&ca), uring(RecvMode::Read), tls_support::config()).await.unwrap();
    let run = frames_between::small_calls_overtake_large_transfers(&client, || server.stats().recv_bytes, "uring tls");
    tokio::time::timeout(LIMIT, run).await.expect("bounded");
}
