//! An unchanged tarpc service over zcrpc, on TCP sockets on loopback: calls, errors,
//! cancellation, deadlines, a 64 MiB message, and a request over the frame limit; small
//! requests on the `tarpc/stream` call: cancels, flow control, a lost connection, bad input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tarpc::client::RpcError;
use tarpc::server::{BaseChannel, Channel};
use tarpc::{client, context};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LookupError {
    NotFound(String),
}

#[tarpc::service]
pub trait Store {
    async fn add(a: u64, b: u64) -> u64;
    async fn echo(data: Bytes) -> Bytes;
    async fn lookup(key: String) -> Result<String, LookupError>;
    /// Sleeps this long, then answers.
    async fn sleep(ms: u64) -> u64;
    /// `len` bytes.
    async fn fill(len: u64) -> Bytes;
    /// A value postcard encodes but cannot decode (untagged enums need `deserialize_any`).
    async fn undecodable() -> Untagged;
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Untagged {
    Number(u32),
}

#[derive(Clone, Default)]
struct Impl {
    started: Arc<AtomicUsize>,
    /// Handlers dropped before they finished (cancelled or past their deadline).
    dropped: Arc<AtomicUsize>,
}

struct Unfinished(Arc<AtomicUsize>, bool);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Store for Impl {
    async fn add(self, _: context::Context, a: u64, b: u64) -> u64 {
        a + b
    }

    async fn echo(self, _: context::Context, data: Bytes) -> Bytes {
        data
    }

    async fn lookup(self, _: context::Context, key: String) -> Result<String, LookupError> {
        match key.as_str() {
            "a" => Ok("alpha".into()),
            _ => Err(LookupError::NotFound(key)),
        }
    }

    async fn fill(self, _: context::Context, len: u64) -> Bytes {
        Bytes::from(vec![3u8; len as usize])
    }

    async fn undecodable(self, _: context::Context) -> Untagged {
        Untagged::Number(7)
    }

    async fn sleep(self, _: context::Context, ms: u64) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = Unfinished(self.dropped.clone(), false);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        guard.1 = true;
        ms
    }
}

/// Serves `Impl` on every connection of `incoming`, as a tarpc server over its own transport does.
fn serve(incoming: rpc_tarpc::Incoming<ClientMessagePayload, ResponsePayload>, imp: Impl) {
    tokio::spawn(incoming.filter_map(|r| async { r.ok() }).for_each(move |transport| {
        let imp = imp.clone();
        async move {
            serve_channel(transport, imp);
        }
    }));
}

/// Serves `imp` on one connection's channel, each request in a task of its own; the channel's
/// task (it ends when the channel does).
fn serve_channel(
    transport: rpc_tarpc::ServerTransport<ClientMessagePayload, ResponsePayload>,
    imp: Impl,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(BaseChannel::with_defaults(transport).execute(imp.serve()).for_each(|response| async {
        tokio::spawn(response);
    }))
}

type ClientMessagePayload = StoreRequest;
type ResponsePayload = StoreResponse;

/// A server of `imp` on loopback; its address.
async fn listen_and_serve(imp: Impl) -> std::net::SocketAddr {
    let incoming = rpc_tarpc::listen::<StoreRequest, StoreResponse>("127.0.0.1:0").await.unwrap();
    let addr = incoming.local_addr().unwrap();
    serve(incoming, imp);
    addr
}

async fn start(imp: Impl) -> (StoreClient, std::net::SocketAddr) {
    let addr = listen_and_serve(imp).await;
    let transport = rpc_tarpc::connect(addr).await.unwrap();
    (StoreClient::new(client::Config::default(), transport).spawn(), addr)
}

/// A listener, one client of it (warmed up) and the task serving that client's channel (the
/// listener's other connections are the test's).
async fn one_client_served() -> (
    rpc_tarpc::Incoming<ClientMessagePayload, ResponsePayload>,
    StoreClient,
    tokio::task::JoinHandle<()>,
) {
    let mut incoming = rpc_tarpc::listen::<StoreRequest, StoreResponse>("127.0.0.1:0").await.unwrap();
    let addr = incoming.local_addr().unwrap();
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();
    let transport = incoming.next().await.unwrap().unwrap();
    let channel = serve_channel(transport, Impl::default());
    warm_up(&client).await;
    (incoming, client, channel)
}

/// A plain zcrpc client's `tarpc/stream` call to the server at `addr`, for tests that write the
/// stream's messages by hand (the client must outlive the call).
async fn raw_stream(addr: std::net::SocketAddr) -> (rpc_core::Client, rpc_core::StreamSender, rpc_core::StreamReceiver) {
    let zc = rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()).await.unwrap();
    let call = zc
        .open(rpc_tarpc::STREAM, rpc_core::Body::default(), rpc_core::CallMode::BIDI, rpc_core::CallOptions::default())
        .await
        .unwrap();
    let (tx, rx) = call.split();
    (zc, tx, rx)
}

fn within(d: Duration) -> context::Context {
    let mut ctx = context::current();
    ctx.deadline = Instant::now() + d;
    ctx
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_several_clients_at_once() {
    let (client, addr) = start(Impl::default()).await;
    let other = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();
    let mut calls = Vec::new();
    for i in 0..200u64 {
        let c = if i % 2 == 0 { client.clone() } else { other.clone() };
        calls.push(tokio::spawn(async move { c.add(context::current(), i, 1).await }));
    }
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), i as u64 + 1);
    }
    let back = client.echo(context::current(), Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(&back[..], b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answered_out_of_order_each_get_their_own_answer() {
    let (client, _) = start(Impl::default()).await;
    // The longest first: the server answers them last to first.
    let calls: Vec<_> = [300u64, 200, 100, 0]
        .into_iter()
        .map(|ms| {
            let c = client.clone();
            tokio::spawn(async move { (ms, c.sleep(context::current(), ms).await) })
        })
        .collect();
    for c in calls {
        let (ms, answer) = c.await.unwrap();
        assert_eq!(answer.unwrap(), ms);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_come_back_as_values() {
    let (client, _) = start(Impl::default()).await;
    assert_eq!(client.lookup(context::current(), "a".into()).await.unwrap(), Ok("alpha".to_owned()));
    assert_eq!(client.lookup(context::current(), "b".into()).await.unwrap(), Err(LookupError::NotFound("b".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_is_cancelled_on_the_server() {
    let imp = Impl::default();
    let (client, _) = start(imp.clone()).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(within(Duration::from_secs(60)), 60_000).await }
    });
    eventually("the handler started", || imp.started.load(Ordering::SeqCst) == 1).await;
    call.abort();
    eventually("the handler is dropped", || imp.dropped.load(Ordering::SeqCst) == 1).await;
    // The connection carries on.
    assert_eq!(client.add(context::current(), 2, 3).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_the_call_on_both_sides() {
    let imp = Impl::default();
    let (client, _) = start(imp.clone()).await;
    let err = client.sleep(within(Duration::from_millis(200)), 60_000).await.unwrap_err();
    assert!(matches!(err, RpcError::DeadlineExceeded), "{err:?}");
    eventually("the handler is dropped", || imp.dropped.load(Ordering::SeqCst) == 1).await;
    assert_eq!(client.sleep(within(Duration::from_secs(10)), 1).await.unwrap(), 1);
    // The same on the stream (the first call went as a call while it opened).
    warm_up(&client).await;
    let err = client.sleep(within(Duration::from_millis(200)), 60_000).await.unwrap_err();
    assert!(matches!(err, RpcError::DeadlineExceeded), "{err:?}");
    eventually("the handler is dropped", || imp.dropped.load(Ordering::SeqCst) == 2).await;
    assert_eq!(client.sleep(within(Duration::from_secs(10)), 1).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_message_goes_and_comes_back() {
    let (client, _) = start(Impl::default()).await;
    let data: Bytes = (0..64usize << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let back = client.echo(within(Duration::from_secs(120)), data.clone()).await.unwrap();
    assert_eq!(back.len(), 64 << 20);
    assert!(back == data, "the 64 MiB came back changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_in_flight_at_once_each_come_back_as_sent() {
    // Eight 1 MiB echoes at a time, each of its own bytes, several rounds: the buffers both
    // ends serialize into are reused once written out, never while a message is in flight.
    let (client, _) = start(Impl::default()).await;
    for round in 0..4u8 {
        let calls: Vec<_> = (0..8u8)
            .map(|k| {
                let client = client.clone();
                let data = Bytes::from(vec![round.wrapping_mul(16).wrapping_add(k); (1 << 20) + k as usize]);
                tokio::spawn(async move {
                    let back = client.echo(within(Duration::from_secs(60)), data.clone()).await.unwrap();
                    assert!(back == data, "round {round}, call {k}: the echo came back changed");
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_fails_alone_with_invalid_argument() {
    let addr = listen_and_serve(Impl::default()).await;
    let zc = rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()).await.unwrap();
    // Not the postcard of a (context, request): the call fails, tarpc never sees it.
    let err = zc
        .call(rpc_tarpc::CALL, rpc_core::Body::message(Bytes::from_static(&[0xff; 3])), rpc_core::CallOptions::default())
        .await
        .unwrap_err();
    let rpc_core::CallError::Status(status) = &err else { panic!("{err:?}") };
    assert_eq!(status.code, rpc_core::Code::INVALID_ARGUMENT, "{status:?}");
    assert!(status.message.contains("cannot decode the request"), "{status:?}");
    // The same connection carries tarpc's calls on.
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::ClientTransport::new(zc)).spawn();
    assert_eq!(client.add(context::current(), 20, 22).await.unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_frame_limit_fails_alone_with_an_error_that_says_so() {
    // A server that takes frames of 1 MiB at most.
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let incoming = rpc_tarpc::Incoming::new(acceptor, rpc_core::Server::builder().max_frame(1 << 20), 16);
    serve(incoming, Impl::default());
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();

    let err = client.echo(context::current(), Bytes::from(vec![7u8; 2 << 20])).await.unwrap_err();
    let RpcError::Server(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.kind, std::io::ErrorKind::InvalidInput, "{e}");
    assert!(e.detail.contains("over the peer's frame limit of 1048576 bytes"), "{e}");
    // Not a disconnect: the next call on the same client goes through.
    assert_eq!(client.add(context::current(), 1, 1).await.unwrap(), 2);
    let back = client.echo(context::current(), Bytes::from(vec![7u8; 1000])).await.unwrap();
    assert_eq!(back.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_server_is_gone_fails_calls_with_a_clear_error() {
    let addr = listen_and_serve(Impl::default()).await;
    let mut config = rpc_core::ClientConfig::default();
    config.reconnect.wait_for_connection = false;
    let transport = rpc_tarpc::connect_with(addr, config).await.unwrap();
    let zc = transport.client().clone();
    let client = StoreClient::new(client::Config::default(), transport).spawn();
    assert_eq!(client.add(context::current(), 1, 2).await.unwrap(), 3);
    zc.close().await;
    let err = client.add(context::current(), 1, 2).await.unwrap_err();
    let RpcError::Server(e) = &err else { panic!("{err:?}") };
    assert!(e.detail.starts_with("zcrpc: "), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_clients_frame_limit_fails_alone_with_an_error_that_says_so() {
    let addr = listen_and_serve(Impl::default()).await;
    // A client that takes frames of 1 MiB at most.
    let mut config = rpc_core::ClientConfig::default();
    config.conn.max_frame = 1 << 20;
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect_with(addr, config).await.unwrap()).spawn();

    // 900 KiB each way fits; 1 MiB of data (and its length prefix) back does not.
    assert_eq!(client.echo(context::current(), Bytes::from(vec![1u8; 900 << 10])).await.unwrap().len(), 900 << 10);
    let err = client.echo(within(Duration::from_secs(10)), Bytes::from(vec![1u8; 1 << 20])).await.unwrap_err();
    let RpcError::Server(e) = &err else { panic!("{err:?}") };
    assert!(e.detail.contains("over the client's limit of 1048576 bytes"), "{e}");
    assert_eq!(client.add(context::current(), 1, 1).await.unwrap(), 2);
}

/// A server that takes `max_calls` zcrpc calls in flight per connection (the `tarpc/stream`
/// call is one): more small tarpc calls than that in flight at once can only be on the stream.
async fn start_limited(imp: Impl, max_calls: u32) -> (StoreClient, std::net::SocketAddr) {
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    serve(rpc_tarpc::Incoming::new(acceptor, rpc_core::Server::builder().max_calls_in_flight(max_calls), 16), imp);
    (StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn(), addr)
}

/// A few calls one after the other: the first go as calls while the stream opens and the
/// server accepts it; the stream is open by the time they are answered.
async fn warm_up(client: &StoreClient) {
    for i in 0..3 {
        assert_eq!(client.add(context::current(), i, 1).await.unwrap(), i + 1);
    }
}

/// `n` calls of `sleep(ms)`, spawned, each with a deadline 30 s past its sleep.
fn sleepers(client: &StoreClient, n: usize, ms: u64) -> Vec<tokio::task::JoinHandle<Result<u64, RpcError>>> {
    (0..n)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.sleep(within(Duration::from_millis(ms + 30_000)), ms).await })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_calls_go_on_the_stream_and_a_cancel_there_drops_the_handler() {
    let imp = Impl::default();
    // Two zcrpc calls in flight at most: the stream and one more.
    let (client, _) = start_limited(imp.clone(), 2).await;
    warm_up(&client).await;
    let calls = sleepers(&client, 40, 60_000);
    eventually("40 handlers run at once", || imp.started.load(Ordering::SeqCst) == 40).await;
    for c in &calls {
        c.abort();
    }
    eventually("every handler is dropped", || imp.dropped.load(Ordering::SeqCst) == 40).await;
    assert_eq!(client.add(context::current(), 2, 3).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_calls_interleaved_with_large_ones_each_get_their_answer() {
    let (client, _) = start_limited(Impl::default(), 4).await;
    warm_up(&client).await;
    let mut small = Vec::new();
    let mut large = Vec::new();
    for i in 0..600u64 {
        let c = client.clone();
        small.push(tokio::spawn(async move { c.add(context::current(), i, i).await }));
        if i % 200 == 0 {
            let c = client.clone();
            let data = Bytes::from(vec![i as u8; 4 << 20]);
            large.push(tokio::spawn(async move {
                let back = c.echo(within(Duration::from_secs(60)), data.clone()).await.unwrap();
                assert!(back == data, "a large echo came back changed");
            }));
            // A small request with a large response: on the stream both ways.
            let c = client.clone();
            large.push(tokio::spawn(async move {
                assert_eq!(c.fill(within(Duration::from_secs(60)), 3 << 20).await.unwrap().len(), 3 << 20);
            }));
        }
    }
    for (i, c) in small.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), 2 * i as u64);
    }
    for c in large {
        c.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_on_the_stream_over_the_clients_frame_limit_fails_alone() {
    let addr = listen_and_serve(Impl::default()).await;
    let mut config = rpc_core::ClientConfig::default();
    config.conn.max_frame = 1 << 20;
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect_with(addr, config).await.unwrap()).spawn();
    warm_up(&client).await;
    let err = client.fill(within(Duration::from_secs(10)), 2 << 20).await.unwrap_err();
    let RpcError::Server(e) = &err else { panic!("{err:?}") };
    assert!(e.detail.contains("over the client's limit of 1048576 bytes"), "{e}");
    assert_eq!(client.fill(context::current(), 1000).await.unwrap().len(), 1000);
    assert_eq!(client.add(context::current(), 1, 1).await.unwrap(), 2);
}

/// A TCP proxy to `to` whose connections [`Proxy::cut`] drops, both sides at once.
struct Proxy {
    addr: std::net::SocketAddr,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = links.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                l.lock().unwrap().push(link);
            }
        });
        Proxy { addr, links }
    }

    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_the_streams_calls_clearly_then_the_client_recovers() {
    let imp = Impl::default();
    let (_, addr) = start_limited(imp.clone(), 2).await;
    let proxy = Proxy::start(addr).await;
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect(proxy.addr).await.unwrap()).spawn();
    warm_up(&client).await;
    let calls = sleepers(&client, 10, 60_000);
    eventually("10 handlers run at once", || imp.started.load(Ordering::SeqCst) == 10).await;
    proxy.cut();
    for c in calls {
        let err = c.await.unwrap().unwrap_err();
        let RpcError::Server(e) = &err else { panic!("{err:?}") };
        assert_eq!(e.kind, std::io::ErrorKind::ConnectionAborted, "{e}");
        assert!(e.detail.starts_with("zcrpc: the tarpc stream the request went on was lost"), "{e}");
    }
    // The server dropped the handlers of the connection it lost.
    eventually("every handler is dropped", || imp.dropped.load(Ordering::SeqCst) == 10).await;
    // The client re-dials, and opens a new stream: many calls in flight at once again.
    warm_up(&client).await;
    let calls = sleepers(&client, 10, 60_000);
    eventually("10 more handlers run at once", || imp.started.load(Ordering::SeqCst) == 20).await;
    drop(calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_read_makes_the_clients_sink_wait() {
    use futures::{SinkExt, StreamExt as _};
    let mut incoming = rpc_tarpc::listen::<StoreRequest, StoreResponse>("127.0.0.1:0").await.unwrap();
    let addr = incoming.local_addr().unwrap();
    let mut transport: rpc_tarpc::ClientTransport<StoreRequest, StoreResponse> = rpc_tarpc::connect(addr).await.unwrap();
    // Taken, not read (yet).
    let server_side = incoming.next().await.unwrap().unwrap();
    let request = |id: u64, len: usize| {
        tarpc::ClientMessage::Request(tarpc::Request {
            context: within(Duration::from_secs(60)),
            id,
            message: StoreRequest::Echo { data: Bytes::from(vec![9u8; len]) },
        })
    };
    // The stream opens at the first request, which goes as a call; the server accepts the
    // stream without the channel reading anything.
    transport.send(request(0, 10)).await.unwrap();
    for _ in 0..500 {
        if transport.is_streaming() {
            break;
        }
        // Polling moves the stream along.
        let _ = tokio::time::timeout(Duration::from_millis(10), transport.next()).await;
    }
    assert!(transport.is_streaming(), "the stream did not open");
    // 32 KiB requests (small: on the stream) until the sink stops taking them.
    let mut sent = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), transport.feed(request(1 + sent, 32 << 10))).await {
            Ok(r) => r.unwrap(),
            Err(_) => break,
        }
        sent += 1;
        assert!(sent < 1000, "the sink took {sent} requests the server never read");
    }
    // Within the stream's window (4 MiB by default) and the transport's queue of 64.
    assert!(sent <= 4 * 32 + 64 + 2, "{sent} requests taken");
    // The server reads: every request is answered.
    serve_channel(server_side, Impl::default());
    transport.flush().await.unwrap();
    let mut answered = std::collections::HashSet::new();
    while answered.len() < sent as usize + 1 {
        let response = transport.next().await.unwrap().unwrap();
        let StoreResponse::Echo(data) = response.message.unwrap() else { panic!("not an echo") };
        assert_eq!(data.len(), if response.request_id == 0 { 10 } else { 32 << 10 });
        answered.insert(response.request_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_message_that_does_not_decode_ends_that_stream_with_an_error() {
    let addr = listen_and_serve(Impl::default()).await;
    let zc = rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()).await.unwrap();
    // An unknown kind (7), then bytes that are nothing at all.
    for message in [&[7u8, 1][..], &[0, 0xff, 0xff, 0xff][..]] {
        let call = zc
            .open(rpc_tarpc::STREAM, rpc_core::Body::default(), rpc_core::CallMode::BIDI, rpc_core::CallOptions::default())
            .await
            .unwrap();
        let (mut tx, mut rx) = call.split();
        assert_eq!(rx.response_headers().await.get_str("tarpc-stream"), Some("1"), "the server accepts the stream");
        tx.send(rpc_core::Body::message(Bytes::copy_from_slice(message))).await.unwrap();
        let err = rx.recv().await.unwrap().unwrap_err();
        let rpc_core::CallError::Status(status) = &err else { panic!("{err:?}") };
        assert_eq!(status.code, rpc_core::Code::INVALID_ARGUMENT, "{status:?}");
        assert!(status.message.contains("tarpc/stream: a message does not decode"), "{status:?}");
    }
    // The connection carries tarpc on.
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::ClientTransport::new(zc)).spawn();
    warm_up(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_request_over_a_low_frame_limit_fails_alone_and_the_stream_carries_on() {
    // A server that takes frames of 8 KiB at most: a 10 KiB request is "small" for the stream,
    // but goes as a call, which fails alone saying why.
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    serve(rpc_tarpc::Incoming::new(acceptor, rpc_core::Server::builder().max_frame(8 << 10), 16), Impl::default());
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();
    warm_up(&client).await;
    let sleeping = sleepers(&client, 5, 300);
    let err = client.echo(context::current(), Bytes::from(vec![7u8; 10 << 10])).await.unwrap_err();
    let RpcError::Server(e) = &err else { panic!("{err:?}") };
    assert!(e.detail.contains("over the peer's frame limit of 8192 bytes"), "{e}");
    // The requests on the stream meanwhile are answered.
    for s in sleeping {
        assert_eq!(s.await.unwrap().unwrap(), 300);
    }
    assert_eq!(client.echo(context::current(), Bytes::from(vec![7u8; 1000])).await.unwrap().len(), 1000);
}

/// The `(context, request)` bytes a peer other than tarpc's client may send: a context whose
/// deadline is `deadline` from now (postcard: the deadline as a `Duration`, then the trace).
fn request_with_deadline(deadline: Duration, request: &StoreRequest) -> Vec<u8> {
    postcard::to_allocvec(&(deadline, tarpc::trace::Context::default(), request)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_an_absurd_deadline_is_served_and_the_channel_carries_on() {
    // Past the clock's range (`Instant + Duration` overflows), and past what tarpc's timers take
    // (about 2.2 years): neither may take the connection's tarpc channel down.
    let addr = listen_and_serve(Impl::default()).await;
    let zc = rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()).await.unwrap();
    let add = StoreRequest::Add { a: 1, b: 2 };
    tokio::time::timeout(Duration::from_secs(20), async {
        for deadline in [Duration::from_secs(u64::MAX), Duration::from_secs(3 * 365 * 86_400)] {
            // As a call.
            let message = Bytes::from(request_with_deadline(deadline, &add));
            let reply = zc
                .call(rpc_tarpc::CALL, rpc_core::Body::message(message.clone()), rpc_core::CallOptions::default())
                .await
                .unwrap_or_else(|e| panic!("deadline {deadline:?}, as a call: {e}"));
            let StoreResponse::Add(3) = postcard::from_bytes(&reply.message).unwrap() else { panic!("not 1 + 2") };
            // On the stream: kind 0 (a request), id 5, then the same bytes.
            let call = zc
                .open(rpc_tarpc::STREAM, rpc_core::Body::default(), rpc_core::CallMode::BIDI, rpc_core::CallOptions::default())
                .await
                .unwrap();
            let (mut tx, mut rx) = call.split();
            let mut on_stream = vec![0u8, 5];
            on_stream.extend_from_slice(&message);
            tx.send(rpc_core::Body::message(Bytes::from(on_stream))).await.unwrap();
            let body = rx.recv().await.unwrap().unwrap_or_else(|e| panic!("deadline {deadline:?}, on the stream: {e}"));
            let (kind, id, answer): (u32, u64, Result<StoreResponse, tarpc::ServerError>) = postcard::from_bytes(&body.message).unwrap();
            assert_eq!((kind, id), (0, 5));
            let StoreResponse::Add(3) = answer.unwrap() else { panic!("not 1 + 2") };
        }
        // The same connection carries tarpc on.
        let client = StoreClient::new(client::Config::default(), rpc_tarpc::ClientTransport::new(zc)).spawn();
        warm_up(&client).await;
    })
    .await
    .expect("not within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_channel_dropped_closes_its_connection_and_the_client_moves_to_the_next() {
    // As over tarpc's own transports, where dropping a channel closes its socket: the zcrpc
    // connection of a dropped channel must not stay open answering every call "unavailable".
    let (incoming, client, channel) = one_client_served().await;
    // The server drops the channel; the next connections are served.
    channel.abort();
    let _ = channel.await;
    serve(incoming, Impl::default());
    let mut last = None;
    for _ in 0..100 {
        match client.add(within(Duration::from_secs(5)), 1, 2).await {
            Ok(sum) => {
                assert_eq!(sum, 3);
                return;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the client never reached the next channel: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_on_the_stream_larger_than_its_window_comes_back() {
    // A small request whose response (24 MiB) is larger than the stream's window (16 MiB; 4 MiB
    // with zcrpc's defaults): it must not wait for credit that can never come.
    let addr = listen_and_serve(Impl::default()).await;
    for config in [rpc_tarpc::client_config(), rpc_core::ClientConfig::default()] {
        let transport = rpc_tarpc::connect_with(addr, config).await.unwrap();
        let client = StoreClient::new(client::Config::default(), transport).spawn();
        warm_up(&client).await;
        let got = client.fill(within(Duration::from_secs(30)), 24 << 20).await.unwrap();
        assert_eq!(got.len(), 24 << 20);
        assert_eq!(client.add(context::current(), 1, 1).await.unwrap(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_dispatch_ends_drops_the_servers_handlers_of_its_stream_requests() {
    let imp = Impl::default();
    let addr = listen_and_serve(imp.clone()).await;
    let client::NewClient { client, dispatch } = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap());
    let dispatch = tokio::spawn(dispatch);
    warm_up(&client).await;
    let calls = sleepers(&client, 10, 60_000);
    eventually("10 handlers run at once", || imp.started.load(Ordering::SeqCst) == 10).await;
    // The transport is dropped with the dispatch (a runtime shutting down, the task aborted).
    dispatch.abort();
    eventually("every handler is dropped", || imp.dropped.load(Ordering::SeqCst) == 10).await;
    for c in calls {
        assert!(c.await.unwrap().is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_does_not_decode_fails_alone_and_the_stream_carries_on() {
    let imp = Impl::default();
    let (client, _) = start(imp.clone()).await;
    warm_up(&client).await;
    let sleeping = sleepers(&client, 5, 300);
    eventually("5 handlers run at once", || imp.started.load(Ordering::SeqCst) == 5).await;
    let err = client.undecodable(within(Duration::from_secs(10))).await.unwrap_err();
    let RpcError::Server(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.kind, std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.detail.contains("cannot decode the response"), "{e}");
    // The requests on the stream meanwhile are answered, and the stream stays open.
    for s in sleeping {
        assert_eq!(s.await.unwrap().unwrap(), 300);
    }
    assert_eq!(imp.dropped.load(Ordering::SeqCst), 0);
    assert_eq!(client.add(context::current(), 1, 1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_request_that_does_not_decode_fails_alone_and_the_stream_carries_on() {
    // A client with a method this server does not know (a newer version of the service): its
    // request is answered with an error; the other requests on the stream carry on.
    let imp = Impl::default();
    let addr = listen_and_serve(imp.clone()).await;
    let (_zc, mut tx, mut rx) = raw_stream(addr).await;
    let trace = tarpc::trace::Context::default();
    let ten_s = Duration::from_secs(10);
    let messages = [
        postcard::to_allocvec(&(0u32, 1u64, ten_s, trace, StoreRequest::Sleep { ms: 300 })).unwrap(),
        // Kind 0 (a request), id 2, a context, then variant 99 of the request enum.
        postcard::to_allocvec(&(0u32, 2u64, ten_s, trace, 99u32)).unwrap(),
        postcard::to_allocvec(&(0u32, 3u64, ten_s, trace, StoreRequest::Add { a: 1, b: 1 })).unwrap(),
    ];
    tokio::time::timeout(Duration::from_secs(20), async {
        for m in messages {
            tx.send(rpc_core::Body::message(Bytes::from(m))).await.unwrap();
        }
        let mut answers = std::collections::BTreeMap::new();
        while answers.len() < 3 {
            let body = rx.recv().await.unwrap().unwrap_or_else(|e| panic!("the stream ended: {e}"));
            let (kind, id, answer): (u32, u64, Result<StoreResponse, tarpc::ServerError>) = postcard::from_bytes(&body.message).unwrap();
            assert_eq!(kind, 0);
            answers.insert(id, answer);
        }
        let e = answers[&2].as_ref().unwrap_err();
        assert_eq!(e.kind, std::io::ErrorKind::InvalidInput, "{e:?}");
        assert!(e.detail.contains("cannot decode the request"), "{e:?}");
        assert!(matches!(answers[&1], Ok(StoreResponse::Sleep(300))), "{:?}", answers[&1]);
        assert!(matches!(answers[&3], Ok(StoreResponse::Add(2))), "{:?}", answers[&3]);
    })
    .await
    .expect("not within 20 s");
    assert_eq!(imp.dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_request_id_sent_twice_ends_the_stream_and_drops_the_first_handler() {
    let imp = Impl::default();
    let addr = listen_and_serve(imp.clone()).await;
    let (_zc, mut tx, mut rx) = raw_stream(addr).await;
    let sleep = postcard::to_allocvec(&(0u32, 5u64, Duration::from_secs(60), tarpc::trace::Context::default(), StoreRequest::Sleep { ms: 60_000 }))
        .unwrap();
    tx.send(rpc_core::Body::message(Bytes::from(sleep.clone()))).await.unwrap();
    eventually("the handler started", || imp.started.load(Ordering::SeqCst) == 1).await;
    // The same id again, while the first is in flight: the stream ends saying why...
    tx.send(rpc_core::Body::message(Bytes::from(sleep))).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap().unwrap_err();
    let rpc_core::CallError::Status(status) = &err else { panic!("{err:?}") };
    assert_eq!(status.code, rpc_core::Code::INVALID_ARGUMENT, "{status:?}");
    assert!(status.message.contains("in flight already"), "{status:?}");
    // ... and its request in flight is cancelled like any other of a stream that ended.
    eventually("the first handler is dropped", || imp.dropped.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_keeps_its_kind_on_the_stream_and_as_a_call() {
    // tarpc's throttle answers a request over `max_concurrent_requests` with a ServerError of
    // kind WouldBlock: the client must see that kind, whichever way the request went.
    let incoming = rpc_tarpc::listen::<StoreRequest, StoreResponse>("127.0.0.1:0").await.unwrap();
    let addr = incoming.local_addr().unwrap();
    let imp = Impl::default();
    let served = imp.clone();
    tokio::spawn(incoming.filter_map(|r| async { r.ok() }).for_each(move |transport| {
        let imp = served.clone();
        async move {
            let serve = BaseChannel::with_defaults(transport).max_concurrent_requests(1).execute(imp.serve());
            tokio::spawn(serve.for_each(|response| async {
                tokio::spawn(response);
            }));
        }
    }));
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();
    warm_up(&client).await;
    let sleeping = {
        let c = client.clone();
        tokio::spawn(async move { c.sleep(within(Duration::from_secs(60)), 60_000).await })
    };
    eventually("the handler started", || imp.started.load(Ordering::SeqCst) == 1).await;
    // A small request (on the stream), then a large one (a call).
    let small = client.add(context::current(), 1, 1).await.unwrap_err();
    let large = client.echo(context::current(), Bytes::from(vec![1u8; 100 << 10])).await.unwrap_err();
    for err in [small, large] {
        let RpcError::Server(e) = &err else { panic!("{err:?}") };
        assert_eq!(e.kind, std::io::ErrorKind::WouldBlock, "{e:?}");
        assert!(e.detail.contains("throttled"), "{e:?}");
    }
    // The one request the channel takes at a time is still the sleeper.
    assert_eq!(imp.started.load(Ordering::SeqCst), 1);
    sleeping.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_ends_its_server_channel() {
    // Every StoreClient dropped: its dispatch ends, its connection closes, and the server's
    // channel for it ends (no task left behind per client that went away).
    let (_incoming, client, channel) = one_client_served().await;
    drop(client);
    tokio::time::timeout(Duration::from_secs(20), channel).await.expect("the server's channel outlived its client").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listeners_connections_share_one_servers_memory_budget() {
    // One zcrpc server serves all of a listener's connections: a client whose requests the
    // server holds up to its memory budget holds back the other clients' requests too (every
    // connection stops reading them), rather than each connection having a budget of its own.
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let builder = rpc_core::Server::builder().memory_budget(1 << 20);
    let mut incoming = rpc_tarpc::Incoming::<StoreRequest, StoreResponse>::new(acceptor, builder, 16);
    let b = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();
    let _b_channel = serve_channel(incoming.next().await.unwrap().unwrap(), Impl::default());
    warm_up(&b).await;
    // Client a's channel is never served: its 2 MiB echo is held, unanswered.
    let a = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();
    let a_transport = incoming.next().await.unwrap().unwrap();
    let held = tokio::spawn(async move { a.echo(within(Duration::from_secs(60)), Bytes::from(vec![1u8; 2 << 20])).await });
    eventually("a's request held against the budget", || incoming.server().memory_held() >= 2 << 20).await;
    assert_eq!(incoming.server().connections(), 2);
    // b's large request (a call of its own, not a stream message) waits behind the budget...
    let big = Bytes::from(vec![2u8; 256 << 10]);
    let b_call = {
        let (b, big) = (b.clone(), big.clone());
        tokio::spawn(async move { b.echo(within(Duration::from_secs(60)), big).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b_call.is_finished(), "b's call was answered while a's request held the whole budget");
    // ...until a's connection closes (its channel dropped) and lets go of a's request.
    drop(a_transport);
    let back = tokio::time::timeout(Duration::from_secs(20), b_call).await.expect("b's call still held").unwrap().unwrap();
    assert!(back == big, "b's echo came back changed");
    assert!(held.await.unwrap().is_err(), "a's call was answered by a channel that never ran");
    eventually("a's connection gone", || incoming.server().connections() == 1).await;
    assert_eq!(b.add(context::current(), 2, 2).await.unwrap(), 4);
}

/// A tarpc server whose connections last `age` (then a goaway, and a grace period of 20 s that
/// would keep one open that long if its client went on using it), each served by `imp()`: its
/// zcrpc server (`connections()`), and a client of it.
async fn aging_server(age: Duration, imp: impl Fn() -> Impl + Send + 'static) -> (rpc_core::Server, StoreClient) {
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let builder = rpc_core::Server::builder().max_connection_age(Some(age)).grace_period(Duration::from_secs(20));
    let incoming = rpc_tarpc::Incoming::<StoreRequest, StoreResponse>::new(acceptor, builder, 16);
    let server = incoming.server().clone();
    tokio::spawn(incoming.filter_map(|r| async { r.ok() }).for_each(move |transport| {
        serve_channel(transport, imp());
        async {}
    }));
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::connect(addr).await.unwrap()).spawn();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_requests_move_to_the_next_connection_at_each_goaway_and_none_fails() {
    // Connections that last 300 ms, and a grace period that would keep one 20 s if its client
    // went on sending there: at each goaway the client's small requests move to a stream of
    // the next connection, and the old one, once it answered what it had, closes.
    // The requests each connection's channel served.
    let served: Arc<std::sync::Mutex<Vec<Arc<AtomicUsize>>>> = Arc::default();
    let counts = served.clone();
    let (server, client) = aging_server(Duration::from_millis(300), move || {
        let started = Arc::new(AtomicUsize::new(0));
        counts.lock().unwrap().push(started.clone());
        Impl { started, ..Impl::default() }
    })
    .await;
    let until = Instant::now() + Duration::from_millis(1500);
    let mut sent = 0;
    while Instant::now() < until {
        let r = client.sleep(within(Duration::from_secs(10)), 0).await;
        assert!(r.is_ok(), "request {sent} failed across a goaway: {r:?}");
        sent += 1;
    }
    let per_connection: Vec<usize> = served.lock().unwrap().iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(per_connection.iter().sum::<usize>(), sent);
    let carried = per_connection.iter().filter(|&&n| n > 0).count();
    assert!(carried >= 3, "requests stayed on {carried} connections: {per_connection:?}");
    // The old connections closed once answered, not at the end of their grace period.
    assert!(server.connections() <= 2, "{} connections still open", server.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_connections_stream_is_let_go_once_nothing_on_it_is_awaited() {
    // Connections that last 300 ms, and on each connection a request
    // the server holds past its deadline (tarpc drops it there, unanswered): so the server
    // never ends those streams. The client lets each go once that request is past its
    // deadline, and the connections close long before their grace period ends, rather than
    // one staying open per goaway.
    let (server, client) = aging_server(Duration::from_millis(300), Impl::default).await;
    let until = Instant::now() + Duration::from_millis(2000);
    let mut rounds = 0;
    while Instant::now() < until {
        // One unanswered request and, beside it, small ones that keep the stream moving from
        // connection to connection.
        let hanging = client.sleep(within(Duration::from_millis(400)), 3_600_000);
        let small = async {
            let end = Instant::now() + Duration::from_millis(400);
            while Instant::now() < end {
                let r = client.sleep(within(Duration::from_secs(10)), 1).await;
                assert!(r.is_ok(), "a small request failed: {r:?}");
            }
        };
        let (r, ()) = futures::join!(hanging, small);
        assert!(matches!(r, Err(RpcError::DeadlineExceeded)), "{r:?}");
        rounds += 1;
    }
    assert!(rounds >= 4, "{rounds} rounds");
    // A request now and then while the last deadlines pass.
    for _ in 0..10 {
        if server.connections() <= 2 {
            break;
        }
        client.sleep(within(Duration::from_secs(10)), 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("the draining connections to close", || server.connections() <= 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaways_faster_than_answers_let_the_oldest_draining_stream_go() {
    // Connections that last 150 ms (longer than the client's first re-dial backoff, which a
    // shorter life would make it wait), and on each a request the server holds for an hour
    // within a 10 s deadline: a stream per goaway would wait on it. The client reads at most 8 of them
    // at once; beyond, the oldest goes and its request fails saying why.
    let (_server, client) = aging_server(Duration::from_millis(150), Impl::default).await;
    let mut hanging = Vec::new();
    let until = Instant::now() + Duration::from_millis(6000);
    while Instant::now() < until {
        // Small requests first, so that the stream is open when the long one goes.
        let end = Instant::now() + Duration::from_millis(60);
        while Instant::now() < end {
            let r = client.sleep(within(Duration::from_secs(10)), 1).await;
            assert!(r.is_ok(), "a small request failed: {r:?}");
        }
        let client = client.clone();
        hanging.push(tokio::spawn(async move { client.sleep(within(Duration::from_secs(10)), 3_600_000).await }));
        if hanging.iter().any(|h| h.is_finished()) {
            break;
        }
    }
    let failed = hanging.into_iter().find(|h| h.is_finished()).expect("no long request was let go");
    let err = failed.await.unwrap().unwrap_err();
    let RpcError::Server(e) = &err else { panic!("{err:?}") };
    assert!(e.detail.contains("8 more connections began draining before it answered"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_to_the_stream_method_fails_saying_why() {
    let addr = listen_and_serve(Impl::default()).await;
    let zc = rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()).await.unwrap();
    let err = zc.call(rpc_tarpc::STREAM, rpc_core::Body::default(), rpc_core::CallOptions::default()).await.unwrap_err();
    let rpc_core::CallError::Status(status) = &err else { panic!("{err:?}") };
    assert_eq!(status.code, rpc_core::Code::INVALID_ARGUMENT, "{status:?}");
    assert!(status.message.contains("is a bidirectional streaming call"), "{status:?}");
}

/// Each read of a connection's tarpc channel polls every `tarpc/stream` call open on it, and a
/// client transport opens one: a peer that opens more than 64 on one connection is refused,
/// saying so, a stream that ends makes room, and tarpc on the connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_a_connections_limit_are_refused_and_one_that_ends_makes_room() {
    const LIMIT: usize = 64;
    let hang = Duration::from_secs(20);
    let addr = listen_and_serve(Impl::default()).await;
    let zc = rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()).await.unwrap();
    let open = || async {
        let call = zc.open(rpc_tarpc::STREAM, rpc_core::Body::default(), rpc_core::CallMode::BIDI, rpc_core::CallOptions::default());
        let (tx, mut rx) = tokio::time::timeout(hang, call).await.expect("no hang").unwrap().split();
        let accepted = tokio::time::timeout(hang, rx.response_headers()).await.expect("no hang").get_str("tarpc-stream") == Some("1");
        (tx, rx, accepted)
    };
    let mut streams = Vec::new();
    for i in 0..LIMIT {
        let (tx, rx, accepted) = open().await;
        assert!(accepted, "stream {i} is accepted");
        streams.push((tx, rx));
    }
    let (_tx, mut rx, accepted) = open().await;
    assert!(!accepted, "stream {LIMIT} is refused");
    let err = tokio::time::timeout(hang, rx.recv()).await.expect("no hang").unwrap().unwrap_err();
    let rpc_core::CallError::Status(status) = &err else { panic!("{err:?}") };
    assert_eq!(status.code, rpc_core::Code::RESOURCE_EXHAUSTED, "{status:?}");
    assert!(status.message.contains("64 tarpc/stream calls"), "{status:?}");

    // One ends (finished, so the server ends it): room for another.
    let (mut tx, mut rx) = streams.pop().unwrap();
    tx.finish();
    assert!(tokio::time::timeout(hang, rx.recv()).await.expect("no hang").is_none());
    let mut room = false;
    for _ in 0..100 {
        let (tx, rx, accepted) = open().await;
        if accepted {
            streams.push((tx, rx));
            room = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(room, "no stream accepted after one ended");
    // The connection carries tarpc on (its requests go as calls while no stream is free).
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::ClientTransport::new(zc.clone())).spawn();
    warm_up(&client).await;
}

/// A server at its limit of streams refuses the client transport's: its requests go as calls,
/// and the stream is tried again after a rest (1 s, then longer), not at each request (each
/// try costs the server a call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_tried_again_after_a_rest_not_at_each_request() {
    const LIMIT: usize = 64;
    let hang = Duration::from_secs(20);
    let opens = Arc::new(AtomicUsize::new(0));
    let counted = opens.clone();
    let count_opens = tower::util::MapRequestLayer::new(move |req: rpc_core::ServerRequest| {
        if req.method == rpc_tarpc::STREAM {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        req
    });
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    serve(rpc_tarpc::Incoming::new(acceptor, rpc_core::Server::builder().layer(count_opens), 16), Impl::default());
    let zc = rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()).await.unwrap();
    // The connection's streams, all taken.
    let mut held = Vec::new();
    for i in 0..LIMIT {
        let call = zc.open(rpc_tarpc::STREAM, rpc_core::Body::default(), rpc_core::CallMode::BIDI, rpc_core::CallOptions::default());
        let (tx, mut rx) = tokio::time::timeout(hang, call).await.expect("no hang").unwrap().split();
        let headers = tokio::time::timeout(hang, rx.response_headers()).await.expect("no hang");
        assert_eq!(headers.get_str("tarpc-stream"), Some("1"), "stream {i} is accepted");
        held.push((tx, rx));
    }
    assert_eq!(opens.load(Ordering::SeqCst), LIMIT);

    // 30 requests, one after another: each is answered (as a call), and the transport tried
    // its stream once, not 30 times.
    let client = StoreClient::new(client::Config::default(), rpc_tarpc::ClientTransport::new(zc.clone())).spawn();
    for i in 0..30 {
        assert_eq!(client.add(context::current(), i, 1).await.unwrap(), i + 1);
    }
    let tries = opens.load(Ordering::SeqCst) - LIMIT;
    assert_eq!(tries, 1, "{tries} stream opens for 30 requests to a server at its limit");

    // Room again, and past the rest: the next request tries the stream again.
    let (mut tx, mut rx) = held.pop().unwrap();
    tx.finish();
    assert!(tokio::time::timeout(hang, rx.recv()).await.expect("no hang").is_none());
    tokio::time::sleep(rpc_tarpc::STREAM_REST_FIRST + Duration::from_millis(100)).await;
    for i in 0..3 {
        assert_eq!(client.add(context::current(), i, 1).await.unwrap(), i + 1);
    }
    assert_eq!(opens.load(Ordering::SeqCst) - LIMIT, 2, "the stream was not tried again after its rest");
}

/// tarpc's own transport at the other end, either way: a clear error at once, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tarpc_peer_at_either_end_fails_promptly() {
    use tarpc::tokio_serde::formats::Bincode;
    let hang = Duration::from_secs(20);
    // A zcrpc client at a tarpc server of tarpc's own transport.
    let mut listener = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Some(Ok(transport)) = listener.next().await {
            let serve = BaseChannel::with_defaults(transport).execute(Impl::default().serve());
            tokio::spawn(serve.for_each(|response| async { tokio::spawn(response); }));
        }
    });
    let e = tokio::time::timeout(hang, rpc_tarpc::connect::<StoreRequest, StoreResponse>(addr)).await.expect("no hang").unwrap_err();
    assert!(e.to_string().contains("without a zcrpc hello"), "{e}");

    // A tarpc client of tarpc's own transport at a zcrpc server.
    let addr = listen_and_serve(Impl::default()).await;
    let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default).await.unwrap();
    let client = StoreClient::new(client::Config::default(), transport).spawn();
    let e = tokio::time::timeout(hang, client.add(context::current(), 1, 2)).await.expect("no hang").unwrap_err();
    // tarpc's dispatch ends with its transport: it read the zcrpc hello as a frame too large
    // for its codec, or the zcrpc server closed on its first bytes first.
    assert!(matches!(e, RpcError::Shutdown | RpcError::Channel(_)), "{e:?}");
}

/// A peer that connects and says nothing holds its connection's slot only until the zcrpc
/// handshake timeout: its channel then ends, and the next client is served in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_connects_and_says_nothing_is_let_go_at_the_handshake_timeout() {
    let hang = Duration::from_secs(20);
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let builder = rpc_core::Server::builder().handshake_timeout(Duration::from_millis(200));
    // One connection at a time.
    let mut incoming = rpc_tarpc::Incoming::<StoreRequest, StoreResponse>::new(acceptor, builder, 1);
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut transport = tokio::time::timeout(hang, incoming.next()).await.expect("no hang").unwrap().unwrap();
    // Its channel ends (no request ever comes) once the connection is dropped.
    let end = tokio::time::timeout(hang, transport.next()).await.expect("the silent peer's channel must end");
    assert!(end.is_none(), "a request from a silent peer: {:?}", end.map(|r| r.map(|_| ())));
    // Its slot is free: a client is served.
    let client = tokio::spawn(rpc_tarpc::connect::<StoreRequest, StoreResponse>(addr));
    let transport = tokio::time::timeout(hang, incoming.next()).await.expect("no hang").unwrap().unwrap();
    serve_channel(transport, Impl::default());
    let client = StoreClient::new(client::Config::default(), client.await.unwrap().unwrap()).spawn();
    assert_eq!(tokio::time::timeout(hang, client.add(context::current(), 2, 3)).await.expect("no hang").unwrap(), 5);
}
