//! Review findings (issue #8 change): tests that demonstrate defects. Failing ones are ignored.

mod common;

use std::time::Duration;

use common::*;
use rpc_core::transport::mem;
use rpc_core::{Client, ClientConfig, Server};

/// Checked sound: `dial_once` wraps dial + `Conn::establish` in `timeout(connect_timeout)`, and `establish`
/// itself waits for the hello with the same `connect_timeout`: the outer one, started first,
/// always wins, so `establish` is dropped mid-way without closing the machine it spawned
/// (`tokio::spawn(driver::run(..))`). A server whose hello comes after `connect_timeout` but
/// before `handshake_timeout` then gets a live, never-closed connection from a client that
/// reported failure: leaked, kept alive forever by keepalive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_connect_that_timed_out_does_not_leave_its_connection_running() {
    let (a, b) = mem::pair();
    let slot = std::sync::Mutex::new(Some(a));
    let server = Server::builder().build(TestService::default());
    let served = tokio::spawn(async move {
        // A slow server: its hello leaves after the client's connect_timeout.
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.serve_connection(b).await
    });
    let config = ClientConfig { connect_timeout: Duration::from_millis(150), ..ClientConfig::default() };
    let r = Client::connect_with(move || {
        let t = slot.lock().unwrap().take();
        async move { t.ok_or_else(|| std::io::Error::other("one transport only")) }
    }, config).await;
    assert!(r.is_err(), "the connect should time out");
    drop(r);
    // The client gave up: its side must close, so the server's connection ends soon.
    let ended = tokio::time::timeout(Duration::from_secs(3), served).await;
    assert!(ended.is_ok(), "the server's connection is still served 3 s after the client reported the connect failed: leaked");
}

/// The server-wide budget is given back however calls end: answered, failed, panicked, expired
/// on the server, cancelled by the client, and cut off by the client going away mid-call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_budget_returns_to_zero_however_calls_end() {
    use rpc_core::{Body, CallOptions};
    let server = Server::builder().build(TestService::default());
    for round in 0..3 {
        let (a, b) = mem::pair();
        let s = server.clone();
        let served = tokio::spawn(async move { s.serve_connection(b).await });
        let client = Client::connect(a, ClientConfig::default()).await.unwrap();
        let mut calls = Vec::new();
        for i in 0..40u64 {
            let c = client.clone();
            calls.push(tokio::spawn(async move {
                let (method, body, opts) = match i % 5 {
                    0 => (ECHO, Body::message(pattern(10_000, i as u8)), CallOptions::default()),
                    1 => (FAIL, Body::message(pattern(5_000, 1)), CallOptions::default()),
                    2 => (PANIC, Body::message(pattern(5_000, 2)), CallOptions::default()),
                    // Expires on both sides while the handler sleeps.
                    3 => (SLEEP_MS, sleep_body(2_000), CallOptions::timeout(Duration::from_millis(50))),
                    _ => (SLEEP_MS, sleep_body(5_000), CallOptions::default()),
                };
                // The long sleeps are cancelled by dropping the call's future.
                tokio::time::timeout(Duration::from_millis(300), c.call(method, body, opts)).await
            }));
        }
        if round == 2 {
            // The client goes away with calls in flight.
            tokio::time::sleep(Duration::from_millis(20)).await;
            for c in &calls {
                c.abort();
            }
        }
        for c in calls {
            let _ = c.await;
        }
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(10), served).await.expect("the connection ends");
        assert_eq!(server.connections(), 0, "round {round}");
        assert_eq!(server.memory_held(), 0, "round {round}: bytes still charged to the server-wide budget");
    }
}

/// keepalive.rs `on_timeout` overflows (`last_rx + Duration::MAX`) inside the timer task's
/// `shared.step(|g| g.conn.handle_timeout(now))`, the first time any deadline fires. Nothing
/// handles a timer task that died (`Loop`'s docs say the connection is then marked closed; only
/// `run` looks, after the reader and writer ended), so the connection runs on with no timer: the
/// expired call's events, queued before the panic, are never dispatched (its handler is not
/// dropped, no DEADLINE_EXCEEDED goes out), and call deadlines, the write-stall watch and the
/// drain bound are gone for the rest of the connection's life. Here: a raw peer sends one
/// request with a 100 ms deadline to a 1.5 s handler and never cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_keepalive_interval_duration_max_still_expires_calls() {
    expired_call_is_dropped(Server::builder().keepalive(Some(Duration::MAX), Duration::from_secs(20))).await;
}

/// Control for the test above: with the default keepalive interval the same peer sees its
/// handler dropped at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_default_keepalive_expires_calls() {
    expired_call_is_dropped(Server::builder()).await;
}

async fn expired_call_is_dropped(builder: rpc_core::ServerBuilder) {
    use rpc_core::conn::{ConnConfig, Connection, Side};
    use rpc_core::frame::Request;
    use rpc_core::transport::tcp::TcpAcceptor;
    use tokio::io::AsyncWriteExt;
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let service = TestService::default();
    let probe = service.probe.clone();
    let _handle = builder.build(service).serve(acceptor);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut hello = Vec::new();
    Connection::new(Side::Client, ConnConfig::default(), std::time::Instant::now()).take_transmits(&mut hello);
    let mut out: Vec<u8> = hello.iter().flat_map(|t| t.to_vec()).collect();
    let r = Request { id: 1, method: SLEEP_MS, mode: Default::default(), await_commit: false, deadline: Some(Duration::from_millis(100)), metadata: Default::default(), message: sleep_body(1_500).message, attachments: Vec::new() };
    out.extend_from_slice(&r.encode().unwrap().to_vec());
    s.write_all(&out).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    use std::sync::atomic::Ordering;
    assert_eq!(probe.started.load(Ordering::SeqCst), 1);
    assert_eq!(
        probe.dropped_unfinished.load(Ordering::SeqCst),
        1,
        "700 ms after a 100 ms deadline the handler still runs: the server's timer task is dead"
    );
}
