//! The echo suite through rpc-core's client and server, for each backend: byte-exact from 1 byte
//! to 64 MiB with 1 call in flight, and 64 calls in flight.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use rpc_core::{Body, CallOptions, Client, ClientConfig, Payload, Server};
use transport_uring::{Backend, BufferPool, RecvMode, UringAcceptor, UringConfig, ZcMode};

fn payload_of(data: &Bytes, pool: Option<&BufferPool>) -> Payload {
    match pool {
        // Large payloads from pinned pool buffers, split across several of them.
        Some(pool) if data.len() >= 64 << 10 && data.len() <= pool.buf_size() * 4 => {
            let mut p = Payload::new();
            for chunk in data.chunks(pool.buf_size()) {
                let mut b = pool.take().expect("pool buffer");
                b.fill_from(chunk);
                p.push(b.into_segment());
            }
            p
        }
        _ => {
            let mid = data.len() / 3;
            [data.slice(..mid), data.slice(mid..)].into_iter().collect()
        }
    }
}

async fn suite(backend: Backend, mode: ZcMode) {
    suite_with(UringConfig {
        backend,
        mode,
        ..UringConfig::default()
    })
    .await
}

async fn suite_with(cfg: UringConfig) {
    init_tracing();
    let (backend, mode, cfg_recv) = (cfg.backend, cfg.mode, cfg.recv);
    if !require(backend) {
        return;
    }
    let acceptor = UringAcceptor::bind("127.0.0.1:0", cfg.clone())
        .await
        .unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(Echo).serve(acceptor);
    let transport = transport_uring::connect(addr, cfg).await.unwrap();
    assert_eq!(transport.backend(), backend);
    let client = Client::connect(transport, ClientConfig::default())
        .await
        .unwrap();
    let pool = if backend == Backend::Copy {
        None
    } else {
        Some(BufferPool::new(16 << 20, 1 << 20).unwrap())
    };

    // One call in flight, 1 byte to 64 MiB.
    for (i, size) in [
        1usize,
        100,
        3000,
        4096,
        65_537,
        1 << 20,
        3 << 20,
        16 << 20,
        64 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let data = Bytes::from(pattern(size, i as u8));
        eprintln!("{backend}/{mode}: echo {size} bytes");
        let body = Body::new(
            Bytes::from_static(b"m"),
            vec![payload_of(&data, pool.as_ref())],
        );
        let reply = client
            .call(ECHO, body, CallOptions::default())
            .await
            .unwrap();
        assert_eq!(&reply.message[..], b"m");
        let got = reply.attachments[0].to_bytes();
        assert_eq!(got.len(), size);
        assert!(
            got == data,
            "{backend}: payload of {size} bytes came back different"
        );
    }

    // 64 calls in flight.
    let client = Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64usize {
        let c = client.clone();
        let pool = pool.clone();
        tasks.spawn(async move {
            let size = [1usize, 777, 5000, 65_536, 1 << 20][i % 5] + i;
            let data = Bytes::from(pattern(size, i as u8));
            let payload = match &pool {
                Some(p) if size >= 64 << 10 => {
                    let mut payload = Payload::new();
                    for chunk in data.chunks(p.buf_size()) {
                        let mut b = p.take_wait().await;
                        b.fill_from(chunk);
                        payload.push(b.into_segment());
                    }
                    payload
                }
                _ => Payload::from(data.clone()),
            };
            let reply = c
                .call(
                    ECHO,
                    Body::new(Bytes::copy_from_slice(&i.to_le_bytes()), vec![payload]),
                    CallOptions::default(),
                )
                .await
                .unwrap();
            assert_eq!(&reply.message[..], &i.to_le_bytes());
            assert!(
                reply.attachments[0].to_bytes() == data,
                "call {i} came back different"
            );
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let st = client.stats();
    println!("{backend}/{mode}: {st:?}");
    assert_eq!(st.transport, backend.name());
    if cfg_recv == RecvMode::BufferRing {
        assert!(st.recv_ring_chunks > 0, "small frames come through the ring");
    } else {
        assert_eq!(st.recv_ring_chunks, 0);
    }
    match (backend, mode) {
        (Backend::Copy, _) | (_, ZcMode::NeverZc) => assert_eq!(st.sends_zc, 0),
        (_, ZcMode::AlwaysZc) => {
            assert!(st.sends_zc > 0);
            assert!(st.notifications >= st.sends_zc);
        }
        (_, ZcMode::Adaptive) => {
            assert!(st.sends_zc > 0, "first large sends probe zero-copy");
            assert!(
                st.path_switches >= 1,
                "loopback: ZC_COPIED ⇒ switch to copy"
            );
            assert!(st.sends_copy > 0);
        }
    }
    if let Some(pool) = &pool {
        drop(client);
        eprintln!("client dropped");
        handle.shutdown().await;
        eprintln!("server shut down");
        // Every pool buffer came back once the notifications were in.
        for _ in 0..500 {
            if pool.available() == pool.capacity() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(pool.available(), pool.capacity());
    } else {
        handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_uring_adaptive() {
    tokio::time::timeout(LIMIT * 3, suite(Backend::Uring, ZcMode::Adaptive))
        .await
        .expect("timed out");
}

/// The same suite with the receive side on single-shot io_uring `RECV`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_uring_always_zc_with_uring_recv() {
    let cfg = UringConfig {
        backend: Backend::Uring,
        mode: ZcMode::AlwaysZc,
        recv: RecvMode::Uring,
        ..UringConfig::default()
    };
    tokio::time::timeout(LIMIT * 3, suite_with(cfg))
        .await
        .expect("timed out");
}

/// The same suite with both sides receiving through a multishot receive into a provided-buffer
/// ring (a small one, so that frames straddle buffers and the ring runs dry under 64 calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_uring_adaptive_with_buffer_ring() {
    let cfg = UringConfig {
        backend: Backend::Uring,
        recv: RecvMode::BufferRing,
        recv_ring_buffers: 8,
        recv_ring_buf_size: 4096,
        ..UringConfig::default()
    };
    tokio::time::timeout(LIMIT * 3, suite_with(cfg))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_uring_always_zc() {
    tokio::time::timeout(LIMIT * 3, suite(Backend::Uring, ZcMode::AlwaysZc))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_msgzc_adaptive() {
    tokio::time::timeout(LIMIT * 3, suite(Backend::MsgZc, ZcMode::Adaptive))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_msgzc_always_zc() {
    tokio::time::timeout(LIMIT * 3, suite(Backend::MsgZc, ZcMode::AlwaysZc))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_copy_backend() {
    tokio::time::timeout(LIMIT * 3, suite(Backend::Copy, ZcMode::Adaptive))
        .await
        .expect("timed out");
}
