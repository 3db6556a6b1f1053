//! Every attachment handed to the application starts at a 64-byte-aligned address
//! (`docs/wire.md`, "Padding") over the uring transport, in each receive mode: readiness +
//! `read`, single-shot `IORING_OP_RECV`, and the provided-buffer ring — frames decoded in place
//! in ring buffers (16 KiB, and 1 KiB so that most frames are cut by a buffer's edge), frames
//! over a ring buffer received into a buffer of their own — and over the `MSG_ZEROCOPY` backend.
//! Sizes, counts and pipelining as in `rpc-core/tests/aligned_attachments.rs`.

mod common;

use common::*;
use rpc_core::transport::{Chunk, RecvHalf, Transport};
use rpc_core::{Client, ClientConfig, Server};
use tokio::io::AsyncWriteExt;
use transport_uring::{Backend, RecvMode, UringAcceptor, UringConfig};

#[path = "../../rpc-core/tests/shared/aligned.rs"]
mod aligned;

use aligned::*;

async fn exercise(cfg: UringConfig, what: &str) {
    let acceptor = UringAcceptor::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let service = AlignCheck::default();
    let handle = Server::builder().build(service.clone()).serve(acceptor);
    let client = Client::connect(transport_uring::connect(addr, cfg).await.unwrap(), ClientConfig::default()).await.unwrap();
    let st = aligned::exercise(&client, &service, what).await;
    if what.starts_with("ring") {
        assert!(st.recv_ring_chunks > 0, "{what}: the ring was not used: {st:?}");
    }
    drop(client);
    handle.shutdown().await;
}

fn uring(recv: RecvMode) -> UringConfig {
    UringConfig { backend: Backend::Uring, recv, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_read() {
    if require(Backend::Uring) {
        tokio::time::timeout(LIMIT, exercise(uring(RecvMode::Read), "read")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_single_shot_recv() {
    if require(Backend::Uring) {
        tokio::time::timeout(LIMIT, exercise(uring(RecvMode::Uring), "single-shot recv")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_buffer_ring() {
    if require(Backend::Uring) {
        tokio::time::timeout(LIMIT, exercise(uring(RecvMode::BufferRing), "ring of 16 KiB buffers")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_buffer_ring_of_small_buffers() {
    if require(Backend::Uring) {
        let cfg = UringConfig { recv_ring_buf_size: 1024, recv_ring_buffers: 256, ..uring(RecvMode::BufferRing) };
        tokio::time::timeout(LIMIT, exercise(cfg, "ring of 1 KiB buffers")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_zerocopy_backend() {
    if require(Backend::MsgZc) {
        let cfg = UringConfig { backend: Backend::MsgZc, ..Default::default() };
        tokio::time::timeout(LIMIT, exercise(cfg, "msgzc")).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_buffers_start_64_byte_aligned() {
    if !require(Backend::Uring) {
        return;
    }
    let cfg = UringConfig { recv_ring_buf_size: 192, recv_ring_buffers: 16, ..uring(RecvMode::BufferRing) };
    let (t, mut peer) = pair(cfg).await;
    let (mut r, _s) = t.split();
    peer.write_all(&pattern(1500, 1)).await.unwrap();
    let mut got = Vec::new();
    let mut n = 0;
    while n < 1500 {
        let Chunk::Data(c) = r.recv_chunk().await.unwrap() else { panic!("expected data") };
        assert!(r.ring_contains(c.as_ptr()));
        assert_eq!(c.as_ptr() as usize % 64, 0, "a ring buffer at {:p}", c.as_ptr());
        n += c.len();
        got.push(c);
    }
}
