//! Streaming methods of `#[service]` end to end, over the in-memory pipe and real TCP: a
//! server-streaming method whose items carry attachments, a client-streaming one answering a
//! `Result`, a bidirectional one; cancellation by dropping the stream, deadlines, errors in the
//! middle of a stream, calls of the wrong shape, and the methods' paths and ids.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pattern;
use rpc_core::codec::Postcard;
use rpc_core::{
    method_id, Body, CallContext, CallError, CallMode, CallOptions, Code,
    Payload, Server, Sink, Source,
};
use serde::{Deserialize, Serialize};

/// One item of a stream; its bulk travels as an attachment beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub n: u32,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedError {
    TooMany { asked: u32, limit: u32 },
    OverLimit { total: u64, limit: u64 },
    Broke { after: u32 },
}

#[rpc_core::service(package = "feed.v1")]
pub trait Feed {
    /// Server streaming: `count` ticks labelled with the tag's bytes, tick `i` with a
    /// `size`-byte pattern seeded `i` attached.
    async fn ticks(&self, count: u32, tag: Payload, size: u32, out: Sink<Tick>) -> Result<(), FeedError>;
    /// Server streaming: a tick every 20 ms, for ever.
    async fn forever(&self, out: Sink<Tick>);
    /// Server streaming: `n` ticks, then an error.
    async fn fail_after(&self, n: u32, out: Sink<Tick>) -> Result<(), FeedError>;
    /// Client streaming: the total bytes of the items' attachments, each checked against its
    /// pattern; an error when over `limit`.
    async fn upload(&self, ctx: CallContext, limit: u64, items: Source<Tick>) -> Result<u64, FeedError>;
    /// Client streaming with a unit answer: counts the items into the server's state.
    async fn count(&self, items: Source<Tick, Postcard>);
    /// Bidirectional: each item back, its label prefixed, its attachments as they came.
    async fn chat(&self, prefix: String, input: Source<Tick>, output: Sink<Tick, Postcard>) -> Result<(), FeedError>;
    /// Unary, beside the streams.
    async fn add(&self, a: u64, b: u64) -> u64;
}

const MAX_TICKS: u32 = 1000;

#[derive(Default)]
struct State {
    /// Items the server's methods sent.
    sent: AtomicUsize,
    /// Methods dropped before they returned.
    dropped: AtomicUsize,
    /// Items `count` received.
    counted: AtomicUsize,
}

/// Counts a method dropped before it returned.
struct DropFlag(Arc<State>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct FeedImpl(Arc<State>);

fn tick(n: u32, label: &str) -> Tick {
    Tick { n, label: label.into() }
}

impl Feed for FeedImpl {
    async fn ticks(&self, count: u32, tag: Payload, size: u32, mut out: Sink<Tick>) -> Result<(), FeedError> {
        if count > MAX_TICKS {
            return Err(FeedError::TooMany { asked: count, limit: MAX_TICKS });
        }
        let label = String::from_utf8(tag.to_bytes().to_vec()).unwrap();
        for i in 0..count {
            let data = Payload::from(pattern(size as usize, i as u8));
            // The client went away: nothing more to do.
            if out.send_with(tick(i, &label), vec![data]).await.is_err() {
                return Ok(());
            }
            self.0.sent.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn forever(&self, mut out: Sink<Tick>) {
        let mut flag = DropFlag(self.0.clone(), false);
        for i in 0.. {
            if out.send(tick(i, "forever")).await.is_err() {
                break;
            }
            self.0.sent.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        flag.1 = true;
    }

    async fn fail_after(&self, n: u32, mut out: Sink<Tick>) -> Result<(), FeedError> {
        for i in 0..n {
            out.send(tick(i, "before")).await.map_err(|_| FeedError::Broke { after: i })?;
        }
        Err(FeedError::Broke { after: n })
    }

    async fn upload(&self, ctx: CallContext, limit: u64, mut items: Source<Tick>) -> Result<u64, FeedError> {
        ctx.set_header("upload-limit", limit.to_string()).expect("a valid header");
        let mut total = 0;
        let mut i = 0;
        while let Some(item) = items.recv_with().await {
            let (item, attachments) = item.expect("an intact item");
            assert_eq!(item, tick(i, "up"));
            let data = attachments[0].to_bytes();
            assert_eq!(data, pattern(data.len(), i as u8), "item {i}");
            total += data.len() as u64;
            i += 1;
        }
        ctx.set_trailer("items", i.to_string()).expect("a valid trailer");
        if total > limit {
            return Err(FeedError::OverLimit { total, limit });
        }
        Ok(total)
    }

    async fn count(&self, mut items: Source<Tick, Postcard>) {
        while let Some(Ok(_)) = items.recv().await {
            self.0.counted.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn chat(&self, prefix: String, mut input: Source<Tick>, mut output: Sink<Tick, Postcard>) -> Result<(), FeedError> {
        let mut n = 0;
        while let Some(item) = input.recv_with().await {
            let Ok((item, attachments)) = item else { break };
            let back = Tick { n: item.n, label: format!("{prefix}{}", item.label) };
            output.send_with(back, attachments).await.map_err(|_| FeedError::Broke { after: n })?;
            n += 1;
        }
        Ok(())
    }

    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

const TRANSPORTS: [&str; 2] = ["mem", "tcp"];

/// A client of a fresh server, over `transport` ("mem" or "tcp"), and the server's state.
async fn setup(transport: &str) -> (FeedClient, Arc<State>) {
    let state = Arc::new(State::default());
    let server = Server::builder().build(FeedServer::new(FeedImpl(state.clone())));
    let client = common::client_over(server, transport).await;
    (FeedClient::new(client), state)
}

/// The application error an error status carries, decoded.
fn app_error(e: &CallError) -> FeedError {
    match e.application::<FeedError, Postcard>() {
        Some(decoded) => decoded.expect("a FeedError"),
        None => panic!("expected an application error, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_delivers_its_items_in_order_with_their_attachments() {
    for t in TRANSPORTS {
        let (client, _) = setup(t).await;
        // 40 items of 100 KiB: more than one stream window, so credit comes back as they are read.
        let mut ticks = client.ticks(40, Payload::from(b"tag".to_vec()), 100_000).await.unwrap();
        let mut i = 0;
        while let Some(item) = ticks.recv_with().await {
            let (item, attachments) = item.unwrap();
            assert_eq!(item, tick(i, "tag"), "{t}");
            assert_eq!(attachments.len(), 1, "{t}");
            assert_eq!(attachments[0].to_bytes(), pattern(100_000, i as u8), "{t}: item {i}");
            i += 1;
        }
        assert_eq!(i, 40, "{t}");

        // No items, a clean end.
        let empty = client.ticks(0, Payload::new(), 1).await.unwrap();
        assert_eq!(empty.collect().await.unwrap(), vec![], "{t}");

        // An `Err` before any item is the stream's only event.
        let mut refused = client.ticks(MAX_TICKS + 1, Payload::new(), 1).await.unwrap();
        let e = refused.recv().await.unwrap().unwrap_err();
        assert_eq!(app_error(&e), FeedError::TooMany { asked: MAX_TICKS + 1, limit: MAX_TICKS }, "{t}");
        assert!(refused.recv().await.is_none(), "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_gets_one_answer_decoded_like_a_unary_reply() {
    for t in TRANSPORTS {
        let (client, state) = setup(t).await;
        let (mut items, answer) = client.upload(u64::MAX).await.unwrap();
        for i in 0..20u32 {
            let data = Payload::from(pattern(1000 * i as usize, i as u8));
            items.send_with(tick(i, "up"), vec![data]).await.unwrap();
        }
        items.finish();
        let expected: u64 = (0..20).map(|i| 1000 * i).sum();
        assert_eq!(answer.await.unwrap(), Ok(expected), "{t}");

        // The application's error, typed.
        let (mut items, answer) = client.upload(10).await.unwrap();
        items.send_with(tick(0, "up"), vec![Payload::from(pattern(11, 0))]).await.unwrap();
        // Dropping the sink while the answer is awaited ends the stream cleanly.
        drop(items);
        assert_eq!(answer.await.unwrap(), Err(FeedError::OverLimit { total: 11, limit: 10 }), "{t}");

        // A unit answer.
        let (mut items, answer) = client.count().await.unwrap();
        for i in 0..5 {
            items.send(tick(i, "c")).await.unwrap();
        }
        drop(items);
        answer.await.unwrap();
        assert_eq!(state.counted.load(Ordering::SeqCst), 5, "{t}");

        // Many small items in runs: send_all.
        let (mut items, answer) = client.count().await.unwrap();
        items.send_all((0..5000).map(|i| tick(i, "many"))).await.unwrap();
        items.finish();
        answer.await.unwrap();
        assert_eq!(state.counted.load(Ordering::SeqCst), 5 + 5000, "{t}");

        // The same call with the server's response headers and trailers beside its answer,
        // on success and on the application's error.
        for (limit, expected) in [(u64::MAX, Ok(3000)), (10, Err(FeedError::OverLimit { total: 3000, limit: 10 }))] {
            let (mut items, answer) = client.upload_with_metadata(limit).await.unwrap();
            for i in 0..3u32 {
                items.send_with(tick(i, "up"), vec![Payload::from(pattern(1000, i as u8))]).await.unwrap();
            }
            items.finish();
            let reply = answer.await;
            assert_eq!(reply.result.unwrap(), expected, "{t}");
            assert_eq!(reply.headers.get_str("upload-limit"), Some(limit.to_string().as_str()), "{t}");
            assert_eq!(reply.trailers.get_str("items"), Some("3"), "{t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_stream_answers_each_item() {
    for t in TRANSPORTS {
        let (client, _) = setup(t).await;
        let (mut tx, mut rx) = client.chat("re: ".into()).await.unwrap();
        for i in 0..30u32 {
            let data = Payload::from(pattern(5000 + i as usize, i as u8));
            tx.send_with(tick(i, "hello"), vec![data]).await.unwrap();
            let (back, attachments) = rx.recv_with().await.unwrap().unwrap();
            assert_eq!(back, tick(i, "re: hello"), "{t}");
            assert_eq!(attachments[0].to_bytes(), pattern(5000 + i as usize, i as u8), "{t}");
        }
        // Ending the client's stream ends the method, which ends the server's.
        tx.finish();
        assert!(rx.recv().await.is_none(), "{t}");
        assert_eq!(client.add(2, 3).await.unwrap(), 5, "{t}: the connection carries on");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_source_stops_the_servers_method() {
    for t in TRANSPORTS {
        let (client, state) = setup(t).await;
        let mut ticks = client.forever().await.unwrap();
        ticks.recv().await.unwrap().unwrap();
        ticks.recv().await.unwrap().unwrap();
        drop(ticks);
        common::eventually("the handler is dropped", || state.dropped.load(Ordering::SeqCst) == 1).await;
        let sent = state.sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(state.sent.load(Ordering::SeqCst), sent, "{t}: the method stopped sending");
        assert_eq!(client.add(1, 1).await.unwrap(), 2, "{t}");

        // Dropping both ends of a bidirectional call cancels it too.
        let (tx, rx) = client.chat(String::new()).await.unwrap();
        drop((tx, rx));
        assert_eq!(client.add(1, 2).await.unwrap(), 3, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_a_stream_on_both_sides() {
    for t in TRANSPORTS {
        let (client, state) = setup(t).await;
        let mut ticks = client.with_options(CallOptions::timeout(Duration::from_millis(150))).forever().await.unwrap();
        let mut got = 0;
        let err = loop {
            match ticks.recv().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("{t}: a stream that never ends ended cleanly"),
            }
        };
        assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{t}: {err}");
        assert!(got >= 2, "{t}: items before the deadline");
        assert!(ticks.recv().await.is_none(), "{t}");
        common::eventually("the handler is dropped", || state.dropped.load(Ordering::SeqCst) == 1).await;

        // A client-streaming call's answer waits no longer than its deadline either.
        let (_items, answer) = client.with_options(CallOptions::timeout(Duration::from_millis(100))).upload(0).await.unwrap();
        let e = answer.await.unwrap_err();
        assert_eq!(e.code(), Code::DEADLINE_EXCEEDED, "{t}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_arrives_after_the_items_sent_before_it() {
    for t in TRANSPORTS {
        let (client, _) = setup(t).await;
        let mut ticks = client.fail_after(3).await.unwrap();
        for i in 0..3 {
            assert_eq!(ticks.recv().await.unwrap().unwrap(), tick(i, "before"), "{t}");
        }
        let e = ticks.recv().await.unwrap().unwrap_err();
        assert_eq!(app_error(&e), FeedError::Broke { after: 3 }, "{t}");
        assert!(ticks.recv().await.is_none(), "{t}: nothing after the error");
    }
}

#[tokio::test]
async fn a_call_of_the_wrong_shape_is_an_invalid_argument_naming_the_method() {
    let (client, _) = setup("mem").await;
    let raw = client.client();

    // A streaming method called as unary.
    let e = raw.call(FeedClient::TICKS, Body::default(), CallOptions::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");
    assert!(e.to_string().contains("feed.v1.Feed/ticks: a streaming method"), "{e}");

    // A unary method opened as a stream.
    let call = raw.open(FeedClient::ADD, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default());
    let mut rx = call.await.unwrap().receiver;
    let e = rx.recv().await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");
    assert!(e.to_string().contains("feed.v1.Feed/add: a unary method, called as a stream"), "{e}");

    // Stream arguments are checked like unary ones.
    let call = raw.open(FeedClient::FAIL_AFTER, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default());
    let e = call.await.unwrap().receiver.recv().await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");
    assert!(e.to_string().contains("feed.v1.Feed/fail_after: cannot decode the arguments"), "{e}");

    assert_eq!(client.add(1, 2).await.unwrap(), 3);
}

/// A service the server does not have.
#[rpc_core::service]
pub trait Elsewhere {
    async fn collect(&self, items: Source<u32>) -> u64;
    async fn watch(&self, out: Sink<u32>);
}

#[tokio::test]
async fn an_unknown_streaming_method_names_its_path() {
    let (client, _) = setup("mem").await;
    let other = ElsewhereClient::new(client.client().clone());
    let (_items, answer) = other.collect().await.unwrap();
    let e = answer.await.unwrap_err();
    assert_eq!(e.code(), Code::UNIMPLEMENTED, "{e}");
    assert!(e.to_string().contains("Elsewhere/collect: unknown method id"), "{e}");
    // A server stream's error arrives in the stream, and names the path there too.
    let e = other.watch().await.unwrap().recv().await.unwrap().unwrap_err();
    assert!(e.to_string().contains("Elsewhere/watch: unknown method id"), "{e}");
}

/// A service without a package, one method pinned.
#[rpc_core::service]
pub trait Plain {
    async fn put(&self, n: u32);
    #[method(id = 9)]
    async fn pinned(&self, out: Sink<u8>);
}

#[test]
fn methods_have_paths_and_ids_hashed_from_them() {
    assert_eq!(FeedClient::TICKS_PATH, "feed.v1.Feed/ticks");
    assert_eq!(FeedClient::CHAT_PATH, "feed.v1.Feed/chat");
    for &(path, id) in FeedClient::PATHS {
        assert_eq!(id, method_id(path), "{path}");
        assert_eq!(FeedClient::path_of(id), Some(path));
        assert_eq!(FeedServer::<FeedImpl>::path_of(id), Some(path));
    }
    let names: Vec<_> = FeedClient::METHODS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["ticks", "forever", "fail_after", "upload", "count", "chat", "add"]);
    assert_eq!(FeedClient::PATHS.len(), FeedClient::METHODS.len());
    assert_eq!(FeedClient::ADD, method_id("feed.v1.Feed/add"));
    assert_eq!(FeedClient::path_of(0xdead_beef), None);
    let server = FeedServer::new(FeedImpl(Arc::default()));
    assert_eq!(rpc_core::Service::name(&server), "feed.v1.Feed");

    // Without a package, ids are as they always were: the hash of "Trait/method".
    assert_eq!(PlainClient::PUT_PATH, "Plain/put");
    assert_eq!(PlainClient::PUT, method_id("Plain/put"));
    assert_eq!(method_id("Store/put"), 0x0e28_fcb0);
    // A pinned id keeps its path.
    assert_eq!(PlainClient::PINNED, 9);
    assert_eq!(PlainClient::PINNED_PATH, "Plain/pinned");
    assert_eq!(PlainClient::PATHS, &[("Plain/put", PlainClient::PUT), ("Plain/pinned", 9)]);
    // In a const.
    const PUT: u32 = method_id(PlainClient::PUT_PATH);
    assert_eq!(PUT, PlainClient::PUT);
}
