//! The direct path and the early flush under pressure: real loopback sockets with tiny kernel
//! buffers (so that direct writes are cut short and their rest handed to the writer), bursts
//! of calls from several tasks, calls cancelled right after their request was queued (and
//! perhaps written early), handlers that panic inside a burst. Every answer must be
//! byte-exact, nothing may hang, and the books (bytes sent and received, the server's memory
//! budget) must balance once the connection is quiet.

mod common;
#[cfg(feature = "tls")]
#[path = "tls_support/mod.rs"]
mod tls_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::FutureExt;
use rpc_core::transport::tcp;
use rpc_core::{
    Body, BoxFuture, Bytes, CallMode, CallOptions, CallStream, Client, ClientConfig, Code, Payload, Server, ServerRequest, Service,
    Status,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Kernel socket buffer sizes asked for (Linux doubles them and keeps a floor of a few KiB).
const TINY: u32 = 4096;

/// A request of `size` bytes: up to 2 KiB as the message, the rest as an attachment.
fn body(size: usize, seed: u8) -> Body {
    let data = pattern(size, seed);
    let cut = size.min(2048);
    let rest = data.slice(cut..);
    Body::new(data.slice(..cut), if rest.is_empty() { vec![] } else { vec![Payload::from(rest)] })
}

fn same(got: &Body, want: &Body, what: &str) {
    assert_eq!(got.message, want.message, "message of {what}");
    let got: Vec<Bytes> = got.attachments.iter().map(Payload::to_bytes).collect();
    let want: Vec<Bytes> = want.attachments.iter().map(Payload::to_bytes).collect();
    assert_eq!(got, want, "attachments of {what}");
}

/// A client and a served connection over loopback TCP, both sockets with tiny send and
/// receive buffers.
async fn tiny_tcp(server: &Server) -> (Client, tokio::task::JoinHandle<rpc_core::ConnectionError>) {
    tiny_tcp_with(server, ClientConfig::default()).await
}

async fn tiny_tcp_with(server: &Server, config: ClientConfig) -> (Client, tokio::task::JoinHandle<rpc_core::ConnectionError>) {
    let listen = TcpSocket::new_v4().unwrap();
    listen.set_recv_buffer_size(TINY).unwrap();
    listen.set_send_buffer_size(TINY).unwrap();
    listen.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener: TcpListener = listen.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let dial = TcpSocket::new_v4().unwrap();
    dial.set_recv_buffer_size(TINY).unwrap();
    dial.set_send_buffer_size(TINY).unwrap();
    let (accepted, dialed) = tokio::join!(listener.accept(), dial.connect(addr));
    let (accepted, _): (TcpStream, _) = accepted.unwrap();
    let dialed = dialed.unwrap();
    let s = socket2::SockRef::from(&accepted);
    s.set_send_buffer_size(TINY as usize).unwrap();
    s.set_recv_buffer_size(TINY as usize).unwrap();
    let serving = tokio::spawn(server.clone().serve_connection(tcp::from_stream(accepted).unwrap()));
    let client = Client::connect(tcp::from_stream(dialed).unwrap(), config).await.unwrap();
    (client, serving)
}

/// Sizes of a burst's calls: mostly small, many just under the direct path's 16 KiB, so that
/// 32 of them are far more than the socket takes at once.
fn size_of(i: usize) -> usize {
    [64, 16_000, 300, 12_000, 16_383 - 64, 5_000, 0, 9_999][i % 8]
}

/// Once the connection is quiet: every byte one side sent, the other received; every byte of
/// a frame counted once; the server holds nothing against its budget.
async fn books_balance(client: &Client, server: &Server) {
    let (c, s) = (client.stats(), server.stats());
    all_delivered(client, server).await;
    let (c2, s2) = (client.stats(), server.stats());
    assert_eq!(c2.bytes_copy, c2.sent_bytes, "client: frame bytes counted as sent once each: {c:?}");
    assert_eq!(s2.bytes_copy, s2.sent_bytes, "server: frame bytes counted as sent once each: {s:?}");
}

/// Once the connection is quiet: the server holds nothing against its budget, and every byte
/// one side sent, the other received.
async fn all_delivered(client: &Client, server: &Server) {
    eventually("the server's memory budget is back to zero", || server.memory_held() == 0).await;
    eventually("the server received every byte the client sent", || server.stats().recv_bytes == client.stats().sent_bytes).await;
    eventually("the client received every byte the server sent", || client.stats().recv_bytes == server.stats().sent_bytes).await;
}

async fn bursts_from_several_tasks(client: &Client, tasks: usize, rounds: usize, burst: usize) {
    bursts_sized(client, tasks, rounds, burst, |t, _, i| size_of(i + t)).await;
}

/// `tasks` tasks, each making `rounds` bursts of `burst` echo calls at once, call `i` of task
/// `t`'s round `round` carrying `size(t, round, i)` bytes; every answer checked byte for byte.
async fn bursts_sized(client: &Client, tasks: usize, rounds: usize, burst: usize, size: fn(usize, usize, usize) -> usize) {
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let client = client.clone();
        set.spawn(async move {
            for round in 0..rounds {
                let calls = (0..burst).map(|i| {
                    let client = client.clone();
                    async move {
                        let seed = (t * 31 + round * 7 + i) as u8;
                        let sent = body(size(t, round, i), seed);
                        let got = client.call(ECHO, sent.clone(), CallOptions::default()).await.unwrap();
                        same(&got, &sent, &format!("task {t} round {round} call {i}"));
                    }
                });
                futures::future::join_all(calls).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_over_tiny_socket_buffers_arrive_whole_and_in_their_calls() {
    let server = Server::builder().build(TestService::default());
    let (client, serving) = tiny_tcp(&server).await;
    tokio::time::timeout(Duration::from_secs(60), bursts_from_several_tasks(&client, 4, 6, 80)).await.expect("no hang");
    // (With two threads the writer may take everything: no count of early writes here.)
    books_balance(&client, &server).await;
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();
}

/// One task, one thread: the writer cannot run while the burst is queued, so every early
/// write before the last is the early flush's own, and each meets a full socket.
#[tokio::test(flavor = "current_thread")]
async fn bursts_from_one_task_over_tiny_socket_buffers_arrive_whole() {
    let server = Server::builder().build(TestService::default());
    let (client, serving) = tiny_tcp(&server).await;
    tokio::time::timeout(Duration::from_secs(60), bursts_from_several_tasks(&client, 1, 8, 200)).await.expect("no hang");
    let (c, s) = (client.stats(), server.stats());
    assert!(c.sends_direct > 0, "the client wrote nothing early: {c:?}");
    assert!(s.sends_direct > 0, "the server wrote nothing early: {s:?}");
    books_balance(&client, &server).await;
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();
}

/// Bursts in which every third call is given up on right after its request was queued (its
/// future polled once, then dropped: the request may be in an early write, cut short in the
/// handover, or still queued), and every fifth asks for a handler that panics. The others
/// are answered whole, the connection lives on, and nothing is left held.
async fn cancels_and_panics_inside_bursts(client: &Client, rounds: usize, burst: usize) {
    for round in 0..rounds {
        let mut kept = Vec::new();
        for i in 0..burst {
            let seed = (round * 13 + i) as u8;
            let sent = body(size_of(i), seed);
            let method = if i % 5 == 4 { PANIC } else { ECHO };
            let mut call = Box::pin({
                let client = client.clone();
                let sent = sent.clone();
                async move { client.call(method, sent, CallOptions::default()).await }
            });
            if i % 3 == 1 {
                // Queued (the step that queued it may have written it early), then cancelled.
                // (On another thread the answer may even be in already: then it must be right.)
                if let Some(r) = (&mut call).now_or_never() {
                    if method == ECHO {
                        same(&r.unwrap_or_else(|e| panic!("round {round} call {i}: {e}")), &sent, &format!("round {round} call {i}"));
                    }
                }
                drop(call);
                continue;
            }
            kept.push((i, method, sent, call));
        }
        for (i, method, sent, call) in kept {
            let r = call.await;
            match method {
                PANIC => {
                    let e = r.expect_err("a panicking handler's call failed");
                    assert_eq!(e.code(), Code::INTERNAL, "round {round} call {i}: {e}");
                }
                _ => same(&r.unwrap_or_else(|e| panic!("round {round} call {i}: {e}")), &sent, &format!("round {round} call {i}")),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cancelled_and_handlers_panicking_inside_bursts_over_tiny_buffers() {
    let service = TestService::default();
    let probe = service.probe.clone();
    let server = Server::builder().build(service);
    let (client, serving) = tiny_tcp(&server).await;
    let work = async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let client = client.clone();
            set.spawn(async move { cancels_and_panics_inside_bursts(&client, 6, 100).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), work).await.expect("no hang");
    // The connection still works, both ways.
    let sent = body(10_000, 9);
    let got = tokio::time::timeout(Duration::from_secs(10), client.call(ECHO, sent.clone(), CallOptions::default()))
        .await
        .expect("a call after the bursts was answered")
        .unwrap();
    same(&got, &sent, "the call after the bursts");
    books_balance(&client, &server).await;
    let started = probe.started.load(Ordering::SeqCst);
    eventually("every handler that started ended", || {
        let p = &probe;
        p.finished.load(Ordering::SeqCst) + p.dropped_unfinished.load(Ordering::SeqCst) <= started
    })
    .await;
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();
    drop(Arc::clone(&probe));
}

/// Unary echo (as [`TestService`]), and streams: `DOWNLOAD` sends as many messages as the
/// request's first 4 bytes say, message `i` being `pattern(size(i), i)`; `PING_PONG` answers
/// each message with its bytes.
struct Mixed;

const DOWNLOAD: u32 = 20;
const PING_PONG: u32 = 21;

fn stream_size(i: u32) -> usize {
    [1, 64, 4000, 200, 15_000][i as usize % 5]
}

impl Service for Mixed {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move {
            match (req.method, req.stream.take()) {
                (ECHO, _) => Ok(req.body),
                (DOWNLOAD, Some(CallStream { mut sender, .. })) => {
                    let n = u32::from_le_bytes(req.body.message[..4].try_into().unwrap());
                    for i in 0..n {
                        let data = pattern(stream_size(i), i as u8);
                        sender.send(Body::message(data)).await.map_err(|e| Status::new(e.code(), e.to_string()))?;
                    }
                    Ok(Body::default())
                }
                (PING_PONG, Some(CallStream { mut sender, mut receiver })) => {
                    while let Some(m) = receiver.recv().await {
                        let m = m.map_err(|e| Status::new(e.code(), e.to_string()))?;
                        sender.send(m).await.map_err(|e| Status::new(e.code(), e.to_string()))?;
                    }
                    Ok(Body::default())
                }
                (m, _) => Err(Status::unimplemented(m)),
            }
        })
    }
}

/// Bursts of calls (a few of them large: the writer's) beside streams both ways, with
/// keepalive pings every few milliseconds on both sides and a server that stops reading at a
/// small memory budget, all over tiny socket buffers: credit grants, pings, pongs, stream
/// messages and large frames meet the direct path's handovers. Every byte arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_beside_streams_pings_and_a_small_budget_over_tiny_buffers() {
    let server = Server::builder()
        .connection_memory_budget(128 << 10)
        .keepalive(Some(Duration::from_millis(5)), Duration::from_secs(20))
        .build(Mixed);
    let mut config = ClientConfig::default();
    config.conn.keepalive_interval = Some(Duration::from_millis(5));
    config.conn.keepalive_timeout = Duration::from_secs(20);
    let (client, serving) = tiny_tcp_with(&server, config).await;
    let work = async {
        let mut set = tokio::task::JoinSet::new();
        {
            // Two tasks of 64-call bursts, a 40 KB request in each and a 300 KB one every
            // other round.
            let client = client.clone();
            set.spawn(async move {
                bursts_sized(&client, 2, 8, 64, |t, round, i| match i {
                    17 => 40_000,
                    40 if round % 2 == 0 => 300_000,
                    _ => size_of(i + t),
                })
                .await
            });
        }
        {
            let client = client.clone();
            set.spawn(async move {
                for round in 0..6u32 {
                    let n = 300 + round;
                    let call = client.open(DOWNLOAD, Body::message(Bytes::copy_from_slice(&n.to_le_bytes())), CallMode::SERVER_STREAMING, CallOptions::default());
                    let (_, mut rx) = call.await.unwrap().split();
                    let mut i = 0u32;
                    while let Some(m) = rx.recv().await {
                        assert_eq!(m.unwrap().message, pattern(stream_size(i), i as u8), "download {round} message {i}");
                        i += 1;
                    }
                    assert_eq!(i, n, "download {round}");
                }
            });
        }
        {
            let client = client.clone();
            set.spawn(async move {
                let call = client.open(PING_PONG, Body::default(), CallMode::BIDI, CallOptions::default());
                let (mut tx, mut rx) = call.await.unwrap().split();
                for i in 0..400u32 {
                    // Sends run ahead of the answers by a few messages.
                    let m = Body::message(pattern(stream_size(i), i as u8 ^ 0x5a));
                    tx.send(m).await.unwrap();
                    if i >= 3 {
                        let j = i - 3;
                        let got = rx.recv().await.unwrap().unwrap();
                        assert_eq!(got.message, pattern(stream_size(j), j as u8 ^ 0x5a), "ping-pong message {j}");
                    }
                }
                tx.finish();
                for j in 397..400u32 {
                    let got = rx.recv().await.unwrap().unwrap();
                    assert_eq!(got.message, pattern(stream_size(j), j as u8 ^ 0x5a), "ping-pong message {j}");
                }
                assert!(rx.recv().await.is_none());
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(90), work).await.expect("no hang");
    all_delivered(&client, &server).await;
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();
}

/// A client and a served connection over a Unix socket pair with tiny send buffers.
#[cfg(unix)]
fn tiny_unix(server: &Server) -> (impl std::future::Future<Output = Client>, tokio::task::JoinHandle<rpc_core::ConnectionError>) {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    for s in [&a, &b] {
        let s = socket2::SockRef::from(s);
        s.set_send_buffer_size(TINY as usize).unwrap();
        s.set_recv_buffer_size(TINY as usize).unwrap();
    }
    let path = std::path::Path::new("pair");
    let serving = tokio::spawn(server.clone().serve_connection(rpc_core::transport::unix::from_stream(b, path)));
    let client = async move { Client::connect(rpc_core::transport::unix::from_stream(a, path), ClientConfig::default()).await.unwrap() };
    (client, serving)
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_with_cancels_and_panics_over_a_unix_socket_with_tiny_buffers() {
    let server = Server::builder().build(TestService::default());
    let (client, serving) = tiny_unix(&server);
    let client = client.await;
    assert_eq!(client.stats().transport, "unix");
    let work = async {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..3 {
            let client = client.clone();
            set.spawn(async move {
                if t == 0 {
                    bursts_from_several_tasks(&client, 1, 6, 100).await;
                } else {
                    cancels_and_panics_inside_bursts(&client, 6, 100).await;
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), work).await.expect("no hang");
    books_balance(&client, &server).await;
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();
}

/// The cancels and panics of the test above from one task on one thread: a call given up on
/// is cancelled in the very step after the early flush that may have written its request,
/// or while its request waits, cut, in the writer's handover.
#[tokio::test(flavor = "current_thread")]
async fn cancels_and_panics_inside_bursts_from_one_task_over_tiny_buffers() {
    let service = TestService::default();
    let server = Server::builder().build(service);
    let (client, serving) = tiny_tcp(&server).await;
    tokio::time::timeout(Duration::from_secs(60), cancels_and_panics_inside_bursts(&client, 10, 150)).await.expect("no hang");
    books_balance(&client, &server).await;
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();
}

/// A graceful shutdown in the middle of bursts: every call the server took is answered whole
/// (its answer is not lost with a handover at the close), the rest fail at once, nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_in_the_middle_of_bursts_loses_no_answer() {
    for attempt in 0..5u8 {
        let service = TestService::default();
        let probe = service.probe.clone();
        let server = Server::builder().build(service);
        let (client, serving) = tiny_tcp(&server).await;
        let mut set = tokio::task::JoinSet::new();
        for t in 0..3usize {
            let client = client.clone();
            set.spawn(async move {
                let (mut ok, mut failed) = (0usize, 0usize);
                for round in 0..20usize {
                    let calls = (0..64usize).map(|i| {
                        let client = client.clone();
                        async move {
                            let sent = body(size_of(i + t), (t + round + i) as u8);
                            match client.call(ECHO, sent.clone(), CallOptions::default()).await {
                                Ok(got) => {
                                    same(&got, &sent, &format!("task {t} round {round} call {i}"));
                                    true
                                }
                                Err(_) => false,
                            }
                        }
                    });
                    for answered in futures::future::join_all(calls).await {
                        if answered { ok += 1 } else { failed += 1 }
                    }
                }
                (ok, failed)
            });
        }
        // Let some bursts go, then shut down while the others are on their way.
        let start = client.stats().sent_bytes;
        eventually("bursts under way", || client.stats().sent_bytes > start + (1 << 20)).await;
        server.shutdown();
        let mut ok = 0;
        let done = async {
            while let Some(r) = set.join_next().await {
                ok += r.unwrap().0;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), done).await.expect("no call hung at the shutdown");
        let why = tokio::time::timeout(Duration::from_secs(20), serving).await.expect("the server's connection ended").unwrap();
        assert_eq!(why, rpc_core::ConnectionError::LocallyClosed, "attempt {attempt}: the connection ended badly");
        assert!(ok > 0, "attempt {attempt}: no call was answered before the shutdown");
        // Every handler that finished had its answer delivered.
        assert_eq!(probe.finished.load(Ordering::SeqCst), ok, "attempt {attempt}: answers lost at the close");
    }
}

/// Bursts from one task on one thread, where tcp writes a burst's first frames early: over the
/// in-memory transport (no non-blocking write) and TLS (the cipher state is the writer's),
/// every frame is the writer's, and every answer arrives whole.
#[tokio::test(flavor = "current_thread")]
async fn transports_without_a_direct_write_leave_every_burst_to_the_writer() {
    let server = Server::builder().build(TestService::default());
    let (a, b) = rpc_core::transport::mem::pair();
    let serving = tokio::spawn(server.clone().serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), bursts_from_several_tasks(&client, 1, 3, 100)).await.expect("no hang");
    let (c, s) = (client.stats(), server.stats());
    assert_eq!((c.transport.as_str(), c.sends_direct), ("mem", 0), "{c:?}");
    assert_eq!(s.sends_direct, 0, "{s:?}");
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();

    #[cfg(feature = "tls")]
    {
        use rpc_core::transport::tcp::TcpAcceptor;
        use rpc_core::transport::tls::TlsAcceptor;
        let ca = tls_support::Ca::new("direct-stress CA");
        let server = Server::builder().build(TestService::default());
        let acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls_support::plain(&ca)).unwrap();
        let addr = acceptor.local_addr().unwrap();
        let handle = server.serve(acceptor);
        let client = Client::connect_tls(addr, "localhost", tls_support::trust(&ca), tls_support::config()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), bursts_from_several_tasks(&client, 1, 3, 100)).await.expect("no hang");
        let (c, s) = (client.stats(), server.stats());
        assert_eq!((c.transport.as_str(), c.sends_direct), ("tls", 0), "{c:?}");
        assert_eq!(s.sends_direct, 0, "{s:?}");
        assert!(c.sends_copy >= 300 && s.sends_copy >= 300, "{c:?} {s:?}");
        handle.shutdown().await;
    }
}

/// A body of `parts` attachments of assorted small sizes (and a message): a frame of many
/// pieces, so that one direct write (64 pieces at most) ends inside a frame even when the
/// socket would take it all.
fn many_parts(parts: usize, seed: u8) -> Body {
    let attachments = (0..parts).map(|j| Payload::from(pattern(1 + (j * 37 + seed as usize) % 300, seed ^ j as u8))).collect();
    Body::new(pattern(100 + seed as usize, seed), attachments)
}

/// Bursts (and lone calls) of frames with many attachments each, over ordinary and tiny
/// socket buffers: the direct path's piece limit cuts frames, whose rest the writer sends.
#[tokio::test(flavor = "current_thread")]
async fn frames_of_many_pieces_cut_by_the_direct_writes_piece_limit_arrive_whole() {
    let server = Server::builder().build(TestService::default());
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = server.serve(acceptor);
    let roomy = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let (tiny, serving) = tiny_tcp(&server).await;
    for client in [&roomy, &tiny] {
        let work = async {
            // One at a time: the lone call's direct path, up to 4 frames.
            for i in 0..40usize {
                let sent = many_parts(i % 50, i as u8);
                let got = client.call(ECHO, sent.clone(), CallOptions::default()).await.unwrap();
                same(&got, &sent, &format!("lone call {i}"));
            }
            // Bursts: the early flush.
            for round in 0..4usize {
                let calls = (0..64usize).map(|i| async move {
                    let sent = many_parts(1 + (i * 7 + round) % 40, (i + round) as u8);
                    let got = client.call(ECHO, sent.clone(), CallOptions::default()).await.unwrap();
                    same(&got, &sent, &format!("round {round} call {i}"));
                });
                futures::future::join_all(calls).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), work).await.expect("no hang");
    }
    let c = roomy.stats();
    assert!(c.sends_direct > 0, "{c:?}");
    tiny.close().await;
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the server's connection ended").unwrap();
    handle.shutdown().await;
}

/// A burst started while a stream is open, right after that stream's message came alone (the
/// last input was a lone call's: the driver's `lone_call` is set, and with two calls in flight
/// the lone call's direct path does not take the burst's first request): the burst's first
/// requests still leave in early writes, as they do after a unary call's lone answer. Before
/// the fix the flag, left set, kept the early flush off for the whole burst: 0 of 128 early.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_after_a_streams_lone_message_still_leaves_early() {
    let server = Server::builder().build(Mixed);
    let acceptor = rpc_core::transport::tcp::TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = server.serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    const BURST: usize = 128;
    let burst = |round: usize| {
        let client = &client;
        async move {
            let calls = (0..BURST).map(|i| async move {
                let sent = body(64 + i, (round + i) as u8);
                let got = client.call(ECHO, sent.clone(), CallOptions::default()).await.unwrap();
                same(&got, &sent, &format!("round {round} call {i}"));
            });
            futures::future::join_all(calls).await;
        }
    };
    // After a unary call's lone answer.
    client.call(ECHO, body(8, 1), CallOptions::default()).await.unwrap();
    let before = client.stats().sends_direct;
    burst(0).await;
    let after_unary = client.stats().sends_direct - before;
    assert!(after_unary >= 96, "{after_unary} of {BURST} requests went early after a unary call: {:?}", client.stats());

    // After a stream's lone message, the stream still open.
    let (mut tx, mut rx) = client.open(PING_PONG, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
    for i in 0..3u8 {
        let m = Body::message(pattern(64, i));
        tx.send(m.clone()).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().message, m.message);
    }
    let before = client.stats().sends_direct;
    burst(1).await;
    let after_stream = client.stats().sends_direct - before;
    assert!(after_stream >= 96, "{after_stream} of {BURST} requests went early after a stream's message: {:?}", client.stats());
    tx.finish();
    assert!(rx.recv().await.is_none());
    handle.shutdown().await;
}
