//! A connection's ring (its reaper task and its fd) is released once the last handle and the
//! last operation are gone, whichever goes last and from wherever (issue #8, item 11).
//!
//! One test in this binary on purpose: it counts the process's io_uring descriptors.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use futures::FutureExt;
use rpc_core::transport::{RecvHalf, Transport};
use tokio::io::AsyncWriteExt;
use transport_uring::{Backend, RecvMode, UringConfig};

/// Descriptors of this process that are io_uring instances.
fn uring_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy() == "anon_inode:[io_uring]")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_released_when_last_op_outlives_last_handle() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let cfg = UringConfig {
            backend: Backend::Uring,
            recv: RecvMode::Uring,
            ..Default::default()
        };
        let _ = transport_uring::probe();
        let before = uring_fds();
        for _ in 0..20 {
            let (t, mut peer) = pair(cfg.clone()).await;
            let (mut r, s) = t.split();
            // A receive is submitted and abandoned (its future dropped after one poll); the
            // peer's bytes complete it, and the reaper takes that completion while the receive
            // still belongs to the receive half. Then the halves go, send half first: the
            // receive half drops its ring handle before its operation, so the last slot is
            // freed by `Op::drop`, after the last handle, with no completion left to come.
            assert!(r.recv(BytesMut::with_capacity(64)).now_or_never().is_none());
            peer.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(s);
            drop(r);
        }
        // Each ring goes once its reaper sees it unused; wait for that (bounded by LIMIT).
        while uring_fds() > before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("io_uring descriptors leaked: a ring's reaper never ended");
}
