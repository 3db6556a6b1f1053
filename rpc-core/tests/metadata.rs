//! Call metadata and the peer's identity, end to end: headers set by the client reach the
//! handler, the handler sees who called, and metadata over the server's limit never leaves the
//! client.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::transport::mem;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{
    Body, BoxFuture, Bytes, CallMode, CallOptions, Client, ClientConfig, Metadata, Server, ServerRequest, Service,
    Status,
};

/// Answers with the request's metadata, re-encoded, and the peer's address as text in an
/// attachment.
struct Mirror(Arc<AtomicUsize>);

impl Service for Mirror {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let peer = format!("{:?}", req.peer.addr);
        Box::pin(async move { Ok(Body::new(req.metadata.encode(), vec![Bytes::from(peer).into()])) })
    }
}

fn echo_of(reply: &Body) -> (Metadata, String) {
    let m = Metadata::decode(reply.message.clone()).unwrap();
    (m, String::from_utf8(reply.attachments[0].to_bytes().to_vec()).unwrap())
}

#[tokio::test]
async fn headers_reach_the_handler_with_the_peer_address() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = Server::builder().build(Mirror(calls.clone()));
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let _handle = server.serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();

    let opts = CallOptions::default()
        .header("Trace-Id", "abc-123")
        .unwrap()
        .header("token-bin", Bytes::from_static(&[0, 1, 254, 255]))
        .unwrap();
    let reply = client.call(1, Body::default(), opts.clone()).await.unwrap();
    let (m, peer) = echo_of(&reply);
    assert_eq!(m.get_str("trace-id"), Some("abc-123"));
    assert_eq!(&m.get("TOKEN-BIN").unwrap()[..], &[0, 1, 254, 255]);
    assert!(peer.starts_with("Some(127.0.0.1:"), "{peer}");

    // Streaming calls carry them too.
    let (_, mut rx) = client.open(1, Body::default(), CallMode::CLIENT_STREAMING, opts).await.unwrap().split();
    let (m, _) = echo_of(&rx.recv().await.unwrap().unwrap());
    assert_eq!(m.get_str("trace-id"), Some("abc-123"));

    // No metadata costs nothing on the wire and arrives as none.
    let (m, _) = echo_of(&client.call(1, Body::default(), CallOptions::default()).await.unwrap());
    assert!(m.is_empty());
}

#[tokio::test]
async fn metadata_over_the_servers_limit_fails_before_sending_and_harms_nothing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(Mirror(calls.clone())).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    assert_eq!(client.server_hello().max_metadata, 16 << 10, "the default limit, declared in the hello");

    let opts = CallOptions::default().header("big", vec![7u8; 20_000]).unwrap();
    let e = client.call(1, Body::default(), opts).await.unwrap_err();
    assert!(e.to_string().contains("over the server's limit of 16384 bytes"), "{e}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was sent");

    // The in-memory pipe has no address; the connection is fine.
    let (_, peer) = echo_of(&client.call(1, Body::default(), CallOptions::default()).await.unwrap());
    assert_eq!(peer, "None");
    assert!(CallOptions::default().header("not ascii é", "v").is_err());
}

/// A `#[service]` method sees its call's context by taking a `CallContext` argument, which the
/// client does not pass.
#[rpc_core::service]
pub trait Tenant {
    async fn whoami(&self, ctx: rpc_core::CallContext, greeting: String) -> String;
    async fn feed(&self, count: u32, ctx: rpc_core::CallContext, out: rpc_core::Sink<String>);
    async fn lookup(&self, ctx: rpc_core::CallContext, key: String) -> Result<String, String>;
}

struct TenantImpl;

impl Tenant for TenantImpl {
    async fn whoami(&self, ctx: rpc_core::CallContext, greeting: String) -> String {
        let tenant = ctx.metadata.get_str("tenant").unwrap_or("nobody").to_owned();
        format!("{greeting}, {tenant} from {:?}, deadline {}", ctx.peer.addr.map(|a| a.ip()), ctx.deadline.is_some())
    }

    async fn feed(&self, count: u32, ctx: rpc_core::CallContext, mut out: rpc_core::Sink<String>) {
        let tenant = ctx.metadata.get_str("tenant").unwrap_or("nobody").to_owned();
        ctx.set_header("tenant", tenant.clone()).unwrap();
        for i in 0..count {
            if out.send(format!("{tenant} {i}")).await.is_err() {
                return;
            }
        }
        ctx.set_trailer("fed", count.to_string()).unwrap();
    }

    async fn lookup(&self, ctx: rpc_core::CallContext, key: String) -> Result<String, String> {
        ctx.set_header("shard", "3").unwrap();
        match key.as_str() {
            "a" => {
                ctx.set_trailer("hits", "1").unwrap();
                Ok("alpha".into())
            }
            _ => {
                ctx.set_trailer("hits", "0").unwrap();
                Err(format!("no {key}"))
            }
        }
    }
}

#[tokio::test]
async fn service_methods_read_metadata_and_peer_from_their_context() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let _handle = Server::builder().build(TenantServer::new(TenantImpl)).serve(acceptor);
    let client = TenantClient::new(Client::connect_tcp(addr, ClientConfig::default()).await.unwrap());

    let anonymous = client.whoami("hello".into()).await.unwrap();
    assert_eq!(anonymous, "hello, nobody from Some(127.0.0.1), deadline false");

    let opts = CallOptions::timeout(std::time::Duration::from_secs(5)).header("tenant", "acme").unwrap();
    let acme = client.with_options(opts);
    assert_eq!(acme.whoami("hi".into()).await.unwrap(), "hi, acme from Some(127.0.0.1), deadline true");
    let items = acme.feed(3).await.unwrap().collect().await.unwrap();
    assert_eq!(items, ["acme 0", "acme 1", "acme 2"]);
}

#[tokio::test]
async fn service_methods_set_response_metadata_through_their_context() {
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(TenantServer::new(TenantImpl)).serve_connection(b));
    let client = TenantClient::new(Client::connect(a, ClientConfig::default()).await.unwrap());

    // A unary method: the generated `_with_metadata` variant gives the typed result beside them.
    let found = client.lookup_with_metadata("a".into()).await;
    assert_eq!(found.result, Ok(Ok("alpha".to_owned())));
    assert_eq!((found.headers.get_str("shard"), found.trailers.get_str("hits")), (Some("3"), Some("1")));
    // The application error carries its trailers too.
    let missing = client.lookup_with_metadata("z".into()).await;
    assert_eq!(missing.result, Ok(Err("no z".to_owned())));
    assert_eq!(missing.trailers.get_str("hits"), Some("0"));
    // The plain method is unchanged.
    assert_eq!(client.lookup("a".into()).await.unwrap(), Ok("alpha".to_owned()));

    // A server-streaming method: the typed source exposes them.
    let acme = client.with_options(CallOptions::default().header("tenant", "acme").unwrap());
    let mut feed = acme.feed(2).await.unwrap();
    assert_eq!(feed.recv().await.unwrap().unwrap(), "acme 0");
    assert_eq!(feed.headers().and_then(|h| h.get_str("tenant")), Some("acme"));
    assert_eq!(feed.recv().await.unwrap().unwrap(), "acme 1");
    assert!(feed.recv().await.is_none());
    assert_eq!(feed.trailers().and_then(|t| t.get_str("fed")), Some("2"));
}

/// Sets response headers and trailers, by method: 1 unary echo; 2 a server stream of three;
/// 3 a bidi echo; 4 an error status with trailers; 5 headers over the client's limit and
/// 6 a non-ASCII key (each answers with the error it got).
struct Tagger;

const UNARY: u32 = 1;
const DOWNLOAD: u32 = 2;
const ECHO: u32 = 3;
const FAIL: u32 = 4;
const TOO_BIG: u32 = 5;
const BAD_KEY: u32 = 6;
/// Bidirectional: sends its headers at once, then one event per message of the client.
const SUBSCRIBE: u32 = 7;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::new(rpc_core::Code::INTERNAL, e.to_string())
}

impl Service for Tagger {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move {
            let r = req.response.clone();
            match req.method {
                UNARY => {
                    r.set_header("server", "tagger").map_err(internal)?;
                    r.set_header("bin", Bytes::from_static(&[0, 255])).map_err(internal)?;
                    r.set_trailer("count", "1").map_err(internal)?;
                    Ok(req.body)
                }
                DOWNLOAD | ECHO => {
                    let (mut tx, mut rx) = req.stream.take().expect("streaming").split();
                    r.set_header("server", "tagger").map_err(internal)?;
                    let mut sent = 0;
                    if req.method == DOWNLOAD {
                        for i in 0..3u8 {
                            tx.send(Body::message(Bytes::from(vec![i]))).await.map_err(internal)?;
                            sent += 1;
                        }
                    } else {
                        while let Some(m) = rx.recv().await {
                            tx.send(m.map_err(internal)?).await.map_err(internal)?;
                            sent += 1;
                        }
                    }
                    // Too late for a header: it went with the first message.
                    let late = r.set_header("late", "x").unwrap_err();
                    assert_eq!(late, rpc_core::MetadataError::HeadersSent);
                    r.set_trailer("sent", sent.to_string()).map_err(internal)?;
                    Ok(Body::default())
                }
                FAIL => {
                    r.set_trailer("retry-after-ms", "250").map_err(internal)?;
                    Err(Status::invalid_argument("no such key"))
                }
                SUBSCRIBE => {
                    let (mut tx, mut rx) = req.stream.take().expect("streaming").split();
                    r.set_header("subscription", "42").map_err(internal)?;
                    assert!(r.send_headers(), "a client of this version takes them early");
                    assert!(!r.send_headers(), "they went");
                    while let Some(m) = rx.recv().await {
                        tx.send(m.map_err(internal)?).await.map_err(internal)?;
                    }
                    Ok(Body::default())
                }
                TOO_BIG => Ok(Body::message(r.set_header("big", vec![7u8; 2000]).unwrap_err().to_string().into())),
                BAD_KEY => Ok(Body::message(r.set_trailer("naïve", "v").unwrap_err().to_string().into())),
                _ => Err(Status::unimplemented(req.method)),
            }
        })
    }
}

/// Every case of response metadata, on one client.
async fn response_metadata_cases(client: Client) {
    // Unary: headers and trailers beside the reply.
    let reply = client.call_with_metadata(UNARY, Body::message("hi".into()), CallOptions::default()).await;
    assert_eq!(&reply.result.unwrap().message[..], b"hi");
    assert_eq!(reply.headers.get_str("server"), Some("tagger"));
    assert_eq!(&reply.headers.get("bin").unwrap()[..], &[0, 255], "values are bytes");
    assert_eq!(reply.trailers.get_str("count"), Some("1"));
    // The plain call gets the same reply and drops the metadata.
    assert_eq!(&client.call(UNARY, Body::message("hi".into()), CallOptions::default()).await.unwrap().message[..], b"hi");

    // Server streaming: headers with the first message, trailers after the end.
    let (_, mut rx) = client.open(DOWNLOAD, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap().split();
    assert!(rx.headers().is_none(), "nothing arrived yet");
    assert_eq!(&rx.recv().await.unwrap().unwrap().message[..], &[0]);
    assert_eq!(rx.headers().and_then(|h| h.get_str("server")), Some("tagger"));
    assert!(rx.trailers().is_none(), "not before the end");
    let mut rest = 0;
    while let Some(m) = rx.recv().await {
        m.unwrap();
        rest += 1;
    }
    assert_eq!(rest, 2);
    assert_eq!(rx.trailers().and_then(|t| t.get_str("sent")), Some("3"));

    // Client streaming: the one answer brings both, after which the stream is over.
    let (mut tx, mut rx) = client.open(UNARY, Body::message("up".into()), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap().split();
    tx.finish();
    assert_eq!(&rx.recv().await.unwrap().unwrap().message[..], b"up");
    assert!(rx.recv().await.is_none());
    assert_eq!(rx.headers().and_then(|h| h.get_str("server")), Some("tagger"));
    assert_eq!(rx.trailers().and_then(|t| t.get_str("count")), Some("1"));

    // Bidirectional.
    let (mut tx, mut rx) = client.open(ECHO, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
    for word in ["a", "bc"] {
        tx.send(Body::message(word.into())).await.unwrap();
        assert_eq!(&rx.recv().await.unwrap().unwrap().message[..], word.as_bytes());
    }
    assert_eq!(rx.headers().and_then(|h| h.get_str("server")), Some("tagger"));
    tx.finish();
    assert!(rx.recv().await.is_none());
    assert_eq!(rx.trailers().and_then(|t| t.get_str("sent")), Some("2"));

    // Headers sent early: the client has them before any message exists.
    let (mut tx, mut rx) = client.open(SUBSCRIBE, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
    let headers = tokio::time::timeout(Duration::from_secs(10), rx.response_headers()).await.expect("the headers came alone");
    assert_eq!(headers.get_str("subscription"), Some("42"));
    assert_eq!(rx.headers().and_then(|h| h.get_str("subscription")), Some("42"));
    tx.send(Body::message("event".into())).await.unwrap();
    assert_eq!(&rx.recv().await.unwrap().unwrap().message[..], b"event");
    tx.finish();
    assert!(rx.recv().await.is_none());

    // Waiting for headers that come with the first message keeps that message for `recv`.
    let (_, mut rx) = client.open(DOWNLOAD, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap().split();
    assert_eq!(rx.response_headers().await.get_str("server"), Some("tagger"));
    let mut messages = Vec::new();
    while let Some(m) = rx.recv().await {
        messages.push(m.unwrap().message[0]);
    }
    assert_eq!(messages, [0, 1, 2], "nothing lost while waiting for the headers");
    // A call that fails before any headers: empty ones, and the error from `recv`.
    let (_, mut rx) = client.open(99, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap().split();
    assert!(rx.response_headers().await.is_empty());
    assert!(rx.recv().await.unwrap().is_err());
    assert!(rx.recv().await.is_none());
    // A server that never answers (ECHO sends nothing until the client does): the wait for
    // the headers ends with the call's deadline, and `recv` says why.
    let options = CallOptions { timeout: Some(Duration::from_millis(200)), ..CallOptions::default() };
    let (_tx, mut rx) = client.open(ECHO, Body::default(), CallMode::BIDI, options).await.unwrap().split();
    let headers = tokio::time::timeout(Duration::from_secs(10), rx.response_headers()).await.expect("bounded by the deadline");
    assert!(headers.is_empty());
    let e = rx.recv().await.unwrap().unwrap_err();
    assert!(matches!(e, rpc_core::CallError::DeadlineExceeded(_)), "{e}");

    // Trailers with an error status.
    let reply = client.call_with_metadata(FAIL, Body::default(), CallOptions::default()).await;
    let status = reply.result.unwrap_err().status().cloned().unwrap();
    assert_eq!((status.code, status.message.as_str()), (rpc_core::Code::INVALID_ARGUMENT, "no such key"));
    assert_eq!(reply.trailers.get_str("retry-after-ms"), Some("250"));
    assert!(reply.headers.is_empty());

    // Over the client's limit (1 KiB here), and a key that is not ASCII: the handler is told.
    let text = |b: Body| String::from_utf8(b.message.to_vec()).unwrap();
    let e = text(client.call(TOO_BIG, Body::default(), CallOptions::default()).await.unwrap());
    assert_eq!(e, "response headers of 2011 bytes would be over the client's limit of 1024 bytes");
    let e = text(client.call(BAD_KEY, Body::default(), CallOptions::default()).await.unwrap());
    assert!(e.contains("\"naïve\" is invalid: not printable ASCII"), "{e}");
    assert!(client.is_open());
}

fn small_limit() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.conn.max_metadata = 1024;
    config
}

#[tokio::test]
async fn response_headers_and_trailers_over_mem() {
    let (a, b) = mem::pair();
    tokio::spawn(Server::builder().build(Tagger).serve_connection(b));
    response_metadata_cases(Client::connect(a, small_limit()).await.unwrap()).await;
}

#[tokio::test]
async fn response_headers_and_trailers_over_tcp() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let _handle = Server::builder().build(Tagger).serve(acceptor);
    response_metadata_cases(Client::connect_tcp(addr, small_limit()).await.unwrap()).await;
}

#[tokio::test]
async fn a_service_called_directly_keeps_its_response_metadata() {
    let req = ServerRequest::new(FAIL, Body::default());
    let response = req.response.clone();
    assert!(Tagger.call(req).await.is_err());
    assert_eq!(response.trailers().get_str("retry-after-ms"), Some("250"));
}

/// A server that does not check what it sends: over loopback, it answers the first call with
/// response headers over the client's limit and the second with a non-ASCII trailer key, then
/// the third plainly. Each bad answer ends only its own call, with an error saying why.
#[tokio::test]
async fn bad_response_metadata_from_a_careless_server_ends_only_that_call() {
    use rpc_core::frame::{Frame, Hello, MetadataBlocks, Response, HELLO_LEN, WIRE_VERSION};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 20, max_calls_in_flight: 8, max_attachments: 8, max_metadata: 16 << 10, stream_window: 0 };
        s.write_all(&hello.encode()).await.unwrap();
        let mut theirs = [0u8; HELLO_LEN];
        s.read_exact(&mut theirs).await.unwrap();
        let mut non_ascii = Vec::new();
        non_ascii.extend_from_slice(&1u16.to_le_bytes());
        non_ascii.extend_from_slice(&2u16.to_le_bytes());
        non_ascii.extend_from_slice("é".as_bytes());
        non_ascii.extend_from_slice(&0u32.to_le_bytes());
        let answers = [
            MetadataBlocks { headers: Metadata::new().with("big", vec![1u8; 3000]).encode(), trailers: Bytes::new() },
            MetadataBlocks { headers: Bytes::new(), trailers: Bytes::from(non_ascii) },
            MetadataBlocks::default(),
        ];
        for meta in answers {
            let mut header = [0u8; 40];
            s.read_exact(&mut header).await.unwrap();
            let id = u64::from_le_bytes(header[8..16].try_into().unwrap());
            let len = u32::from_le_bytes(header[24..28].try_into().unwrap()) as usize;
            let mut message = vec![0u8; len];
            s.read_exact(&mut message).await.unwrap();
            let answer = Response { id, message: Bytes::from_static(b"ok"), attachments: vec![], meta };
            s.write_all(&Frame::Response(answer).encode().unwrap().to_vec()).await.unwrap();
        }
        // Hold the connection until the client is done.
        let _ = s.read(&mut [0u8; 64]).await;
    });

    let client = Client::connect_tcp(addr, small_limit()).await.unwrap();
    let e = client.call(1, Body::default(), CallOptions::default()).await.unwrap_err();
    assert_eq!(e.code(), rpc_core::Code::PROTOCOL);
    assert!(e.to_string().contains("response headers of 3011 bytes, over the limit of 1024 bytes this side declared"), "{e}");
    let e = client.call_with_metadata(1, Body::default(), CallOptions::default()).await.result.unwrap_err();
    assert!(e.to_string().contains("trailers: metadata key \"é\" is invalid: not printable ASCII"), "{e}");
    assert!(client.is_open(), "the connection carries on");
    assert_eq!(&client.call(1, Body::default(), CallOptions::default()).await.unwrap().message[..], b"ok");
    client.close().await;
    server.await.unwrap();
}
