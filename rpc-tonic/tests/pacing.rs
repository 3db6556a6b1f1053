//! Level 2 makes large messages as fast as its connection writes them, not a window at once.
//! tonic encodes each message into a new buffer when its body is polled; the server polls a
//! response body, and the channel a request body, in the connection's turn
//! (`StreamSender::writer_turn`, `Client::writer_turn`): once the writer has taken what is
//! queued, and after every producer that asked before. So a peer that stops reading holds at
//! most about two made messages on the other side, and a window of 1 MiB answers is not
//! encoded at once into fresh pages. Checked with bodies that count how often they were made,
//! over an in-memory pipe whose reading end the test stops and starts.
//!
//! Turns are first come, first served: a small call beside a stream of large messages on the
//! same connection gets its turn after the messages asked for before it, on a single-threaded
//! runtime too (a turn that went to whoever polled first went to the stream every time, and
//! the small call never started). A call waiting for its turn is within its deadline. A call
//! future parked unpolled (in a `select!`) holds up no other call: the turn offered to it
//! lapses, and any number of them cost it one lapse in all. The pieces of a message of over
//! 2 MiB do not count toward a turn: a small call goes between them on a slow link, as it did
//! before turns. Mixed small and large calls, some given up while they wait, all end on two
//! threads over a slow link either way, and beside a stream whose client stopped reading.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use rpc_core::transport::{StreamTransport, Transport};
use rpc_core::{Client, ClientConfig};
use rpc_tonic::{Channel, Server};
use tokio::io::{AsyncRead, ReadBuf};
use tower::Service;

/// Calls made at once: without the pacing, each would make its large message at once.
const CALLS: usize = 16;
/// Each large message's bytes (one gRPC message, its 5-byte prefix aside).
const MESSAGE: usize = 1 << 20;
/// A message sent in pieces (over 2 MiB), which other calls' frames go between.
const HUGE: usize = 48 << 20;
/// The pipe's bytes per direction: far less than one message.
const PIPE: usize = 64 << 10;
/// Made messages allowed while the peer reads nothing: the one the writer is stuck in, the one
/// queued behind it (what the pacing lets through), and one that checked the writer just
/// before the other was queued.
const MOST_MADE: usize = 3;
const HANG: Duration = Duration::from_secs(20);

/// A reading end the test can stop and start, or slow down.
struct Gate {
    open: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate { open: AtomicBool::new(true), waiting: Mutex::new(Vec::new()) })
    }

    fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if open {
            self.waiting.lock().unwrap().drain(..).for_each(Waker::wake);
        }
    }
}

/// Reads through `gate`; with `pace`, at most `pace.0` bytes per read and a pause of `pace.1`
/// after each (a slow link).
struct GatedRead<R> {
    inner: R,
    gate: Arc<Gate>,
    pace: Option<(usize, Duration)>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for GatedRead<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.gate.open.load(Ordering::SeqCst) {
            self.gate.waiting.lock().unwrap().push(cx.waker().clone());
            if !self.gate.open.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        if let Some(p) = self.pause.as_mut() {
            std::task::ready!(p.as_mut().poll(cx));
            self.pause = None;
        }
        let Some((most, pause)) = self.pace else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        let room = buf.remaining().min(most);
        let mut part = ReadBuf::new(&mut buf.initialize_unfilled()[..room]);
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.advance(n);
        if n > 0 {
            self.pause = Some(Box::pin(tokio::time::sleep(pause)));
        }
        Poll::Ready(Ok(()))
    }
}

/// A connected pair over one in-memory pipe; the first end reads through `gate`, at `pace`.
fn pair(gate: &Arc<Gate>, pace: Option<(usize, Duration)>) -> (impl Transport, impl Transport) {
    let (a, b) = tokio::io::duplex(PIPE);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (
        StreamTransport::new(GatedRead { inner: ar, gate: gate.clone(), pace, pause: None }, aw, "gated"),
        StreamTransport::new(br, bw, "mem"),
    )
}

/// `count` gRPC messages of `len` bytes, each made (and counted) when the body is polled for
/// it, as tonic's encoder makes one; then, for a response, trailers saying OK.
struct Made {
    made: Arc<AtomicUsize>,
    len: usize,
    count: usize,
    polls: usize,
    trailers: bool,
}

impl Made {
    fn body(made: &Arc<AtomicUsize>, len: usize, trailers: bool) -> tonic::body::Body {
        Made::many(made, len, 1, trailers)
    }

    fn many(made: &Arc<AtomicUsize>, len: usize, count: usize, trailers: bool) -> tonic::body::Body {
        tonic::body::Body::new(Made { made: made.clone(), len, count, polls: 0, trailers })
    }
}

impl HttpBody for Made {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.polls += 1;
        Poll::Ready(match self.polls {
            n if n <= self.count => {
                self.made.fetch_add(1, Ordering::SeqCst);
                let mut m = Vec::with_capacity(5 + self.len);
                m.push(0);
                m.extend_from_slice(&(self.len as u32).to_be_bytes());
                m.resize(5 + self.len, 7);
                Some(Ok(Frame::data(Bytes::from(m))))
            }
            n if n == self.count + 1 && self.trailers => {
                let mut t = http::HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from_static("0"));
                Some(Ok(Frame::trailers(t)))
            }
            _ => None,
        })
    }
}

/// A service of one method, `/pace.Big/Get`: it reads the request's body through, then
/// answers one message of `answer` bytes, counted in `made` when made.
#[derive(Clone)]
struct Big {
    made: Arc<AtomicUsize>,
    answer: usize,
}

impl tonic::server::NamedService for Big {
    const NAME: &'static str = "pace.Big";
}

impl Service<http::Request<tonic::body::Body>> for Big {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // `/pace.Big/Endless` answers large messages without end, made as they are asked
            // for; `/pace.Big/Huge` one message of `HUGE` bytes.
            let path = request.uri().path().to_owned();
            let mut body = request.into_body();
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                frame.expect("the request body");
            }
            Ok(http::Response::new(match path.rsplit('/').next() {
                Some("Endless") => Made::many(&this.made, MESSAGE, usize::MAX, true),
                Some("Huge") => Made::body(&this.made, HUGE, true),
                _ => Made::body(&this.made, this.answer, true),
            }))
        })
    }
}

fn request(made: &Arc<AtomicUsize>, len: usize) -> http::Request<tonic::body::Body> {
    request_to("http://zcrpc/pace.Big/Get", Made::body(made, len, false))
}

fn request_to(uri: &'static str, body: tonic::body::Body) -> http::Request<tonic::body::Body> {
    let mut r = http::Request::new(body);
    *r.uri_mut() = http::Uri::from_static(uri);
    r
}

/// A call through `channel`, its answer read through; its answer's bytes.
async fn call(mut channel: Channel, r: http::Request<tonic::body::Body>) -> Result<usize, tonic::Status> {
    let response = channel.call(r).await?;
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            bytes += data.len();
        }
    }
    Ok(bytes)
}

/// A request to `uri` of one message of `len` bytes.
fn sized(uri: &'static str, len: usize) -> http::Request<tonic::body::Body> {
    request_to(uri, Made::body(&Arc::default(), len, false))
}

/// Makes [`CALLS`] calls at once through `channel`, each with a request of `request_len` bytes
/// counted in `made`; returns their tasks, each yielding its answer's bytes.
fn calls(channel: &Channel, made: &Arc<AtomicUsize>, request_len: usize) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..CALLS)
        .map(|_| {
            let (channel, r) = (channel.clone(), request(made, request_len));
            tokio::spawn(async move { call(channel, r).await.expect("the call") })
        })
        .collect()
}

/// Waits until `count` stops moving for 300 ms, and returns it.
async fn settled(count: &AtomicUsize) -> usize {
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = count.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test]
async fn a_server_makes_its_large_answers_as_its_writer_takes_them() {
    let gate = Gate::new();
    let (client_end, server_end) = pair(&gate, None);
    let answers = Arc::new(AtomicUsize::new(0));
    let server = Server::builder().add_service(Big { made: answers.clone(), answer: MESSAGE }).build();
    tokio::spawn(server.serve_connection(server_end));
    let channel = Channel::from_client(Client::connect(client_end, ClientConfig::default()).await.unwrap());

    // The client stops reading: the server's writer is stuck in its first answer.
    gate.set(false);
    let requests = Arc::new(AtomicUsize::new(0));
    let tasks = calls(&channel, &requests, 8);
    let made = settled(&answers).await;
    assert_eq!(requests.load(Ordering::SeqCst), CALLS, "every request went");
    assert!((1..=MOST_MADE).contains(&made), "{made} answers of {CALLS} made while the client read nothing (at most {MOST_MADE})");

    // Reading again, every call gets its whole answer.
    gate.set(true);
    for t in tasks {
        let bytes = tokio::time::timeout(HANG, t).await.expect("an answer in time").unwrap();
        assert_eq!(bytes, 5 + MESSAGE);
    }
    assert_eq!(answers.load(Ordering::SeqCst), CALLS);
}

#[tokio::test]
async fn a_channel_makes_its_large_requests_as_its_writer_takes_them() {
    let gate = Gate::new();
    let (server_end, client_end) = pair(&gate, None);
    let answers = Arc::new(AtomicUsize::new(0));
    let server = Server::builder().add_service(Big { made: answers.clone(), answer: 8 }).build();
    tokio::spawn(server.serve_connection(server_end));
    let channel = Channel::from_client(Client::connect(client_end, ClientConfig::default()).await.unwrap());

    // The server stops reading: the client's writer is stuck in the first request.
    gate.set(false);
    let requests = Arc::new(AtomicUsize::new(0));
    let tasks = calls(&channel, &requests, MESSAGE);
    let made = settled(&requests).await;
    assert!((1..=MOST_MADE).contains(&made), "{made} requests of {CALLS} made while the server read nothing (at most {MOST_MADE})");

    gate.set(true);
    for t in tasks {
        let bytes = tokio::time::timeout(HANG, t).await.expect("an answer in time").unwrap();
        assert_eq!(bytes, 5 + 8);
    }
    assert_eq!(requests.load(Ordering::SeqCst), CALLS);
    assert_eq!(answers.load(Ordering::SeqCst), CALLS);
}

/// Small calls on a connection that also carries `large`, a call whose large messages (an
/// endless download, or an endless upload) are each made as soon as it is asked for, all on
/// one thread: each small call gets its turn in time, while the large call goes on.
async fn small_calls_beside(large: http::Request<tonic::body::Body>, large_answers: &Arc<AtomicUsize>) {
    let gate = Gate::new();
    let (client_end, server_end) = pair(&gate, None);
    let server = Server::builder().add_service(Big { made: large_answers.clone(), answer: 8 }).build();
    tokio::spawn(server.serve_connection(server_end));
    let channel = Channel::from_client(Client::connect(client_end, ClientConfig::default()).await.unwrap());

    let large_call = tokio::spawn(call(channel.clone(), large));
    // The large call is under way (its messages made, or coming).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let small = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        let bytes = tokio::time::timeout(Duration::from_secs(10), call(channel.clone(), request(&small, 8)))
            .await
            .unwrap_or_else(|_| panic!("small call {i} did not get its turn beside the large call in 10 s"))
            .expect("a small call");
        assert_eq!(bytes, 5 + 8);
    }
    assert!(!large_call.is_finished(), "the large call ended (it has no end)");
    large_call.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn small_calls_get_their_turns_beside_an_endless_download() {
    let answers = Arc::new(AtomicUsize::new(0));
    let large = request_to("http://zcrpc/pace.Big/Endless", Made::body(&Arc::default(), 8, false));
    small_calls_beside(large, &answers).await;
    assert!(answers.load(Ordering::SeqCst) > 10, "the download made {} messages", answers.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "current_thread")]
async fn small_calls_get_their_turns_beside_an_endless_upload() {
    let requests = Arc::new(AtomicUsize::new(0));
    let large = request_to("http://zcrpc/pace.Big/Get", Made::many(&requests, MESSAGE, usize::MAX, false));
    small_calls_beside(large, &Arc::default()).await;
    assert!(requests.load(Ordering::SeqCst) > 10, "the upload made {} messages", requests.load(Ordering::SeqCst));
}

/// A call that waits for its turn behind a stuck writer is within its deadline: it fails with
/// `DEADLINE_EXCEEDED` when the deadline passes, its request never made.
#[tokio::test]
async fn a_call_waiting_for_its_turn_keeps_its_deadline() {
    let gate = Gate::new();
    let (server_end, client_end) = pair(&gate, None);
    let server = Server::builder().add_service(Big { made: Arc::default(), answer: 8 }).build();
    tokio::spawn(server.serve_connection(server_end));
    let channel = Channel::from_client(Client::connect(client_end, ClientConfig::default()).await.unwrap());

    // The server stops reading: the writer is stuck in one large request, another waits.
    gate.set(false);
    let made = Arc::new(AtomicUsize::new(0));
    let _stuck: Vec<_> = (0..2)
        .map(|_| {
            let mut channel = channel.clone();
            let r = request(&made, MESSAGE);
            tokio::spawn(async move { channel.call(r).await.map(drop) })
        })
        .collect();
    assert_eq!(settled(&made).await, 2, "two large requests made");

    let late = Arc::new(AtomicUsize::new(0));
    let mut r = request(&late, MESSAGE);
    r.headers_mut().insert("grpc-timeout", http::HeaderValue::from_static("300m"));
    let start = std::time::Instant::now();
    let mut c = channel.clone();
    let result = tokio::time::timeout(HANG, c.call(r)).await.expect("the call ended at its deadline");
    let status = result.map(drop).expect_err("the call failed");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(5), "failed after {:?}", start.elapsed());
    assert_eq!(late.load(Ordering::SeqCst), 0, "its request was made");
}

/// A call future that was polled once and is waiting to be polled again (the pattern of a
/// `select!` loop: one branch is a call in flight, another makes a quick call of its own
/// while the first is parked) must not block the other calls of the connection. Before the
/// change calls were independent; now the parked call is given the connection's turn by
/// `Turns::pass` and every later call waits behind it, for ever.
#[tokio::test]
async fn a_parked_call_future_does_not_block_the_connections_other_calls() {
    let gate = Gate::new();
    let (server_end, client_end) = pair(&gate, None);
    tokio::spawn(Server::builder().add_service(Big { made: Arc::default(), answer: 8 }).build().serve_connection(server_end));
    let channel = Channel::from_client(Client::connect(client_end, ClientConfig::default()).await.unwrap());

    // The server stops reading for a moment: the writer is behind two large requests.
    gate.set(false);
    let large: Vec<_> = (0..2).map(|_| tokio::spawn(call(channel.clone(), sized("http://zcrpc/pace.Big/Get", MESSAGE)))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut first = Box::pin(call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8)));
    let second = tokio::select! {
        biased;
        _ = &mut first => panic!("the first call ended while the server read nothing"),
        _ = tokio::time::sleep(Duration::from_millis(100)) => {
            // The first is slow: meanwhile (it parked) another quick call.
            gate.set(true);
            tokio::time::timeout(Duration::from_secs(10), call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8))).await
        }
    };
    let second = second.expect("a call blocked for 10 s behind a call future waiting to be polled");
    assert_eq!(second.unwrap(), 5 + 8);
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), first).await.unwrap().unwrap(), 5 + 8);
    for t in large {
        assert_eq!(tokio::time::timeout(Duration::from_secs(10), t).await.unwrap().unwrap().unwrap(), 5 + 8);
    }
}

/// Link speed for the two tests below: 64 KiB per 4 ms (about 16 MB/s): the large message
/// takes about 3 s to cross.
const SLOW: (usize, Duration) = (64 << 10, Duration::from_millis(4));

/// A small call made while `large` (a message of over 2 MiB each way: sent in pieces, which
/// other calls' frames go between) crosses a slow link is answered in about one piece's time,
/// not after the whole message: the turn it waits for does not count the pieces. `upload`
/// says which way the large message goes (the slow end is its receiver); `answer` is the large
/// call's answer's bytes.
async fn small_call_between_pieces(upload: bool, large: http::Request<tonic::body::Body>, answer: usize) {
    let channel = setup(upload, Some(SLOW), &Gate::new(), 8).await;

    let large = tokio::spawn(call(channel.clone(), large));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!large.is_finished(), "the large call ended early: the link is not slow enough for this test");
    let start = Instant::now();
    let small = tokio::time::timeout(Duration::from_secs(20), call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8)))
        .await
        .expect("the small call ended");
    let took = start.elapsed();
    assert_eq!(small.unwrap(), 5 + 8);
    let large_done = large.is_finished();
    assert_eq!(tokio::time::timeout(Duration::from_secs(30), large).await.unwrap().unwrap().unwrap(), 5 + answer);
    assert!(
        !large_done && took < Duration::from_millis(1500),
        "the small call took {took:?}, and ended after the large message: it waited for all its pieces"
    );
}

#[tokio::test]
async fn a_small_call_goes_between_the_pieces_of_a_large_upload() {
    small_call_between_pieces(true, sized("http://zcrpc/pace.Big/Get", HUGE), 8).await;
}

/// The same on the server (its `respond` waits for its turn).
#[tokio::test]
async fn a_small_answer_goes_between_the_pieces_of_a_large_download() {
    small_call_between_pieces(false, sized("http://zcrpc/pace.Big/Huge", 8), HUGE).await;
}

/// A server with `Big` (its `Get` answering `answer` bytes), a channel to it; the pipe's gated
/// (and paced) reading end is the server's when `slow_server_reads`, else the client's.
async fn setup(slow_server_reads: bool, pace: Option<(usize, Duration)>, gate: &Arc<Gate>, answer: usize) -> Channel {
    async fn channel(server_end: impl Transport, client_end: impl Transport, answer: usize) -> Channel {
        tokio::spawn(Server::builder().add_service(Big { made: Arc::default(), answer }).build().serve_connection(server_end));
        Channel::from_client(Client::connect(client_end, ClientConfig::default()).await.unwrap())
    }
    let (slow_end, fast_end) = pair(gate, pace);
    match slow_server_reads {
        true => channel(slow_end, fast_end, answer).await,
        false => channel(fast_end, slow_end, answer).await,
    }
}

/// Many small and large calls at once on two worker threads over a slow link both ways, a
/// third of them given up (dropped) after a few ms while they wait for their turns: every
/// call not given up ends, with its whole answer, in time.
async fn mixed(slow_server_reads: bool) {
    let gate = Gate::new();
    let channel = setup(slow_server_reads, Some((64 << 10, Duration::from_millis(1))), &gate, MESSAGE).await;
    let mut tasks = Vec::new();
    for i in 0..48usize {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let (req, answer) = match i % 3 {
                0 => (sized("http://zcrpc/pace.Big/Get", 8), 5 + MESSAGE),
                1 => (sized("http://zcrpc/pace.Big/Get", MESSAGE), 5 + MESSAGE),
                _ => (sized("http://zcrpc/pace.Big/Get", MESSAGE), 5 + MESSAGE),
            };
            if i % 4 == 3 {
                // Given up while it waits.
                let _ = tokio::time::timeout(Duration::from_millis(1 + (i as u64 % 7)), call(channel, req)).await;
                return;
            }
            let got = tokio::time::timeout(Duration::from_secs(8), call(channel, req)).await;
            let got = got.unwrap_or_else(|_| panic!("call {i} did not end in 8 s"));
            assert_eq!(got.expect("the call"), answer, "call {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // And the connection still serves a call at once.
    let got = tokio::time::timeout(Duration::from_secs(5), call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8))).await;
    assert_eq!(got.expect("a last call in time").unwrap(), 5 + MESSAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_threads_mixed_calls_over_a_slow_server_read_all_end() {
    mixed(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_threads_mixed_calls_over_a_slow_client_read_all_end() {
    mixed(false).await;
}

/// A server-streaming call whose client stops reading its answers (the response body held,
/// unpolled): the other calls of the connection go on, each in time.
async fn stalled_stream_beside_calls() {
    let gate = Gate::new();
    let (client_end, server_end) = pair(&gate, None);
    let answers = Arc::new(AtomicUsize::new(0));
    tokio::spawn(Server::builder().add_service(Big { made: answers.clone(), answer: 8 }).build().serve_connection(server_end));
    let mut channel = Channel::from_client(Client::connect(client_end, ClientConfig::default()).await.unwrap());
    let response = channel.call(request_to("http://zcrpc/pace.Big/Endless", Made::body(&Arc::default(), 8, false))).await.unwrap();
    // Read one message, then stop reading (the body kept).
    let mut body = response.into_body();
    let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let got = tokio::time::timeout(Duration::from_secs(3), call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8))).await;
        assert_eq!(got.unwrap_or_else(|_| panic!("small call {i} stuck beside a stream nobody reads")).unwrap(), 5 + 8);
        let got = tokio::time::timeout(Duration::from_secs(3), call(channel.clone(), sized("http://zcrpc/pace.Big/Get", MESSAGE))).await;
        assert_eq!(got.unwrap_or_else(|_| panic!("large-request call {i} stuck beside a stream nobody reads")).unwrap(), 5 + 8);
    }
    drop(body);
}

#[tokio::test(flavor = "current_thread")]
async fn a_stream_nobody_reads_holds_up_no_other_call_on_one_thread() {
    stalled_stream_beside_calls().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_holds_up_no_other_call_on_two_threads() {
    stalled_stream_beside_calls().await;
}

/// Producers that asked for a turn once and are parked (futures polled once, then kept
/// unpolled: a `buffered` stream whose owner awaits something else) cost a live call one lapse
/// of the turn offered to the first of them, not one each (a first version lapsed them one at
/// a time: 400 parked futures held a live call for 1.2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_call_futures_cost_a_live_call_one_lapse_not_one_each() {
    const PARKED: usize = 400;
    let gate = Gate::new();
    let (server_end, client_end) = pair(&gate, None);
    tokio::spawn(Server::builder().add_service(Big { made: Arc::default(), answer: 8 }).build().serve_connection(server_end));
    let client = Client::connect(client_end, ClientConfig::default()).await.unwrap();
    let channel = Channel::from_client(client.clone());
    gate.set(false);
    let large: Vec<_> = (0..2).map(|_| tokio::spawn(call(channel.clone(), sized("http://zcrpc/pace.Big/Get", MESSAGE)))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Parked call futures, each polled once (each is in line for a turn).
    let mut cx = Context::from_waker(Waker::noop());
    let mut parked = Vec::new();
    for _ in 0..PARKED {
        let mut c: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8)));
        assert!(c.as_mut().poll(&mut cx).is_pending());
        parked.push(c);
    }
    gate.set(true);
    for t in large {
        tokio::time::timeout(Duration::from_secs(10), t).await.expect("the large calls end").unwrap().unwrap();
    }
    let start = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8))).await;
    let took = start.elapsed();
    assert_eq!(got.expect("a live call ended").unwrap(), 5 + 8);
    assert!(took < Duration::from_millis(250), "a live call took {took:?} behind {PARKED} parked call futures");
    drop(parked);
}

/// Calls given up while they (client side) or their answers (server side) wait for turns behind
/// a stuck writer: once the link reads again, the connection's other calls go on in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_given_up_while_waiting_for_turns_leave_the_others_going() {
    for slow_server_reads in [true, false] {
        let gate = Gate::new();
        let channel = setup(slow_server_reads, None, &gate, MESSAGE).await;
        gate.set(false);
        let stuck: Vec<_> = (0..3).map(|_| tokio::spawn(call(channel.clone(), sized("http://zcrpc/pace.Big/Get", MESSAGE)))).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting: Vec<_> = (0..30).map(|_| tokio::spawn(call(channel.clone(), sized("http://zcrpc/pace.Big/Get", MESSAGE)))).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, w) in waiting.iter().enumerate() {
            if i % 2 == 0 {
                w.abort();
            }
        }
        gate.set(true);
        // Give up the first in line just as the writer catches up, too.
        for (i, w) in waiting.into_iter().enumerate() {
            if i % 2 == 1 {
                let got = tokio::time::timeout(Duration::from_secs(8), w).await.expect("a waiting call ended in time");
                assert_eq!(got.unwrap().unwrap(), 5 + MESSAGE);
            }
        }
        for s in stuck {
            assert_eq!(tokio::time::timeout(Duration::from_secs(8), s).await.expect("in time").unwrap().unwrap(), 5 + MESSAGE);
        }
        let got = tokio::time::timeout(Duration::from_secs(3), call(channel.clone(), sized("http://zcrpc/pace.Big/Get", 8))).await;
        assert_eq!(got.expect("a last call in time").unwrap(), 5 + MESSAGE);
    }
}
