//! Level 1 (tonic's HTTP/2 over the io_uring transport, `rpc_tonic::io`): every gRPC interop
//! case with both sides over level 1, a level-1 client against a plain tonic server, and a
//! plain tonic client against a level-1 server; then what level 1 itself promises: h2's
//! writes reach the engine vectored, a peer that stops reading holds back the writer, and the
//! listener bounds its connections and a silent peer's wait.
//!
//! Skips (saying why) where the kernel refuses io_uring; on this project's machines nothing
//! skips.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_tonic::interop::{self, InteropChannel, InteropService, Skip};
use rpc_tonic::io::{IoStats, UringConnector, UringIncoming, UringIo, MAX_WRITE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use transport_uring::{Backend, UringConfig};

fn require_uring() -> Result<(), Skip> {
    let p = transport_uring::probe();
    if p.backend == Backend::Uring {
        Ok(())
    } else {
        Err(Skip(format!("io_uring unavailable: {}", p.reason)))
    }
}

fn uri(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}")).expect("uri")
}

async fn serve_level1(service: InteropService) -> (SocketAddr, Arc<IoStats>) {
    let incoming = UringIncoming::bind("127.0.0.1:0", UringConfig::default()).await.expect("bind");
    let addr = incoming.local_addr().expect("local_addr");
    let stats = incoming.io_stats();
    tokio::spawn(Server::builder().add_service(service).serve_with_incoming(incoming));
    (addr, stats)
}

async fn serve_plain(service: InteropService) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(Server::builder().add_service(service).serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

async fn connect_level1(addr: SocketAddr) -> (tonic::transport::Channel, Arc<IoStats>) {
    let connector = UringConnector::new(UringConfig::default());
    let stats = connector.io_stats();
    let channel = uri(addr).connect_with_connector(connector).await.expect("connect");
    (channel, stats)
}

/// Both sides over level 1.
async fn both(service: InteropService) -> Result<InteropChannel, Skip> {
    require_uring()?;
    let (addr, _) = serve_level1(service).await;
    Ok(interop::channel(connect_level1(addr).await.0))
}

/// A level-1 client, a plain tonic server.
async fn client_only(service: InteropService) -> Result<InteropChannel, Skip> {
    require_uring()?;
    let addr = serve_plain(service).await;
    Ok(interop::channel(connect_level1(addr).await.0))
}

/// A plain tonic client, a level-1 server.
async fn server_only(service: InteropService) -> Result<InteropChannel, Skip> {
    require_uring()?;
    let (addr, _) = serve_level1(service).await;
    Ok(interop::channel(uri(addr).connect().await.expect("connect")))
}

mod both_level1 {
    rpc_tonic::interop_tests!(super::both);
}

mod level1_client_plain_server {
    rpc_tonic::interop_tests!(super::client_only);
}

mod plain_client_level1_server {
    rpc_tonic::interop_tests!(super::server_only);
}

/// Runs `f` unless io_uring is missing (then says why).
async fn with_uring<F: Future<Output = ()>>(f: F) {
    match require_uring() {
        Ok(()) => f.await,
        Err(Skip(why)) => eprintln!("SKIP: {why}"),
    }
}

/// A large unary call over level 1: h2's writes arrive as several slices (frame headers
/// apart from the data payloads) and each goes to the engine as one send, on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_vectored() {
    with_uring(async {
        let server = interop::TestServer::new();
        let (addr, server_stats) = serve_level1(server.into_service()).await;
        let (channel, client_stats) = connect_level1(addr).await;
        let channel = interop::channel(channel);
        interop::large_unary(&channel, &interop::Observed::default()).await;
        for (side, s) in [("client", &client_stats), ("server", &server_stats)] {
            let writes = s.writes.load(Ordering::Relaxed);
            let vectored = s.vectored_writes.load(Ordering::Relaxed);
            let slices = s.slices.load(Ordering::Relaxed);
            let bytes = s.bytes.load(Ordering::Relaxed);
            eprintln!("{side}: {s:?}");
            assert!(vectored > 0, "{side}: no write of more than one slice ({s:?})");
            assert!(slices > writes, "{side}: slices {slices} not more than writes {writes}");
            // The 271,828-byte request or the 314,159-byte response went through.
            assert!(bytes > 271_828, "{side}: {bytes} bytes written");
        }
    })
    .await
}

/// A peer that accepts and never reads: the writer is held back once the socket buffers are
/// full, holding at most one write of its own; it does not take 256 MiB into memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_holds_back_the_writer() {
    with_uring(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = transport_uring::connect(addr, UringConfig::default());
        let (transport, peer) = tokio::join!(connect, listener.accept());
        let (_peer, _) = peer.unwrap();
        let mut io = UringIo::new(transport.unwrap(), None);
        let chunk = vec![7u8; 256 << 10];
        let wanted: usize = 256 << 20;
        let mut taken = 0usize;
        // Write until a write makes no progress for a while (the guard decides when to stop
        // trying, the assertion is on the bytes taken).
        while taken < wanted {
            match tokio::time::timeout(std::time::Duration::from_secs(2), io.write(&chunk)).await {
                Ok(Ok(n)) => taken += n,
                Ok(Err(e)) => panic!("write failed: {e}"),
                Err(_) => break,
            }
        }
        let stats = io.io_stats();
        eprintln!("took {taken} bytes before the writer was held back; {stats:?}");
        assert!(taken < wanted, "took all {taken} bytes from a peer that never reads");
        // Socket buffers on loopback autotune to a few MiB each way; one write of our own.
        assert!(taken <= (32 << 20) + MAX_WRITE, "took {taken} bytes: more than the socket buffers and one write");
        assert!(stats.write_waits.load(Ordering::Relaxed) > 0, "no write waited: {stats:?}");
    })
    .await
}

/// Waits (at most 5 s) for the server to end `conn`: reads until end of stream or an error (a
/// reset); returns the bytes the server sent before (h2's own settings, at most). Panics if the
/// connection is still open then.
async fn closed_by_server(conn: &mut TcpStream) -> usize {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await.expect("the server kept the connection open for 5 s");
    assert!(got.len() < 1024, "the server sent {} bytes to a peer that sent none", got.len());
    got.len()
}

/// A peer that connects and sends nothing is closed once the first-bytes timeout passes, not
/// before, and gives its place back; the server serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_nothing_is_closed_after_the_first_bytes_timeout() {
    with_uring(async {
        let incoming = UringIncoming::bind("127.0.0.1:0", UringConfig::default())
            .await
            .expect("bind")
            .first_bytes_timeout(Duration::from_millis(300));
        let addr = incoming.local_addr().unwrap();
        let live = incoming.live_connections();
        tokio::spawn(Server::builder().add_service(interop::TestServer::new().into_service()).serve_with_incoming(incoming));

        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closed_by_server(&mut silent).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "closed after {waited:?}, before the timeout of 300 ms");
        eventually(|| live.load(Ordering::Acquire) == 0).await;

        // A client that speaks at once is served as usual.
        let channel = interop::channel(connect_level1(addr).await.0);
        interop::empty_unary(&channel, &interop::Observed::default()).await;
    })
    .await
}

/// Over the connection limit, a new connection is closed at once (not left in the backlog);
/// once one of the held connections goes, a client is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_limit_is_closed_at_once() {
    with_uring(async {
        let incoming = UringIncoming::bind("127.0.0.1:0", UringConfig::default()).await.expect("bind").max_connections(2);
        let addr = incoming.local_addr().unwrap();
        let live = incoming.live_connections();
        tokio::spawn(Server::builder().add_service(interop::TestServer::new().into_service()).serve_with_incoming(incoming));

        // Two connections that hold their places (silent, but well inside the 10 s default).
        let held_a = TcpStream::connect(addr).await.unwrap();
        let _held_b = TcpStream::connect(addr).await.unwrap();
        eventually(|| live.load(Ordering::Acquire) == 2).await;

        let started = Instant::now();
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert_eq!(closed_by_server(&mut third).await, 0, "the refused connection reached h2");
        assert!(started.elapsed() < Duration::from_secs(2), "the third connection waited {:?}", started.elapsed());
        assert_eq!(live.load(Ordering::Acquire), 2, "the refused connection was not counted");

        // One held connection goes: its place is given back, and a client is served.
        drop(held_a);
        eventually(|| live.load(Ordering::Acquire) == 1).await;
        let channel = interop::channel(connect_level1(addr).await.0);
        interop::empty_unary(&channel, &interop::Observed::default()).await;
    })
    .await
}

/// Waits (at most 5 s) until `cond` holds.
async fn eventually(cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < until, "not reached within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
