//! Calls answered from outside their handlers (`ServerRequest::responder`), over TCP on
//! loopback: answers out of order, a responder dropped unanswered, cancelled calls, the
//! handler's own output ignored.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{
    Body, BoxFuture, Bytes, CallError, CallOptions, Client, ClientConfig, Code, Responder, Server, ServerHandle,
    ServerRequest, Service, Status,
};
use tokio::sync::mpsc;

/// Hands the call's responder to the test; the handler parks.
const QUEUE: u32 = 1;
/// Hands the responder over too, but the handler returns at once (its output must be ignored).
const QUEUE_AND_RETURN: u32 = 2;
/// Takes a responder twice: the answer says whether the second was refused.
const TAKE_TWICE: u32 = 3;
/// An ordinary handler: answers with the request.
const ECHO: u32 = 4;
/// The handler keeps its own responder: only its drop answers (with `INTERNAL`).
const KEEP: u32 = 5;

/// A handler that never finishes; counts its drop. It may keep a responder (dropped with it).
struct Parked {
    dropped: Arc<AtomicUsize>,
    _responder: Option<Responder>,
}

impl Future for Parked {
    type Output = Result<Body, Status>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl Unpin for Parked {}

impl Drop for Parked {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

struct Queue {
    calls: mpsc::UnboundedSender<(Bytes, Responder)>,
    /// Parked handlers dropped.
    dropped: Arc<AtomicUsize>,
    /// `KEEP` handlers made.
    kept: Arc<AtomicUsize>,
}

impl Service for Queue {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        if req.method == ECHO {
            return Box::pin(async move { Ok(req.body) });
        }
        let responder = req.responder().expect("a call of a connection has a responder");
        match req.method {
            TAKE_TWICE => {
                let second = req.responder();
                let answer = if second.is_none() { "refused" } else { "given" };
                assert!(responder.respond(Ok(Body::message(Bytes::from_static(answer.as_bytes())))));
                Box::pin(std::future::pending())
            }
            KEEP => {
                self.kept.fetch_add(1, Ordering::SeqCst);
                Box::pin(Parked { dropped: self.dropped.clone(), _responder: Some(responder) })
            }
            QUEUE_AND_RETURN => {
                self.calls.send((req.body.message, responder)).unwrap();
                Box::pin(async { Ok(Body::message(Bytes::from_static(b"from the handler"))) })
            }
            _ => {
                self.calls.send((req.body.message, responder)).unwrap();
                Box::pin(Parked { dropped: self.dropped.clone(), _responder: None })
            }
        }
    }
}

struct Setup {
    client: Client,
    handle: ServerHandle,
    calls: mpsc::UnboundedReceiver<(Bytes, Responder)>,
    dropped: Arc<AtomicUsize>,
    kept: Arc<AtomicUsize>,
}

async fn setup() -> Setup {
    let (tx, calls) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicUsize::new(0));
    let kept = Arc::new(AtomicUsize::new(0));
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(Queue { calls: tx, dropped: dropped.clone(), kept: kept.clone() }).serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    Setup { client, handle, calls, dropped, kept }
}

fn call(client: &Client, method: u32, message: &'static [u8], options: CallOptions) -> tokio::task::JoinHandle<Result<Body, CallError>> {
    let client = client.clone();
    tokio::spawn(async move { client.call(method, Body::message(Bytes::from_static(message)), options).await })
}

/// The client's own timer, or the server's answer when its deadline passed: either way the
/// call ended at its deadline.
fn past_deadline(result: Result<Body, CallError>) {
    match result {
        Err(CallError::DeadlineExceeded(_)) => {}
        Err(CallError::Status(s)) if s.code == Code::DEADLINE_EXCEEDED => {}
        other => panic!("not ended by its deadline: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answered_out_of_order_each_get_their_own_answer() {
    let mut s = setup().await;
    let calls: Vec<_> = [&b"one"[..], b"two", b"three"].into_iter().map(|m| call(&s.client, QUEUE, m, CallOptions::default())).collect();
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(s.calls.recv().await.unwrap());
    }
    // Answered last to first, each with its own request in upper case.
    for (message, responder) in taken.into_iter().rev() {
        assert!(responder.respond(Ok(Body::message(Bytes::from(message.to_ascii_uppercase())))));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap().unwrap().message);
    }
    assert_eq!(answers, [&b"ONE"[..], b"TWO", b"THREE"]);
    // Each parked handler is dropped once its call was answered.
    let dropped = s.dropped.clone();
    common::eventually("the three parked handlers are dropped", || dropped.load(Ordering::SeqCst) == 3).await;
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_dropped_unanswered_fails_its_call_with_internal() {
    let mut s = setup().await;
    let c = call(&s.client, QUEUE, b"x", CallOptions::default());
    let (_, responder) = s.calls.recv().await.unwrap();
    drop(responder);
    match c.await.unwrap() {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code, Code::INTERNAL, "{status:?}");
            assert!(status.message.contains("responder was dropped without answering"), "{status:?}");
        }
        other => panic!("{other:?}"),
    }
    let dropped = s.dropped.clone();
    common::eventually("the parked handler goes with its call", || dropped.load(Ordering::SeqCst) == 1).await;
    // The connection carries on.
    let c = call(&s.client, QUEUE, b"y", CallOptions::default());
    let (_, responder) = s.calls.recv().await.unwrap();
    responder.respond(Ok(Body::message(Bytes::from_static(b"ok"))));
    assert_eq!(&c.await.unwrap().unwrap().message[..], b"ok");
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_drops_its_parked_handler_and_a_late_answer_goes_nowhere() {
    let mut s = setup().await;
    let c = call(&s.client, QUEUE, b"slow", CallOptions { timeout: Some(Duration::from_millis(100)), ..CallOptions::default() });
    let (_, responder) = s.calls.recv().await.unwrap();
    past_deadline(c.await.unwrap());
    let dropped = s.dropped.clone();
    common::eventually("the parked handler is dropped", || dropped.load(Ordering::SeqCst) == 1).await;
    assert!(!responder.respond(Ok(Body::default())), "the call was over: nobody gets the answer");
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_drops_the_parked_handlers_of_its_calls() {
    let mut s = setup().await;
    let _calls: Vec<_> = (0..2).map(|_| call(&s.client, QUEUE, b"z", CallOptions::default())).collect();
    let (_, first) = s.calls.recv().await.unwrap();
    let (_, second) = s.calls.recv().await.unwrap();
    s.client.close().await;
    let dropped = s.dropped.clone();
    common::eventually("both parked handlers are dropped", || dropped.load(Ordering::SeqCst) == 2).await;
    assert!(!first.respond(Ok(Body::default())));
    drop(second); // over already: its drop answers nothing
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_responder_is_taken_the_handlers_own_output_is_ignored() {
    let mut s = setup().await;
    let c = call(&s.client, QUEUE_AND_RETURN, b"q", CallOptions::default());
    let (_, responder) = s.calls.recv().await.unwrap();
    // A later call answered: the server is past the first's handler, which returned at once.
    let echo = call(&s.client, ECHO, b"later", CallOptions::default()).await.unwrap().unwrap();
    assert_eq!(&echo.message[..], b"later");
    // Had the handler's output counted, the call would be over, and this answer refused.
    assert!(responder.respond(Ok(Body::message(Bytes::from_static(b"from the responder")))));
    assert_eq!(&c.await.unwrap().unwrap().message[..], b"from the responder");
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_has_one_responder_and_a_request_of_no_connection_none() {
    let s = setup().await;
    let answer = call(&s.client, TAKE_TWICE, b"", CallOptions::default()).await.unwrap().unwrap();
    assert_eq!(&answer.message[..], b"refused");
    assert!(ServerRequest::new(QUEUE, Body::default()).responder().is_none());
    s.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_handler_that_keeps_its_responder_is_dropped_without_deadlock() {
    let s = setup().await;
    // Past its deadline: the parked handler is dropped, and its responder's drop answers a
    // call that is over (under the connection's lock this would deadlock).
    let c = call(&s.client, KEEP, b"k", CallOptions { timeout: Some(Duration::from_millis(50)), ..CallOptions::default() });
    past_deadline(c.await.unwrap());
    let dropped = s.dropped.clone();
    common::eventually("the parked handler is dropped", || dropped.load(Ordering::SeqCst) == 1).await;
    // With the connection: the same.
    let _c = call(&s.client, KEEP, b"k", CallOptions::default());
    let echo = call(&s.client, ECHO, b"after", CallOptions::default()).await.unwrap().unwrap();
    assert_eq!(&echo.message[..], b"after");
    // The spawned call may go after the echo: closed before it is sent, it would never park.
    let kept = s.kept.clone();
    common::eventually("the second call reaches its handler", || kept.load(Ordering::SeqCst) == 2).await;
    s.client.close().await;
    common::eventually("the second parked handler is dropped", || dropped.load(Ordering::SeqCst) == 2).await;
    s.handle.shutdown().await;
}
