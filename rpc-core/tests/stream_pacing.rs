//! A stream sender with credit to spare still waits for its connection's writer: it queues a
//! bounded run ahead of what the writer took, never its whole window. Checked with a server
//! whose writes stop going out after its first 64 KiB: its handler, streaming an endless
//! iterator with `send_all` (and, separately, one `send` at a time), must stop producing long
//! before the 16 MiB window the client granted is spent.
//!
//! The same on the client, for an upload; and a sender parked so wakes when its connection
//! fails under it. `writer_turn`, for a producer that waits before making a message, waits
//! the same way, counting a large message's pieces.
//!
//! Before this bound, a handler on a single-threaded runtime queued a whole window before the
//! writer (a task on the same thread) wrote a byte: the receiver idled, then the sender.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use rpc_core::conn::ConnConfig;
use rpc_core::transport::{mem, tcp, SendHalf, Transmit, Transport, TransportStats};
use rpc_core::{
    Body, BoxFuture, Bytes, CallMode, CallOptions, Client, ClientConfig, Server, ServerRequest, Service, Status,
    StreamReceiver, StreamSender,
};

/// The window the client grants: a sender without the bound would queue all of it.
const WINDOW: u32 = 16 << 20;
/// A message's bytes.
const MESSAGE: usize = 64;
/// What one costs in credit and queue space: its frame header counted.
const COST: usize = MESSAGE + rpc_core::frame::HEADER_LEN;
/// Messages in the window.
const WINDOW_MESSAGES: usize = WINDOW as usize / COST;

/// Method 1: `send_all` of an endless iterator; method 2: `send` in a loop. Both count the
/// messages they produced. Method 3: an upload nobody reads (the call stays open).
struct Endless(Arc<AtomicUsize>);

impl Service for Endless {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let produced = self.0.clone();
        Box::pin(async move {
            let (mut tx, _rx) = req.stream.take().expect("a streaming call").split();
            if req.method == 3 {
                std::future::pending::<()>().await;
            }
            let message = Body::message(Bytes::from(vec![7u8; MESSAGE]));
            let next = || {
                produced.fetch_add(1, Ordering::SeqCst);
                message.clone()
            };
            let _ = match req.method {
                1 => tx.send_all(std::iter::repeat_with(next)).await,
                _ => loop {
                    if let Err(e) = tx.send(next()).await {
                        break Err(e);
                    }
                },
            };
            Ok(Body::default())
        })
    }
}

/// A transport whose sends go through until `allowance` bytes went, then wait (a peer whose
/// receive window closed) until `broken` is notified, and fail.
struct Stalling<T> {
    inner: T,
    allowance: usize,
    broken: Arc<Notify>,
}

impl<T> Stalling<T> {
    fn new(inner: T) -> Self {
        Stalling { inner, allowance: ALLOWANCE, broken: Arc::new(Notify::new()) }
    }
}

struct StallingSend<S> {
    inner: S,
    allowance: usize,
    broken: Arc<Notify>,
}

impl<T: Transport> Transport for Stalling<T> {
    type Send = StallingSend<T::Send>;
    type Recv = T::Recv;

    fn split(self) -> (Self::Recv, Self::Send) {
        let (recv, send) = self.inner.split();
        (recv, StallingSend { inner: send, allowance: self.allowance, broken: self.broken })
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.inner.stats()
    }
}

impl<S: SendHalf> SendHalf for StallingSend<S> {
    async fn send(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        if self.allowance == 0 {
            self.broken.notified().await;
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the test broke the stalled transport"));
        }
        self.allowance = self.allowance.saturating_sub(batch.iter().map(Transmit::len).sum());
        self.inner.send(batch).await
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.inner.shutdown()
    }
}

/// Waits until `count` stops moving for 200 ms (or reaches `most`), and returns it.
async fn settled(count: &AtomicUsize, most: usize) -> usize {
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = count.load(Ordering::SeqCst);
        if now == last || now >= most {
            return now;
        }
        last = now;
    }
}

/// Bytes the server's writes carry before they stall.
const ALLOWANCE: usize = 64 << 10;

/// Opens method `method`'s stream to a server whose writes stall after [`ALLOWANCE`], and
/// returns how many messages the handler produced once it settled.
async fn produced_against_a_stalled_writer<T: Transport>(method: u32, server_end: T, client_end: impl Transport) -> usize {
    let produced = Arc::new(AtomicUsize::new(0));
    let server = Server::builder().build(Endless(produced.clone()));
    tokio::spawn(server.serve_connection(Stalling::new(server_end)));
    let config = ClientConfig { conn: ConnConfig { stream_window: WINDOW, ..ConnConfig::default() }, ..ClientConfig::default() };
    let client = Client::connect(client_end, config).await.unwrap();
    let _call = client.open(method, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap();
    // The handler waits for a writer that never takes more, or the window is spent.
    settled(&produced, WINDOW_MESSAGES).await
}

/// The fewest bytes a message takes in the writer's queue: small messages go back to back in
/// stream batches, each behind a 4-byte length.
const QUEUED: usize = MESSAGE + 4;

/// What the handler may have produced: what went out before the stall (the allowance and the
/// batch that crossed it), the batch the writer is stuck in, one run queued ahead of it (each
/// batch at most 256 KiB and a message) and one `send_all` run (256 messages). Without the bound
/// the handler produces the whole window.
const BOUND: usize = (ALLOWANCE + 3 * (256 << 10)) / QUEUED + 3 + 256;

#[tokio::test]
async fn a_send_all_stream_stops_a_run_ahead_of_a_stalled_writer() {
    let (a, b) = mem::pair();
    let n = produced_against_a_stalled_writer(1, b, a).await;
    assert!(n <= BOUND, "{n} messages produced against a stalled writer (window: {WINDOW_MESSAGES})");
}

#[tokio::test]
async fn a_send_loop_stops_a_run_ahead_of_a_stalled_writer() {
    let (a, b) = mem::pair();
    let n = produced_against_a_stalled_writer(2, b, a).await;
    assert!(n <= BOUND, "{n} messages produced against a stalled writer (window: {WINDOW_MESSAGES})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_stream_stops_a_run_ahead_of_a_stalled_writer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client_end = tcp::connect(addr).await.unwrap();
    let server_end = tcp::from_stream(listener.accept().await.unwrap().0).unwrap();
    let n = produced_against_a_stalled_writer(1, server_end, client_end).await;
    assert!(n <= BOUND, "{n} messages produced against a stalled writer (window: {WINDOW_MESSAGES})");
}

/// A client whose writes stall after [`ALLOWANCE`] (until `broken` is notified, then fail), and
/// the two ends of an upload to a handler that never reads it.
async fn upload_nobody_reads() -> (Client, StreamSender, StreamReceiver, Arc<Notify>) {
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(Endless(Arc::default())).serve_connection(b));
    let client_end = Stalling::new(a);
    let broken = client_end.broken.clone();
    let client = Client::connect(client_end, ClientConfig::default()).await.unwrap();
    let call = client.open(3, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap();
    let (tx, rx) = call.split();
    (client, tx, rx, broken)
}

#[tokio::test]
async fn an_upload_stops_a_run_ahead_of_a_stalled_writer_and_fails_when_its_connection_does() {
    let (_client, mut tx, _rx, broken) = upload_nobody_reads().await;
    let produced = Arc::new(AtomicUsize::new(0));
    let counter = produced.clone();
    let upload = tokio::spawn(async move {
        let message = Body::message(Bytes::from(vec![7u8; MESSAGE]));
        tx.send_all(std::iter::repeat_with(|| {
            counter.fetch_add(1, Ordering::SeqCst);
            message.clone()
        }))
        .await
    });
    // The server's default window: 4 MiB.
    let window = (4 << 20) / COST;
    let n = settled(&produced, window).await;
    assert!(n <= BOUND, "{n} messages produced against a stalled writer (window: {window})");
    // The writer fails: the connection closes, and the parked sender hears of it.
    broken.notify_one();
    let result = tokio::time::timeout(Duration::from_secs(10), upload).await.expect("the upload ended").unwrap();
    assert!(result.is_err(), "an upload over a failed connection reported success");
}

/// `writer_turn` (on a stream's sender and on the client): a turn at once while the writer
/// keeps up; none while the writer is stuck in one message and another waits; a turn at once,
/// though the writer is stuck, while only the pieces of a request of over 2 MiB wait (a small
/// call goes between them); once the connection fails, turns come.
#[tokio::test]
async fn turns_wait_while_the_writer_is_behind_and_come_when_the_connection_fails() {
    let (client, mut tx, _rx, broken) = upload_nobody_reads().await;
    let soon = Duration::from_millis(300);
    drop(tokio::time::timeout(soon, tx.writer_turn()).await.expect("a turn at once with nothing queued"));
    drop(tokio::time::timeout(soon, client.writer_turn()).await.expect("a turn at once with nothing queued"));

    // A request of 8 MiB, sent in pieces: the writer is stuck in the first ones, the rest wait;
    // a turn comes (what a producer makes now goes between them).
    let caller = client.clone();
    let _call = tokio::spawn(async move {
        caller.call(1, Body::message(Bytes::from(vec![7u8; 8 << 20])), CallOptions::default()).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(tokio::time::timeout(soon, tx.writer_turn()).await.expect("a turn with only pieces waiting"));

    // The writer is stuck, and a message of 1 MiB waits: no turn.
    let message = Body::message(Bytes::from(vec![7u8; 1 << 20]));
    tokio::time::timeout(Duration::from_secs(10), tx.send(message)).await.expect("queued").unwrap();
    assert!(tokio::time::timeout(soon, tx.writer_turn()).await.is_err(), "a turn with 1 MiB waiting for a stuck writer");
    assert!(tokio::time::timeout(soon, client.writer_turn()).await.is_err(), "a turn with 1 MiB waiting for a stuck writer");

    // Two producers ask, one after the other; the connection fails under them.
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ask = |turn: BoxFuture<'static, rpc_core::WriterTurn>, who: u8| {
        let order = order.clone();
        tokio::spawn(async move {
            let turn = turn.await;
            order.lock().unwrap().push(who);
            drop(turn);
        })
    };
    let first = ask(Box::pin(tx.writer_turn()), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = ask(Box::pin(client.writer_turn()), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(order.lock().unwrap().is_empty(), "a turn came while the writer was stuck");
    broken.notify_one();
    for t in [first, second] {
        tokio::time::timeout(Duration::from_secs(10), t).await.expect("a turn once the connection failed").unwrap();
    }
    assert_eq!(order.lock().unwrap().len(), 2);
    let sent = tokio::time::timeout(Duration::from_secs(10), tx.send(Body::default())).await.expect("a send ended");
    assert!(sent.is_err(), "a send over the failed connection reported success");
}

/// Producers in line for their turns (calls waiting behind a stuck writer: with rpc-tonic, every
/// `Channel` call asks for one) cost about the same each to queue and to give up, however many
/// there are: 40,000 take well under a second each way (a line searched from its front, as a
/// first version had it, took 6 s and 3 s in a debug build, all under the connection's lock).
#[tokio::test]
async fn a_long_line_of_turns_costs_linear_time_to_join_and_to_leave() {
    const N: usize = 40_000;
    let (client, mut tx, _rx, _broken) = upload_nobody_reads().await;
    // The first message crosses (the allowance), the writer is stuck in the second, the third
    // waits.
    for _ in 0..3 {
        let message = Body::message(Bytes::from(vec![7u8; 1 << 20]));
        tokio::time::timeout(Duration::from_secs(10), tx.send(message)).await.expect("queued").unwrap();
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let start = std::time::Instant::now();
    let mut line: Vec<BoxFuture<'static, rpc_core::WriterTurn>> = Vec::with_capacity(N);
    for _ in 0..N {
        let mut turn: BoxFuture<'static, rpc_core::WriterTurn> = Box::pin(client.writer_turn());
        assert!(turn.as_mut().poll(&mut cx).is_pending(), "a turn with the writer stuck");
        line.push(turn);
    }
    let joined = start.elapsed();
    let start = std::time::Instant::now();
    // They give up, the last first (as calls whose deadlines pass would, in another order that
    // costs the same).
    while let Some(turn) = line.pop() {
        drop(turn);
    }
    let left = start.elapsed();
    let bound = Duration::from_secs(1);
    assert!(joined < bound && left < bound, "{N} in line: joined in {joined:?}, left in {left:?} (quadratic)");
}

/// A turn's future made while the turn was free, and awaited once the writer is stuck behind a
/// queued megabyte, waits: `writer_turn` looks when it is polled, not when it is made (a first
/// version looked when it was made, so a future made ahead, as `join!`, `buffered` or a stored
/// future make them, skipped the wait and the line).
#[tokio::test]
async fn a_turn_future_made_while_free_waits_when_awaited_behind_a_stuck_writer() {
    let (client, mut tx, _rx, _broken) = upload_nobody_reads().await;
    let soon = Duration::from_millis(300);
    // Turns in use on this connection (the first ask took the lock); free now.
    drop(tokio::time::timeout(soon, tx.writer_turn()).await.expect("a turn at once with nothing queued"));
    drop(tokio::time::timeout(soon, client.writer_turn()).await.expect("a turn at once with nothing queued"));
    tokio::task::yield_now().await;
    let early_stream = tx.writer_turn();
    let early_client = client.writer_turn();
    // The writer is stuck, and 1 MiB waits: no turn for anyone asking now.
    for _ in 0..3 {
        let message = Body::message(Bytes::from(vec![7u8; 1 << 20]));
        tokio::time::timeout(Duration::from_secs(10), tx.send(message)).await.expect("queued").unwrap();
    }
    assert!(tokio::time::timeout(soon, client.writer_turn()).await.is_err(), "a turn with 1 MiB waiting for a stuck writer");
    assert!(tokio::time::timeout(soon, early_client).await.is_err(), "Client::writer_turn made earlier: a turn with 1 MiB waiting for a stuck writer");
    assert!(tokio::time::timeout(soon, early_stream).await.is_err(), "StreamSender::writer_turn made earlier: a turn with 1 MiB waiting for a stuck writer");
}

/// A transport whose sends take 1 ms per 128 KiB (a slow link): the writer is behind.
struct Slow<T>(T);
struct SlowSend<S>(S);

impl<T: Transport> Transport for Slow<T> {
    type Send = SlowSend<T::Send>;
    type Recv = T::Recv;
    fn split(self) -> (Self::Recv, Self::Send) {
        let (recv, send) = self.0.split();
        (recv, SlowSend(send))
    }
    fn stats(&self) -> Arc<TransportStats> {
        self.0.stats()
    }
}

impl<S: SendHalf> SendHalf for SlowSend<S> {
    async fn send(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        let bytes: usize = batch.iter().map(Transmit::len).sum();
        tokio::time::sleep(Duration::from_micros((bytes as u64 * 1000) / (128 << 10))).await;
        self.0.send(batch).await
    }
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.0.shutdown()
    }
}

/// Reads its request stream through, then answers.
struct Drain;

impl Service for Drain {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move {
            let (_tx, mut rx) = req.stream.take().expect("a streaming call").split();
            while let Some(m) = rx.recv().await {
                m.map_err(|e| Status::internal(e.to_string()))?;
            }
            Ok(Body::default())
        })
    }
}

/// Many producers on two threads, uploads of 300 KiB messages made in turn, and askers that give
/// up their place after a few hundred microseconds (dropped while in line, or while offered):
/// every upload ends in time, and a last turn comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_four_threads_uploads_in_turns_end_beside_askers_that_give_up() {
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(Drain).serve_connection(b));
    let client = Client::connect(Slow(a), ClientConfig::default()).await.unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for u in 0..8u64 {
        let client = client.clone();
        let made = made.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = client.open(1, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap().split();
            let mut seed = u * 7919 + 1;
            let mut sent = 0;
            while sent < 12 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let wait = Duration::from_micros((seed >> 33) % 3000);
                let Ok(turn) = tokio::time::timeout(wait, tx.writer_turn()).await else { continue };
                made.fetch_add(1, Ordering::SeqCst);
                let message = Body::message(Bytes::from(vec![7u8; 300 << 10]));
                drop(turn);
                tx.send(message).await.unwrap();
                sent += 1;
            }
            tx.finish();
            while let Some(r) = rx.recv().await {
                r.unwrap();
            }
        }));
    }
    for u in 0..32u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = u * 104729 + 3;
            for _ in 0..200 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let wait = Duration::from_micros((seed >> 33) % 2000);
                drop(tokio::time::timeout(wait, client.writer_turn()).await);
            }
        }));
    }
    let start = std::time::Instant::now();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20).saturating_sub(start.elapsed()), t).await.expect("every producer ended in time").unwrap();
    }
    let turn = tokio::time::timeout(Duration::from_secs(1), client.writer_turn()).await;
    drop(turn.expect("a last turn"));
}
