//! Several services on one server (`ServerBuilder::add_service`): each call reaches the service
//! that owns its method, streams included, over TCP and the in-memory pipe; a method of a
//! service the server does not have is `UNIMPLEMENTED` naming it; two services claiming one
//! method are refused when the server is built.

use std::time::Duration;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig, Code, RouteError, Server, Service, Sink, Source};

#[rpc_core::service(package = "demo.v1")]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
    /// Server streaming: `n` greetings.
    async fn many(&self, n: u32, out: Sink<String>);
}

#[rpc_core::service]
pub trait Counter {
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Client streaming: the sum of what was sent.
    async fn sum(&self, numbers: Source<u64>) -> u64;
}

#[rpc_core::service]
pub trait Reverser {
    async fn reverse(&self, s: String) -> String;
    /// Bidirectional: every string back reversed.
    async fn chat(&self, input: Source<String>, output: Sink<String>);
}

/// A service no server below serves: its calls must fail naming it.
#[rpc_core::service]
pub trait Missing {
    async fn nothing(&self) -> u32;
}

struct G;
impl Greeter for G {
    async fn hello(&self, name: String) -> String {
        format!("hello {name}")
    }
    async fn many(&self, n: u32, mut out: Sink<String>) {
        for i in 0..n {
            if out.send(format!("greeting {i}")).await.is_err() {
                return;
            }
        }
    }
}

struct C;
impl Counter for C {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }
    async fn sum(&self, mut numbers: Source<u64>) -> u64 {
        let mut total = 0;
        while let Some(Ok(n)) = numbers.recv().await {
            total += n;
        }
        total
    }
}

struct R;
impl Reverser for R {
    async fn reverse(&self, s: String) -> String {
        s.chars().rev().collect()
    }
    async fn chat(&self, mut input: Source<String>, mut output: Sink<String>) {
        while let Some(Ok(s)) = input.recv().await {
            if output.send(s.chars().rev().collect()).await.is_err() {
                return;
            }
        }
    }
}

fn three_services() -> Server {
    Server::builder()
        .add_service(GreeterServer::new(G))
        .add_service(CounterServer::new(C))
        .add_service(ReverserServer::new(R))
        .try_build()
        .unwrap()
}

/// Calls every method of the three services, and one of a service the server lacks.
async fn exercise(client: Client) {
    let greeter = GreeterClient::new(client.clone());
    let counter = CounterClient::new(client.clone());
    let reverser = ReverserClient::new(client.clone());

    assert_eq!(greeter.hello("ada".into()).await.unwrap(), "hello ada");
    assert_eq!(counter.add(2, 40).await.unwrap(), 42);
    assert_eq!(reverser.reverse("abc".into()).await.unwrap(), "cba");

    let mut greetings = greeter.many(3).await.unwrap();
    let mut got = Vec::new();
    while let Some(g) = greetings.recv().await {
        got.push(g.unwrap());
    }
    assert_eq!(got, ["greeting 0", "greeting 1", "greeting 2"]);

    let (mut numbers, total) = counter.sum().await.unwrap();
    for n in 1..=4 {
        numbers.send(n).await.unwrap();
    }
    numbers.finish();
    assert_eq!(total.await.unwrap(), 10);

    let (mut to, mut from) = reverser.chat().await.unwrap();
    to.send("xy".into()).await.unwrap();
    assert_eq!(from.recv().await.unwrap().unwrap(), "yx");
    to.send("123".into()).await.unwrap();
    assert_eq!(from.recv().await.unwrap().unwrap(), "321");
    to.finish();
    assert!(from.recv().await.is_none());

    let err = MissingClient::new(client).nothing().await.unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED, "{err}");
    let text = err.to_string();
    // The client names the path it asked for (so the service), the server what it serves.
    assert!(text.contains("Missing/nothing"), "{text}");
    assert!(text.contains("demo.v1.Greeter, Counter, Reverser"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_share_a_tcp_server() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = three_services().serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    exercise(client).await;
    handle.shutdown().await;
}

/// One server on two acceptors at once, as its docs say it can be: the same services over TCP
/// and a Unix socket, and a shutdown through either handle stops both.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_serves_tcp_and_a_unix_socket_at_once_and_one_shutdown_stops_both() {
    let server = three_services();
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let tcp = server.serve(acceptor);
    let path = std::env::temp_dir().join(format!("zcrpc-services-{}.sock", std::process::id()));
    let unix = server.serve(rpc_core::transport::unix::UnixAcceptor::bind(&path).await.unwrap());
    exercise(Client::connect_tcp(addr, ClientConfig::default()).await.unwrap()).await;
    exercise(Client::connect_unix(&path, ClientConfig::default()).await.unwrap()).await;

    tcp.shutdown().await;
    // The Unix acceptor stopped too: its socket file is gone once its handle is done.
    unix.shutdown().await;
    assert!(!path.exists(), "the Unix socket file is removed");
    assert!(Client::connect_tcp(addr, ClientConfig::default()).await.is_err(), "nobody listens on TCP");
}

#[tokio::test]
async fn three_services_share_a_connection_over_the_in_memory_pipe() {
    let (a, b) = rpc_core::transport::mem::pair();
    tokio::spawn(three_services().serve_connection(b));
    exercise(Client::connect(a, ClientConfig::default()).await.unwrap()).await;
}

#[tokio::test]
async fn a_streaming_call_to_a_missing_service_ends_unimplemented() {
    #[rpc_core::service]
    pub trait Feed {
        async fn follow(&self, out: Sink<u32>);
    }
    let (a, b) = rpc_core::transport::mem::pair();
    let server = Server::builder().add_service(CounterServer::new(C)).add_service(ReverserServer::new(R));
    tokio::spawn(server.try_build().unwrap().serve_connection(b));
    let client = FeedClient::new(Client::connect(a, ClientConfig::default()).await.unwrap());
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        match client.follow().await {
            Err(e) => e,
            Ok(mut items) => items.recv().await.expect("an error, not a clean end").unwrap_err(),
        }
    })
    .await
    .unwrap();
    assert_eq!(outcome.code(), Code::UNIMPLEMENTED, "{outcome}");
    assert!(outcome.to_string().contains("Feed/follow"), "{outcome}");
}

#[test]
fn a_service_added_twice_is_refused_naming_the_path() {
    let err = Server::builder()
        .add_service(CounterServer::new(C))
        .add_service(GreeterServer::new(G))
        .add_service(CounterServer::new(C))
        .try_build()
        .unwrap_err();
    match &err {
        RouteError::Duplicate { first_service, second_service, first_path, .. } => {
            assert_eq!((*first_service, *second_service), ("Counter", "Counter"));
            assert!(first_path.starts_with("Counter/"), "{first_path}");
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert!(err.to_string().contains("both claim method id"), "{err}");
}

mod other {
    /// Another trait named `Counter`, in another module: the same paths as the first.
    #[rpc_core::service]
    pub trait Counter {
        async fn add(&self, a: u64, b: u64) -> u64;
    }
    pub struct Impl;
    impl Counter for Impl {
        async fn add(&self, a: u64, b: u64) -> u64 {
            a * b
        }
    }

    /// A pinned id that another service's path hashes to.
    #[rpc_core::service]
    pub trait Pinned {
        #[method(id = 0x1234)]
        async fn first(&self) -> u32;
    }
    #[rpc_core::service]
    pub trait AlsoPinned {
        #[method(id = 0x1234)]
        async fn second(&self) -> u32;
    }
    pub struct P;
    impl Pinned for P {
        async fn first(&self) -> u32 {
            1
        }
    }
    impl AlsoPinned for P {
        async fn second(&self) -> u32 {
            2
        }
    }
}

#[test]
fn two_traits_of_one_name_or_one_pinned_id_are_refused() {
    let err = Server::builder()
        .add_service(CounterServer::new(C))
        .add_service(other::CounterServer::new(other::Impl))
        .try_build()
        .unwrap_err();
    assert!(matches!(err, RouteError::Duplicate { first_path: "Counter/add", second_path: "Counter/add", .. }), "{err:?}");

    let err = Server::builder()
        .add_service(other::PinnedServer::new(other::P))
        .add_service(other::AlsoPinnedServer::new(other::P))
        .try_build()
        .unwrap_err();
    assert_eq!(
        err,
        RouteError::Duplicate {
            id: 0x1234,
            first_service: "Pinned",
            first_path: "Pinned/first",
            second_service: "AlsoPinned",
            second_path: "AlsoPinned/second",
        }
    );
}

#[test]
#[should_panic(expected = "both claim method id")]
fn build_with_added_services_panics_on_a_duplicate() {
    let _ = Server::builder().add_service(CounterServer::new(C)).build(CounterServer::new(C));
}

/// A hand-written service: it lists no methods.
struct Raw;
impl Service for Raw {
    fn call(&self, request: rpc_core::ServerRequest) -> rpc_core::BoxFuture<'static, Result<rpc_core::Body, rpc_core::Status>> {
        Box::pin(async move { Ok(request.body) })
    }
}

#[test]
fn a_service_without_a_method_list_serves_alone_but_not_among_others() {
    assert!(Server::builder().add_service(Raw).try_build().is_ok());
    let err = Server::builder().add_service(Raw).add_service(CounterServer::new(C)).try_build().unwrap_err();
    assert_eq!(err, RouteError::NoMethods("service"));
    assert_eq!(Server::builder().try_build().unwrap_err(), RouteError::Empty);
}

#[test]
fn generated_servers_list_their_paths() {
    assert_eq!(CounterServer::new(C).methods(), CounterClient::PATHS);
    assert_eq!(GreeterServer::new(G).methods()[0], ("demo.v1.Greeter/hello", rpc_core::method_id("demo.v1.Greeter/hello")));
}
