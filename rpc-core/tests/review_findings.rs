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
