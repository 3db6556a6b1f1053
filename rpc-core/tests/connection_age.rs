//! `ServerBuilder::max_connection_age`: connections closed gracefully at their age, a
//! re-dialing client carrying on across them without a failed call, and a stream whose reader
//! never grants credit no longer holding its handler past the age and the grace period. Under
//! it, what a graceful close owes a re-dialing client: a call that crossed the server's goaway
//! (which says the server never took it) goes again on the next connection.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::eventually;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Body, BoxFuture, Bytes, CallMode, CallOptions, Client, ClientConfig, Reconnect, Server, ServerRequest, Service, Status};

/// Method 1 answers with the caller's port, after sleeping the milliseconds its message says
/// (one byte); a streaming call gets 64 KiB messages for as long as it lasts.
#[derive(Clone, Default)]
struct Ports {
    /// Streaming handlers dropped (they never end on their own).
    streams_dropped: Arc<AtomicUsize>,
}

struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Service for Ports {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let port = req.peer.addr.map_or(0, |a| a.port());
        if let Some(stream) = req.stream.take() {
            let dropped = Dropped(self.streams_dropped.clone());
            return Box::pin(async move {
                let _dropped = dropped;
                let (mut sender, _receiver) = stream.split();
                let chunk = Body::message(Bytes::from(vec![7u8; 64 << 10]));
                let _ = sender.send_all(std::iter::repeat_with(|| chunk.clone())).await;
                Ok(Body::default())
            });
        }
        let ms = req.body.message.first().copied().unwrap_or(0);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms.into())).await;
            Ok(Body::message(Bytes::copy_from_slice(&port.to_le_bytes())))
        })
    }
}

fn quick_reconnect() -> ClientConfig {
    ClientConfig {
        reconnect: Reconnect { initial_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(100), ..Reconnect::default() },
        ..ClientConfig::default()
    }
}

async fn serve(builder: rpc_core::ServerBuilder, service: Ports) -> (rpc_core::ServerHandle, std::net::SocketAddr) {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    (builder.build(service).serve(acceptor), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_close_at_their_age_and_a_redialing_client_carries_on_without_a_failed_call() {
    let age = Duration::from_millis(300);
    let builder = Server::builder().max_connection_age(Some(age)).grace_period(Duration::from_secs(5));
    let (_server, addr) = serve(builder, Ports::default()).await;
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    let call = move |ms: u8| {
        let client = client.clone();
        async move {
            let answer = client.call(1, Body::message(Bytes::from(vec![ms])), CallOptions::timeout(Duration::from_secs(10))).await;
            let answer = answer.expect("a call failed across a connection's end");
            u16::from_le_bytes(answer.message[..2].try_into().unwrap())
        }
    };
    // Quick calls one after another, and slow ones (150 ms) beside them, so that some are in
    // flight at each goaway: those finish in the grace period on the old connection.
    let until = Instant::now() + Duration::from_millis(1500);
    let slow = tokio::spawn({
        let call = call.clone();
        async move {
            let mut ports = HashSet::new();
            while Instant::now() < until {
                ports.insert(call(150).await);
            }
            ports
        }
    });
    let mut ports = HashSet::new();
    while Instant::now() < until {
        ports.insert(call(0).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ports.extend(slow.await.unwrap());
    // 1.5 s of connections living 270–330 ms each (plus the re-dials): at least four.
    assert!(ports.len() >= 4, "only {} connections in 1.5 s: {ports:?}", ports.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_reader_grants_no_credit_is_ended_at_the_age_plus_the_grace_period() {
    let service = Ports::default();
    let builder = Server::builder().max_connection_age(Some(Duration::from_millis(200))).grace_period(Duration::from_millis(200));
    let (_server, addr) = serve(builder, service.clone()).await;
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    let call = client.open(1, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap();
    let (_sender, mut receiver) = call.split();
    // Never read: the server's handler waits for credit that never comes...
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(service.streams_dropped.load(Ordering::SeqCst), 0);
    // ...until its connection reaches its age (200 ms ± 20) and the grace period passes.
    eventually("the stuck stream's handler dropped", || service.streams_dropped.load(Ordering::SeqCst) == 1).await;
    // The reader finds its window's worth of messages, then the stream's end with an error.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match receiver.recv().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream did not end");
    assert!(matches!(end, Some(Err(_))), "{end:?}");
    // The client re-dialed: calls go on.
    let answer = client.call(1, Body::message(Bytes::from(vec![0u8])), CallOptions::timeout(Duration::from_secs(10))).await;
    assert!(answer.is_ok(), "{answer:?}");
}

/// A hand-written server on `listener` that reads the client's first request, waits `hold`,
/// then closes gracefully with a goaway that took no call (last id 0): the call crossed its
/// close and never ran there. Resolves with the request's id.
fn goaway_server(raw: tokio::net::TcpListener, hold: Duration) -> tokio::task::JoinHandle<u64> {
    use rpc_core::frame::{FrameHeader, FrameKind, GoAway, Hello, HEADER_LEN, WIRE_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let (mut s, _) = raw.accept().await.unwrap();
        let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 20, max_calls_in_flight: 100, max_attachments: 16, max_metadata: 0, stream_window: 0 };
        s.write_all(&hello.encode()).await.unwrap();
        let mut got = Vec::new();
        let request = loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed before its request");
            got.extend_from_slice(&chunk[..n]);
            if got.len() >= 32 + HEADER_LEN {
                break FrameHeader::decode(&got[32..32 + HEADER_LEN]).unwrap();
            }
        };
        assert_eq!(request.kind, FrameKind::Request);
        tokio::time::sleep(hold).await;
        let goaway = GoAway { last_id: 0, last_pieced: None, code: rpc_core::Code::OK, message: "closing".into() };
        s.write_all(&goaway.encode().unwrap().to_vec()).await.unwrap();
        s.shutdown().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        request.id
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_servers_goaway_says_it_never_took_goes_again_on_the_next_connection() {
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_addr = raw.local_addr().unwrap();
    let refused = goaway_server(raw, Duration::ZERO);
    let (_server, real) = serve(Server::builder(), Ports::default()).await;
    let dials = Arc::new(AtomicUsize::new(0));
    let dial = move || {
        let to = if dials.fetch_add(1, Ordering::SeqCst) == 0 { raw_addr } else { real };
        rpc_core::transport::tcp::connect(to)
    };
    let client = Client::connect_with(dial, quick_reconnect()).await.unwrap();
    // Not marked idempotent: it goes again because the server said it never took it.
    let answer = client.call(1, Body::message(Bytes::from(vec![0u8])), CallOptions::timeout(Duration::from_secs(10))).await;
    assert_eq!(answer.expect("the call was not sent again on the next connection").message.len(), 2);
    assert_eq!(refused.await.unwrap(), 1, "the first connection got the call, and refused it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_deadline_that_crosses_a_goaway_late_still_waits_for_the_next_connection() {
    // A call with no deadline waits up to `connect_timeout` for a connection. When it crossed
    // a goaway longer than that after it was made (it waited for the server to read it, or for
    // a call permit), the wait for the next connection is still a whole `connect_timeout`, not
    // what is left of one counted from the call's start (nothing: it failed at once, unsent).
    let connect_timeout = Duration::from_millis(300);
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_addr = raw.local_addr().unwrap();
    let refused = goaway_server(raw, connect_timeout + Duration::from_millis(200));
    let (_server, real) = serve(Server::builder(), Ports::default()).await;
    let dials = Arc::new(AtomicUsize::new(0));
    let dial = move || {
        let first = dials.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                return rpc_core::transport::tcp::connect(raw_addr).await;
            }
            // The re-dial takes a moment, as over a real network.
            tokio::time::sleep(Duration::from_millis(50)).await;
            rpc_core::transport::tcp::connect(real).await
        }
    };
    let client = Client::connect_with(dial, ClientConfig { connect_timeout, ..quick_reconnect() }).await.unwrap();
    let answer = client.call(1, Body::message(Bytes::from(vec![0u8])), CallOptions::default()).await;
    assert_eq!(answer.expect("the call crossed the goaway and was not sent again").message.len(), 2);
    assert_eq!(refused.await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_every_connection_at_once_is_not_redialed_in_a_tight_loop() {
    // An age of zero (or a server that says goaway right after its hello): each connection is
    // up, then gone at once. The client must back off between such connections, not dial
    // again and again as fast as the handshakes go.
    let builder = Server::builder().max_connection_age(Some(Duration::ZERO));
    let (_server, addr) = serve(builder, Ports::default()).await;
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = dials.clone();
    let dial = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        rpc_core::transport::tcp::connect(addr)
    };
    let client = Client::connect_with(dial, quick_reconnect()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = dials.load(Ordering::SeqCst);
    drop(client);
    // Backoff from 10 ms, doubled up to 100 ms: about a dozen dials in half a second.
    assert!(n <= 40, "{n} dials in 500 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_sender_says_when_its_connection_drains_and_the_stream_goes_on_meanwhile() {
    let builder = Server::builder().max_connection_age(Some(Duration::from_millis(200))).grace_period(Duration::from_secs(10));
    let (_server, addr) = serve(builder, Ports::default()).await;
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    let call = client.open(1, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap();
    let (sender, mut receiver) = call.split();
    assert!(!sender.connection_draining());
    assert!(receiver.recv().await.unwrap().is_ok());
    eventually("the stream's connection draining after its age", || sender.connection_draining()).await;
    // Within the grace period the call itself carries on...
    for _ in 0..8 {
        assert!(receiver.recv().await.unwrap().is_ok());
    }
    // ...while new calls go to the next connection, whose streams are not draining.
    let next = client.open(1, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap();
    assert!(!next.sender.connection_draining());
}
