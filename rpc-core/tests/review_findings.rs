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
