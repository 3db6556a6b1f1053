//! Level 2 (message level): an unchanged tonic service and client over zcrpc's own framing —
//! the four call shapes, metadata both ways, status codes, deadlines, cancellation, a 64 MiB
//! message, unknown paths, metadata over the limit, and an HTTP/2 peer at either end. Real
//! sockets on loopback: TCP, and io_uring where the kernel has it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig, ServerHandle};
use rpc_tonic::{Channel, Server};
use tokio::sync::{mpsc, Notify};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

mod pb {
    tonic::include_proto!("zcrpc.echo");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::Blob;

/// Bound for "this must not hang": far above any honest answer, never a measurement.
const HANG: Duration = Duration::from_secs(20);

const BIG: usize = 128 << 20;

type BlobStream = Pin<Box<dyn Stream<Item = Result<Blob, Status>> + Send>>;

/// The service under test, steered by request metadata.
#[derive(Clone, Default)]
struct Imp {
    /// Notified when a server stream is dropped (the client cancelled).
    dropped: Arc<Notify>,
}

fn meta_u64(m: &MetadataMap, key: &str) -> Option<u64> {
    m.get(key)?.to_str().ok()?.parse().ok()
}

/// `x-fail-code` (and `x-fail-message`): answer with that status, its details and a trailer.
fn failure(m: &MetadataMap) -> Option<Status> {
    let code = meta_u64(m, "x-fail-code")?;
    let message = m.get("x-fail-message").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut trailers = MetadataMap::new();
    trailers.insert("x-why", MetadataValue::from_static("asked"));
    Some(Status::with_details_and_metadata(Code::from(code as i32), message, Bytes::from_static(b"\x00\x01details"), trailers))
}

/// Response headers and trailers: `x-seen-*` echoes what came.
fn tagged<T>(request_meta: &MetadataMap, body: T) -> Response<T> {
    let mut r = Response::new(body);
    if let Some(v) = request_meta.get("x-trace") {
        r.metadata_mut().insert("x-seen-trace", v.clone());
    }
    if let Some(v) = request_meta.get_bin("x-blob-bin") {
        r.metadata_mut().insert_bin("x-seen-blob-bin", v.clone());
    }
    if let Some(v) = request_meta.get("grpc-timeout") {
        r.metadata_mut().insert("x-seen-timeout", v.clone());
    }
    if let Some(n) = meta_u64(request_meta, "x-big-header") {
        r.metadata_mut().insert("x-big", "h".repeat(n as usize).parse().unwrap());
    }
    r
}

struct SignalOnDrop(Arc<Notify>);
impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

#[tonic::async_trait]
impl Echo for Imp {
    async fn unary(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        if let Some(status) = failure(request.metadata()) {
            return Err(status);
        }
        if let Some(ms) = meta_u64(request.metadata(), "x-sleep-ms") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let meta = request.metadata().clone();
        Ok(tagged(&meta, request.into_inner()))
    }

    type ServerStreamStream = BlobStream;

    /// `x-sizes`: the sizes of the messages to send, comma-separated; `x-forever`: repeat the
    /// request until the client goes.
    async fn server_stream(&self, request: Request<Blob>) -> Result<Response<BlobStream>, Status> {
        let meta = request.metadata().clone();
        if meta.get("x-forever").is_some() {
            let guard = SignalOnDrop(self.dropped.clone());
            let data = request.into_inner().data;
            let s = futures::stream::unfold((guard, data), |(g, d)| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Some((Ok(Blob { data: d.clone() }), (g, d)))
            });
            return Ok(tagged(&meta, Box::pin(s)));
        }
        let sizes: Vec<usize> = meta
            .get("x-sizes")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(',').map(|n| n.parse().unwrap()).collect())
            .unwrap_or_default();
        let fail = failure(&meta);
        let items = sizes
            .into_iter()
            .enumerate()
            .map(|(i, n)| Ok(Blob { data: vec![i as u8; n].into() }))
            .chain(fail.map(Err));
        Ok(tagged(&meta, Box::pin(futures::stream::iter(items))))
    }

    /// Answers the concatenation of the request messages.
    async fn client_stream(&self, request: Request<Streaming<Blob>>) -> Result<Response<Blob>, Status> {
        let meta = request.metadata().clone();
        let mut stream = request.into_inner();
        let mut all = Vec::new();
        while let Some(blob) = stream.message().await? {
            all.extend_from_slice(&blob.data);
        }
        Ok(tagged(&meta, Blob { data: all.into() }))
    }

    type BidiStream = BlobStream;

    /// Answers each message with itself, as it comes.
    async fn bidi(&self, request: Request<Streaming<Blob>>) -> Result<Response<BlobStream>, Status> {
        let meta = request.metadata().clone();
        let stream = request.into_inner();
        Ok(tagged(&meta, Box::pin(stream)))
    }
}

#[derive(Clone, Copy, Debug)]
enum Net {
    Tcp,
    Uring,
}

/// The transports to run on: TCP always, io_uring where the kernel lets a ring be set up.
fn nets() -> Vec<Net> {
    let probe = transport_uring::probe();
    if probe.io_uring {
        vec![Net::Tcp, Net::Uring]
    } else {
        eprintln!("io_uring cases skipped: {}", probe.reason);
        vec![Net::Tcp]
    }
}

struct Served {
    _handle: ServerHandle,
    client: EchoClient<Channel>,
    channel: Channel,
    addr: SocketAddr,
    imp: Imp,
}

async fn serve(net: Net) -> Served {
    serve_with(net, rpc_core::Server::builder()).await
}

async fn serve_with(net: Net, builder: rpc_core::ServerBuilder) -> Served {
    let imp = Imp::default();
    let service = EchoServer::new(imp.clone()).max_decoding_message_size(BIG).max_encoding_message_size(BIG);
    let server = Server::with(builder).add_service(service);
    let (handle, addr): (ServerHandle, SocketAddr) = match net {
        Net::Tcp => {
            let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            (server.serve(acceptor), addr)
        }
        Net::Uring => {
            let acceptor = transport_uring::UringAcceptor::bind("127.0.0.1:0", Default::default()).await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            (server.serve(acceptor), addr)
        }
    };
    let channel = match net {
        Net::Tcp => Channel::connect_tcp(addr).await.unwrap(),
        Net::Uring => Channel::from_client(
            Client::connect_with(move || transport_uring::connect(addr, Default::default()), ClientConfig::default()).await.unwrap(),
        ),
    };
    let client = EchoClient::new(channel.clone()).max_decoding_message_size(BIG).max_encoding_message_size(BIG);
    Served { _handle: handle, client, channel, addr, imp }
}

fn blob(n: usize, fill: u8) -> Blob {
    Blob { data: vec![fill; n].into() }
}

/// A blob as a level-2 stream message carries it: gRPC's 5-byte prefix and the message (a
/// chunk of one message, as tonic's encoder yields it).
fn framed(b: &Blob) -> Bytes {
    use prost::Message as _;
    let message = b.encode_to_vec();
    let mut chunk = vec![0u8];
    chunk.extend_from_slice(&(message.len() as u32).to_be_bytes());
    chunk.extend_from_slice(&message);
    chunk.into()
}

#[tokio::test]
async fn unary_calls_carry_metadata_both_ways_and_large_messages() {
    for net in nets() {
        let mut s = serve(net).await;
        let mut request = Request::new(blob(271_828, 3));
        request.metadata_mut().insert("x-trace", "abc-123".parse().unwrap());
        request.metadata_mut().insert_bin("x-blob-bin", MetadataValue::from_bytes(&[0, 1, 2, 255]));
        let response = s.client.unary(request).await.unwrap();
        assert_eq!(response.metadata().get("x-seen-trace").unwrap(), "abc-123", "{net:?}");
        assert_eq!(response.metadata().get_bin("x-seen-blob-bin").unwrap().to_bytes().unwrap(), &[0u8, 1, 2, 255][..]);
        assert_eq!(response.into_inner(), blob(271_828, 3), "{net:?}");
        // Empty, tiny and just-over-inline messages.
        for n in [0, 1, 4095, 4096] {
            assert_eq!(s.client.unary(blob(n, 9)).await.unwrap().into_inner(), blob(n, 9), "{net:?} {n}");
        }
    }
}

#[tokio::test]
async fn server_streaming_yields_every_message_in_order_then_the_status() {
    for net in nets() {
        let mut s = serve(net).await;
        let sizes = [31_415usize, 9, 0, 2_653, 58_979];
        let mut request = Request::new(blob(1, 0));
        let list = sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        request.metadata_mut().insert("x-sizes", list.parse().unwrap());
        request.metadata_mut().insert("x-trace", "t".parse().unwrap());
        let response = s.client.server_stream(request).await.unwrap();
        assert_eq!(response.metadata().get("x-seen-trace").unwrap(), "t");
        let got: Vec<Blob> = response.into_inner().map(|r| r.unwrap()).collect().await;
        let want: Vec<Blob> = sizes.iter().enumerate().map(|(i, n)| blob(*n, i as u8)).collect();
        assert_eq!(got, want, "{net:?}");

        // Many small messages at once (they reach tonic's decoder coalesced into chunks), then
        // a large one: every one whole and in order.
        let mut sizes: Vec<usize> = (0..2000).map(|i| i % 97).collect();
        sizes.push(100_000);
        let mut request = Request::new(blob(1, 0));
        let list = sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        request.metadata_mut().insert("x-sizes", list.parse().unwrap());
        let got: Vec<Blob> = s.client.server_stream(request).await.unwrap().into_inner().map(|r| r.unwrap()).collect().await;
        let want: Vec<Blob> = sizes.iter().enumerate().map(|(i, n)| blob(*n, i as u8)).collect();
        assert!(got == want, "{net:?}: {} messages, not the {} sent in order", got.len(), want.len());

        // A stream that fails after two messages: both arrive, then the status with its trailers.
        let mut request = Request::new(blob(1, 0));
        request.metadata_mut().insert("x-sizes", "10,20".parse().unwrap());
        request.metadata_mut().insert("x-fail-code", "9".parse().unwrap());
        request.metadata_mut().insert("x-fail-message", "not now".parse().unwrap());
        let mut stream = s.client.server_stream(request).await.unwrap().into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap(), blob(10, 0));
        assert_eq!(stream.message().await.unwrap().unwrap(), blob(20, 1));
        let status = stream.message().await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "not now"), "{net:?}");
        assert_eq!(status.details(), b"\x00\x01details");
        assert_eq!(status.metadata().get("x-why").unwrap(), "asked");
    }
}

#[tokio::test]
async fn client_streaming_sends_every_message_and_gets_one_answer() {
    for net in nets() {
        let mut s = serve(net).await;
        let sizes = [27_182usize, 8, 1_828, 45_904, 0];
        let messages: Vec<Blob> = sizes.iter().enumerate().map(|(i, n)| blob(*n, i as u8)).collect();
        let want: Vec<u8> = messages.iter().flat_map(|b| b.data.to_vec()).collect();
        let mut request = Request::new(futures::stream::iter(messages));
        request.metadata_mut().insert("x-trace", "cs".parse().unwrap());
        let response = s.client.client_stream(request).await.unwrap();
        assert_eq!(response.metadata().get("x-seen-trace").unwrap(), "cs");
        assert_eq!(response.into_inner().data, want, "{net:?}");

        // No message at all.
        let response = s.client.client_stream(futures::stream::iter(Vec::<Blob>::new())).await.unwrap();
        assert!(response.into_inner().data.is_empty());
    }
}

#[tokio::test]
async fn bidirectional_streaming_plays_ping_pong() {
    for net in nets() {
        let mut s = serve(net).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let outbound = tokio_stream_from(rx);
        // The call returns with the response headers, before any message went either way.
        let mut inbound = s.client.bidi(outbound).await.unwrap().into_inner();
        for (i, n) in [31_415usize, 9, 2_653, 58_979].into_iter().enumerate() {
            tx.send(blob(n, i as u8)).unwrap();
            assert_eq!(inbound.message().await.unwrap().unwrap(), blob(n, i as u8), "{net:?} round {i}");
        }
        drop(tx);
        assert!(inbound.message().await.unwrap().is_none(), "the server ends once the client did");
    }
}

/// An unbounded receiver as a stream.
fn tokio_stream_from(mut rx: mpsc::UnboundedReceiver<Blob>) -> impl Stream<Item = Blob> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn every_status_code_and_message_reaches_the_client() {
    let mut s = serve(Net::Tcp).await;
    for code in 1..=16 {
        let mut request = Request::new(blob(1, 0));
        request.metadata_mut().insert("x-fail-code", code.to_string().parse().unwrap());
        request.metadata_mut().insert("x-fail-message", "100% wrong".parse().unwrap());
        let status = s.client.unary(request).await.unwrap_err();
        assert_eq!(status.code(), Code::from(code), "code {code}");
        assert_eq!(status.details(), b"\x00\x01details", "code {code}");
        assert_eq!(status.metadata().get("x-why").unwrap(), "asked", "code {code}");
    }
    // A message with characters gRPC percent-encodes, set through tonic's own API.
    let mut request = Request::new(blob(1, 0));
    request.metadata_mut().insert("x-fail-code", "3".parse().unwrap());
    request.metadata_mut().insert("x-fail-message", "bad: 100% \t wrong".parse().unwrap());
    let status = s.client.unary(request).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "bad: 100% \t wrong"));
}

#[tokio::test]
async fn a_deadline_travels_as_grpc_timeout_and_ends_the_call() {
    let mut s = serve(Net::Tcp).await;
    let mut request = Request::new(blob(1, 0));
    request.set_timeout(Duration::from_secs(30));
    let response = s.client.unary(request).await.unwrap();
    let seen = response.metadata().get("x-seen-timeout").expect("the server sees grpc-timeout").to_str().unwrap().to_owned();
    assert!(seen.ends_with(['n', 'u', 'm', 'S']), "{seen}");

    let mut request = Request::new(blob(1, 0));
    request.set_timeout(Duration::from_millis(50));
    request.metadata_mut().insert("x-sleep-ms", "60000".parse().unwrap());
    let status = tokio::time::timeout(HANG, s.client.unary(request)).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_call_on_the_server() {
    for net in nets() {
        let mut s = serve(net).await;
        let mut request = Request::new(blob(100, 1));
        request.metadata_mut().insert("x-forever", "1".parse().unwrap());
        let mut stream = s.client.server_stream(request).await.unwrap().into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap(), blob(100, 1));
        let dropped = s.imp.dropped.notified();
        drop(stream);
        tokio::time::timeout(HANG, dropped).await.expect("the server's stream was dropped");
        // The connection carries on.
        assert_eq!(s.client.unary(blob(5, 5)).await.unwrap().into_inner(), blob(5, 5), "{net:?}");
    }
}

#[tokio::test]
async fn a_64_mib_message_goes_each_way() {
    for net in nets() {
        let mut s = serve(net).await;
        let data: Bytes = (0..64usize << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        let back = s.client.unary(Blob { data: data.clone() }).await.unwrap().into_inner();
        assert_eq!(back.data.len(), data.len(), "{net:?}");
        assert!(back.data == data, "{net:?}: the 64 MiB came back changed");
    }
}

#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented_naming_the_path() {
    let s = serve(Net::Tcp).await;
    let mut grpc = tonic::client::Grpc::new(s.channel.clone());
    for path in ["/zcrpc.echo.Nope/Unary", "/zcrpc.echo.Echo/Nope"] {
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<Blob, Blob>::default();
        let status = grpc.unary(Request::new(blob(1, 0)), path.parse().unwrap(), codec).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
        assert!(status.message().contains(path), "{path}: {}", status.message());
    }
}

#[tokio::test]
async fn metadata_over_the_limit_is_refused_with_a_clear_status() {
    let mut s = serve(Net::Tcp).await;
    // Request headers over the server's limit (16 KiB): refused before sending.
    let mut request = Request::new(blob(1, 0));
    request.metadata_mut().insert("x-huge", "v".repeat(20 << 10).parse().unwrap());
    let status = s.client.unary(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("over the server's limit"), "{}", status.message());
    // Response headers over the client's limit: the server's handler is refused.
    let mut request = Request::new(blob(1, 0));
    request.metadata_mut().insert("x-big-header", (20 << 10).to_string().parse().unwrap());
    let status = s.client.unary(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("response headers"), "{}", status.message());
    // The connection carries on.
    assert_eq!(s.client.unary(blob(3, 3)).await.unwrap().into_inner(), blob(3, 3));
}

#[tokio::test]
async fn an_http2_grpc_client_at_a_level2_server_fails_promptly() {
    let s = serve(Net::Tcp).await;
    let addr = s.addr;
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await?;
        let mut client = EchoClient::new(channel);
        client.unary(blob(1, 0)).await.map(drop).map_err(|e| e.into())
    };
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = tokio::time::timeout(HANG, attempt).await.expect("no hang");
    let e = result.expect_err("an HTTP/2 client cannot call a zcrpc server");
    eprintln!("the HTTP/2 client's error: {e:?}");
}

#[tokio::test]
async fn a_level2_channel_to_a_plain_tonic_server_fails_at_connect_saying_so() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(EchoServer::new(Imp::default())).serve_with_incoming(incoming));
    let e = tokio::time::timeout(HANG, Channel::connect_tcp(addr)).await.expect("no hang").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("not speaking zcrpc"), "{text}");
    assert!(text.contains("HTTP/2"), "the error names what the server speaks: {text}");
}

/// The response headers of a call whose answer has no message yet travel in zcrpc's headers
/// frame, alone: a plain zcrpc client sees them before any message, and the first thing its
/// stream yields is the first message (not an empty one standing for the headers).
#[tokio::test]
async fn response_headers_ahead_of_any_message_go_in_a_frame_of_their_own() {
    let s = serve(Net::Tcp).await;
    let client = Client::connect_tcp(s.addr, ClientConfig::default()).await.unwrap();
    let path = "/zcrpc.echo.Echo/Bidi";
    let metadata = rpc_core::Metadata::new().with(":grpc-path", path).with("x-trace", "early");
    let options = rpc_core::CallOptions { metadata, ..Default::default() };
    let call = client.open(rpc_core::method_id(&path[1..]), rpc_core::Body::default(), rpc_core::CallMode::BIDI, options);
    let (mut tx, mut rx) = tokio::time::timeout(HANG, call).await.unwrap().unwrap().split();
    // Nothing sent yet: the headers come alone.
    let headers = tokio::time::timeout(HANG, rx.response_headers()).await.unwrap();
    assert_eq!(headers.get_str("x-seen-trace"), Some("early"));
    let message = framed(&blob(10, 3));
    tx.send(rpc_core::Body::message(message.clone())).await.unwrap();
    let first = tokio::time::timeout(HANG, rx.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(&first.message[..], &message[..], "the first item is the echo, not an empty message");
    tx.finish();
    assert!(tokio::time::timeout(HANG, rx.recv()).await.unwrap().is_none());
}

/// A server of before the headers frame sent the response headers alone as an empty message:
/// a channel takes it for the headers and yields only the real messages (this one's messages
/// as today's servers send them: chunks with gRPC's prefix).
#[tokio::test]
async fn an_empty_message_from_an_older_server_stands_for_the_headers() {
    use rpc_core::{Body, BoxFuture, ServerRequest};

    /// Answers a server-streaming call as an older rpc-tonic server did: headers with an empty
    /// message, then one message, then the end.
    struct Older;
    impl rpc_core::Service for Older {
        fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, rpc_core::Status>> {
            Box::pin(async move {
                let (mut tx, _rx) = req.stream.take().expect("a streaming call").split();
                req.response.set_header("x-old", "yes").unwrap();
                tx.send(Body::default()).await.unwrap();
                tx.send(Body::message(framed(&blob(4, 9)))).await.unwrap();
                Ok(Body::default())
            })
        }
    }

    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let _handle = rpc_core::Server::builder().build(Older).serve(acceptor);
    let mut client = EchoClient::new(Channel::connect_tcp(addr).await.unwrap());
    let response = tokio::time::timeout(HANG, client.server_stream(blob(1, 0))).await.unwrap().unwrap();
    assert_eq!(response.metadata().get("x-old").unwrap(), "yes");
    let mut stream = response.into_inner();
    assert_eq!(tokio::time::timeout(HANG, stream.message()).await.unwrap().unwrap(), Some(blob(4, 9)));
    assert_eq!(tokio::time::timeout(HANG, stream.message()).await.unwrap().unwrap(), None);
}

/// Small messages in tonic's chunks with large ones (from `INLINE_MAX` = 4096 bytes on) between
/// them, at the boundary both ways (a large message that ends a chunk goes alone, after the
/// chunk's small ones), then a failure: every message whole and in order, then the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_messages_interleaved_around_the_attachment_size_keep_their_order() {
    tokio::time::timeout(Duration::from_secs(60), async {
        for net in nets() {
            let mut s = serve(net).await;
            let pattern = [1usize, 4095, 4096, 0, 3, 70_000, 4094, 5, 5, 4097, 4095, 4095, 9, 200_000, 2];
            let sizes: Vec<usize> = (0..300).map(|i| pattern[(i * 7 + i / 15) % pattern.len()]).collect();
            for fail in [false, true] {
                let mut request = Request::new(blob(1, 0));
                let list = sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
                request.metadata_mut().insert("x-sizes", list.parse().unwrap());
                if fail {
                    request.metadata_mut().insert("x-fail-code", "9".parse().unwrap());
                    request.metadata_mut().insert("x-fail-message", "at the end".parse().unwrap());
                }
                let mut stream = s.client.server_stream(request).await.unwrap().into_inner();
                for (i, n) in sizes.iter().enumerate() {
                    let got = stream.message().await.unwrap_or_else(|e| panic!("{net:?}: message {i}: {e}"));
                    assert!(got == Some(blob(*n, i as u8)), "{net:?}: message {i} of {n} bytes");
                }
                match (fail, stream.message().await) {
                    (false, Ok(None)) => {}
                    (true, Err(status)) => assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "at the end"), "{net:?}"),
                    (_, other) => panic!("{net:?}: after the messages, {other:?}"),
                }
            }
        }
    })
    .await
    .expect("the test took over 60 s");
}

/// A request message over the server's frame limit, in the middle of a client stream: the call
/// fails saying so (it must not end as if the client had finished, answering what came before
/// it), and the connection carries on. Over a unary call it fails before anything is sent.
#[tokio::test]
async fn a_request_message_over_the_servers_frame_limit_fails_the_call_saying_so() {
    let mut s = serve_with(Net::Tcp, rpc_core::Server::builder().max_frame(1 << 20)).await;
    let messages = vec![blob(10, 1), blob(2 << 20, 2), blob(10, 3)];
    let result = tokio::time::timeout(HANG, s.client.client_stream(futures::stream::iter(messages))).await.expect("no hang");
    let status = match result {
        Ok(r) => panic!("the call succeeded without its second message: {} bytes answered", r.into_inner().data.len()),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("over the server's limit of 1048576 bytes"), "the status says why: {status:?}");

    let status = tokio::time::timeout(HANG, s.client.unary(blob(2 << 20, 4))).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("frame limit"), "{status:?}");
    // The connection carries on.
    assert_eq!(s.client.unary(blob(3, 3)).await.unwrap().into_inner(), blob(3, 3));
}

/// A response message over the client's frame limit, in the middle of a server stream: the
/// messages before it arrive, then the call fails saying so; the connection carries on.
#[tokio::test]
async fn a_response_message_over_the_clients_frame_limit_fails_the_call_saying_so() {
    let s = serve(Net::Tcp).await;
    let mut config = ClientConfig::default();
    config.conn.max_frame = 1 << 20;
    let channel = Channel::from_client(Client::connect_tcp(s.addr, config).await.unwrap());
    let mut client = EchoClient::new(channel).max_decoding_message_size(BIG);
    let mut request = Request::new(blob(1, 0));
    request.metadata_mut().insert("x-sizes", format!("10,{},10", 2 << 20).parse().unwrap());
    let mut stream = tokio::time::timeout(HANG, client.server_stream(request)).await.expect("no hang").unwrap().into_inner();
    assert_eq!(tokio::time::timeout(HANG, stream.message()).await.expect("no hang").unwrap(), Some(blob(10, 0)));
    let status = tokio::time::timeout(HANG, stream.message()).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("over the client's limit of 1048576 bytes"), "the status says why: {status:?}");
    // A unary answer over the limit fails alone too.
    let status = tokio::time::timeout(HANG, client.unary(blob(2 << 20, 1))).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("over the client's limit of 1048576 bytes"), "the status says why: {status:?}");
    assert_eq!(client.unary(blob(3, 3)).await.unwrap().into_inner(), blob(3, 3));
}

/// The server's authorization hook (and its layers) see a call's method id; the call is routed
/// by its `:path`. A call whose path is not the one its id names is refused, so that a hook
/// that refuses a method by id cannot be passed with another method's id and this one's path.
#[tokio::test]
async fn a_call_whose_path_is_not_its_method_id_is_refused() {
    let denied = rpc_core::method_id("zcrpc.echo.Echo/Unary");
    let builder = rpc_core::Server::builder().authorize(move |call| match call.method == denied {
        true => Err(rpc_core::Status::permission_denied("Unary is not for you")),
        false => Ok(()),
    });
    let mut s = serve_with(Net::Tcp, builder).await;
    let status = s.client.unary(blob(1, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let client = Client::connect_tcp(s.addr, ClientConfig::default()).await.unwrap();
    let metadata = rpc_core::Metadata::new().with(":grpc-path", "/zcrpc.echo.Echo/Unary");
    let options = rpc_core::CallOptions { metadata, ..Default::default() };
    let other = rpc_core::method_id("zcrpc.echo.Echo/ClientStream");
    let body = rpc_core::Body::message(framed(&blob(5, 7)));
    let result = tokio::time::timeout(HANG, client.call(other, body, options)).await.expect("no hang");
    let status = match result {
        Ok(_) => panic!("the call ran the method its path names, which its id does not"),
        Err(e) => e.status().cloned().unwrap_or_else(|| panic!("{e}")),
    };
    assert_eq!(status.code, rpc_core::Code::INVALID_ARGUMENT, "{status:?}");
    assert!(status.message.contains("/zcrpc.echo.Echo/Unary"), "{status:?}");
    // Other calls carry on.
    assert_eq!(s.client.client_stream(futures::stream::iter(vec![blob(2, 2)])).await.unwrap().into_inner(), blob(2, 2));
}

/// Metadata a zcrpc peer may send that is no HTTP header (a key with a character HTTP does not
/// allow, a control byte in a value, a `-bin` value that is not base64: tonic's decoder would
/// panic on it) is refused naming the key, both ways, and the connection carries on.
#[tokio::test]
async fn metadata_that_is_no_http_header_is_refused_naming_it_both_ways() {
    use rpc_core::{Body, BoxFuture, ServerRequest};

    // A plain zcrpc client at a level-2 server.
    let mut s = serve(Net::Tcp).await;
    let client = Client::connect_tcp(s.addr, ClientConfig::default()).await.unwrap();
    let path = "/zcrpc.echo.Echo/Unary";
    for (key, value) in [("x(y", &b"v"[..]), ("x-ctl", b"a\x01b"), ("x-data-bin", b"not base64!")] {
        let metadata = rpc_core::Metadata::new().with(":grpc-path", path).with(key, Bytes::copy_from_slice(value));
        let options = rpc_core::CallOptions { metadata, ..Default::default() };
        let body = Body::message(framed(&blob(3, 1)));
        let call = client.call(rpc_core::method_id(&path[1..]), body, options);
        let e = tokio::time::timeout(HANG, call).await.expect("no hang").unwrap_err();
        let status = e.status().unwrap_or_else(|| panic!("{key}: {e}"));
        assert_eq!(status.code, rpc_core::Code::INVALID_ARGUMENT, "{key}: {status:?}");
        assert!(status.message.contains(key), "{key}: {status:?}");
    }
    assert_eq!(s.client.unary(blob(3, 3)).await.unwrap().into_inner(), blob(3, 3));

    // A zcrpc server answering a level-2 channel with such response headers, or trailers.
    struct Odd;
    impl rpc_core::Service for Odd {
        fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, rpc_core::Status>> {
            Box::pin(async move {
                let which = req.metadata.get_str("x-which").unwrap_or("").to_owned();
                let reply = Body::message(framed(&blob(2, 5)));
                match which.as_str() {
                    "header" => req.response.set_header("x(y", "v").unwrap(),
                    "trailer" => {
                        req.response.set_trailer("x-data-bin", "not base64!").unwrap();
                        return Err(rpc_core::Status::new(rpc_core::Code::NOT_FOUND, "gone"));
                    }
                    _ => {}
                }
                Ok(reply)
            })
        }
    }
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let _handle = rpc_core::Server::builder().build(Odd).serve(acceptor);
    let mut client = EchoClient::new(Channel::connect_tcp(addr).await.unwrap());
    let mut request = Request::new(blob(1, 0));
    request.metadata_mut().insert("x-which", "header".parse().unwrap());
    let status = tokio::time::timeout(HANG, client.unary(request)).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("x(y"), "{status:?}");
    // Trailers that are no headers are dropped; the status stays.
    let mut request = Request::new(blob(1, 0));
    request.metadata_mut().insert("x-which", "trailer".parse().unwrap());
    let status = tokio::time::timeout(HANG, client.unary(request)).await.expect("no hang").unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "gone"), "{status:?}");
    assert_eq!(client.unary(blob(1, 0)).await.unwrap().into_inner(), blob(2, 5));
}

/// A server that takes a call and never answers, not even its headers: a streaming call with a
/// deadline ends at it (DEADLINE_EXCEEDED), whichever shape, and the connection carries on.
#[tokio::test]
async fn a_server_that_never_answers_ends_each_call_shape_at_its_deadline() {
    use rpc_core::{Body, BoxFuture, ServerRequest};

    struct Silent;
    impl rpc_core::Service for Silent {
        fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, rpc_core::Status>> {
            Box::pin(async move {
                if req.metadata.get_str("x-answer").is_some() {
                    return Ok(Body::message(framed(&blob(1, 1))));
                }
                let _keep = req;
                std::future::pending().await
            })
        }
    }
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let _handle = rpc_core::Server::builder().build(Silent).serve(acceptor);
    let mut client = EchoClient::new(Channel::connect_tcp(addr).await.unwrap());
    let within = |d| {
        let mut r = Request::new(futures::stream::pending::<Blob>());
        r.set_timeout(d);
        r
    };
    let status = tokio::time::timeout(HANG, client.client_stream(within(Duration::from_millis(100)))).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "client stream: {status:?}");
    let status = tokio::time::timeout(HANG, client.bidi(within(Duration::from_millis(100)))).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "bidi: {status:?}");
    let mut r = Request::new(blob(1, 0));
    r.set_timeout(Duration::from_millis(100));
    let status = tokio::time::timeout(HANG, client.server_stream(r)).await.expect("no hang").unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "server stream: {status:?}");
    let mut r = Request::new(blob(1, 0));
    r.metadata_mut().insert("x-answer", "1".parse().unwrap());
    assert_eq!(tokio::time::timeout(HANG, client.unary(r)).await.expect("no hang").unwrap().into_inner(), blob(1, 1));
}

/// A stream whose reader stops (its window full, its server's handler waiting for credit) holds
/// up only itself: other streaming calls on the same connection go on to their end, and it
/// still completes once read.
#[tokio::test]
async fn a_stream_that_is_not_read_holds_up_only_itself() {
    let mut s = serve(Net::Tcp).await;
    let big = vec![(1usize << 20).to_string(); 12].join(",");
    let mut stalled_request = Request::new(blob(1, 0));
    stalled_request.metadata_mut().insert("x-sizes", big.parse().unwrap());
    // 12 MiB to a reader that takes nothing yet: three times the stream window.
    let mut stalled = tokio::time::timeout(HANG, s.client.server_stream(stalled_request)).await.expect("no hang").unwrap().into_inner();
    for round in 0..3 {
        let mut request = Request::new(blob(1, 0));
        request.metadata_mut().insert("x-sizes", big.parse().unwrap());
        let got = tokio::time::timeout(HANG, async {
            let stream = s.client.server_stream(request).await.unwrap().into_inner();
            stream.map(|m| m.unwrap().data.len()).collect::<Vec<_>>().await
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: a stream was held up by another that is not read"));
        assert_eq!(got, vec![1 << 20; 12], "round {round}");
    }
    let mut n = 0;
    while let Some(m) = tokio::time::timeout(HANG, stalled.message()).await.expect("no hang").unwrap() {
        assert_eq!(m.data.len(), 1 << 20);
        n += 1;
    }
    assert_eq!(n, 12);
}
