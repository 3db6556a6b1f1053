//! Level 2 makes large messages as fast as its connection writes them, not a window at once.
//! tonic encodes each message into a new buffer when its body is polled; the server polls a
//! response body, and the channel a request body, only once the connection's writer has taken
//! what is queued (`StreamSender::writer_ready`, `Client::writer_ready`). So a peer that stops
//! reading holds at most about two made messages on the other side, and a window of 1 MiB
//! answers is not encoded at once into fresh pages. Checked with bodies that count how often
//! they were made, over an in-memory pipe whose reading end the test stops and starts.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

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
/// The pipe's bytes per direction: far less than one message.
const PIPE: usize = 64 << 10;
/// Made messages allowed while the peer reads nothing: the one the writer is stuck in, the one
/// queued behind it (what the pacing lets through), and one that checked the writer just
/// before the other was queued.
const MOST_MADE: usize = 3;
const HANG: Duration = Duration::from_secs(20);

/// A reading end the test can stop and start (a peer that stops reading).
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

struct GatedRead<R> {
    inner: R,
    gate: Arc<Gate>,
}

impl<R: AsyncRead + Unpin> AsyncRead for GatedRead<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.gate.open.load(Ordering::SeqCst) {
            self.gate.waiting.lock().unwrap().push(cx.waker().clone());
            // Opened between the look and the push: read now.
            if !self.gate.open.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// A connected pair over one in-memory pipe of [`PIPE`] bytes each way; the first end's reading
/// stops while its gate is shut.
fn pair(gate: &Arc<Gate>) -> (impl Transport, impl Transport) {
    let (a, b) = tokio::io::duplex(PIPE);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (StreamTransport::new(GatedRead { inner: ar, gate: gate.clone() }, aw, "gated"), StreamTransport::new(br, bw, "mem"))
}

/// One gRPC message of `len` bytes of `fill`, made (and counted) when the body is first polled,
/// as tonic's encoder makes one; then, for a response, trailers saying OK.
struct Made {
    made: Arc<AtomicUsize>,
    len: usize,
    state: u8,
    trailers: bool,
}

impl Made {
    fn body(made: &Arc<AtomicUsize>, len: usize, trailers: bool) -> tonic::body::Body {
        tonic::body::Body::new(Made { made: made.clone(), len, state: 0, trailers })
    }
}

impl HttpBody for Made {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.state += 1;
        Poll::Ready(match self.state {
            1 => {
                self.made.fetch_add(1, Ordering::SeqCst);
                let mut m = Vec::with_capacity(5 + self.len);
                m.push(0);
                m.extend_from_slice(&(self.len as u32).to_be_bytes());
                m.resize(5 + self.len, 7);
                Some(Ok(Frame::data(Bytes::from(m))))
            }
            2 if self.trailers => {
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
            let mut body = request.into_body();
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                frame.expect("the request body");
            }
            Ok(http::Response::new(Made::body(&this.made, this.answer, true)))
        })
    }
}

fn request(made: &Arc<AtomicUsize>, len: usize) -> http::Request<tonic::body::Body> {
    let mut r = http::Request::new(Made::body(made, len, false));
    *r.uri_mut() = http::Uri::from_static("http://zcrpc/pace.Big/Get");
    r
}

/// Makes [`CALLS`] calls at once through `channel`, each with a request of `request_len` bytes
/// counted in `made`; returns their tasks, each yielding its answer's bytes.
fn calls(channel: &Channel, made: &Arc<AtomicUsize>, request_len: usize) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..CALLS)
        .map(|_| {
            let mut channel = channel.clone();
            let r = request(made, request_len);
            tokio::spawn(async move {
                let response = channel.call(r).await.expect("the call");
                let mut body = response.into_body();
                let mut bytes = 0;
                while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    if let Ok(data) = frame.expect("the answer").into_data() {
                        bytes += data.len();
                    }
                }
                bytes
            })
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
    let (client_end, server_end) = pair(&gate);
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
    let (server_end, client_end) = pair(&gate);
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
