//! rpc-core's direct path over this transport, for each backend: one call at a time, a small
//! request or response is written by the task that queued it (a non-blocking `sendmsg`, also
//! on `MSG_ZEROCOPY` sockets, whose tokio write readiness is not used), larger ones by the
//! writer (zero-copy where the backend does it), and every call comes back byte-exact.

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::{Body, CallOptions, Payload};
use transport_uring::{Backend, UringConfig, ZcMode};

/// An echo server and a client over `backend`, zero-copy forced for what crosses the backend's
/// threshold; `None` (the test skips, saying why) when the backend is missing.
async fn echo_always_zc(backend: Backend) -> Option<(rpc_core::ServerHandle, rpc_core::Client)> {
    init_tracing();
    if !require(backend) {
        return None;
    }
    let cfg = UringConfig {
        backend,
        mode: ZcMode::AlwaysZc,
        ..UringConfig::default()
    };
    Some(echo_over(cfg).await)
}

async fn one_call_at_a_time(backend: Backend) {
    let Some((handle, client)) = echo_always_zc(backend).await else { return };
    // Small calls (below every backend's zero-copy threshold) with a large one now and then,
    // which the writer sends: the small ones after it must still come in order.
    let sizes = [1usize, 100, 1000, 2000, 200_000];
    let calls = 200;
    for i in 0..calls {
        let size = sizes[i % sizes.len()];
        let data = Bytes::from(pattern(size, i as u8));
        let body = Body::new(
            Bytes::copy_from_slice(&(i as u32).to_le_bytes()),
            vec![Payload::from(data.clone())],
        );
        let reply = client
            .call(ECHO, body, CallOptions::default())
            .await
            .unwrap();
        assert_eq!(&reply.message[..], &(i as u32).to_le_bytes());
        assert!(
            reply.attachments[0].to_bytes() == data,
            "{backend}: call {i} of {size} bytes came back different"
        );
    }
    // Every small frame went direct but a few: the first (the writer busy with the hello), and
    // the one after a large call now and then (its answer can arrive before the writer is back
    // from sending it, or from its commit).
    let large = (calls / sizes.len()) as u64;
    let small = calls as u64 - large;
    let c = client.stats();
    println!("{backend}: client {c:?}");
    assert!(c.sends_direct >= small - large - 5, "{backend}: client {c:?}");
    let s = handle.server().stats();
    println!("{backend}: server {s:?}");
    assert!(s.sends_direct >= small - large - 5, "{backend}: server {s:?}");
    if backend != Backend::Copy {
        assert!(c.sends_zc > 0, "{backend}: the large requests went zero-copy: {c:?}");
    }
    drop(client);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path_uring() {
    tokio::time::timeout(LIMIT, one_call_at_a_time(Backend::Uring))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path_msgzc() {
    tokio::time::timeout(LIMIT, one_call_at_a_time(Backend::MsgZc))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path_copy() {
    tokio::time::timeout(LIMIT, one_call_at_a_time(Backend::Copy))
        .await
        .expect("timed out");
}

/// A burst of calls queued by one task (a single-threaded runtime, so the writer cannot run in
/// between): rpc-core's early flush writes the first 32 requests of each 32 at once with this
/// transport's non-blocking `sendmsg`, and the server's answers likewise; a 200 KB request in
/// the burst (zero-copy where the backend does it) stays the writer's, and everything comes
/// back byte-exact and in its call.
async fn bursts(backend: Backend) {
    let Some((handle, client)) = echo_always_zc(backend).await else { return };
    let call = |i: usize, size: usize| {
        let client = &client;
        async move {
            let data = Bytes::from(pattern(size, i as u8));
            let body = Body::new(Bytes::copy_from_slice(&(i as u32).to_le_bytes()), vec![Payload::from(data.clone())]);
            let reply = client.call(ECHO, body, CallOptions::default()).await.unwrap();
            assert_eq!(&reply.message[..], &(i as u32).to_le_bytes());
            assert!(reply.attachments[0].to_bytes() == data, "{backend}: call {i} of {size} bytes came back different");
        }
    };
    call(0, 64).await;
    let before = client.stats().sends_direct;
    for round in 0..3 {
        futures::future::join_all((0..128).map(|i| call(round * 1000 + i, 64))).await;
    }
    let c = client.stats();
    println!("{backend}: client {c:?}");
    assert!(c.sends_direct - before >= 3 * 96, "{backend}: {} of 384 requests went early: {c:?}", c.sends_direct - before);
    let s = handle.server().stats();
    println!("{backend}: server {s:?}");
    assert!(s.sends_direct >= 3 * 32, "{backend}: server {s:?}");
    // A large request among small ones: the burst is the writer's (at most the first small
    // request goes by the lone call's path), the large one zero-copy where the backend does it.
    let before = client.stats().sends_direct;
    futures::future::join_all((0..40).map(|i| call(5000 + i, if i == 3 { 200_000 } else { 64 }))).await;
    let c = client.stats();
    assert!(c.sends_direct <= before + 1, "{backend}: frames queued with a 200 KB request went early: {c:?}");
    if backend != Backend::Copy {
        assert!(c.sends_zc > 0, "{backend}: the large request went zero-copy: {c:?}");
    }
    drop(client);
    handle.shutdown().await;
}

#[tokio::test]
async fn early_flush_uring() {
    tokio::time::timeout(LIMIT, bursts(Backend::Uring)).await.expect("timed out");
}

#[tokio::test]
async fn early_flush_msgzc() {
    tokio::time::timeout(LIMIT, bursts(Backend::MsgZc)).await.expect("timed out");
}

#[tokio::test]
async fn early_flush_copy() {
    tokio::time::timeout(LIMIT, bursts(Backend::Copy)).await.expect("timed out");
}
