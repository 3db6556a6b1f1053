//! A client made from an address comes back: the server killed and restarted under load.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Body, Bytes, CallError, CallOptions, Client, ClientConfig, Reconnect, Server, ServerHandle};

async fn serve_on(addr: SocketAddr) -> ServerHandle {
    // The port may linger a moment after the last server on it; bind retries briefly.
    for _ in 0..100 {
        if let Ok(a) = TcpAcceptor::bind(addr).await {
            return Server::builder().build(TestService::default()).serve(a);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not bind {addr} again");
}

async fn free_addr() -> SocketAddr {
    TcpAcceptor::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

fn quick_reconnect() -> ClientConfig {
    ClientConfig {
        reconnect: Reconnect { initial_backoff: Duration::from_millis(20), max_backoff: Duration::from_millis(200), ..Reconnect::default() },
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_comes_back_after_the_server_is_killed_and_restarted_under_load() {
    let addr = free_addr().await;
    let server = serve_on(addr).await;
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    let (ok, lost, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..8u8 {
        let (c, ok, lost, other, stop) = (client.clone(), ok.clone(), lost.clone(), other.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let body = Body::message(Bytes::from(vec![i; 64]));
                // Slow calls, so that some are in flight when the server dies.
                let method = if i % 2 == 0 { ECHO } else { SLEEP_MS };
                let body = if method == SLEEP_MS { sleep_body(50) } else { body };
                let started = Instant::now();
                match c.call(method, body, CallOptions::timeout(Duration::from_secs(5))).await {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(CallError::Connection(_) | CallError::ShuttingDown) => lost.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("unexpected: {e:?}");
                        other.fetch_add(1, Ordering::SeqCst)
                    }
                };
                assert!(started.elapsed() < Duration::from_secs(6), "a call outlived its deadline");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::SeqCst);
    assert!(before > 0);
    // Kill: the accept loop and every connection task go at once (no goaway).
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = serve_on(addr).await;
    // Calls made while it was down waited; after the restart they succeed again.
    let during = ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    let after = ok.load(Ordering::SeqCst);
    eprintln!("ok before {before}, by restart {during}, after {after}; lost in flight {}", lost.load(Ordering::SeqCst));
    assert!(after > during, "calls succeed on the new connection");
    assert!(lost.load(Ordering::SeqCst) >= 1, "the calls in flight at the kill failed with a connection error");
    assert_eq!(other.load(Ordering::SeqCst), 0);
    assert!(client.is_open());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_in_flight_when_the_connection_drops_is_replayed() {
    let addr = free_addr().await;
    let server = serve_on(addr).await;
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    let call = {
        let c = client.clone();
        tokio::spawn(async move {
            c.call(SLEEP_MS, sleep_body(400), CallOptions::timeout(Duration::from_secs(10)).idempotent(true)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(server);
    let server = serve_on(addr).await;
    let r = call.await.unwrap().expect("replayed on the new connection");
    assert_eq!(&r.message[..], b"slept");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_down_calls_wait_or_fail_fast_as_configured() {
    let addr = free_addr().await;
    let server = serve_on(addr).await;
    let mut cfg = quick_reconnect();
    cfg.connect_timeout = Duration::from_millis(500);
    let waiting = Client::connect_tcp(addr, cfg.clone()).await.unwrap();
    cfg.reconnect.wait_for_connection = false;
    let fail_fast = Client::connect_tcp(addr, cfg).await.unwrap();
    drop(server);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let e = fail_fast.call(ECHO, Body::default(), CallOptions::default()).await.unwrap_err();
    assert!(matches!(e, CallError::Unavailable(_)), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(400));

    // No deadline: waits up to connect_timeout, then says why, naming the address.
    let e = waiting.call(ECHO, Body::default(), CallOptions::default()).await.unwrap_err();
    let CallError::Unavailable(why) = &e else { panic!("{e:?}") };
    assert!(why.contains(&addr.to_string()), "{why}");
    // With a deadline: waits up to it.
    let e = waiting.call(ECHO, Body::default(), CallOptions::timeout(Duration::from_millis(200))).await.unwrap_err();
    assert!(matches!(e, CallError::DeadlineExceeded(_)), "{e:?}");

    // Back: both work again.
    let server = serve_on(addr).await;
    let r = waiting.call(ECHO, Body::message(Bytes::from_static(b"back")), CallOptions::timeout(Duration::from_secs(5))).await.unwrap();
    assert_eq!(&r.message[..], b"back");
    for _ in 0..200 {
        if fail_fast.is_open() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fail_fast.call(ECHO, Body::default(), CallOptions::default()).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_over_one_transport_does_not_redial_and_close_stops_a_dialing_one() {
    let addr = free_addr().await;
    let server = serve_on(addr).await;
    let client = Client::connect_tcp(addr, quick_reconnect()).await.unwrap();
    client.close().await;
    let e = client.call(ECHO, Body::default(), CallOptions::timeout(Duration::from_secs(2))).await.unwrap_err();
    assert!(matches!(e, CallError::Unavailable(_)), "{e:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_given_up_on_mid_handshake_closes_its_connection() {
    use tokio::io::AsyncReadExt;
    // A peer that accepts and never says hello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connecting = tokio::spawn(Client::connect_tcp(addr, ClientConfig::default()));
    let (mut peer, _) = listener.accept().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The caller gives up (as a re-dial does when its client is dropped).
    connecting.abort();
    let _ = connecting.await;
    // Our hello, then the end of the stream, well before the 10 s handshake timeout.
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), peer.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the abandoned connection stayed open");
    assert_eq!(&got[..4], b"ZCRP");
}
