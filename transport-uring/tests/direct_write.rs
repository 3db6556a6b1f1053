//! rpc-core's direct path over this transport, for each backend: one call at a time, a small
//! request or response is written by the task that queued it (a non-blocking `sendmsg`, also
//! on `MSG_ZEROCOPY` sockets, whose tokio write readiness is not used), larger ones by the
//! writer (zero-copy where the backend does it), and every call comes back byte-exact.

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::{Body, CallOptions, Payload};
use transport_uring::{Backend, UringConfig, ZcMode};

async fn one_call_at_a_time(backend: Backend) {
    init_tracing();
    if !require(backend) {
        return;
    }
    let cfg = UringConfig {
        backend,
        mode: ZcMode::AlwaysZc,
        ..UringConfig::default()
    };
    let (handle, client) = echo_over(cfg).await;
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
