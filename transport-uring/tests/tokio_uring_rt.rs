//! The transport also runs inside `tokio_uring::start` (a current-thread runtime with its own
//! ring): our ring's completions still come through tokio's reactor.

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use transport_uring::{Backend, BufferPool, UringConfig, ZcMode};

#[test]
fn zero_copy_sends_inside_tokio_uring() {
    if !require(Backend::Uring) {
        return;
    }
    tokio_uring::start(async {
        tokio::time::timeout(LIMIT, async {
            let cfg = UringConfig {
                backend: Backend::Uring,
                mode: ZcMode::AlwaysZc,
                // Every one of the 8 sends zero-copy, however many await their notification.
                max_pool_bytes_in_flight: usize::MAX,
                ..Default::default()
            };
            let (t, peer) = pair(cfg).await;
            assert_eq!(t.backend(), Backend::Uring);
            let stats = t.stats();
            let reader = tokio::spawn(read_all(peer));
            let (_r, mut s) = t.split();
            let pool = BufferPool::new(4 << 20, 1 << 20).unwrap();
            let mut expect = Vec::new();
            for i in 0..8u8 {
                let mut b = pool.take_wait().await;
                b.fill_from(&pattern(1 << 20, i));
                let t = rpc_core::Transmit {
                    head: Bytes::copy_from_slice(&[i; 8]),
                    segments: vec![Bytes::from(pattern(1000, i)).into(), b.into_segment()],
                };
                expect.extend(t.to_vec());
                s.send(&mut vec![t]).await.unwrap();
            }
            s.shutdown().await.unwrap();
            assert!(reader.await.unwrap() == expect, "bytes differ");
            let st = stats.snapshot();
            println!("{st:?}");
            assert_eq!(st.sends_zc, 8);
            assert!(st.notifications >= 8);
            assert_eq!(pool.available(), pool.capacity());
        })
        .await
        .expect("timed out");
    });
}
