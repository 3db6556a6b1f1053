//! The defects of the reliability review, each as the peer or fault that showed it: a peer
//! that does not read, a protocol violation from a peer that does not read, a slow reader
//! behind a keepalive, handlers whose deadline passes in their first poll, panics outside the
//! handler's future, absurd timeouts.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rpc_core::frame::{FrameHeader, FrameKind, Hello, Ping, Request, HEADER_LEN, WIRE_VERSION};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::{mem, RecvHalf, Transport, TransportStats};
use rpc_core::{
    Body, BoxFuture, Bytes, CallError, CallOptions, Client, ClientConfig, Code, Payload, Server, ServerHandle,
    ServerRequest, Service, Status,
};

async fn tcp_server(server: &Server) -> (ServerHandle, std::net::SocketAddr) {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    (server.serve(acceptor), addr)
}

fn hello() -> Vec<u8> {
    Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 64 << 20, max_calls_in_flight: 100, max_attachments: 16, max_metadata: 0, stream_window: 0 }
        .encode()
        .to_vec()
}

fn echo_request(id: u64, len: usize) -> Vec<u8> {
    let att = vec![Payload::from(vec![id as u8; len])];
    Request { id, method: ECHO, mode: Default::default(), await_commit: false, deadline: None, metadata: Bytes::new(), message: Bytes::new(), attachments: att }.encode().unwrap().to_vec()
}

/// A raw peer that writes `frames` (after its hello) from a thread, never reading, and
/// stops when the server stops taking bytes for good (the connection is closed).
fn non_reading_peer(addr: std::net::SocketAddr, frames: Vec<Vec<u8>>) -> std::thread::JoinHandle<std::net::TcpStream> {
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(&hello());
        for f in frames {
            if s.write_all(&f).is_err() {
                break;
            }
        }
        s
    })
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_costs_no_more_than_the_budget_and_is_cut_off_at_the_write_stall() {
    let budget = 4 << 20;
    let server = Server::builder()
        .connection_memory_budget(budget)
        .write_stall_timeout(Some(Duration::from_millis(800)))
        .build(TestService::default());
    let (handle, addr) = tcp_server(&server).await;
    // 200 echoes of 1 MiB, answers never read: 200 MiB of answers without a budget.
    let frames = (1..=200).map(|id| echo_request(id, 1 << 20)).collect();
    let peer = non_reading_peer(addr, frames);
    assert!(wait_until(Duration::from_secs(5), || server.connections() == 1).await);
    let mut peak = 0;
    let t0 = Instant::now();
    let ended = wait_until(Duration::from_secs(30), || {
        peak = peak.max(server.memory_held());
        server.connections() == 0
    })
    .await;
    let stats = server.stats();
    eprintln!("ended after {:?}; peak held {peak} bytes (budget {budget}); {stats:?}", t0.elapsed());
    assert!(ended, "the connection must end at the write-stall timeout");
    assert!(peak >= budget, "the peer did fill the budget ({peak})");
    // The budget, plus what one read can bring in (one 1 MiB frame) and one answer in the writer.
    assert!(peak <= budget + (3 << 20), "held {peak} bytes against a budget of {budget}");
    assert!(stats.budget_pauses >= 1 && stats.write_stalls == 1, "{stats:?}");
    assert_eq!(server.memory_held(), 0);
    drop(peer.join().unwrap());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_each_send_one_large_frame_and_idle_keep_no_more_than_the_servers_receive_cache() {
    // Each connection keeps large receive buffers for reuse (160 MiB each by default); a
    // thousand peers that each send one 128 MiB frame and then idle must not make the server
    // keep a cache's worth per connection.
    let total = 12 << 20;
    let server = Server::builder().recv_cache_total(total).build(TestService::default());
    let (handle, addr) = tcp_server(&server).await;
    let mut idle = Vec::new();
    for i in 0..4u8 {
        let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
        // 8 MiB: a receive buffer of its own on the server.
        let sent = pattern(8 << 20, i);
        let body = Body::new(Bytes::new(), vec![Payload::from(sent.clone())]);
        let reply = client.call(ECHO, body, CallOptions::default()).await.unwrap();
        assert_eq!(reply.attachments[0].to_bytes(), sent, "call {i}");
        assert!(server.recv_cache_held() <= total, "after call {i}: {} kept", server.recv_cache_held());
        idle.push(client);
    }
    // The first connection's buffer fits and is kept; the others' were freed after use.
    let kept = server.recv_cache_held();
    assert!((8 << 20..=total).contains(&kept), "{kept} kept");
    drop(idle);
    // A connection that ends gives back what it kept.
    assert!(wait_until(Duration::from_secs(10), || server.connections() == 0 && server.recv_cache_held() == 0).await,
        "{} connections, {} kept", server.connections(), server.recv_cache_held());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_for_a_protocol_violation_is_released_though_its_peer_does_not_read() {
    let server = Server::builder()
        .drain_timeout(Duration::from_millis(300))
        .linger(Duration::from_millis(200))
        .write_stall_timeout(None)
        .build(TestService::default());
    let (handle, addr) = tcp_server(&server).await;
    // Echoes whose answers the peer never reads, then a frame of an unknown kind.
    let mut frames: Vec<Vec<u8>> = (1..=16).map(|id| echo_request(id, 1 << 20)).collect();
    let mut bad = vec![0u8; HEADER_LEN];
    FrameHeader::new(FrameKind::Ping).encode(&mut bad.as_mut_slice());
    bad[0] = 0xee;
    frames.push(bad);
    let peer = non_reading_peer(addr, frames);
    assert!(wait_until(Duration::from_secs(5), || server.connections() == 1).await);
    let released = wait_until(Duration::from_secs(8), || server.connections() == 0).await;
    assert!(released, "held {} bytes, {} connections", server.memory_held(), server.connections());
    assert_eq!(server.memory_held(), 0);
    drop(peer.join().unwrap());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_pings_gets_its_goaway_not_a_reset() {
    let (handle, addr) = tcp_server(&Server::builder().build(TestService::default())).await;
    // A small receive buffer: the server's pongs back up after a few kilobytes.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let s = sock.connect(addr).await.unwrap().into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = s;
        let mut flood = hello();
        for id in 0..200_000 {
            flood.extend_from_slice(&Ping { id, pong: false }.encode().unwrap().to_vec());
        }
        // Written whole before reading anything: the server gives up on us while our pings
        // are still arriving. (A server that stops reading without closing would block this
        // write: bounded, and then the read below tells.)
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&flood);
        std::thread::sleep(Duration::from_millis(300));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        (r.map_err(|e| e.kind()), out)
    })
    .await
    .unwrap();
    let (r, out) = reply;
    assert!(r.is_ok(), "the stream must end with a FIN, not a reset: {r:?}");
    // Walk the frames: pongs, then a goaway that says why.
    let mut at = 32;
    let mut goaway = None;
    while at + HEADER_LEN <= out.len() {
        let h = FrameHeader::decode(&out[at..at + HEADER_LEN]).unwrap();
        let len = HEADER_LEN + h.message_len as usize + h.payload_len as usize + 8 * h.attachments as usize;
        if h.kind == FrameKind::GoAway {
            goaway = Some(String::from_utf8_lossy(&out[at + HEADER_LEN..at + HEADER_LEN + h.message_len as usize]).into_owned());
        }
        at += len;
    }
    let goaway = goaway.expect("a goaway");
    assert!(goaway.contains("not reading"), "{goaway}");
    handle.shutdown().await;
}

/// A relay that passes client → server bytes slowly (16 KiB every 10 ms) through small socket
/// buffers, and server → client bytes as they come.
async fn slow_relay(to: std::net::SocketAddr) -> std::net::SocketAddr {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(32 << 10).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(8).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(to).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        });
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_does_not_kill_an_upload_that_is_making_progress() {
    let (handle, addr) = tcp_server(&Server::builder().keepalive(None, Duration::from_secs(20)).build(TestService::default())).await;
    let relay = slow_relay(addr).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_send_buffer_size(32 << 10).unwrap();
    let stream = sock.connect(relay).await.unwrap();
    let mut config = ClientConfig::default();
    config.conn.keepalive_interval = Some(Duration::from_millis(100));
    config.conn.keepalive_timeout = Duration::from_millis(800);
    let client = Client::connect(rpc_core::transport::tcp::from_stream(stream).unwrap(), config).await.unwrap();
    // 3 MiB at about 1.6 MB/s: two seconds in which the server sends nothing back.
    let data = pattern(3 << 20, 3);
    let r = client.call(ECHO, Body::new(Bytes::new(), vec![Payload::from(data.clone())]), CallOptions::default()).await;
    let r = r.expect("the upload was making progress all along");
    assert_eq!(r.attachments[0].to_bytes(), data);
    handle.shutdown().await;
}

/// A handler that blocks its first poll past the call's deadline, then waits forever; counts
/// the handlers alive.
#[derive(Clone, Default)]
struct SlowFirstPoll {
    alive: Arc<AtomicUsize>,
}

struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service for SlowFirstPoll {
    fn call(&self, _req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        self.alive.fetch_add(1, Ordering::SeqCst);
        let alive = Alive(self.alive.clone());
        Box::pin(async move {
            let _alive = alive;
            std::thread::sleep(Duration::from_millis(30));
            std::future::pending().await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_whose_deadline_passes_in_its_first_poll_is_not_left_running() {
    let svc = SlowFirstPoll::default();
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().max_calls_in_flight(2).build(svc.clone()).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    for _ in 0..20 {
        let e = client.call(ECHO, Body::default(), CallOptions::timeout(Duration::from_millis(5))).await.unwrap_err();
        assert!(matches!(e, CallError::DeadlineExceeded(_)) || e.code() == Code::DEADLINE_EXCEEDED, "{e:?}");
    }
    let alive = &svc.alive;
    assert!(wait_until(Duration::from_secs(5), || alive.load(Ordering::SeqCst) == 0).await, "{} handlers still running", alive.load(Ordering::SeqCst));
}

/// A hand-written service whose `call` panics before it returns a future, for one method.
struct PanicsInCall;

impl Service for PanicsInCall {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        if req.method == PANIC {
            panic!("call exploded before returning a future");
        }
        Box::pin(async move { Ok(req.body) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_hand_written_service_call_fails_only_that_call() {
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(PanicsInCall).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    let slow = {
        let c = client.clone();
        tokio::spawn(async move { c.call(ECHO, Body::message(Bytes::from_static(b"before")), CallOptions::default()).await })
    };
    let e = client.call(PANIC, Body::default(), CallOptions::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::INTERNAL, "{e:?}");
    assert!(e.to_string().contains("call exploded"), "{e}");
    assert_eq!(&slow.await.unwrap().unwrap().message[..], b"before");
    let r = client.call(ECHO, Body::message(Bytes::from_static(b"after")), CallOptions::default()).await.unwrap();
    assert_eq!(&r.message[..], b"after");
}

/// A transport whose receiving half panics once `armed` is set.
struct PanickingRecv<T: Transport> {
    inner: T,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

struct PanickingRecvHalf<R> {
    inner: R,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl<R: RecvHalf> RecvHalf for PanickingRecvHalf<R> {
    async fn recv(&mut self, buf: bytes::BytesMut) -> (std::io::Result<usize>, bytes::BytesMut) {
        let r = self.inner.recv(buf).await;
        assert!(!self.armed.load(Ordering::SeqCst), "transport bug, injected");
        r
    }
}

impl<T: Transport> Transport for PanickingRecv<T> {
    type Send = T::Send;
    type Recv = PanickingRecvHalf<T::Recv>;

    fn split(self) -> (Self::Recv, Self::Send) {
        let (r, s) = self.inner.split();
        (PanickingRecvHalf { inner: r, armed: self.armed }, s)
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.inner.stats()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_read_loop_fails_calls_in_flight_instead_of_leaving_them_pending() {
    let (a, b) = mem::pair();
    let svc = TestService::default();
    tokio::spawn(Server::builder().build(svc.clone()).serve_connection(b));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = Client::connect(PanickingRecv { inner: a, armed: armed.clone() }, ClientConfig::default()).await.unwrap();
    armed.store(true, Ordering::SeqCst);
    // The answer arrives, the reader panics on it: the call must fail, not wait forever.
    let r = tokio::time::timeout(Duration::from_secs(5), client.call(SLEEP_MS, sleep_body(10), CallOptions::default())).await;
    let e = r.expect("the call must not hang").unwrap_err();
    assert!(matches!(e, CallError::Connection(_)), "{e:?}");
    assert!(e.to_string().contains("panicked"), "{e}");
}

#[tokio::test]
async fn a_timeout_of_duration_max_means_no_deadline() {
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(TestService::default()).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    let r = client.call(SLEEP_MS, sleep_body(5), CallOptions::timeout(Duration::MAX)).await.unwrap();
    assert_eq!(&r.message[..], b"slept");
}
