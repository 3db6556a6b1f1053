//! tower over real TCP sockets on loopback: the client under tower's timeout, concurrency
//! limit and retry; a balanced client over three servers, one killed under load; discovery
//! by a stream of changes; tower layers (logging, limits, auth, timeout) on the server.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::discover::Change;
use tower::{Service, ServiceBuilder, ServiceExt};

use rpc_core::tower::{Balanced, Call, RetryPolicy};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Body, BoxFuture, Bytes, CallError, Client, ClientConfig, Code, Reconnect, Server, ServerHandle, ServerRequest, Status};

const ECHO: &str = "Test/echo";
/// Sleeps the milliseconds its message says, then answers the server's name.
const SLOW: &str = "Test/slow";
/// Never answers.
const HANG: &str = "Test/hang";
/// Answers UNAVAILABLE until it has been called `fail_first` times.
const FLAKY: &str = "Test/flaky";
/// Answers INVALID_ARGUMENT.
const BAD: &str = "Test/bad";

/// What one test server saw.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Handlers dropped before they answered (cancelled).
    dropped: AtomicUsize,
}

struct TestService {
    name: &'static str,
    seen: Arc<Seen>,
    fail_first: usize,
}

struct InFlight(Arc<Seen>, bool);

impl InFlight {
    fn start(seen: &Arc<Seen>) -> Self {
        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(seen.clone(), false)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl rpc_core::Service for TestService {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let n = self.seen.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (name, seen, fail_first) = (self.name, self.seen.clone(), self.fail_first);
        Box::pin(async move {
            let mut guard = InFlight::start(&seen);
            let answer = match req.method {
                m if m == rpc_core::method_id(ECHO) => Ok(req.body),
                m if m == rpc_core::method_id(SLOW) => {
                    let ms: u64 = std::str::from_utf8(&req.body.message).unwrap().parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Body::message(Bytes::from_static(name.as_bytes())))
                }
                m if m == rpc_core::method_id(HANG) => std::future::pending().await,
                m if m == rpc_core::method_id(FLAKY) && n <= fail_first => Err(Status::new(Code::UNAVAILABLE, "not yet")),
                m if m == rpc_core::method_id(FLAKY) => Ok(Body::message(Bytes::from_static(b"at last"))),
                m if m == rpc_core::method_id(BAD) => Err(Status::invalid_argument("bad")),
                m => Err(Status::unimplemented(m)),
            };
            guard.1 = true;
            answer
        })
    }
}

fn service(name: &'static str) -> (TestService, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    (TestService { name, seen: seen.clone(), fail_first: 0 }, seen)
}

async fn serve(server: Server) -> (ServerHandle, SocketAddr) {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    (server.serve(acceptor), addr)
}

/// What a test sends down a discovery stream.
type Changes<E> = tokio::sync::mpsc::UnboundedSender<Result<Change<&'static str, Client>, E>>;

/// A balanced client over a discovery stream that the returned sender feeds (nothing yet).
fn discovered<E: Into<tower::BoxError> + Send + 'static>() -> (Changes<E>, Balanced) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Change<&'static str, Client>, E>>();
    let discover = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (tx, Balanced::new(Box::pin(discover)))
}

fn quick() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(5),
        reconnect: Reconnect { initial_backoff: Duration::from_millis(20), max_backoff: Duration::from_millis(200), wait_for_connection: false },
        ..ClientConfig::default()
    }
}

fn slow(ms: u64) -> Call {
    Call::path(SLOW, Body::message(Bytes::from(ms.to_string()))).timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_layer_ends_a_call_the_server_never_answers_and_cancels_it_there() {
    let (svc, seen) = service("a");
    let (_server, addr) = serve(Server::builder().build(svc)).await;
    let client = Client::connect_tcp(addr, quick()).await.unwrap();
    let mut svc = ServiceBuilder::new().timeout(Duration::from_millis(100)).service(client.clone());

    let err = svc.ready().await.unwrap().call(Call::path(HANG, Body::default())).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    // Dropping the call's future cancelled it on the server: the handler was dropped.
    common::eventually("the hanging handler is dropped", || seen.dropped.load(Ordering::SeqCst) == 1).await;

    // The connection carries on.
    let reply = svc.ready().await.unwrap().call(Call::path(ECHO, Body::message("hi".into()))).await.unwrap();
    assert_eq!(&reply.message[..], b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_layer_holds_the_client_to_its_limit() {
    let (svc, seen) = service("a");
    let (_server, addr) = serve(Server::builder().build(svc)).await;
    let client = Client::connect_tcp(addr, quick()).await.unwrap();
    let limited = ServiceBuilder::new().concurrency_limit(2).service(client);

    let calls: Vec<_> = (0..10).map(|_| tokio::spawn(limited.clone().oneshot(slow(20)))).collect();
    for c in calls {
        assert_eq!(&c.await.unwrap().unwrap().message[..], b"a");
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 10);
    let max = seen.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 2, "the server had {max} calls at once through a limit of 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_policy_resends_calls_the_server_could_not_take_and_nothing_else() {
    let seen = Arc::new(Seen::default());
    let (_server, addr) = serve(Server::builder().build(TestService { name: "a", seen: seen.clone(), fail_first: 2 })).await;
    let client = Client::connect_tcp(addr, quick()).await.unwrap();

    // Not marked idempotent: the handler ran and answered UNAVAILABLE, which may follow its
    // side effects, so the answer is final: one attempt.
    let retried = ServiceBuilder::new().retry(RetryPolicy::new(3)).service(client.clone());
    let err = retried.clone().oneshot(Call::path(FLAKY, Body::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::UNAVAILABLE);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);

    // Idempotent: a second UNAVAILABLE answer, then the third attempt succeeds.
    let reply = retried.clone().oneshot(Call::path(FLAKY, Body::default()).idempotent()).await.unwrap();
    assert_eq!(&reply.message[..], b"at last");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);

    // An answer of the application (INVALID_ARGUMENT) is final: one attempt.
    let err = retried.clone().oneshot(Call::path(BAD, Body::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::INVALID_ARGUMENT);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 4);

    // Under a timeout layer too (errors boxed): the policy finds the CallError inside.
    let seen2 = Arc::new(Seen::default());
    let (_server2, addr2) = serve(Server::builder().build(TestService { name: "b", seen: seen2.clone(), fail_first: 1 })).await;
    let client2 = Client::connect_tcp(addr2, quick()).await.unwrap();
    let boxed = ServiceBuilder::new()
        .retry(RetryPolicy::new(2).backoff(Duration::from_millis(5)))
        .timeout(Duration::from_secs(5))
        .service(client2);
    let reply = boxed.oneshot(Call::path(FLAKY, Body::default()).idempotent()).await.unwrap();
    assert_eq!(&reply.message[..], b"at last");
    assert_eq!(seen2.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_call_lost_in_flight_is_retried_only_when_idempotent() {
    let lost = CallError::Connection(rpc_core::ConnectionError::Closed);
    let call = Call::path(ECHO, Body::default());
    assert!(!rpc_core::tower::retryable(&call, &lost));
    assert!(rpc_core::tower::retryable(&call.clone().idempotent(), &lost));
    assert!(rpc_core::tower::retryable(&call, &CallError::ShuttingDown));
    assert!(!rpc_core::tower::retryable(&call.clone().idempotent(), &CallError::DeadlineExceeded(Duration::from_secs(1))));
    // An UNAVAILABLE answer may follow the handler's side effects: only when idempotent.
    let unavailable = CallError::Status(Status::new(Code::UNAVAILABLE, "a dependency is down"));
    assert!(!rpc_core::tower::retryable(&call, &unavailable));
    assert!(rpc_core::tower::retryable(&call.idempotent(), &unavailable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balanced_client_spreads_calls_over_three_servers() {
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    let mut seens = Vec::new();
    for name in ["a", "b", "c"] {
        let (svc, seen) = service(name);
        let (h, addr) = serve(Server::builder().build(svc)).await;
        servers.push(h);
        addrs.push(addr);
        seens.push(seen);
    }
    let balanced = Balanced::connect_tcp(&addrs, quick()).await.unwrap();
    let calls: Vec<_> = (0..90).map(|_| tokio::spawn(balanced.clone().oneshot(slow(5)))).collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let counts: Vec<usize> = seens.iter().map(|s| s.calls.load(Ordering::SeqCst)).collect();
    assert_eq!(counts.iter().sum::<usize>(), 90);
    assert!(counts.iter().all(|c| *c > 0), "every server got calls: {counts:?}");
    let endpoints = balanced.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert!(endpoints.iter().all(|(_, state)| state == "up"), "{endpoints:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_moves_its_calls_to_the_others_and_no_retryable_call_fails() {
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    let mut seens = Vec::new();
    for name in ["a", "b", "c"] {
        let (svc, seen) = service(name);
        let (h, addr) = serve(Server::builder().build(svc)).await;
        servers.push(Some(h));
        addrs.push(addr);
        seens.push(seen);
    }
    let balanced = Balanced::connect_tcp(&addrs, quick()).await.unwrap();
    let svc = ServiceBuilder::new()
        .retry(RetryPolicy::new(4).backoff(Duration::from_millis(5)))
        .service(balanced.clone());

    // 16 callers, 400 calls of 10 ms each, every one idempotent; server "a" dies a quarter in.
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for _ in 0..16 {
        let (svc, done, failures) = (svc.clone(), done.clone(), failures.clone());
        callers.push(tokio::spawn(async move {
            for _ in 0..25 {
                match svc.clone().oneshot(slow(10).idempotent()).await {
                    Ok(_) => {}
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    common::eventually("100 calls done", || done.load(Ordering::SeqCst) >= 100).await;
    let in_flight_at_kill = seens[0].in_flight.load(Ordering::SeqCst);
    let server_a = servers[0].as_ref().expect("a runs").server().clone();
    drop(servers[0].take()); // aborts its accept loop and every connection: the sockets close
    // A connection task in the middle of a poll on the other worker finishes that poll (and may
    // take the calls it has read) before the abort reaches it: "a" is dead once none is left.
    common::eventually("a's connections are gone", || server_a.connections() == 0).await;
    let served_by_a_at_kill = seens[0].calls.load(Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} calls failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    // "a" took no call after it died; the others took the rest.
    assert_eq!(seens[0].calls.load(Ordering::SeqCst), served_by_a_at_kill);
    let (b, c) = (seens[1].calls.load(Ordering::SeqCst), seens[2].calls.load(Ordering::SeqCst));
    assert!(b + c + served_by_a_at_kill >= 400, "a {served_by_a_at_kill}, b {b}, c {c}");
    eprintln!("calls in flight on a when it died: {in_flight_at_kill}; a {served_by_a_at_kill}, b {b}, c {c}");
    let endpoints = balanced.endpoints();
    let a = endpoints.iter().find(|(k, _)| k == &addrs[0].to_string()).expect("a is known");
    assert_ne!(a.1, "up", "{endpoints:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_is_down_calls_fail_with_an_error_that_says_so() {
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for name in ["a", "b"] {
        let (svc, _) = service(name);
        let (h, addr) = serve(Server::builder().build(svc)).await;
        servers.push(h);
        addrs.push(addr);
    }
    let balanced = Balanced::connect_tcp(&addrs, quick()).await.unwrap();
    balanced.clone().oneshot(slow(1)).await.unwrap();
    drop(servers);
    assert_all_down(balanced, &addrs).await;
}

/// With every endpoint down, a call through retries fails promptly with `UNAVAILABLE`, saying
/// so and naming each of `addrs` (retries mend the calls that met a closing connection; what
/// remains is the verdict).
async fn assert_all_down(balanced: Balanced, addrs: &[std::net::SocketAddr]) {
    let svc = ServiceBuilder::new().retry(RetryPolicy::new(6).backoff(Duration::from_millis(5)).max_backoff(Duration::from_millis(50))).service(balanced);
    let err = tokio::time::timeout(Duration::from_secs(30), svc.oneshot(slow(1).idempotent()))
        .await
        .expect("a call with every endpoint down must not hang")
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CallError::Unavailable(_)), "{err:?}");
    assert!(text.contains(&format!("all {} endpoints are down", addrs.len())), "{text}");
    for a in addrs {
        assert!(text.contains(&a.to_string()), "names {a}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_stream_adds_and_removes_endpoints() {
    let (svc_a, seen_a) = service("a");
    let (svc_b, seen_b) = service("b");
    let (_ha, addr_a) = serve(Server::builder().build(svc_a)).await;
    let (_hb, addr_b) = serve(Server::builder().build(svc_b)).await;
    let (tx, balanced) = discovered::<std::convert::Infallible>();

    tx.send(Ok(Change::Insert("a", Client::connect_tcp(addr_a, quick()).await.unwrap()))).unwrap();
    for _ in 0..10 {
        assert_eq!(&balanced.clone().oneshot(slow(0)).await.unwrap().message[..], b"a");
    }
    tx.send(Ok(Change::Insert("b", Client::connect_tcp(addr_b, quick()).await.unwrap()))).unwrap();
    tx.send(Ok(Change::Remove("a"))).unwrap();
    for _ in 0..10 {
        assert_eq!(&balanced.clone().oneshot(slow(0)).await.unwrap().message[..], b"b");
    }
    assert_eq!(seen_a.calls.load(Ordering::SeqCst), 10);
    assert_eq!(seen_b.calls.load(Ordering::SeqCst), 10);
    assert_eq!(balanced.endpoints().iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["\"b\""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_layers_log_limit_and_refuse_calls() {
    let (svc, seen) = service("a");
    let log = Arc::new(Mutex::new(Vec::new()));
    let logged = log.clone();
    let logging = tower::util::MapRequestLayer::new(move |req: ServerRequest| {
        logged.lock().unwrap().push((req.method, req.metadata.get_str("token").map(str::to_owned)));
        req
    });
    let auth = tower::filter::FilterLayer::new(|req: ServerRequest| match req.metadata.get_str("token") {
        Some("secret") => Ok(req),
        _ => Err(Status::unauthenticated("a token is required")),
    });
    let server = Server::builder()
        .layer(logging) // outermost: sees refused calls too
        .layer(auth)
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .build(svc);
    let (_server, addr) = serve(server).await;
    let client = Client::connect_tcp(addr, quick()).await.unwrap();

    // No token: refused with the auth layer's status; the handler never ran.
    let err = client.clone().oneshot(Call::path(ECHO, Body::message("x".into()))).await.unwrap_err();
    assert_eq!(err.code(), Code::UNAUTHENTICATED, "{err}");
    assert!(err.to_string().contains("a token is required"), "{err}");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);

    // With the token: 4 calls at once, served one at a time by the limit layer.
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(client.clone().oneshot(slow(20).header("token", "secret").unwrap())))
        .collect();
    for c in calls {
        assert_eq!(&c.await.unwrap().unwrap().message[..], b"a");
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 4);
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 1);

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0], (rpc_core::method_id(ECHO), None));
    assert!(log[1..].iter().all(|(m, t)| *m == rpc_core::method_id(SLOW) && t.as_deref() == Some("secret")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_timeout_layer_answers_deadline_exceeded_and_drops_the_handler() {
    let (svc, seen) = service("a");
    let server = Server::builder().layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50))).build(svc);
    let (_server, addr) = serve(server).await;
    let client = Client::connect_tcp(addr, quick()).await.unwrap();
    let err = client.oneshot(Call::path(HANG, Body::default()).timeout(Duration::from_secs(10))).await.unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(err.to_string().contains("timeout layer"), "{err}");
    common::eventually("the hanging handler is dropped", || seen.dropped.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_service_behind_layers_keeps_its_routes() {
    #[rpc_core::service]
    pub trait Greeter {
        async fn hello(&self, name: String) -> String;
    }
    #[rpc_core::service]
    pub trait Adder {
        async fn add(&self, a: u64, b: u64) -> u64;
    }
    struct G;
    impl Greeter for G {
        async fn hello(&self, name: String) -> String {
            format!("hello {name}")
        }
    }
    struct A;
    impl Adder for A {
        async fn add(&self, a: u64, b: u64) -> u64 {
            a + b
        }
    }
    let server = Server::builder()
        .layer(tower::limit::ConcurrencyLimitLayer::new(8))
        .add_service(GreeterServer::new(G))
        .add_service(AdderServer::new(A))
        .try_build()
        .unwrap();
    let (_server, addr) = serve(server).await;
    let client = Client::connect_tcp(addr, quick()).await.unwrap();
    assert_eq!(GreeterClient::new(client.clone()).hello("you".into()).await.unwrap(), "hello you");
    assert_eq!(AdderClient::new(client).add(2, 3).await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_server_comes_back_takes_calls_again() {
    let (svc_a, seen_a) = service("a");
    let (svc_b, _) = service("b");
    let (ha, addr_a) = serve(Server::builder().build(svc_a)).await;
    let (_hb, addr_b) = serve(Server::builder().build(svc_b)).await;
    let balanced = Balanced::connect_tcp(&[addr_a, addr_b], quick()).await.unwrap();
    let svc = ServiceBuilder::new().retry(RetryPolicy::new(4).backoff(Duration::from_millis(5))).service(balanced.clone());
    drop(ha);
    for _ in 0..20 {
        assert_eq!(&svc.clone().oneshot(slow(0).idempotent()).await.unwrap().message[..], b"b");
    }
    // "a" again, on the same address: the endpoint's client re-dials it and it rejoins.
    let (svc_a2, seen_a2) = service("a");
    let mut again = None;
    for _ in 0..100 {
        if let Ok(acceptor) = TcpAcceptor::bind(addr_a).await {
            again = Some(Server::builder().build(svc_a2).serve(acceptor));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _again = again.expect("rebind the address of a");
    let before = seen_a.calls.load(Ordering::SeqCst);
    for _ in 0..500 {
        svc.clone().oneshot(slow(1).idempotent()).await.unwrap();
        if seen_a2.calls.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    assert!(seen_a2.calls.load(Ordering::SeqCst) > 0, "the restarted server got no call");
    assert_eq!(seen_a.calls.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tower_service_is_served_and_its_errors_become_statuses() {
    use rpc_core::tower::TowerService;
    let svc = tower::service_fn(|req: ServerRequest| async move {
        match &req.body.message[..] {
            b"status" => Err::<Body, tower::BoxError>(Box::new(Status::permission_denied("no"))),
            b"other" => Err("the disk is on fire".into()),
            _ => Ok(req.body),
        }
    });
    let (_server, addr) = serve(Server::builder().build(TowerService::new(svc))).await;
    let client = Client::connect_tcp(addr, quick()).await.unwrap();
    let call = |m: &'static str| client.clone().oneshot(Call::path(ECHO, Body::message(Bytes::from_static(m.as_bytes()))));
    assert_eq!(&call("hi").await.unwrap().message[..], b"hi");
    assert_eq!(call("status").await.unwrap_err().code(), Code::PERMISSION_DENIED);
    let err = call("other").await.unwrap_err();
    assert_eq!(err.code(), Code::UNKNOWN, "{err}");
    assert!(err.to_string().contains("the disk is on fire"), "{err}");
}

/// An endpoint that was down when the balanced client was made (dialed again in the
/// background) is one of its endpoints too: when the others go, the error names it and why,
/// and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_from_the_start_is_named_when_every_endpoint_is_down() {
    let (svc, _) = service("a");
    let (server, up) = serve(Server::builder().build(svc)).await;
    let never = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let balanced = Balanced::connect_tcp(&[up, never], quick()).await.unwrap();
    balanced.clone().oneshot(slow(1)).await.unwrap();
    let endpoints = balanced.endpoints();
    assert_eq!(endpoints.len(), 2, "both are endpoints: {endpoints:?}");
    drop(server);
    assert_all_down(balanced, &[up, never]).await;
}

/// A discovery stream that reports an error (a lookup that failed once) does not end the
/// balanced client: the error is logged, the endpoints stay, and later changes are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_error_does_not_end_the_balanced_client() {
    let (svc_a, _) = service("a");
    let (svc_b, _) = service("b");
    let (_ha, addr_a) = serve(Server::builder().build(svc_a)).await;
    let (_hb, addr_b) = serve(Server::builder().build(svc_b)).await;
    let (tx, balanced) = discovered::<std::io::Error>();
    tx.send(Ok(Change::Insert("a", Client::connect_tcp(addr_a, quick()).await.unwrap()))).unwrap();
    assert_eq!(&balanced.clone().oneshot(slow(0)).await.unwrap().message[..], b"a");
    tx.send(Err(std::io::Error::other("the lookup failed this once"))).unwrap();
    let call = tokio::time::timeout(Duration::from_secs(20), balanced.clone().oneshot(slow(0))).await.expect("no hang");
    assert_eq!(&call.unwrap().message[..], b"a", "the endpoints stay");
    tx.send(Ok(Change::Insert("b", Client::connect_tcp(addr_b, quick()).await.unwrap()))).unwrap();
    tx.send(Ok(Change::Remove("a"))).unwrap();
    let call = tokio::time::timeout(Duration::from_secs(20), balanced.clone().oneshot(slow(0))).await.expect("no hang");
    assert_eq!(&call.unwrap().message[..], b"b", "later changes are taken");
}

/// A call waits for a usable endpoint only within its own timeout: with none inserted yet (or
/// every one removed), it fails at its deadline instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_an_endpoint_fails_at_its_timeout() {
    let (tx, balanced) = discovered::<std::convert::Infallible>();
    let call = Call::path(ECHO, Body::message(Bytes::from_static(b"x"))).timeout(Duration::from_millis(200));
    let err = tokio::time::timeout(Duration::from_secs(20), balanced.clone().oneshot(call))
        .await
        .expect("a call with no endpoint must end at its timeout")
        .unwrap_err();
    assert!(matches!(err, CallError::DeadlineExceeded(_)), "{err:?}");

    // One inserted, then removed: the same.
    let (svc, _) = service("a");
    let (_h, addr) = serve(Server::builder().build(svc)).await;
    tx.send(Ok(Change::Insert("a", Client::connect_tcp(addr, quick()).await.unwrap()))).unwrap();
    balanced.clone().oneshot(slow(0)).await.unwrap();
    tx.send(Ok(Change::Remove("a"))).unwrap();
    let call = Call::path(ECHO, Body::message(Bytes::from_static(b"x"))).timeout(Duration::from_millis(200));
    let err = tokio::time::timeout(Duration::from_secs(20), balanced.clone().oneshot(call))
        .await
        .expect("a call with no endpoint must end at its timeout")
        .unwrap_err();
    assert!(matches!(err, CallError::DeadlineExceeded(_)), "{err:?}");
}
