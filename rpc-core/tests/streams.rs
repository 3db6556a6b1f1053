//! Streaming calls end to end, over the in-memory pipe and real TCP sockets: server, client
//! and bidirectional streams with attachments, flow control against a slow reader, a slow
//! stream beside other calls, cancellation, deadlines and errors in the middle of a stream.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pattern;
use rpc_core::conn::ConnConfig;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::{mem, Transport};
use rpc_core::{
    Body, BoxFuture, Bytes, CallError, CallMode, CallOptions, CallStream, Client, ClientConfig, Code,
    Payload, Server, ServerRequest, Service, Status,
};

/// Server streaming: the request says how many messages of how many bytes.
const TICKS: u32 = 1;
/// Client streaming: answers the total attachment bytes it received, checking each pattern.
const SUM: u32 = 2;
/// Bidirectional: answers each message with itself.
const ECHO_STREAM: u32 = 3;
/// Server streaming: two messages, then an error.
const FAIL_AFTER_TWO: u32 = 4;
/// Server streaming: a message every 20 ms, for ever.
const FOREVER: u32 = 5;
/// Unary echo.
const ECHO: u32 = 6;
/// Server streaming with `send_all`: the request says how many messages of how many bytes.
const TICKS_ALL: u32 = 7;
/// Client streaming: holds the client's stream without reading it, for ever.
const HOLD: u32 = 8;
/// Server streaming with `send_all_lent` of a log the handler keeps: as `TICKS_ALL`.
const TICKS_LENT: u32 = 9;

#[derive(Default)]
struct Counters {
    /// Messages the server's handlers sent.
    sent: AtomicUsize,
    /// Handlers dropped before they finished.
    dropped: AtomicUsize,
}

struct Streams(Arc<Counters>);

struct Dropped(Arc<Counters>, bool);
impl Drop for Dropped {
    fn drop(&mut self) {
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn status(e: CallError) -> Status {
    Status::new(e.code(), e.to_string())
}

fn ticks_request(count: u32, size: u32) -> Body {
    let mut m = count.to_le_bytes().to_vec();
    m.extend(size.to_le_bytes());
    Body::message(m.into())
}

fn tick(i: u32, size: usize) -> Body {
    Body::new(Bytes::copy_from_slice(&i.to_le_bytes()), vec![Payload::from(pattern(size, i as u8))])
}

impl Service for Streams {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let counters = self.0.clone();
        Box::pin(async move {
            let mut guard = Dropped(counters.clone(), false);
            let stream = req.stream.take();
            let result = match (req.method, stream) {
                (ECHO, None) => Ok(req.body),
                (TICKS, Some(CallStream { mut sender, .. })) => {
                    let m = &req.body.message;
                    let count = u32::from_le_bytes(m[..4].try_into().unwrap());
                    let size = u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize;
                    for i in 0..count {
                        sender.send(tick(i, size)).await.map_err(status)?;
                        counters.sent.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Body::default())
                }
                (TICKS_ALL, Some(CallStream { mut sender, .. })) => {
                    let m = &req.body.message;
                    let count = u32::from_le_bytes(m[..4].try_into().unwrap());
                    let size = u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize;
                    let c = counters.clone();
                    sender
                        .send_all((0..count).map(|i| {
                            c.sent.fetch_add(1, Ordering::SeqCst);
                            Body::new(Bytes::copy_from_slice(&i.to_le_bytes()), if size == 0 { vec![] } else { vec![Payload::from(pattern(size, i as u8))] })
                        }))
                        .await
                        .map_err(status)?;
                    // An empty iterator sends nothing and returns at once.
                    sender.send_all(std::iter::empty()).await.map_err(status)?;
                    Ok(Body::default())
                }
                (TICKS_LENT, Some(CallStream { mut sender, .. })) => {
                    let m = &req.body.message;
                    let count = u32::from_le_bytes(m[..4].try_into().unwrap());
                    let size = u32::from_le_bytes(m[4..8].try_into().unwrap()) as usize;
                    let log: Vec<Body> = (0..count)
                        .map(|i| Body::new(Bytes::copy_from_slice(&i.to_le_bytes()), if size == 0 { vec![] } else { vec![Payload::from(pattern(size, i as u8))] }))
                        .collect();
                    counters.sent.fetch_add(log.len(), Ordering::SeqCst);
                    sender.send_all_lent(&log).await.map_err(status)?;
                    Ok(Body::default())
                }
                (SUM, Some(CallStream { mut receiver, .. })) => {
                    let mut total = 0u64;
                    let mut i = 0u32;
                    while let Some(msg) = receiver.recv().await {
                        let msg = msg.map_err(status)?;
                        let a = msg.attachments[0].to_bytes();
                        if a != pattern(a.len(), i as u8) {
                            return Err(Status::new(Code::INVALID_ARGUMENT, format!("message {i} is corrupt")));
                        }
                        total += a.len() as u64;
                        i += 1;
                    }
                    Ok(Body::message(Bytes::copy_from_slice(&total.to_le_bytes())))
                }
                (ECHO_STREAM, Some(stream)) => {
                    let (mut tx, mut rx) = stream.split();
                    while let Some(msg) = rx.recv().await {
                        tx.send(msg.map_err(status)?).await.map_err(status)?;
                    }
                    Ok(Body::default())
                }
                (FAIL_AFTER_TWO, Some(CallStream { mut sender, .. })) => {
                    sender.send(tick(0, 10)).await.map_err(status)?;
                    sender.send(tick(1, 10)).await.map_err(status)?;
                    Err(Status::new(Code::INVALID_ARGUMENT, "broke after two"))
                }
                (FOREVER, Some(CallStream { mut sender, .. })) => loop {
                    sender.send(tick(0, 1)).await.map_err(status)?;
                    counters.sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
                (HOLD, Some(stream)) => {
                    let _unread = stream;
                    std::future::pending().await
                }
                (m, _) => Err(Status::unimplemented(m)),
            };
            guard.1 = true;
            result
        })
    }
}

/// A client and the server's counters, over `transport`: "mem" or "tcp".
async fn setup(transport: &str, client_conn: ConnConfig) -> (Client, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let server = Server::builder().build(Streams(counters.clone()));
    let config = ClientConfig { conn: client_conn, ..ClientConfig::default() };
    let client = match transport {
        "mem" => {
            let (a, b) = mem::pair();
            tokio::spawn(server.serve_connection(b));
            connect(a, config).await
        }
        _ => {
            let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            std::mem::forget(server.serve(acceptor));
            Client::connect_tcp(addr, config).await.unwrap()
        }
    };
    (client, counters)
}

async fn connect<T: Transport>(t: T, config: ClientConfig) -> Client {
    Client::connect(t, config).await.unwrap()
}

const TRANSPORTS: [&str; 2] = ["mem", "tcp"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_stream_carries_messages_with_attachments() {
    for t in TRANSPORTS {
        let (client, _) = setup(t, ConnConfig::default()).await;

        // Server streaming: 50 messages of 100 KiB (more than a window), in order, intact.
        let call = client.open(TICKS, ticks_request(50, 100_000), CallMode::SERVER_STREAMING, CallOptions::default());
        let (_, mut rx) = call.await.unwrap().split();
        let mut i = 0u32;
        while let Some(msg) = rx.recv().await {
            let msg = msg.unwrap();
            assert_eq!(&msg.message[..], &i.to_le_bytes(), "{t}");
            assert_eq!(msg.attachments[0].to_bytes(), pattern(100_000, i as u8), "{t}: message {i}");
            i += 1;
        }
        assert_eq!(i, 50, "{t}");

        // Client streaming: the one answer comes after the stream ends.
        let (mut tx, mut rx) =
            client.open(SUM, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap().split();
        for i in 0..20u32 {
            tx.send(tick(i, 1000 * i as usize)).await.unwrap();
        }
        tx.finish();
        let total = rx.recv().await.unwrap().unwrap();
        assert_eq!(u64::from_le_bytes(total.message[..].try_into().unwrap()), (0..20).map(|i| 1000 * i).sum::<u64>());
        assert!(rx.recv().await.is_none(), "{t}: the answer is the last message");

        // Bidirectional, one message at a time.
        let (mut tx, mut rx) =
            client.open(ECHO_STREAM, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
        for i in 0..30u32 {
            tx.send(tick(i, 5000)).await.unwrap();
            let back = rx.recv().await.unwrap().unwrap();
            assert_eq!(back.attachments[0].to_bytes(), pattern(5000, i as u8), "{t}");
        }
        drop(tx);
        assert!(rx.recv().await.is_none(), "{t}: dropping the sender ends the request stream cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_sender_waits_for_a_slow_reader_and_other_calls_go_on() {
    for t in TRANSPORTS {
        // The client grants 1 MiB per stream; the server would send 64 MiB in 256 KiB messages.
        let window = 1 << 20;
        let (client, counters) = setup(t, ConnConfig { stream_window: window, ..ConnConfig::default() }).await;
        let size = 256 << 10;
        let (_, mut rx) = client
            .open(TICKS, ticks_request(256, size as u32), CallMode::SERVER_STREAMING, CallOptions::default())
            .await
            .unwrap()
            .split();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Credit bounds what was sent without being read: one window, plus the message that
        // overshot it.
        let sent = counters.sent.load(Ordering::SeqCst);
        assert!(sent <= window as usize / size + 1, "{t}: {sent} messages sent to a reader that read none");
        assert!(sent >= 1, "{t}: the window lets the sender start");

        // The full stream does not hold up a unary call on the same connection.
        let start = Instant::now();
        let r = client.call(ECHO, Body::message("hi".into()), CallOptions::timeout(Duration::from_secs(5))).await;
        assert_eq!(&r.unwrap().message[..], b"hi", "{t}");
        assert!(start.elapsed() < Duration::from_secs(2), "{t}: a unary call waited {:?}", start.elapsed());
        // Nor another stream.
        let (_, mut other) =
            client.open(TICKS, ticks_request(3, 10), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap().split();
        let mut n = 0;
        while let Some(m) = other.recv().await {
            m.unwrap();
            n += 1;
        }
        assert_eq!(n, 3, "{t}");

        // Reading resumes the sender; every message arrives.
        let mut n = 0;
        while let Some(m) = rx.recv().await {
            m.unwrap();
            n += 1;
        }
        assert_eq!(n, 256, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_cancels_the_handler_on_the_server() {
    for t in TRANSPORTS {
        let (client, counters) = setup(t, ConnConfig::default()).await;
        let (_, mut rx) =
            client.open(FOREVER, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap().split();
        rx.recv().await.unwrap().unwrap();
        drop(rx);
        common::eventually("the handler is dropped", || counters.dropped.load(Ordering::SeqCst) == 1).await;
        let sent = counters.sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(counters.sent.load(Ordering::SeqCst), sent, "{t}: the handler stopped sending");
        // The connection is fine.
        client.call(ECHO, Body::default(), CallOptions::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_a_stream_on_both_sides() {
    for t in TRANSPORTS {
        let (client, counters) = setup(t, ConnConfig::default()).await;
        // 25 of the server's 20 ms ticks fit before the deadline: at least 2 arrive even when
        // the machine stalls the handler for a while.
        let opts = CallOptions::timeout(Duration::from_millis(500));
        let (_, mut rx) = client.open(FOREVER, Body::default(), CallMode::SERVER_STREAMING, opts).await.unwrap().split();
        let mut got = 0;
        let err = loop {
            match rx.recv().await {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("{t}: a stream that never ends ended cleanly"),
            }
        };
        // The client's own timer, or the server's answer to the same deadline, whichever is first.
        assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{t}: {err}");
        assert!(got >= 2, "{t}: messages before the deadline");
        assert!(rx.recv().await.is_none(), "{t}: nothing after the end");
        common::eventually("the handler is dropped", || counters.dropped.load(Ordering::SeqCst) == 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_the_middle_of_a_stream_reaches_the_reader_after_the_messages() {
    for t in TRANSPORTS {
        let (client, _) = setup(t, ConnConfig::default()).await;
        let (_, mut rx) = client
            .open(FAIL_AFTER_TWO, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default())
            .await
            .unwrap()
            .split();
        rx.recv().await.unwrap().unwrap();
        rx.recv().await.unwrap().unwrap();
        let e = rx.recv().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{t}");
        assert!(e.to_string().contains("broke after two"), "{t}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_streaming_midway_loses_only_that_call() {
    for t in TRANSPORTS {
        let (client, counters) = setup(t, ConnConfig::default()).await;
        let (mut tx, mut rx) =
            client.open(ECHO_STREAM, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
        tx.send(tick(0, 100)).await.unwrap();
        // The handler runs (it answered); the client walks away without ending its stream.
        rx.recv().await.unwrap().unwrap();
        drop(rx);
        // The sender alone still keeps the call; dropping it too cancels it.
        drop(tx);
        common::eventually("the handler is dropped", || counters.dropped.load(Ordering::SeqCst) == 1).await;
        client.call(ECHO, Body::default(), CallOptions::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_handler_reading_a_stream_the_client_does_not_send_sees_its_end_at_once() {
    // A hand-written client opens a bidirectional method as server-streaming: it sends no
    // stream, so the handler's receiver ends at once instead of waiting for ever.
    let (client, _) = setup("mem", ConnConfig::default()).await;
    let (_, mut rx) = client
        .open(ECHO_STREAM, Body::default(), CallMode::SERVER_STREAMING, CallOptions::timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .split();
    assert!(rx.recv().await.is_none(), "the echo handler saw the end of an empty stream and ended the call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_streams_every_message_in_order_across_credit_windows() {
    for (t, method) in TRANSPORTS.iter().flat_map(|t| [(t, TICKS_ALL), (t, TICKS_LENT)]) {
        // A 64 KiB window: 20,000 small messages (batched on the wire) and 40 of 10 KiB both
        // cross it many times, so send_all (and send_all_lent, copying the small ones from
        // where the handler keeps them) waits for credit in the middle of its runs.
        let (client, counters) = setup(t, ConnConfig { stream_window: 64 << 10, ..ConnConfig::default() }).await;
        for (count, size) in [(20_000u32, 0u32), (40, 10_000)] {
            let before = counters.sent.load(Ordering::SeqCst);
            let call = client.open(method, ticks_request(count, size), CallMode::SERVER_STREAMING, CallOptions::default());
            let (_, mut rx) = call.await.unwrap().split();
            let mut i = 0u32;
            let mut check = |message: &[u8], attachments: &[Payload]| {
                assert_eq!(message, &i.to_le_bytes(), "{t}: message {i} out of order");
                if size > 0 {
                    assert_eq!(attachments[0].to_bytes(), pattern(size as usize, i as u8), "{t}: message {i}");
                }
                i += 1;
            };
            // The lent stream is read lent too (`recv_ref`), the other one owned.
            if method == TICKS_LENT {
                while let Some(msg) = rx.recv_ref().await {
                    let msg = msg.unwrap();
                    check(msg.message, msg.attachments);
                }
            } else {
                while let Some(msg) = rx.recv().await {
                    let msg = msg.unwrap();
                    check(&msg.message, &msg.attachments);
                }
            }
            assert_eq!(i, count, "{t}");
            assert_eq!(counters.sent.load(Ordering::SeqCst) - before, count as usize, "{t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_stops_at_the_first_message_that_cannot_go() {
    // The client goes away after 10 messages: the server's endless send_all fails, and pulls
    // at most one run (256) past what the client's window let through.
    let (client, counters) = setup("tcp", ConnConfig { stream_window: 64 << 10, ..ConnConfig::default() }).await;
    let call = client.open(TICKS_ALL, ticks_request(u32::MAX, 0), CallMode::SERVER_STREAMING, CallOptions::default());
    let (_, mut rx) = call.await.unwrap().split();
    for _ in 0..10 {
        rx.recv().await.unwrap().unwrap();
    }
    drop(rx);
    let started = Instant::now();
    loop {
        let sent = counters.sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if counters.sent.load(Ordering::SeqCst) == sent {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "send_all goes on after the call ended");
    }
    // The handler's send_all failed and the handler ended (an error return counts as dropped
    // here). How many were pulled first depends on timing, not credit: until the cancel reaches
    // the server, messages for the dropped receiver are consumed on arrival and their credit
    // returned (measured 1,536 to 4,352), so no count is asserted beyond the 4 billion asked for.
    common::eventually("the handler is dropped", || counters.dropped.load(Ordering::SeqCst) == 1).await;
    assert!(counters.sent.load(Ordering::SeqCst) < u32::MAX as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_send_queue_sends_what_credit_allows_and_keeps_the_rest() {
    use std::collections::VecDeque;
    use std::future::poll_fn;
    for t in TRANSPORTS {
        let (client, _) = setup(t, ConnConfig::default()).await;
        // Everything goes, in order, to a reader that reads.
        let (mut tx, mut rx) =
            client.open(SUM, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap().split();
        let mut queue: VecDeque<Body> = (0..20u32).map(|i| tick(i, 1000 * i as usize)).collect();
        poll_fn(|cx| tx.poll_send_queue(cx, &mut queue)).await.unwrap();
        assert!(queue.is_empty(), "{t}");
        // An empty queue is ready at once.
        poll_fn(|cx| tx.poll_send_queue(cx, &mut queue)).await.unwrap();
        tx.finish();
        let total = rx.recv().await.unwrap().unwrap();
        assert_eq!(u64::from_le_bytes(total.message[..].try_into().unwrap()), (0..20).map(|i| 1000 * i).sum::<u64>(), "{t}");

        // A reader that never reads: one window's worth goes (4 MiB, overshot by less than
        // one message), then the sender waits with the rest still queued.
        let (mut tx, _rx) =
            client.open(HOLD, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap().split();
        let mut queue: VecDeque<Body> = (0..100u32).map(|i| tick(i, 100_000)).collect();
        let waited = tokio::time::timeout(Duration::from_millis(500), poll_fn(|cx| tx.poll_send_queue(cx, &mut queue))).await;
        assert!(waited.is_err(), "{t}: the queue went although the reader took nothing");
        let sent = 100 - queue.len();
        assert!((41..=43).contains(&sent), "{t}: {sent} messages of 100 kB went on a 4 MiB window");
        assert_eq!(queue.front().map(|b| b.message.clone()), Some(Bytes::copy_from_slice(&(sent as u32).to_le_bytes())), "{t}");
        // After `finish`, it fails and keeps the queue.
        tx.finish();
        let e = poll_fn(|cx| tx.poll_send_queue(cx, &mut queue)).await.unwrap_err();
        assert!(e.to_string().contains("send after the stream was finished"), "{t}: {e}");
        assert_eq!(queue.len(), 100 - sent, "{t}");
    }
}
