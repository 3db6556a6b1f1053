//! The driver's direct path: a lone call's small request or response written by the task that
//! queued it while the connection's writer is idle, and whatever that write did not finish
//! handed to the writer, in order.

mod common;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use common::*;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::{DirectWrite, RecvHalf, SendHalf, StreamTransport, Transmit, Transport, TransportStats};
use rpc_core::{
    Body, BoxFuture, Bytes, CallMode, CallOptions, CallStream, Client, ClientConfig, Payload, Server, ServerRequest,
    Service, Status,
};
use tokio::io::{AsyncReadExt, AsyncWrite, DuplexStream, ReadHalf, WriteHalf};

/// A request of `size` bytes: the first 2 KiB as the message, the rest as an attachment.
fn body(size: usize, seed: u8) -> Body {
    let data = pattern(size, seed);
    let cut = size.min(2048);
    let rest = data.slice(cut..);
    Body::new(data.slice(..cut), if rest.is_empty() { vec![] } else { vec![Payload::from(rest)] })
}

async fn echo_checked(client: &Client, size: usize, seed: u8) {
    let sent = body(size, seed);
    let reply = client.call(ECHO, sent.clone(), CallOptions::default()).await.unwrap();
    assert_eq!(reply.message, sent.message, "message of a {size}-byte call");
    let got: Vec<Bytes> = reply.attachments.iter().map(Payload::to_bytes).collect();
    let want: Vec<Bytes> = sent.attachments.iter().map(Payload::to_bytes).collect();
    assert_eq!(got, want, "attachments of a {size}-byte call");
}

/// `calls` small calls one at a time, then a 1 MiB one: the small ones go direct both ways, the
/// large one by the writer.
async fn one_at_a_time_goes_direct_both_ways(client: &Client, server: &Server, calls: usize) {
    for i in 0..calls {
        echo_checked(client, [0, 64, 1000, 4096, 12_000][i % 5], i as u8).await;
    }
    // Every request went by the direct path but those of the first moments (the writer still
    // busy with the hello) and any keepalive's company; the server answered the same way.
    let c = client.stats();
    assert!(c.sends_direct >= calls as u64 - 5, "client: {c:?}");
    assert!(c.sends_copy >= c.sends_direct);
    let s = server.stats();
    assert!(s.sends_direct >= calls as u64 - 5, "server: {s:?}");
    // Larger frames stay the writer's.
    echo_checked(client, 1 << 20, 7).await;
    assert_eq!(client.stats().sends_direct, c.sends_direct, "a 1 MiB request went by the direct path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_at_a_time_over_tcp_goes_direct_both_ways() {
    let server = Server::builder().build(TestService::default());
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = server.serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    one_at_a_time_goes_direct_both_ways(&client, handle.server(), 200).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_at_a_time_over_a_unix_socket_goes_direct_both_ways() {
    let dir = std::env::temp_dir().join(format!("zcrpc-direct-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let server = Server::builder().build(TestService::default());
    let handle = server.serve(rpc_core::transport::unix::UnixAcceptor::bind(&path).await.unwrap());
    let client = Client::connect_unix(&path, ClientConfig::default()).await.unwrap();
    assert_eq!(client.stats().transport, "unix");
    one_at_a_time_goes_direct_both_ways(&client, handle.server(), 100).await;
    handle.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_in_flight_leave_the_writing_to_the_writer() {
    let server = Server::builder().build(TestService::default());
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = server.serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32u8 {
        let c = client.clone();
        tasks.spawn(async move {
            for i in 0..50 {
                echo_checked(&c, 64 + i, t).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let c = client.stats();
    assert!(c.sends_copy > c.sends_direct, "the writer wrote none of 1,600 concurrent requests: {c:?}");
    handle.shutdown().await;
}

/// A burst of calls queued by one task, as a client with many calls in flight queues its next
/// ones when a read brings their answers: the first frames of the burst leave at once (the
/// early flush), so the server starts on them while the rest are queued, and the server's
/// answers to a burst of requests do the same. Everything arrives whole and in its call.
#[tokio::test]
async fn a_burst_of_calls_and_their_answers_leave_in_early_writes() {
    let server = Server::builder().build(TestService::default());
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = server.serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    echo_checked(&client, 64, 0).await;
    let (sent_before, answered_before) = (client.stats().sends_direct, handle.server().stats().sends_direct);

    const BURST: usize = 128;
    for round in 0..4u8 {
        // One task queues every request before it yields: on this single-threaded runtime the
        // writer cannot run in between, so only the early flush can write before the last.
        let calls = (0..BURST).map(|i| echo_checked(&client, 64 + i % 200, round ^ i as u8));
        futures::future::join_all(calls).await;
    }
    let sent = client.stats().sends_direct - sent_before;
    // 96 of each 128 requests went early (three writes of 32); the last 32, the writer's.
    assert!(sent >= 4 * 96, "{sent} of {} requests went early: {:?}", 4 * BURST, client.stats());
    let answered = handle.server().stats().sends_direct - answered_before;
    assert!(answered >= 4 * 32, "{answered} of {} answers went early: {:?}", 4 * BURST, handle.server().stats());
    // Large frames (a 1 MiB body) stay the writer's, whatever is queued around them. (The
    // first request may go by the lone call's direct path, if the last answer came alone.)
    let direct = client.stats().sends_direct;
    let big = (0..40).map(|i| echo_checked(&client, if i == 5 { 1 << 20 } else { 64 }, i as u8));
    futures::future::join_all(big).await;
    assert!(client.stats().sends_direct <= direct + 1, "frames queued with a 1 MiB request went early: {:?}", client.stats());
    handle.shutdown().await;
}

/// Client streaming (`UPLOAD`): answers how many bytes of attachments came, each message
/// checked against its pattern. Server streaming (`DOWNLOAD`): sends `MESSAGES` messages.
/// Bidirectional (`PING_PONG`): answers each message with the same bytes, one at a time.
struct Streams;

const UPLOAD: u32 = 1;
const DOWNLOAD: u32 = 2;
const PING_PONG: u32 = 3;
/// Stream messages of this size (an attachment: too large for a run of small frames, well
/// under the direct path's limit).
const MESSAGE: usize = 4000;
const MESSAGES: u32 = 200;

impl Service for Streams {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move {
            match (req.method, req.stream.take()) {
                (UPLOAD, Some(CallStream { mut receiver, .. })) => {
                    let (mut i, mut total) = (0u32, 0u64);
                    while let Some(m) = receiver.recv().await {
                        let m = m.map_err(|e| Status::new(e.code(), e.to_string()))?;
                        let a = m.attachments[0].to_bytes();
                        if a != pattern(MESSAGE, i as u8) {
                            return Err(Status::invalid_argument(format!("message {i} is corrupt")));
                        }
                        total += a.len() as u64;
                        i += 1;
                    }
                    Ok(Body::message(Bytes::copy_from_slice(&total.to_le_bytes())))
                }
                (DOWNLOAD, Some(CallStream { mut sender, .. })) => {
                    for i in 0..MESSAGES {
                        let m = Body::new(Bytes::new(), vec![Payload::from(pattern(MESSAGE, i as u8))]);
                        sender.send(m).await.map_err(|e| Status::new(e.code(), e.to_string()))?;
                    }
                    Ok(Body::default())
                }
                (PING_PONG, Some(CallStream { mut sender, mut receiver })) => {
                    while let Some(m) = receiver.recv().await {
                        let m = m.map_err(|e| Status::new(e.code(), e.to_string()))?;
                        sender.send(Body::message(m.message)).await.map_err(|e| Status::new(e.code(), e.to_string()))?;
                    }
                    Ok(Body::default())
                }
                (m, _) => Err(Status::unimplemented(m)),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_one_message_at_a_time_goes_direct_both_ways() {
    let server = Server::builder().build(Streams);
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = server.serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let (mut tx, mut rx) = client.open(PING_PONG, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
    // Settle the call's opening (its request, the first credit) before counting.
    tx.send(Body::message(Bytes::from_static(b"open"))).await.unwrap();
    assert_eq!(&rx.recv().await.unwrap().unwrap().message[..], b"open");
    let (sent_before, answered_before) = (client.stats().sends_direct, handle.server().stats().sends_direct);

    let rounds = 200u32;
    for i in 0..rounds {
        let m = pattern(64, i as u8);
        tx.send(Body::message(m.clone())).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().message, m, "message {i}");
    }
    // A message and its answer, one at a time: each side writes its message itself (a few may
    // meet a writer still busy with a credit grant).
    let sent = client.stats().sends_direct - sent_before;
    assert!(sent >= u64::from(rounds) * 9 / 10, "{sent} of {rounds} messages went direct: {:?}", client.stats());
    let answered = handle.server().stats().sends_direct - answered_before;
    assert!(answered >= u64::from(rounds) * 9 / 10, "{answered} of {rounds} answers went direct: {:?}", handle.server().stats());
    tx.finish();
    assert!(rx.recv().await.is_none());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_messages_leave_by_the_writer_not_one_direct_write_each() {
    let server = Server::builder().build(Streams);
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = server.serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let (sent_before, answered_before) = (client.stats().sends_direct, handle.server().stats().sends_direct);

    // Upload: one call in flight, the writer idle between messages, every message 4 KB.
    let (mut tx, mut rx) = client.open(UPLOAD, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap().split();
    for i in 0..MESSAGES {
        tx.send(Body::new(Bytes::new(), vec![Payload::from(pattern(MESSAGE, i as u8))])).await.unwrap();
    }
    tx.finish();
    let total = rx.recv().await.unwrap().unwrap();
    assert_eq!(u64::from_le_bytes(total.message[..].try_into().unwrap()), u64::from(MESSAGES) * MESSAGE as u64);

    // Download: the same the other way.
    let (_, mut rx) = client.open(DOWNLOAD, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap().split();
    let mut i = 0u32;
    while let Some(m) = rx.recv().await {
        assert_eq!(m.unwrap().attachments[0].to_bytes(), pattern(MESSAGE, i as u8), "message {i}");
        i += 1;
    }
    assert_eq!(i, MESSAGES);

    // The calls' own frames (the request, the end of the upload, the answer) may go direct;
    // the 200 messages each way are the writer's.
    let sent = client.stats().sends_direct - sent_before;
    assert!(sent < 10, "{sent} of the client's frames went direct: {:?}", client.stats());
    let answered = handle.server().stats().sends_direct - answered_before;
    assert!(answered < 10, "{answered} of the server's frames went direct: {:?}", handle.server().stats());
    handle.shutdown().await;
}

/// How the test transport's direct write behaves.
#[derive(Debug, Clone, Copy)]
enum Direct {
    /// Takes at most this many bytes a call: every frame is cut and its rest handed over.
    Trickle(usize),
    /// Never takes anything (a full socket).
    Refuse,
    /// Fails (the writer then sends, and here succeeds).
    Fail,
}

/// What the test sets of its transport while it runs: whether the writer may write (`open`),
/// and how the direct path behaves.
#[derive(Debug)]
struct Gate {
    open: tokio::sync::watch::Sender<bool>,
    direct: Mutex<Direct>,
}

impl Gate {
    fn new(direct: Direct) -> Arc<Gate> {
        Arc::new(Gate { open: tokio::sync::watch::channel(true).0, direct: Mutex::new(direct) })
    }
}

/// An in-memory transport whose writer and direct path share one pipe end; the far end for
/// the server.
struct Piped {
    reader: ReadHalf<DuplexStream>,
    writer: Arc<Mutex<WriteHalf<DuplexStream>>>,
    gate: Arc<Gate>,
    stats: Arc<TransportStats>,
}

impl Piped {
    fn new(gate: Arc<Gate>) -> (Piped, DuplexStream) {
        let (near, far) = tokio::io::duplex(64 << 10);
        let (reader, writer) = tokio::io::split(near);
        let stats = Arc::new(TransportStats::new("piped"));
        (Piped { reader, writer: Arc::new(Mutex::new(writer)), gate, stats }, far)
    }
}

struct PipedSend {
    writer: Arc<Mutex<WriteHalf<DuplexStream>>>,
    gate: Arc<Gate>,
}

struct PipedRecv(ReadHalf<DuplexStream>);

#[derive(Debug)]
struct PipedDirect {
    writer: Arc<Mutex<WriteHalf<DuplexStream>>>,
    gate: Arc<Gate>,
}

impl Transport for Piped {
    type Send = PipedSend;
    type Recv = PipedRecv;

    fn split(self) -> (PipedRecv, PipedSend) {
        (PipedRecv(self.reader), PipedSend { writer: self.writer, gate: self.gate })
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }
}

/// Writes `bytes` into the shared pipe end, waiting for room.
async fn write_all(writer: &Mutex<WriteHalf<DuplexStream>>, bytes: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        let n = std::future::poll_fn(|cx| Pin::new(&mut *writer.lock().unwrap()).poll_write(cx, &bytes[at..])).await?;
        at += n;
    }
    Ok(())
}

impl SendHalf for PipedSend {
    async fn send(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        let _ = self.gate.open.subscribe().wait_for(|open| *open).await;
        let bytes: Vec<u8> = batch.drain(..).flat_map(|t| t.to_vec()).collect();
        write_all(&self.writer, &bytes).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut *self.writer.lock().unwrap()).poll_shutdown(cx)).await
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        Some(Arc::new(PipedDirect { writer: self.writer.clone(), gate: self.gate.clone() }))
    }
}

impl DirectWrite for PipedDirect {
    fn try_write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let max = match *self.gate.direct.lock().unwrap() {
            Direct::Trickle(n) => n,
            Direct::Refuse => return Err(io::ErrorKind::WouldBlock.into()),
            Direct::Fail => return Err(io::Error::other("the direct write failed")),
        };
        let bytes: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).take(max).collect();
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut *self.writer.lock().unwrap()).poll_write(&mut cx, &bytes) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl RecvHalf for PipedRecv {
    async fn recv(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let r = self.0.read_buf(&mut buf).await;
        (r, buf)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_direct_path_did_not_finish_reach_the_peer_whole_and_in_order() {
    for mode in [Direct::Trickle(5), Direct::Trickle(1000), Direct::Refuse, Direct::Fail] {
        let (transport, far) = Piped::new(Gate::new(mode));
        let (far_r, far_w) = tokio::io::split(far);
        let server = Server::builder().build(TestService::default());
        let serving = tokio::spawn(server.serve_connection(StreamTransport::new(far_r, far_w, "mem")));
        let client = Client::connect(transport, ClientConfig::default()).await.unwrap();
        for i in 0..100 {
            echo_checked(&client, [0, 3, 64, 999, 5000, 12_000][i % 6], i as u8).await;
        }
        let c = client.stats();
        match mode {
            Direct::Trickle(1000) => assert!(c.sends_direct > 0, "{mode:?}: {c:?}"),
            _ => assert_eq!(c.sends_direct, 0, "{mode:?}: {c:?}"),
        }
        client.close().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), serving).await.expect("the server's connection ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_ping_cut_short_by_the_direct_path_is_not_timed_before_it_is_written() {
    let gate = Gate::new(Direct::Trickle(usize::MAX));
    let (transport, far) = Piped::new(gate.clone());
    let stats = transport.stats();
    let (far_r, far_w) = tokio::io::split(far);
    // The server sends nothing unasked: only our ping's answer would prove it alive.
    let server = Server::builder().keepalive(None, Duration::from_secs(60)).build(TestService::default());
    let serving = tokio::spawn(server.serve_connection(StreamTransport::new(far_r, far_w, "mem")));
    let mut config = ClientConfig::default();
    config.conn.keepalive_interval = Some(Duration::from_millis(50));
    config.conn.keepalive_timeout = Duration::from_millis(300);
    let client = Client::connect(transport, config).await.unwrap();
    echo_checked(&client, 64, 1).await;

    // The next ping leaves by the direct path, one byte of it; the rest waits with the writer,
    // held here for three keepalive timeouts: the ping is not out, so its timeout has not begun.
    *gate.direct.lock().unwrap() = Direct::Trickle(1);
    gate.open.send_replace(false);
    let sent = stats.snapshot().sent_bytes;
    eventually("a ping cut short by the direct path", || stats.snapshot().sent_bytes > sent).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    *gate.direct.lock().unwrap() = Direct::Trickle(usize::MAX);
    gate.open.send_replace(true);

    // The writer finishes the ping, the server answers it: the connection is alive.
    let r = tokio::time::timeout(Duration::from_secs(10), client.call(ECHO, body(64, 2), CallOptions::default())).await;
    let reply = r.expect("the call ended").expect("the connection outlived a ping held by its writer");
    assert_eq!(reply.message, body(64, 2).message);
    client.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended");
}

/// Holds its call open (so that the connection has other calls in flight, and the answers
/// are the writer's), or answers as a task working through a backlog would: it starts
/// two tasks that pass work back and forth for a while ([`relay`]), then answers, noting when.
struct HoldOrAnswer {
    answered: Arc<Mutex<Vec<std::time::Instant>>>,
}

const HOLD: u32 = 1;
const ANSWER: u32 = 2;

/// How long each turn of [`relay`] works, and how many turns it takes.
const SLICE: Duration = Duration::from_millis(10);
const TURNS: usize = 20;

impl Service for HoldOrAnswer {
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        if request.method == HOLD {
            return Box::pin(std::future::pending());
        }
        let answered = self.answered.clone();
        Box::pin(async move {
            tokio::spawn(relay(TURNS, SLICE));
            answered.lock().unwrap().push(std::time::Instant::now());
            Ok(Body::default())
        })
    }
}

/// Two tasks passing a token back and forth, each working for `slice` before passing it on:
/// the runtime always has one of them to run, for `turns` slices in all.
async fn relay(turns: usize, slice: Duration) {
    let (to_b, mut at_b) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (to_a, mut at_a) = tokio::sync::mpsc::unbounded_channel::<()>();
    let work = move || {
        let until = std::time::Instant::now() + slice;
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    };
    tokio::spawn(async move {
        while at_b.recv().await.is_some() {
            work();
            if to_a.send(()).is_err() {
                return;
            }
        }
    });
    for _ in 0..turns / 2 {
        work();
        if to_b.send(()).is_err() || at_a.recv().await.is_none() {
            return;
        }
    }
}

/// With several calls in flight an answer is the writer's, which lets the tasks already woken
/// queue their frames first, so that they leave in one write. It must not wait for more. With
/// `tokio::task::yield_now` the writer was left out of the runtime's queue until the runtime
/// next polled its IO driver: with tasks that keep waking each other, after all of their
/// work (measured in the benchmarks: tarpc's channel and its handlers decoded and answered a
/// window of eight 1 MiB requests before any answer left, the client idle meanwhile).
#[test]
fn an_answer_does_not_wait_for_the_tasks_that_keep_its_server_thread_busy() {
    const ANSWERS: usize = 3;
    let answered = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let service = HoldOrAnswer { answered: answered.clone() };
    // The server on a thread of its own (a single-threaded runtime, as one worker of many is).
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(acceptor.local_addr().unwrap()).unwrap();
            let _handle = Server::builder().build(service).serve(acceptor);
            std::future::pending::<()>().await;
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let waits = rt.block_on(async move {
        let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
        // Two calls held open: with an answer's own call over, others are still in flight.
        let held: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.call(HOLD, Body::default(), CallOptions::default()).await })
            })
            .collect();
        let mut waits = Vec::new();
        for i in 0..ANSWERS {
            let reply = tokio::time::timeout(Duration::from_secs(10), client.call(ANSWER, Body::default(), CallOptions::default()));
            reply.await.expect("an answer within 10 s").expect("an answer");
            let back = std::time::Instant::now();
            let at = answered.lock().unwrap()[i];
            waits.push(back - at);
            // The relay this call started is over before the next.
            tokio::time::sleep(SLICE * TURNS as u32).await;
        }
        held.iter().for_each(|h| h.abort());
        waits
    });
    // Each answer may wait for a turn or two of the relay (10 ms each); behind all of them it
    // would wait 200 ms.
    let slowest = waits.iter().max().unwrap();
    assert!(*slowest < SLICE * 8, "answers waited {waits:?} after their handler ran");
}
