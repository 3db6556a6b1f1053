//! Streams and held requests against the memory budget, end to end: each of these once hung
//! or leaked (found by a review of the streaming change): a held large request against the
//! budget, credit that could not be read at the budget, a dropped receiver's queued bytes, a
//! whole call dropped ending its stream cleanly, a 64 MiB request to a default server.

use std::time::{Duration, Instant};

use rpc_core::conn::ConnConfig;
use rpc_core::transport::mem;
use rpc_core::{Body, BoxFuture, Bytes, CallMode, CallOptions, Client, ClientConfig, Payload, Server, ServerRequest, Service, Status};

/// Method 1 (unary): answers the request's size. Method 2 (bidi): reads nothing for 300 ms,
/// drops its receiver (messages still queued in it), then keeps the call open for 10 s.
static CLEAN_ENDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const BUDGET: usize = 128 << 10;
struct Svc;

impl Service for Svc {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move {
            match req.method {
                1 => Ok(Body::message(Bytes::copy_from_slice(&req.body.len().to_le_bytes()))),
                2 => {
                    let (tx, rx) = req.stream.take().expect("a streaming call").split();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    // The handler is done reading: wire.md / routes.rs say the bytes of messages
                    // nobody listens to are consumed at once, so the client may go on sending.
                    drop(rx);
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    drop(tx);
                    Ok(Body::default())
                }
                3 => {
                    let (mut tx, mut rx) = req.stream.take().expect("a streaming call").split();
                    while let Some(m) = rx.recv().await {
                        let m = m.map_err(|e| Status::new(e.code(), e.to_string()))?;
                        tx.send(m).await.map_err(|e| Status::new(e.code(), e.to_string()))?;
                    }
                    Ok(Body::default())
                }
                4 => {
                    // An upload: commits what it got when the client ends its stream cleanly.
                    let mut rx = req.stream.take().expect("a streaming call").receiver;
                    let mut n = 0;
                    while let Some(m) = rx.recv().await {
                        m.map_err(|e| Status::new(e.code(), e.to_string()))?;
                        n += 1;
                    }
                    CLEAN_ENDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Body::message(Bytes::copy_from_slice(&(n as u32).to_le_bytes())))
                }
                m => Err(Status::unimplemented(m)),
            }
        })
    }
}

async fn client_for(server: Server) -> Client {
    let (a, b) = mem::pair();
    tokio::spawn(server.serve_connection(b));
    Client::connect(a, ClientConfig::default()).await.unwrap()
}

fn big(n: usize) -> Body {
    Body::new(Bytes::new(), vec![Payload::from(vec![0xabu8; n])])
}

/// A request of AWAIT_COMMIT_FROM (256 KiB) or more is held until its commit, and the commit
/// goes after the request on the wire. A held request counts against the connection's memory
/// budget, and the server's reader stops at the budget: when held requests reach it (one request
/// larger than the budget; with the defaults, several large requests adding up to 64 MiB, or the
/// server-wide budget filled by other connections), the commit is never read, the request never
/// runs, and the call ends only at its deadline (never, without one). A 200 KiB request over the
/// same budget (not held) works: the handler runs and frees the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_for_its_commit_does_not_deadlock_the_budget() {
    let server = Server::builder().connection_memory_budget(BUDGET).build(Svc);
    let client = client_for(server).await;
    let opts = || CallOptions { timeout: Some(Duration::from_secs(3)), ..CallOptions::default() };
    // Control: over the budget but under the commit threshold: served.
    client.call(1, big(200 << 10), opts()).await.expect("a 200 KiB request (not held) is served");
    // Over the commit threshold: held, the reader pauses, the commit is never read.
    let t0 = Instant::now();
    let r = client.call(1, big(300 << 10), opts()).await;
    assert!(r.is_ok(), "a 300 KiB request failed after {:?}: {r:?}", t0.elapsed());
}

/// Messages queued in a StreamReceiver when it is dropped are never reported consumed: their
/// bytes stay held against the budget for the rest of the call, and the credit for them never
/// goes back, so the peer's sender waits for ever although nobody reads (later messages would
/// be consumed at once, but none can come). stream/mod.rs has no Drop for StreamReceiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_receiver_with_queued_messages_gives_their_credit_back() {
    let window = 64 << 10;
    let conn = ConnConfig { stream_window: window, ..ConnConfig::default() };
    let server = Server::builder().conn_config(conn).build(Svc);
    let client = client_for(server.clone()).await;
    let (mut tx, _rx) = client.open(2, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
    let msg = || Body::message(Bytes::from(vec![1u8; 16 << 10]));
    // 8 windows' worth: the first window queues at the server while its handler does not read.
    let sent = tokio::time::timeout(Duration::from_secs(3), async {
        for _ in 0..32 {
            tx.send(msg()).await.unwrap();
        }
    })
    .await;
    let held = server.memory_held();
    assert!(sent.is_ok(), "the client's send hung after the server dropped its receiver (server holds {held} bytes)");
}


/// The server's reader pauses while the connection holds its memory budget, and stream data
/// waiting in handlers' receivers counts against it. An echo handler blocked in `send` (out of
/// credit) does not read its receiver, so its input stays held; with enough such calls the
/// budget is reached and the reader stops, and with it the client's credit frames, which are
/// the only thing that would unblock the handlers: a deadlock, though the client reads every
/// answer (only a little late). Here: 4 bidi echo calls, 16 KiB windows, a 64 KiB budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_data_at_the_budget_does_not_stop_the_credit_that_frees_it() {
    let window = 16 << 10;
    let conn = ConnConfig { stream_window: window, memory_budget: 64 << 10, ..ConnConfig::default() };
    let server = Server::builder().conn_config(conn).build(Svc);
    let (a, b) = mem::pair();
    tokio::spawn(server.clone().serve_connection(b));
    let cconf = ClientConfig { conn: ConnConfig { stream_window: window, ..ConnConfig::default() }, ..ClientConfig::default() };
    let client = Client::connect(a, cconf).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (mut tx, mut rx) = client.open(3, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
        tasks.push(tokio::spawn(async move {
            let sender = async {
                for _ in 0..16 {
                    tx.send(Body::message(Bytes::from(vec![2u8; 8 << 10]))).await.unwrap();
                }
                tx.finish();
            };
            let reader = async {
                // A reader a little late (a busy consumer), then reading everything.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mut n = 0;
                while let Some(m) = rx.recv().await {
                    m.unwrap();
                    n += 1;
                }
                n
            };
            tokio::join!(sender, reader).1
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(5), async {
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    })
    .await;
    let held = server.memory_held();
    assert_eq!(all.ok(), Some(64), "the echo calls did not finish in 5 s (server holds {held} bytes)");
}

/// Dropping a whole CallStream (a task holding it is aborted, a struct holding it goes) is
/// documented as a cancel ("dropping both before the call ended cancels it"). But its fields
/// drop in declaration order: the sender first, which, seeing the receiver still alive, sends
/// a clean stream end (finish); then the receiver, whose guard cancels. Unless the cancel
/// withdraws the stream end before the writer took it, the server sees a clean end first: an
/// upload handler commits a truncated upload it should have discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_whole_call_stream_never_ends_the_request_stream_cleanly() {
    let (a, b) = rpc_core::transport::mem::pair();
    tokio::spawn(Server::builder().build(Svc).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    for _ in 0..300 {
        let mut call = client.open(4, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap();
        call.sender.send(Body::message(Bytes::from_static(b"part 1 of 2"))).await.unwrap();
        // Given up on: the caller drops the call (both ends at once).
        drop(call);
        tokio::task::yield_now().await;
    }
    // A call to flush the connection.
    client.call(1, Body::default(), CallOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let clean = CLEAN_ENDS.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(clean, 0, "{clean} of 300 dropped uploads reached the handler as a clean end");
}

/// The same deadlock with the default configuration: the benches' `call_64m` scenario (a 64 MiB
/// request to a default server) is held awaiting its commit, the connection then holds its
/// whole 64 MiB budget, the reader stops, and the commit behind it is never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_request_to_a_default_server_runs() {
    let client = client_for(Server::builder().build(Svc)).await;
    let opts = CallOptions { timeout: Some(Duration::from_secs(10)), ..CallOptions::default() };
    let t0 = Instant::now();
    let r = client.call(1, big(64 << 20), opts).await;
    assert!(r.is_ok(), "a 64 MiB request failed after {:?}: {r:?}", t0.elapsed());
}
