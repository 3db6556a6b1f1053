//! A unary call's future (`Client::call`, `Client::call_with_metadata`), over real loopback
//! sockets: given up on at each of its await points (waiting for a connection, for a call
//! permit, queued, on the wire, waiting for the answer), it leaves nothing behind — no handler
//! running on the server, no call permit, no budget, no request body held — and the calls after
//! it go through; its deadlines (the call's, the client's default, one that passes while it
//! waits for a permit) name what the caller set; a call waiting for a permit on a connection
//! that goes away gracefully goes again on the next one.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{
    Body, BoxFuture, Bytes, CallError, CallOptions, Client, ClientConfig, Code, Payload, Reconnect, Server, ServerHandle,
    ServerRequest, Service, Status,
};

async fn tcp_server(server: &Server) -> (ServerHandle, std::net::SocketAddr) {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    (server.serve(acceptor), addr)
}

/// Counts the owners of request bytes still alive: a request body the client keeps after its
/// call ended (in its call table, a transmit, a copy for sending again) keeps one.
struct Tracked {
    bytes: Vec<u8>,
    alive: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tracked_body(len: usize, alive: &Arc<AtomicUsize>, message: Body) -> Body {
    alive.fetch_add(1, Ordering::SeqCst);
    let owner = Tracked { bytes: pattern(len, 9).to_vec(), alive: alive.clone() };
    Body::new(message.message, vec![Payload::from(Bytes::from_owner(owner))])
}

fn settled(svc: &TestService) -> bool {
    let p = &svc.probe;
    p.started.load(Ordering::SeqCst) == p.finished.load(Ordering::SeqCst) + p.dropped_unfinished.load(Ordering::SeqCst)
}

/// With a server that takes `permits` calls at once: `permits` calls that each hold their
/// handler for three seconds all run on the server at the same time (none waits for a permit that
/// leaked, none is refused by the server), and all answer.
async fn all_permits_free(client: &Client, svc: &TestService, permits: usize) {
    let p = &svc.probe;
    let running = || {
        p.started.load(Ordering::SeqCst) - p.finished.load(Ordering::SeqCst) - p.dropped_unfinished.load(Ordering::SeqCst)
    };
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..permits {
        let c = client.clone();
        calls.spawn(async move { c.call(SLEEP_MS, sleep_body(3_000), CallOptions::timeout(Duration::from_secs(10))).await });
    }
    let t = Instant::now();
    while running() < permits {
        // Well within the handlers' three seconds, with room for a loaded machine.
        if t.elapsed() > Duration::from_millis(2_500) {
            let mut results = Vec::new();
            while let Some(r) = calls.join_next().await {
                results.push(r.unwrap().map(|b| b.message));
            }
            panic!("{} of {permits} calls ran at once ({p:?}); the calls: {results:?}", running());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while let Some(r) = calls.join_next().await {
        assert_eq!(&r.unwrap().unwrap().message[..], b"slept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_on_at_each_await_point_leaves_nothing_behind() {
    const PERMITS: usize = 2;
    let svc = TestService::default();
    let server = Server::builder().max_calls_in_flight(PERMITS as u32).build(svc.clone());
    let (handle, addr) = tcp_server(&server).await;
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let alive = Arc::new(AtomicUsize::new(0));
    let hold = Duration::from_millis(300);

    // 1. Waiting for a permit: both are held by sleeping calls; the third is dropped while it
    //    waits, and never reaches the server.
    let mut holders = tokio::task::JoinSet::new();
    for _ in 0..PERMITS {
        let c = client.clone();
        holders.spawn(async move { c.call(SLEEP_MS, sleep_body(hold.as_millis() as u64), CallOptions::default()).await });
    }
    eventually("the holders run", || svc.probe.started.load(Ordering::SeqCst) == PERMITS).await;
    for _ in 0..5 {
        let call = client.call(ECHO, tracked_body(1000, &alive, Body::default()), CallOptions::default());
        assert!(tokio::time::timeout(Duration::from_millis(20), call).await.is_err(), "no permit was free");
    }
    while let Some(r) = holders.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(svc.probe.started.load(Ordering::SeqCst), PERMITS, "a call dropped while waiting for its permit ran");
    assert_eq!(alive.load(Ordering::SeqCst), 0, "a body of a call dropped while waiting for a permit is still held");
    all_permits_free(&client, &svc, PERMITS).await;

    // 2. Queued, or on the wire: large requests dropped after one poll, or a moment later.
    for micros in [0u64, 50, 200, 1_000, 3_000] {
        for _ in 0..3 {
            let call = client.call(ECHO, tracked_body(8 << 20, &alive, Body::default()), CallOptions::default());
            let r = tokio::time::timeout(Duration::from_micros(micros), call).await;
            if let Ok(r) = r {
                r.unwrap();
            }
        }
    }
    // A request cut off on the wire may still have been committed, and run late.
    eventually("no handler left running", || settled(&svc)).await;
    eventually("no request body held by the client", || alive.load(Ordering::SeqCst) == 0).await;
    // 3. Waiting for the answer: the handler is dropped on the server.
    let before = svc.probe.dropped_unfinished.load(Ordering::SeqCst);
    for _ in 0..4 {
        let started = svc.probe.started.load(Ordering::SeqCst);
        let call = client.call(SLEEP_MS, sleep_body(5_000), CallOptions::default());
        tokio::pin!(call);
        let wait = async {
            eventually("the handler runs", || svc.probe.started.load(Ordering::SeqCst) > started).await;
        };
        tokio::select! {
            r = &mut call => panic!("a 5 s sleep answered: {r:?}"),
            _ = wait => {}
        }
    }
    eventually("every handler of a dropped call is dropped", || {
        svc.probe.dropped_unfinished.load(Ordering::SeqCst) == before + 4
    })
    .await;
    eventually("no handler left running", || settled(&svc)).await;
    eventually("no request body held by the client", || alive.load(Ordering::SeqCst) == 0).await;
    eventually("nothing charged to the server's budget", || server.memory_held() == 0).await;
    // Permits all came back.
    all_permits_free(&client, &svc, PERMITS).await;
    let reply = client.call(ECHO, Body::message(Bytes::from_static(b"after")), CallOptions::default()).await.unwrap();
    assert_eq!(&reply.message[..], b"after");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_dropped_at_random_points_under_load_leak_no_permit() {
    const PERMITS: usize = 4;
    let svc = TestService::default();
    let server = Server::builder().max_calls_in_flight(PERMITS as u32).build(svc.clone());
    let (handle, addr) = tcp_server(&server).await;
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let alive = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let c = client.clone();
        let alive = alive.clone();
        tasks.spawn(async move {
            let (method, body) = match i % 4 {
                0 => (ECHO, tracked_body(64, &alive, Body::default())),
                1 => (ECHO, tracked_body(256 << 10, &alive, Body::default())),
                2 => (SLEEP_MS, sleep_body(i % 7)),
                _ => (FAIL, tracked_body(10, &alive, Body::default())),
            };
            let give_up = Duration::from_micros((i * 37) % 4_000);
            let _ = tokio::time::timeout(give_up, c.call(method, body, CallOptions::default())).await;
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    eventually("no handler left running", || settled(&svc)).await;
    eventually("no request body held by the client", || alive.load(Ordering::SeqCst) == 0).await;
    eventually("nothing charged to the server's budget", || server.memory_held() == 0).await;
    all_permits_free(&client, &svc, PERMITS).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_name_what_the_caller_set_wherever_they_pass() {
    let svc = TestService::default();
    let server = Server::builder().max_calls_in_flight(1).build(svc.clone());
    let (handle, addr) = tcp_server(&server).await;
    let default = Duration::from_millis(150);
    let client = Client::connect_tcp(addr, ClientConfig { default_timeout: Some(default), ..ClientConfig::default() }).await.unwrap();

    // The call's own timeout, passing while the handler runs.
    let t = Instant::now();
    let r = client.call(SLEEP_MS, sleep_body(3_000), CallOptions::timeout(Duration::from_millis(100))).await;
    assert!(matches!(r, Err(CallError::DeadlineExceeded(d)) if d == Duration::from_millis(100)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The client's default, for a call that sets none.
    let t = Instant::now();
    let reply = client.call_with_metadata(SLEEP_MS, sleep_body(3_000), CallOptions::default()).await;
    assert!(matches!(reply.result, Err(CallError::DeadlineExceeded(d)) if d == default), "{:?}", reply.result);
    assert!(t.elapsed() >= default && t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    eventually("both handlers were dropped", || svc.probe.dropped_unfinished.load(Ordering::SeqCst) == 2).await;

    // Passing while the call waits for a permit: the deadline the caller set, not what was
    // left of it, and the server never sees the call.
    let c = client.clone();
    let holder = tokio::spawn(async move { c.call(SLEEP_MS, sleep_body(600), CallOptions::timeout(Duration::from_secs(5))).await });
    eventually("the holder runs", || svc.probe.started.load(Ordering::SeqCst) == 3).await;
    let r = client.call(ECHO, Body::default(), CallOptions::timeout(Duration::from_millis(120))).await;
    assert!(matches!(r, Err(CallError::DeadlineExceeded(d)) if d == Duration::from_millis(120)), "{r:?}");
    let r = client.call_with_metadata(ECHO, Body::default(), CallOptions::default()).await.result;
    assert!(matches!(r, Err(CallError::DeadlineExceeded(d)) if d == default), "{r:?}");
    assert_eq!(&holder.await.unwrap().unwrap().message[..], b"slept");
    assert_eq!(svc.probe.started.load(Ordering::SeqCst), 3, "a call whose deadline passed waiting for a permit ran");
    // A timeout too large for the clock is none, also while waiting for a permit.
    let c = client.clone();
    let holder = tokio::spawn(async move { c.call(SLEEP_MS, sleep_body(200), CallOptions::timeout(Duration::from_secs(5))).await });
    eventually("the holder runs", || svc.probe.started.load(Ordering::SeqCst) == 4).await;
    let reply = client.call(ECHO, Body::message(Bytes::from_static(b"max")), CallOptions::timeout(Duration::MAX)).await;
    assert_eq!(&reply.unwrap().message[..], b"max");
    holder.await.unwrap().unwrap();
    // The call's own timeout wins over the default.
    let reply = client.call(SLEEP_MS, sleep_body(300), CallOptions::timeout(Duration::from_secs(5))).await;
    assert_eq!(&reply.unwrap().message[..], b"slept");
    eventually("nothing charged to the server's budget", || server.memory_held() == 0).await;
    handle.shutdown().await;
}

/// Answers with response headers and trailers; method 2 fails with trailers; method 3 sends its
/// headers at once and then sleeps.
struct Tagger {
    dropped: Arc<AtomicUsize>,
}

struct CountDrop(Arc<AtomicUsize>, bool);

impl Drop for CountDrop {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service for Tagger {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let dropped = self.dropped.clone();
        Box::pin(async move {
            let r = req.response.clone();
            let internal = |e: rpc_core::MetadataError| Status::new(Code::INTERNAL, e.to_string());
            match req.method {
                1 => {
                    r.set_header("h", "1").map_err(internal)?;
                    r.set_trailer("t", req.body.message.len().to_string()).map_err(internal)?;
                    Ok(req.body)
                }
                2 => {
                    r.set_trailer("why", "no").map_err(internal)?;
                    Err(Status::invalid_argument("no such key"))
                }
                _ => {
                    let mut flag = CountDrop(dropped, false);
                    r.set_header("early", "yes").map_err(internal)?;
                    r.send_headers();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    flag.1 = true;
                    Ok(Body::default())
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_with_metadata_returns_headers_and_trailers_and_cancels_like_call() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let server = Server::builder().max_calls_in_flight(1).build(Tagger { dropped: dropped.clone() });
    let (handle, addr) = tcp_server(&server).await;
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    for round in 0..3 {
        let reply = client.call_with_metadata(1, Body::message(Bytes::from_static(b"abc")), CallOptions::default()).await;
        assert_eq!(&reply.result.unwrap().message[..], b"abc");
        assert_eq!((reply.headers.get_str("h"), reply.trailers.get_str("t")), (Some("1"), Some("3")));
        let reply = client.call_with_metadata(2, Body::default(), CallOptions::default()).await;
        assert!(matches!(&reply.result, Err(CallError::Status(s)) if s.code == Code::INVALID_ARGUMENT), "{:?}", reply.result);
        assert_eq!(reply.trailers.get_str("why"), Some("no"));
        // A plain call drops them, and nothing of them is left over for the next call.
        let plain = client.call(1, Body::message(Bytes::from_static(b"x")), CallOptions::default()).await.unwrap();
        assert_eq!(&plain.message[..], b"x");
        // Headers came early, then the caller gave up: the handler is dropped, the one permit
        // comes back, and the next call's metadata is its own.
        let early = client.call_with_metadata(3, Body::default(), CallOptions::default());
        assert!(tokio::time::timeout(Duration::from_millis(100), early).await.is_err());
        eventually("the handler of the dropped call is dropped", || dropped.load(Ordering::SeqCst) == round * 2 + 1).await;
        // Early headers, then the deadline: the error comes with them.
        let reply = client.call_with_metadata(3, Body::default(), CallOptions::timeout(Duration::from_millis(150))).await;
        assert!(matches!(reply.result, Err(CallError::DeadlineExceeded(d)) if d == Duration::from_millis(150)), "{:?}", reply.result);
        assert_eq!(reply.headers.get_str("early"), Some("yes"));
        eventually("the expired handler is dropped", || dropped.load(Ordering::SeqCst) == round * 2 + 2).await;
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            client.call_with_metadata(1, Body::message(Bytes::from_static(b"next")), CallOptions::default()),
        )
        .await
        .expect("the one permit came back");
        assert_eq!((reply.headers.get_str("early"), reply.trailers.get_str("t")), (None, Some("4")));
    }
    eventually("nothing charged to the server's budget", || server.memory_held() == 0).await;
    handle.shutdown().await;
}

fn quick_reconnect() -> ClientConfig {
    ClientConfig {
        reconnect: Reconnect { initial_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(100), ..Reconnect::default() },
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_for_a_permit_when_the_connection_ages_out_go_on_the_next_connection() {
    // One permit; the connection closes gracefully at its age while one call holds the permit
    // and others wait for it. The holder is answered on the old connection; the waiters were
    // never sent, so they go on the next one — none fails, each runs once.
    let svc = TestService::default();
    let server = Server::builder()
        .max_calls_in_flight(1)
        .max_connection_age(Some(Duration::from_millis(300)))
        .grace_period(Duration::from_secs(5))
        .build(svc.clone());
    let (handle, addr) = tcp_server(&server).await;
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..6u64 {
        let c = client.clone();
        calls.spawn(async move {
            let body = if i == 0 { sleep_body(500) } else { sleep_body(20) };
            c.call(SLEEP_MS, body, CallOptions::timeout(Duration::from_secs(10))).await
        });
    }
    while let Some(r) = calls.join_next().await {
        assert_eq!(&r.unwrap().expect("a call failed across the graceful close").message[..], b"slept");
    }
    assert_eq!(svc.probe.started.load(Ordering::SeqCst), 6, "each call ran once");
    // Dropped while waiting for the next connection: nothing is sent later.
    handle.shutdown().await;
    eventually("the client saw the server go", || !client.is_open()).await;
    let started = svc.probe.started.load(Ordering::SeqCst);
    let call = client.call(ECHO, Body::default(), CallOptions::default());
    assert!(tokio::time::timeout(Duration::from_millis(100), call).await.is_err());
    assert_eq!(svc.probe.started.load(Ordering::SeqCst), started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_timeout_too_large_for_the_clock_waits_for_a_connection_as_one_without_a_deadline() {
    // `CallOptions::timeout`: "a timeout too large for the clock (`Duration::MAX`) is no
    // deadline"; `Reconnect::wait_for_connection`: a call without a deadline waits for a
    // connection up to `connect_timeout`. So does one with `Duration::MAX`: it must not wait
    // for ever for a server that is gone.
    let svc = TestService::default();
    let (handle, addr) = tcp_server(&Server::builder().build(svc)).await;
    let connect_timeout = Duration::from_millis(300);
    let client = Client::connect_tcp(addr, ClientConfig { connect_timeout, ..quick_reconnect() }).await.unwrap();
    handle.shutdown().await;
    eventually("the client saw the server go", || !client.is_open()).await;
    for timeout in [None, Some(Duration::MAX), Some(Duration::from_secs(u64::MAX))] {
        let t = Instant::now();
        let options = CallOptions { timeout, ..CallOptions::default() };
        let r = tokio::time::timeout(Duration::from_secs(5), client.call(ECHO, Body::default(), options))
            .await
            .unwrap_or_else(|_| panic!("a call with timeout {timeout:?} still waits for a connection after 5 s"));
        assert!(matches!(r, Err(CallError::Unavailable(_))), "{timeout:?}: {r:?}");
        assert!(t.elapsed() >= connect_timeout, "{timeout:?}: {:?}", t.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_lost_connection_only_idempotent_calls_go_again_and_close_ends_them() {
    let svc = TestService::default();
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let server = Server::builder().build(svc.clone()).serve(acceptor);
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    let spawn_call = |idempotent: bool| {
        let c = client.clone();
        tokio::spawn(async move {
            c.call_with_metadata(SLEEP_MS, sleep_body(400), CallOptions::timeout(Duration::from_secs(10)).idempotent(idempotent)).await
        })
    };
    let (plain, again) = (spawn_call(false), spawn_call(true));
    eventually("both run", || svc.probe.started.load(Ordering::SeqCst) == 2).await;
    drop(server);
    let mut server = None;
    for _ in 0..100 {
        if let Ok(a) = TcpAcceptor::bind(addr).await {
            server = Some(Server::builder().build(svc.clone()).serve(a));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server = server.expect("could not bind again");
    let plain = tokio::time::timeout(Duration::from_secs(5), plain).await.unwrap().unwrap();
    assert!(matches!(plain.result, Err(CallError::Connection(_))), "{:?}", plain.result);
    let again = tokio::time::timeout(Duration::from_secs(5), again).await.unwrap().unwrap();
    assert_eq!(&again.result.expect("the idempotent call went again").message[..], b"slept");
    assert_eq!(svc.probe.started.load(Ordering::SeqCst), 3, "only the idempotent call ran again");

    // Closed by the client with an idempotent call in flight: it fails, and is not sent again.
    let call = spawn_call(true);
    eventually("it runs", || svc.probe.started.load(Ordering::SeqCst) == 4).await;
    client.close().await;
    let r = tokio::time::timeout(Duration::from_secs(5), call).await.expect("the call ends when the client closes").unwrap();
    assert!(r.result.is_err(), "{:?}", r.result);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(svc.probe.started.load(Ordering::SeqCst), 4, "a closed client sent a call again");
    let r = tokio::time::timeout(Duration::from_secs(5), client.call(ECHO, Body::default(), CallOptions::default())).await;
    assert!(r.expect("a call on a closed client ends at once").is_err());
    server.shutdown().await;
}
