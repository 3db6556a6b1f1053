//! The three send paths over a real socket pair, byte-exact: copy (below the threshold),
//! zero-copy (SENDMSG_ZC), coalesce (more segments than the iovec limit).

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use transport_uring::{Backend, UringConfig, ZcMode};

fn cfg(mode: ZcMode) -> UringConfig {
    UringConfig {
        backend: Backend::Uring,
        mode,
        ..UringConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_zero_copy_and_coalesce_are_byte_exact() {
    init_tracing();
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let (t, peer) = pair(UringConfig {
            max_iov: 17,
            ..cfg(ZcMode::AlwaysZc)
        })
        .await;
        assert_eq!(t.backend(), Backend::Uring);
        let stats = t.stats();
        let reader = tokio::spawn(read_all(peer));
        let (_r, mut s) = t.split();
        let mut expect = Vec::new();

        // Copy: small frames, below the 3 KB threshold.
        let mut batch = Vec::new();
        for i in 0..10u8 {
            let seg = Bytes::from(pattern(100, i));
            let t = transmit(&[i; 16], vec![seg]);
            expect.extend(t.to_vec());
            batch.push(t);
        }
        s.send(&mut batch).await.unwrap();
        assert!(batch.is_empty());

        // Zero-copy: 1 MiB in four segments.
        let segs: Vec<Bytes> = (0..4)
            .map(|i| Bytes::from(pattern(256 << 10, 20 + i)))
            .collect();
        let t = transmit(b"zero-copy-head", segs);
        expect.extend(t.to_vec());
        s.send(&mut vec![t]).await.unwrap();

        // Coalesce: 4096 segments of 256 bytes with an iovec limit of 17.
        let segs: Vec<Bytes> = (0..4096)
            .map(|i| Bytes::from(pattern(256, i as u8)))
            .collect();
        let t = transmit(b"coalesce-head", segs);
        expect.extend(t.to_vec());
        s.send(&mut vec![t]).await.unwrap();

        // A mix: big segments separated by runs of small ones.
        let mut segs = Vec::new();
        for i in 0..40u8 {
            segs.push(Bytes::from(pattern(64 << 10, i)));
            for j in 0..10u8 {
                segs.push(Bytes::from(pattern(7 + j as usize, i ^ j)));
            }
        }
        let t = transmit(b"mixed", segs);
        expect.extend(t.to_vec());
        s.send(&mut vec![t]).await.unwrap();

        s.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ");
        let st = stats.snapshot();
        println!("{st:?}");
        assert_eq!(st.transport, "uring");
        assert_eq!(st.sends_copy, 10);
        assert_eq!(st.sends_zc, 1);
        assert_eq!(st.sends_coalesced, 2);
        assert!(
            st.coalesced_segments >= 4096 - 17,
            "{}",
            st.coalesced_segments
        );
        assert_eq!(
            st.notifications,
            st.sends_zc + st.sends_coalesced + st.short_sends
        );
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_zc_copies_everything() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let (t, peer) = pair(cfg(ZcMode::NeverZc)).await;
        let stats = t.stats();
        let reader = tokio::spawn(read_all(peer));
        let (_r, mut s) = t.split();
        let t = transmit(b"h", vec![Bytes::from(pattern(2 << 20, 3))]);
        let expect = t.to_vec();
        s.send(&mut vec![t]).await.unwrap();
        s.shutdown().await.unwrap();
        assert!(reader.await.unwrap() == expect);
        let st = stats.snapshot();
        assert_eq!((st.sends_copy, st.sends_zc, st.notifications), (1, 0, 0));
    })
    .await
    .expect("timed out");
}

/// One batch mixing paths keeps the batch's order on the wire; every batch, mixed or all by
/// copy, is emptied and left with its allocation (the writer reuses it for the next batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_its_order_across_paths_and_its_allocation() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let (t, peer) = pair(cfg(ZcMode::AlwaysZc)).await;
        let stats = t.stats();
        let reader = tokio::spawn(read_all(peer));
        let (_r, mut s) = t.split();
        let mut expect = Vec::new();
        let mut batch = Vec::with_capacity(64);
        let small = |i: u8| transmit(&[i; 12], vec![Bytes::from(pattern(52, i))]);

        // All by copy: small frames, below the threshold.
        for i in 0..20u8 {
            let t = small(i);
            expect.extend(t.to_vec());
            batch.push(t);
        }
        s.send(&mut batch).await.unwrap();
        assert!(batch.is_empty());
        assert!(batch.capacity() >= 64, "the batch lost its allocation ({})", batch.capacity());

        // Small, zero-copy, small: the zero-copy frame goes between the two copy runs.
        for i in 0..5u8 {
            batch.push(small(100 + i));
        }
        batch.push(transmit(b"big", vec![Bytes::from(pattern(1 << 20, 7))]));
        for i in 0..5u8 {
            batch.push(small(200 + i));
        }
        for t in &batch {
            expect.extend(t.to_vec());
        }
        s.send(&mut batch).await.unwrap();
        assert!(batch.is_empty());
        assert!(batch.capacity() >= 64, "the batch lost its allocation ({})", batch.capacity());

        s.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect, "bytes differ (order across paths)");
        let st = stats.snapshot();
        assert_eq!((st.sends_copy, st.sends_zc), (30, 1));
    })
    .await
    .expect("timed out");
}
