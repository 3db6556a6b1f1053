//! Level 1 (tonic's HTTP/2 over the io_uring transport, `rpc_tonic::io`): every gRPC interop
//! case with both sides over level 1, a level-1 client against a plain tonic server, and a
//! plain tonic client against a level-1 server; then what level 1 itself promises: h2's
//! writes reach the engine vectored, and a peer that stops reading holds back the writer.
//!
//! Skips (saying why) where the kernel refuses io_uring; on this project's machines nothing
//! skips.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rpc_tonic::interop::{self, InteropChannel, InteropService, Skip};
use rpc_tonic::io::{IoStats, UringConnector, UringIncoming, UringIo, MAX_WRITE};
use tokio::io::AsyncWriteExt;
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
