//! Client and server over real TCP on loopback and over the in-memory transport.

mod common;
#[path = "shared/given_up.rs"]
mod given_up;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::{mem, RecvHalf, SendHalf, Transmit, Transport, TransportStats};
use rpc_core::{
    Body, Bytes, CallError, CallOptions, Client, ClientConfig, Code, ConnectError, Payload, Server, ServerHandle,
};

async fn tcp_server(server: &Server) -> (ServerHandle, std::net::SocketAddr) {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    (server.serve(acceptor), addr)
}

async fn tcp_pair() -> (Client, ServerHandle, TestService) {
    let svc = TestService::default();
    let (handle, addr) = tcp_server(&Server::builder().build(svc.clone())).await;
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    (client, handle, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_tcp_is_byte_exact_up_to_16_mib() {
    let (client, handle, _) = tcp_pair().await;
    for (i, size) in [0usize, 1, 100, 4096, 65_537, 1 << 20, 16 << 20].into_iter().enumerate() {
        let data = pattern(size, i as u8);
        // Several segments in, one attachment out.
        let mid = size / 3;
        let payload: Payload = [data.slice(..mid), data.slice(mid..)].into_iter().collect();
        let reply = client
            .call(ECHO, Body::new(Bytes::from_static(b"m"), vec![payload]), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(&reply.message[..], b"m");
        let got = reply.attachments.first().map(|p| p.to_bytes()).unwrap_or_default();
        assert_eq!(got.len(), size);
        assert!(got == data, "payload of {size} bytes came back different");
    }
    let stats = client.stats();
    assert_eq!(stats.transport, "tcp");
    assert!(stats.sends_copy >= 7 && stats.sends_zc == 0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_calls_share_one_connection() {
    let (client, handle, svc) = tcp_pair().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..5000u32 {
        let c = client.clone();
        tasks.spawn(async move {
            let data = Bytes::from(i.to_le_bytes().to_vec());
            let r = c.call(ECHO, Body::new(data.clone(), vec![Payload::from(data.clone())]), CallOptions::default()).await.unwrap();
            assert_eq!(r.message, data);
            assert_eq!(r.attachments[0].to_bytes(), data);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(svc.probe.finished.load(Ordering::SeqCst), 5000);
    assert_eq!(handle.server().connections(), 1);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_drops_the_handler_and_fails_the_call() {
    let (client, handle, svc) = tcp_pair().await;
    let start = Instant::now();
    let err = client.call(SLEEP_MS, sleep_body(5_000), CallOptions::timeout(Duration::from_millis(100))).await.unwrap_err();
    assert_eq!(err, CallError::DeadlineExceeded(Duration::from_millis(100)));
    assert!(start.elapsed() < Duration::from_secs(2));
    eventually("the handler is dropped", || svc.probe.dropped_unfinished.load(Ordering::SeqCst) == 1).await;
    // The connection is fine afterwards.
    client.call(ECHO, Body::default(), CallOptions::default()).await.unwrap();
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_future_cancels_the_handler() {
    let (client, handle, svc) = tcp_pair().await;
    let call = client.call(SLEEP_MS, sleep_body(10_000), CallOptions::default());
    let r = tokio::time::timeout(Duration::from_millis(100), call).await;
    assert!(r.is_err(), "the call should still be running");
    eventually("the handler is dropped", || svc.probe.dropped_unfinished.load(Ordering::SeqCst) == 1).await;
    assert_eq!(svc.probe.finished.load(Ordering::SeqCst), 0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_and_panics_fail_only_their_call() {
    let (client, handle, _) = tcp_pair().await;
    let e = client.call(FAIL, Body::default(), CallOptions::default()).await.unwrap_err();
    assert_eq!(e.status().unwrap().code, Code::INVALID_ARGUMENT);
    let e = client.call(PANIC, Body::default(), CallOptions::default()).await.unwrap_err();
    let s = e.status().unwrap();
    assert_eq!(s.code, Code::INTERNAL);
    assert!(s.message.contains("handler exploded"), "{}", s.message);
    let e = client.call(0x0bad_f00d, Body::default(), CallOptions::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::UNIMPLEMENTED);
    assert!(e.to_string().contains("unknown method id 0x0badf00d"), "{e}");
    // Still usable.
    let r = client.call(ECHO, Body::message(Bytes::from_static(b"alive")), CallOptions::default()).await.unwrap();
    assert_eq!(&r.message[..], b"alive");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_calls_in_flight_and_refuses_new_ones() {
    let svc = TestService::default();
    let server = Server::builder().grace_period(Duration::from_secs(5)).build(svc.clone());
    let (handle, addr) = tcp_server(&server).await;
    // A client that does not wait for a new connection when this one goes away.
    let mut cfg = ClientConfig::default();
    cfg.reconnect.wait_for_connection = false;
    let client = Client::connect_tcp(addr, cfg).await.unwrap();
    let slow = tokio::spawn({
        let c = client.clone();
        async move { c.call(SLEEP_MS, sleep_body(300), CallOptions::default()).await }
    });
    eventually("the handler starts", || svc.probe.started.load(Ordering::SeqCst) == 1).await;
    let shutdown = tokio::spawn(handle.shutdown());
    // The in-flight call completes normally.
    let r = slow.await.unwrap().unwrap();
    assert_eq!(&r.message[..], b"slept");
    // New calls on the old connection are refused with a clear error.
    let e = client.call(ECHO, Body::default(), CallOptions::default()).await.unwrap_err();
    assert!(matches!(e, CallError::ShuttingDown | CallError::Connection(_) | CallError::Unavailable(_)), "{e:?}");
    shutdown.await.unwrap();
    // And nobody is listening any more.
    let e = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap_err();
    assert!(matches!(e.reason(), ConnectError::Io(_) | ConnectError::Refused { .. } | ConnectError::Handshake(_) | ConnectError::ClosedBeforeHello), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_handlers_that_outlive_the_grace_period() {
    let svc = TestService::default();
    let server = Server::builder().grace_period(Duration::from_millis(200)).build(svc.clone());
    let (handle, addr) = tcp_server(&server).await;
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let slow = tokio::spawn({
        let c = client.clone();
        async move { c.call(SLEEP_MS, sleep_body(60_000), CallOptions::default()).await }
    });
    eventually("the handler starts", || svc.probe.started.load(Ordering::SeqCst) == 1).await;
    let start = Instant::now();
    handle.shutdown().await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(slow.await.unwrap(), Err(CallError::Connection(_))));
    // Aborting a task drops its future on the runtime's next turn.
    eventually("the handler is dropped", || svc.probe.dropped_unfinished.load(Ordering::SeqCst) == 1).await;
    assert_eq!(svc.probe.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_with_the_reason() {
    let server = Server::builder().max_connections(1).build(TestService::default());
    let (handle, addr) = tcp_server(&server).await;
    let first = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let err = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap_err();
    match err.reason() {
        ConnectError::Refused { code, message } => {
            assert_eq!(*code, Code::RESOURCE_EXHAUSTED);
            assert!(message.contains("limit of 1 connections"), "{message}");
        }
        e => panic!("expected a refusal, got {e:?}"),
    }
    first.call(ECHO, Body::default(), CallOptions::default()).await.unwrap();
    handle.shutdown().await;
}

/// A listener that accepts one connection and then says nothing for 10 s.
async fn silent_peer() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_times_out_when_the_peer_never_answers() {
    let addr = silent_peer().await;
    let cfg = ClientConfig { connect_timeout: Duration::from_millis(200), ..ClientConfig::default() };
    let start = Instant::now();
    let err = Client::connect_tcp(addr, cfg).await.unwrap_err();
    // The TCP connection was made: the error says the silence came after it, and what to suspect.
    assert!(matches!(err.reason(), ConnectError::NoHello(d) if *d == Duration::from_millis(200)), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("connecting to {addr}: connected, but no zcrpc hello came back within 200ms")), "{text}");
    assert!(text.contains("is a zcrpc server listening there?"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_named_as_such_when_the_handshake_timeout_runs_out_first() {
    let addr = silent_peer().await;
    let mut cfg = ClientConfig { connect_timeout: Duration::from_secs(5), ..ClientConfig::default() };
    cfg.conn.handshake_timeout = Duration::from_millis(100);
    let err = Client::connect_tcp(addr, cfg).await.unwrap_err();
    assert!(matches!(err.reason(), ConnectError::NoHello(d) if *d == Duration::from_millis(100)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_servers_limit_queue_on_the_client() {
    let svc = TestService::default();
    let server = Server::builder().max_calls_in_flight(4).build(svc.clone());
    let (handle, addr) = tcp_server(&server).await;
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    assert_eq!(client.server_hello().max_calls_in_flight, 4);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let c = client.clone();
        tasks.spawn(async move { c.call(SLEEP_MS, sleep_body(20), CallOptions::default()).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(svc.probe.finished.load(Ordering::SeqCst), 16);
    handle.shutdown().await;
}

#[tokio::test]
async fn server_vanishing_mid_call_fails_the_call_cleanly() {
    let (a, b) = mem::pair();
    let svc = TestService::default();
    let serve = tokio::spawn(Server::builder().build(svc.clone()).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.call(SLEEP_MS, sleep_body(60_000), CallOptions::default()).await }
    });
    eventually("the handler starts", || svc.probe.started.load(Ordering::SeqCst) == 1).await;
    serve.abort();
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::Connection(_)), "{err:?}");
    let err = client.call(ECHO, Body::default(), CallOptions::default()).await.unwrap_err();
    assert!(matches!(err, CallError::Connection(_) | CallError::ShuttingDown), "{err:?}");
}

/// A mem transport whose receiving half records every buffer region the kernel-side (here:
/// the pipe) wrote into, so a test can tell whether a received slice is in one of them.
struct Recording<T: Transport> {
    inner: T,
    regions: std::sync::Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
}

struct RecordingRecv<R> {
    inner: R,
    regions: std::sync::Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
}

impl<R: RecvHalf> RecvHalf for RecordingRecv<R> {
    async fn recv(&mut self, buf: bytes::BytesMut) -> (std::io::Result<usize>, bytes::BytesMut) {
        let start = buf.as_ptr() as usize + buf.len();
        let (r, buf) = self.inner.recv(buf).await;
        if let Ok(n) = r {
            self.regions.lock().unwrap().push((start, start + n));
        }
        (r, buf)
    }
}

impl<T: Transport> Transport for Recording<T> {
    type Send = T::Send;
    type Recv = RecordingRecv<T::Recv>;

    fn split(self) -> (Self::Recv, Self::Send) {
        let (r, s) = self.inner.split();
        (RecordingRecv { inner: r, regions: self.regions }, s)
    }

    fn stats(&self) -> std::sync::Arc<TransportStats> {
        self.inner.stats()
    }
}

#[tokio::test]
async fn received_attachments_are_slices_of_the_receive_buffer() {
    let (a, b) = mem::pair();
    let regions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let client_side = Recording { inner: a, regions: regions.clone() };
    tokio::spawn(Server::builder().build(TestService::default()).serve_connection(b));
    let client = Client::connect(client_side, ClientConfig::default()).await.unwrap();
    for size in [1000usize, 200_000, 4 << 20] {
        let data = pattern(size, 3);
        let reply = client.call(ECHO, Body::new(Bytes::new(), vec![Payload::from(data.clone())]), CallOptions::default()).await.unwrap();
        let got = &reply.attachments[0];
        assert_eq!(got.segments().len(), 1, "one attachment arrives as one slice");
        let bytes = got.to_bytes();
        assert_eq!(bytes, data);
        // Every byte of the attachment lies where a read put it: no copy in user space,
        // except for the bounded head of a large frame moved once into its exact-size buffer.
        let (lo, hi) = (bytes.as_ptr() as usize, bytes.as_ptr() as usize + bytes.len());
        let regions = regions.lock().unwrap();
        let covered: usize = regions.iter().map(|&(s, e)| e.min(hi).saturating_sub(s.max(lo))).sum();
        let copied = client.stats().recv_copied_bytes as usize;
        assert!(covered + copied >= size, "{size}: only {covered} bytes were read in place, {copied} copied");
        assert!(copied <= 64 * 1024 * 3, "copied {copied} bytes on receive");
    }
}

/// The sending half must not have been asked to gather: every transmit keeps the caller's
/// segments as separate pieces, in order, after the head.
#[test]
fn transmits_keep_the_callers_segments() {
    let a = Bytes::from(vec![1u8; 10_000]);
    let b = Bytes::from(vec![2u8; 20_000]);
    let req = rpc_core::frame::Request {
        id: 1,
        method: 1,
        mode: Default::default(), await_commit: false,
        metadata: Bytes::new(),
        deadline: None,
        message: Bytes::new(),
        attachments: vec![[a.clone(), b.clone()].into_iter().collect()],
    };
    let t: Transmit = req.encode().unwrap();
    assert_eq!(t.segments.len(), 2);
    assert_eq!(t.segments[0].memory().unwrap().as_ptr(), a.as_ptr());
    assert_eq!(t.segments[1].memory().unwrap().as_ptr(), b.as_ptr());
    let _ = <rpc_core::transport::tcp::TcpTransport as Transport>::split;
    fn _assert_send<S: SendHalf>() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reads_each_connections_counters_and_their_totals() {
    let svc = TestService::default();
    let (handle, addr) = tcp_server(&Server::builder().build(svc)).await;
    let server = handle.server().clone();
    let a = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let b = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let call = |c: &Client, n: usize| {
        let c = c.clone();
        async move {
            c.call(ECHO, Body::new(Bytes::from_static(b"s"), vec![Payload::from(pattern(n, 1))]), CallOptions::default()).await.unwrap();
        }
    };
    call(&a, 100_000).await;
    call(&b, 10).await;
    eventually("two connections listed", || server.connection_stats().len() == 2).await;
    let each = server.connection_stats();
    // Accept order: a's connection first, and it received its 100 000 bytes.
    assert!(each[0].recv_bytes > 100_000 && each[1].recv_bytes < 1000, "{each:?}");
    let total = server.stats();
    assert_eq!(total.recv_bytes, each[0].recv_bytes + each[1].recv_bytes);
    // A closed connection leaves the list; its counters stay in the totals.
    drop(a);
    eventually("one connection listed", || server.connection_stats().len() == 1).await;
    assert!(server.stats().recv_bytes >= total.recv_bytes);
    assert_eq!(server.connection_stats()[0].recv_bytes, each[1].recv_bytes);
    drop(b);
    handle.shutdown().await;
}

/// Every connection's counters are emitted through `tracing` when it ends.
#[test]
fn a_connection_emits_its_counters_when_it_ends() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!("{}=debug", rpc_core::STATS_TARGET)))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // A current-thread runtime: the connection tasks run on this thread, under this subscriber.
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            let (client, handle, _) = tcp_pair().await;
            client.call(ECHO, Body::new(Bytes::from_static(b"t"), vec![Payload::from(pattern(5000, 2))]), CallOptions::default()).await.unwrap();
            // Both wait until their connection has ended (and emitted).
            client.close().await;
            handle.shutdown().await;
        })
    });
    let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let closed: Vec<&str> = out.lines().filter(|l| l.contains("connection closed")).collect();
    assert_eq!(closed.len(), 2, "one event per side:\n{out}");
    for line in closed {
        assert!(line.contains("transport=tcp") && line.contains("sends_copy=") && line.contains("recv_bytes="), "{line}");
    }
}

/// A transport whose sending half panics once it has sent `left` batches of frames: a stand-in for a bug.
struct PanicAfter<T> {
    inner: T,
    left: usize,
}

struct PanicSend<S> {
    inner: S,
    left: usize,
}

impl<T: Transport> Transport for PanicAfter<T> {
    type Send = PanicSend<T::Send>;
    type Recv = T::Recv;

    fn split(self) -> (T::Recv, PanicSend<T::Send>) {
        let (r, s) = self.inner.split();
        (r, PanicSend { inner: s, left: self.left })
    }

    fn stats(&self) -> std::sync::Arc<TransportStats> {
        self.inner.stats()
    }
}

impl<S: SendHalf> SendHalf for PanicSend<S> {
    async fn send(&mut self, batch: &mut Vec<Transmit>) -> std::io::Result<()> {
        // Counts batches with a frame in them (the hello alone may or may not leave first).
        if batch.iter().any(|t| t.head.len() != rpc_core::frame::HELLO_LEN) {
            assert!(self.left > 0, "injected panic in the sending half");
            self.left -= 1;
        }
        self.inner.send(batch).await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.inner.shutdown().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_send_half_fails_the_calls_instead_of_hanging_them() {
    let (a, b) = mem::pair();
    let handle = Server::builder().build(TestService::default()).serve_connection(b);
    let server = tokio::spawn(handle);
    // The hello goes out; the first call's send panics.
    let client = Client::connect(PanicAfter { inner: a, left: 0 }, ClientConfig::default()).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client.call(ECHO, Body::message(Bytes::from_static(b"x")), CallOptions::default()),
    )
    .await
    .expect("the call must fail, not hang");
    match r {
        Err(CallError::Connection(e)) => assert!(e.to_string().contains("panicked"), "{e}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(!client.is_open(), "{:?}", client.call(ECHO, Body::default(), CallOptions::default()).await);
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server side ends too");
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_dropped_before_its_request_left_is_never_seen_by_the_server() {
    // The experiment of issue 9: a large put given up on at once (as by a timeout of 0). The
    // request is still queued when the future is dropped, so it is withdrawn, not sent.
    let svc = TestService::default();
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(svc.clone()).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    let blob = Payload::from(vec![3u8; 60 << 20]);
    for _ in 0..20 {
        let call = client.call(ECHO, Body::new(Bytes::new(), vec![blob.clone()]), CallOptions::default());
        // Polled once (the request is queued), then given up on before anything else runs.
        tokio::select! {
            biased;
            _ = call => panic!("a 60 MiB echo cannot finish in one poll"),
            _ = std::future::ready(()) => {}
        }
    }
    // A call after them goes through, and is the only one the server ever started.
    client.call(ECHO, Body::message(Bytes::from_static(b"after")), CallOptions::default()).await.unwrap();
    assert_eq!(svc.probe.started.load(Ordering::SeqCst), 1);
    assert!(client.stats().bytes_copy < 1 << 20, "{:?}", client.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_put_given_up_on_while_on_the_wire_never_runs_on_the_server() {
    // The experiment of issue 9 as a user ran it, over a real socket (`shared/given_up.rs`).
    let svc = TestService::default();
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let _handle = Server::builder().build(svc.clone()).serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    given_up::large_puts_given_up_on(&client, ECHO, || svc.probe.started.load(Ordering::SeqCst), "tcp").await;
}
