//! io_uring refused (simulated with `ZCRPC_DISABLE_URING`, as `kernel.io_uring_disabled=2`
//! would): the probe says why, connections fall back to MSG_ZEROCOPY, calls still succeed and
//! the stats name the backend used. This binary sets the variable before the first probe.

mod common;

use std::sync::Once;

use bytes::Bytes;
use common::*;
use rpc_core::{Body, CallOptions, Client, ClientConfig, Payload, Server};
use transport_uring::{Backend, BufferPool, UringAcceptor, UringConfig, ZcMode};

fn disable_uring() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(transport_uring::DISABLE_URING_ENV, "1"));
}

#[test]
fn probe_reports_the_refusal() {
    disable_uring();
    let p = transport_uring::probe();
    println!("{p:?}");
    assert!(!p.io_uring);
    assert_eq!(p.backend, Backend::MsgZc, "MSG_ZEROCOPY is available here");
    assert!(p.reason.contains("io_uring refused"), "{}", p.reason);
}

async fn echo_with(asked: Backend, expect: Backend) {
    let cfg = UringConfig {
        backend: asked,
        mode: ZcMode::AlwaysZc,
        ..Default::default()
    };
    let acceptor = UringAcceptor::bind("127.0.0.1:0", cfg.clone())
        .await
        .unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(Echo).serve(acceptor);
    let t = transport_uring::connect(addr, cfg).await.unwrap();
    assert_eq!(t.backend(), expect);
    let client = Client::connect(t, ClientConfig::default()).await.unwrap();
    let pool = BufferPool::new(4 << 20, 1 << 20).unwrap();
    assert!(
        !pool.is_registered(),
        "no io_uring, no fixed-buffer registration"
    );
    for (i, size) in [1usize, 5000, 1 << 20, 5 << 20].into_iter().enumerate() {
        let data = Bytes::from(pattern(size, i as u8));
        let payload = if size == 1 << 20 {
            let mut b = pool.take().unwrap();
            b.fill_from(&data);
            Payload::from(b)
        } else {
            Payload::from(data.clone())
        };
        let r = client
            .call(
                1,
                Body::new(Bytes::from_static(b"x"), vec![payload]),
                CallOptions::default(),
            )
            .await
            .unwrap();
        assert!(r.attachments[0].to_bytes() == data);
    }
    let st = client.stats();
    println!("{asked} -> {expect}: {st:?}");
    assert_eq!(st.transport, expect.name());
    if expect == Backend::MsgZc {
        assert!(st.sends_zc > 0 && st.notifications > 0);
    }
    drop(client);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_and_uring_fall_back_to_msgzc() {
    disable_uring();
    tokio::time::timeout(LIMIT, async {
        echo_with(Backend::Auto, Backend::MsgZc).await;
        echo_with(Backend::Uring, Backend::MsgZc).await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_backend_is_plain_tcp() {
    disable_uring();
    tokio::time::timeout(LIMIT, echo_with(Backend::Copy, Backend::Copy))
        .await
        .expect("timed out");
}
