//! Large requests and answers sent in pieces (`docs/pieces.md`) received over every transport
//! of this crate: the server's handler, and the client, see each attachment as one
//! 64-byte-aligned slice with the bytes sent, and each receive side moves at most a read
//! block's worth per frame (`recv_copied_bytes`), however the reads cut the pieces. A download
//! given up on stops part-way, and small calls go between a large frame's pieces.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::tls::TlsAcceptor;
use rpc_core::transport::{mem, tcp, unix, Acceptor, Transport};
use rpc_core::{Client, ClientConfig, Server, StatsSnapshot, TransportStats};

#[path = "shared/abandoned_download.rs"]
mod abandoned_download;
#[path = "shared/frames_between.rs"]
mod frames_between;
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
    // The echoes came back in pieces: the client's receive side holds to the same bound.
    let cl = client.stats();
    eprintln!("{what}: client recv_copied_bytes {} align_copy_bytes {}", cl.recv_copied_bytes, cl.align_copy_bytes);
    assert!(cl.recv_copied_bytes <= frames * (64 << 10), "{what}: the client moved {} bytes for {frames} frames", cl.recv_copied_bytes);
    assert_eq!(cl.align_copy_bytes, 0, "{what}: {cl:?}");
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

/// A client gives up on a 60 MiB download over tcp once its first MiB arrived: the answer,
/// in pieces, stops part-way (`shared/abandoned_download.rs`), and the connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_given_up_on_stops_part_way_over_tcp() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
    let server = tcp::from_stream(s.unwrap().0).unwrap();
    let stats = server.stats();
    tokio::spawn(Server::builder().build(abandoned_download::Download::default()).serve_connection(server));
    let client = Client::connect(tcp::from_stream(c.unwrap()).unwrap(), ClientConfig::default()).await.unwrap();
    let run = abandoned_download::large_download_given_up_on(&client, &stats, "tcp");
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("bounded");
}

/// A small call made during a 64 MiB upload, then during a 64 MiB download, goes between the
/// large frame's pieces and is answered before it ends (`shared/frames_between.rs`): over tcp,
/// mem and TLS.
async fn overtaking<T: Transport>(server: T, client: impl Transport, what: &str) {
    let stats = server.stats();
    tokio::spawn(Server::builder().build(frames_between::Overtaken::default()).serve_connection(server));
    let client = Client::connect(client, ClientConfig::default()).await.unwrap();
    let run = frames_between::small_calls_overtake_large_transfers(&client, || stats.recv_bytes.load(Ordering::Acquire), what);
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_overtake_large_transfers_over_tcp() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
    overtaking(tcp::from_stream(s.unwrap().0).unwrap(), tcp::from_stream(c.unwrap()).unwrap(), "tcp").await;
}

/// The client and the server each on a thread of its own with a current-thread runtime, the
/// client's calls and its connection's reader and writer on one thread: the writer of a 64 MiB
/// upload that never fills the socket (loopback) must let the reader take the answers of the
/// small calls going between its pieces.
#[test]
fn small_calls_beside_uploads_are_answered_on_a_one_thread_client() {
    let one_thread = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let server_rt = one_thread();
    let l = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        server_rt.block_on(async move {
            let server = tcp::from_stream(l.accept().await.unwrap().0).unwrap();
            tx.send(server.stats()).unwrap();
            Server::builder().build(frames_between::Overtaken::default()).serve_connection(server).await
        })
    });
    one_thread().block_on(async move {
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let client = Client::connect(tcp::from_stream(c).unwrap(), ClientConfig::default()).await.unwrap();
        let stats = rx.recv().unwrap();
        let run = frames_between::small_calls_beside_uploads_on_one_thread(&client, || stats.recv_bytes.load(Ordering::Acquire), "tcp, one thread a side");
        tokio::time::timeout(Duration::from_secs(120), run).await.expect("bounded");
        client.close().await;
    });
    let _ = server.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_overtake_large_transfers_over_mem() {
    let (a, b) = mem::pair();
    overtaking(b, a, "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_overtake_large_transfers_over_tls() {
    let ca = tls_support::Ca::new("pieces");
    let mut acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls_support::plain(&ca)).unwrap();
    let addr = acceptor.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let server = acceptor.accept().await.unwrap();
        let _ = tx.send(server.stats());
        Server::builder().build(frames_between::Overtaken::default()).serve_connection(server).await
    });
    let client = Client::connect_tls(addr, "localhost", tls_support::trust(&ca), tls_support::config()).await.unwrap();
    let stats = rx.await.unwrap();
    let run = frames_between::small_calls_overtake_large_transfers(&client, || stats.recv_bytes.load(Ordering::Acquire), "tls");
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("bounded");
}

/// A raw peer connected to `addr` over tcp, its hello (announcing pieces) sent.
async fn raw_peer(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = rpc_core::frame::Hello {
        version: rpc_core::frame::WIRE_VERSION,
        capabilities: rpc_core::frame::caps::PIECES,
        max_frame: 16 << 20,
        max_calls_in_flight: 8,
        max_attachments: 8,
        max_metadata: 0,
        stream_window: 0,
    };
    s.write_all(&hello.encode()).await.unwrap();
    s
}

/// A raw peer over tcp: sends our hello, then `bytes`, and returns what the server sent until
/// it closed or `until` bytes came (bounded).
async fn raw_exchange(bytes: Vec<u8>, until: usize) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(AlignCheck::default()).serve(acceptor);
    let s = raw_peer(addr).await;
    // Written while the server reads: it may close before all of it is in.
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&bytes).await;
        w
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = [0u8; 4096];
        while got.len() < until {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    drop(writer.await);
    drop(handle);
    got
}

/// A draining server waits for a pieced request it promised to answer (part-way received when
/// its goaway went, numbered below a call it took), but not for ever: a peer that stops sending
/// it mid-way is closed when the grace period ends, and the shutdown completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_waits_for_a_stalled_pieced_request_only_until_its_grace_period_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let grace = Duration::from_millis(300);
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().grace_period(grace).build(AlignCheck::default()).serve(acceptor);
    let mut s = raw_peer(addr).await;
    // Call 2 whole (taken and answered), then call 1 in pieces: its header and one piece, and
    // nothing more.
    let (mut whole, body) = pieced_request(2);
    whole[1] &= !rpc_core::frame::FLAG_PIECED;
    whole.extend_from_slice(&body);
    let (mut stalled, body) = pieced_request(1);
    stalled.extend_from_slice(&marker(1 << 20, 0));
    stalled.extend_from_slice(&body[..1 << 20]);
    s.write_all(&whole).await.unwrap();
    s.write_all(&stalled).await.unwrap();
    // The echo of call 2 (its body, 3 MiB) shows the server has read what came before the stall.
    let mut got = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    tokio::time::timeout(Duration::from_secs(20), async {
        while got.len() < rpc_core::frame::HELLO_LEN + body.len() {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!("closed before answering call 2"),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("call 2 answered");
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(handle.shutdown());
    // The server's end of the connection: its goaway, then EOF (or a reset).
    let eof = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    });
    let took = eof.await.expect("the server closed the connection");
    assert!(took >= grace / 2, "closed after {took:?}: it did not wait for the promised request");
    assert!(took < grace + Duration::from_secs(5), "closed after {took:?}");
    tokio::time::timeout(Duration::from_secs(20), shutdown).await.expect("the shutdown completes").unwrap();
}

/// A request of a bit over 3 MiB (one attachment): its header flagged pieced, and its body.
fn pieced_request(id: u64) -> (Vec<u8>, Vec<u8>) {
    let r = rpc_core::frame::Request {
        id,
        method: 1,
        mode: rpc_core::CallMode::UNARY,
        await_commit: false,
        deadline: None,
        metadata: rpc_core::Bytes::new(),
        message: rpc_core::Bytes::from_static(b"m"),
        attachments: vec![rpc_core::Payload::from(vec![9u8; 3 << 20])],
    };
    let whole = r.encode().unwrap().to_vec();
    let mut header = whole[..rpc_core::frame::HEADER_LEN].to_vec();
    header[1] |= rpc_core::frame::FLAG_PIECED;
    (header, whole[rpc_core::frame::HEADER_LEN..].to_vec())
}

fn marker(len: u32, what: u8) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&len.to_le_bytes());
    m[4] = what;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_breaking_the_rules_ends_the_connection_with_a_goaway_naming_it() {
    let (header, body) = pieced_request(1);
    let first = 1 << 20;
    let left = (body.len() - first) as u32;
    for (bad, says) in [
        (marker(left + 1, 0), "remain"),
        (marker(0, 0), "a data piece of 0 bytes"),
        (marker(4, 0), "a data piece of 4 bytes"),
        (marker(64, 7), "unknown marker kind 7"),
        (marker(5, 1), "an abort with a length of 5"),
        (marker(left - 3, 0), "leaves 3"),
        ({ let mut m = marker(left, 0); m[6] = 1; m }, "reserved bytes [00, 01, 00]"),
    ] {
        let mut wire = header.clone();
        wire.extend_from_slice(&marker(first as u32, 0));
        wire.extend_from_slice(&body[..first]);
        wire.extend_from_slice(&bad);
        wire.extend_from_slice(&body[first..]);
        let got = raw_exchange(wire, usize::MAX).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("piece marker") && text.contains(says), "{says}: the server said {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_aborted_pieced_request_the_next_one_is_answered() {
    let (header, body) = pieced_request(1);
    let mut wire = header.clone();
    wire.extend_from_slice(&marker(1 << 20, 0));
    wire.extend_from_slice(&body[..1 << 20]);
    wire.extend_from_slice(&marker(0, 1));
    // Then the same request whole in two pieces, id 3, and a goaway of ours to end it.
    let (header3, body3) = pieced_request(3);
    wire.extend_from_slice(&header3);
    wire.extend_from_slice(&marker(100, 0));
    wire.extend_from_slice(&body3[..100]);
    wire.extend_from_slice(&marker((body3.len() - 100) as u32, 0));
    wire.extend_from_slice(&body3[100..]);
    let goaway = rpc_core::frame::Frame::GoAway(rpc_core::frame::GoAway { last_id: 0, last_pieced: None, code: rpc_core::Code::OK, message: "bye".into() });
    wire.extend_from_slice(&goaway.encode().unwrap().to_vec());
    let got = raw_exchange(wire, rpc_core::frame::HELLO_LEN + rpc_core::frame::HEADER_LEN).await;
    // Our hello is answered, then the response to call 3 (its header is the first frame).
    let at = rpc_core::frame::HELLO_LEN;
    assert!(got.len() > at + rpc_core::frame::HEADER_LEN, "{} bytes", got.len());
    let h = rpc_core::frame::FrameHeader::decode(&got[at..at + rpc_core::frame::HEADER_LEN]).unwrap();
    assert_eq!((h.kind, h.id), (rpc_core::frame::FrameKind::Response, 3), "{:?}", String::from_utf8_lossy(&got[at..(at + 200).min(got.len())]));
}
