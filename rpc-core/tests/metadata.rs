//! Call metadata and the peer's identity, end to end: headers set by the client reach the
//! handler, the handler sees who called, and metadata over the server's limit never leaves the
//! client.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
}

struct TenantImpl;

impl Tenant for TenantImpl {
    async fn whoami(&self, ctx: rpc_core::CallContext, greeting: String) -> String {
        let tenant = ctx.metadata.get_str("tenant").unwrap_or("nobody").to_owned();
        format!("{greeting}, {tenant} from {:?}, deadline {}", ctx.peer.addr.map(|a| a.ip()), ctx.deadline.is_some())
    }

    async fn feed(&self, count: u32, ctx: rpc_core::CallContext, mut out: rpc_core::Sink<String>) {
        let tenant = ctx.metadata.get_str("tenant").unwrap_or("nobody").to_owned();
        for i in 0..count {
            if out.send(format!("{tenant} {i}")).await.is_err() {
                return;
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
