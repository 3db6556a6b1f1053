//! Loopback sweep: throughput of the send engine per backend and mode, as a ratio against the
//! plain copy path measured in the same run. Prints a table.
//!
//! `cargo run --release -p transport-uring --example loopback_sweep [total_mib]`
//!
//! On loopback every zero-copy send is copied by the kernel (`ZC_COPIED`), so this shows what
//! zero-copy *costs* here and that `adaptive` recovers the copy path's speed; it cannot show the
//! gain a NIC with scatter-gather gives.

use std::time::Instant;

use bytes::Bytes;
use rpc_core::transport::{SendHalf, Transport};
use rpc_core::{Segment, Transmit};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use transport_uring::{Backend, BufferPool, SnapshotPolicy, UringConfig, ZcMode};

async fn run(
    backend: Backend,
    mode: ZcMode,
    msg: usize,
    total: usize,
    pool: Option<&BufferPool>,
    snapshot: SnapshotPolicy,
) -> (f64, rpc_core::StatsSnapshot) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = UringConfig {
        backend,
        mode,
        copy_threshold: Some(0),
        snapshot,
        ..Default::default()
    };
    let (t, peer) = tokio::join!(transport_uring::connect(addr, cfg), listener.accept());
    let (t, mut peer) = (t.unwrap(), peer.unwrap().0);
    let stats = t.stats();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let k = peer.read(&mut buf).await.unwrap();
            if k == 0 {
                break n;
            }
            n += k;
        }
    });
    let (_r, mut s) = t.split();
    let data = Bytes::from(vec![0x5a; msg]);
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let seg: Segment = match pool {
            Some(p) => {
                let mut b = p.take_wait().await;
                b.fill_from(&data);
                b.into_segment()
            }
            None => Segment::Bytes(data.clone()),
        };
        s.send(&mut vec![Transmit {
            head: Bytes::from_static(b"hdr-hdr-"),
            segments: vec![seg],
        }])
        .await
        .unwrap();
        sent += msg;
    }
    s.shutdown().await.unwrap();
    let n = reader.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(n, sent / msg * (msg + 8));
    (n as f64 / secs / (1 << 20) as f64, stats.snapshot())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total_mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let total = total_mib << 20;
    let probe = transport_uring::probe();
    println!("backend probe: {} ({})", probe.backend, probe.reason);
    println!("{total_mib} MiB per row, 2 workers, loopback; ratio = MiB/s against never-zc (copy) of the same size");
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>7} {:>9} {:>7} {:>8}",
        "size", "backend", "mode", "MiB/s", "ratio", "zc/copy", "notif", "copied"
    );
    let pool = BufferPool::new(64 << 20, 1 << 20).ok();
    for msg in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let (base, _) = run(
            Backend::Uring,
            ZcMode::NeverZc,
            msg,
            total,
            None,
            SnapshotPolicy::WriteProtect,
        )
        .await;
        println!(
            "{:>8} {:>8} {:>10} {:>10.0} {:>7.2} {:>9} {:>7} {:>8}",
            msg, "uring", "never-zc", base, 1.0, "-", 0, 0
        );
        for (backend, mode) in [
            (Backend::Uring, ZcMode::AlwaysZc),
            (Backend::Uring, ZcMode::Adaptive),
            (Backend::MsgZc, ZcMode::AlwaysZc),
            (Backend::MsgZc, ZcMode::Adaptive),
        ] {
            let (r, st) = run(
                backend,
                mode,
                msg,
                total,
                None,
                SnapshotPolicy::WriteProtect,
            )
            .await;
            println!(
                "{:>8} {:>8} {:>10} {:>10.0} {:>7.2} {:>9} {:>7} {:>8}",
                msg,
                backend.name(),
                mode.to_string(),
                r,
                r / base,
                format!("{}/{}", st.sends_zc, st.sends_copy),
                st.notifications,
                st.notifications_copied
            );
        }
        if let Some(p) = &pool {
            for (label, policy) in [
                ("pool+wp", SnapshotPolicy::WriteProtect),
                ("pool+own", SnapshotPolicy::Ownership),
            ] {
                let (r, st) = run(
                    Backend::Uring,
                    ZcMode::AlwaysZc,
                    msg,
                    total,
                    Some(p),
                    policy,
                )
                .await;
                println!(
                    "{:>8} {:>8} {:>10} {:>10.0} {:>7.2} {:>9} {:>7} {:>8}",
                    msg,
                    "uring",
                    label,
                    r,
                    r / base,
                    format!("{}/{}", st.sends_zc, st.sends_copy),
                    st.notifications,
                    st.notifications_copied
                );
            }
        }
    }
}
