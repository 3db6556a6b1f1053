//! Adaptive zero-copy on loopback: every notification says ZC_COPIED, so the connection moves
//! to the copy path (counted) and re-probes; always-zc stays zero-copy with every send notified.

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use transport_uring::{Backend, UringConfig, ZcMode};

async fn run(backend: Backend, mode: ZcMode, sends: u64) -> rpc_core::StatsSnapshot {
    let cfg = UringConfig {
        backend,
        mode,
        reprobe_every: 5,
        ..Default::default()
    };
    let (t, peer) = pair(cfg).await;
    assert_eq!(t.backend(), backend);
    let stats = t.stats();
    let reader = tokio::spawn(read_all(peer));
    let (_r, mut s) = t.split();
    let mut expect = Vec::new();
    for i in 0..sends {
        let t = transmit(
            &i.to_le_bytes(),
            vec![Bytes::from(pattern(64 << 10, i as u8))],
        );
        expect.extend(t.to_vec());
        s.send(&mut vec![t]).await.unwrap();
        // Deterministic: let each notification land before the next decision.
        s.flush_notifications().await;
    }
    s.shutdown().await.unwrap();
    assert!(reader.await.unwrap() == expect, "bytes differ");
    stats.snapshot()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_adaptive_switches_to_copy_on_loopback() {
    if !require(Backend::Uring) {
        return;
    }
    let st = tokio::time::timeout(LIMIT, run(Backend::Uring, ZcMode::Adaptive, 21))
        .await
        .expect("timed out");
    println!("{st:?}");
    assert_eq!(
        st.notifications, st.notifications_copied,
        "loopback always copies"
    );
    assert_eq!(st.path_switches, 1);
    // 1 first zero-copy send, then a probe every 5th of the 20 copy-path decisions.
    assert_eq!(st.sends_zc, 5);
    assert_eq!(st.sends_copy, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_always_zc_notifies_every_send() {
    if !require(Backend::Uring) {
        return;
    }
    let st = tokio::time::timeout(LIMIT, run(Backend::Uring, ZcMode::AlwaysZc, 20))
        .await
        .expect("timed out");
    println!("{st:?}");
    assert_eq!(st.sends_zc, 20);
    assert_eq!(st.sends_copy, 0);
    assert_eq!(st.path_switches, 0);
    assert_eq!(st.notifications, 20 + st.short_sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgzc_adaptive_switches_to_copy_on_loopback() {
    if !require(Backend::MsgZc) {
        return;
    }
    let st = tokio::time::timeout(LIMIT, run(Backend::MsgZc, ZcMode::Adaptive, 21))
        .await
        .expect("timed out");
    println!("{st:?}");
    assert_eq!(st.transport, "msgzc");
    assert!(st.notifications > 0);
    assert_eq!(
        st.notifications, st.notifications_copied,
        "loopback always copies"
    );
    assert_eq!(st.path_switches, 1);
    assert_eq!(st.sends_zc, 5);
    assert_eq!(st.sends_copy, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgzc_always_zc_notifies_every_send() {
    if !require(Backend::MsgZc) {
        return;
    }
    let st = tokio::time::timeout(LIMIT, run(Backend::MsgZc, ZcMode::AlwaysZc, 20))
        .await
        .expect("timed out");
    println!("{st:?}");
    assert_eq!(st.sends_zc, 20);
    assert_eq!(st.notifications, 20 + st.short_sends);
}
