//! `ENOBUFS` from a zero-copy send (here: `MSG_ZEROCOPY` over the optmem limit) sends that
//! message by copy, counted, never an error. The limit is lowered in a private network namespace
//! (`unshare -n`, `net.core.optmem_max` is per namespace since 6.9), in a child process, so
//! nothing else on the machine is affected.

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use transport_uring::{Backend, UringConfig, ZcMode};

const CHILD_ENV: &str = "ZCRPC_ENOBUFS_CHILD";

async fn child() {
    let optmem = std::fs::read_to_string("/proc/sys/net/core/optmem_max").unwrap();
    assert_eq!(optmem.trim(), "0", "child must run with optmem_max = 0");
    let cfg = UringConfig {
        backend: Backend::MsgZc,
        mode: ZcMode::AlwaysZc,
        ..Default::default()
    };
    let (t, peer) = pair(cfg).await;
    assert_eq!(t.backend(), Backend::MsgZc);
    let stats = t.stats();
    let reader = tokio::spawn(read_all(peer));
    let (_r, mut s) = t.split();
    let mut expect = Vec::new();
    for i in 0..5u8 {
        let t = transmit(&[i; 4], vec![Bytes::from(pattern(256 << 10, i))]);
        expect.extend(t.to_vec());
        s.send(&mut vec![t])
            .await
            .expect("ENOBUFS must not fail the send");
    }
    s.shutdown().await.unwrap();
    assert!(reader.await.unwrap() == expect, "bytes differ");
    let st = stats.snapshot();
    println!("{st:?}");
    assert_eq!(st.enobufs_fallbacks, 5);
    assert_eq!(st.notifications, 0);
    println!("ENOBUFS-CHILD-OK");
}

#[test]
fn enobufs_falls_back_to_copy() {
    if std::env::var_os(CHILD_ENV).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(child());
        return;
    }
    if !require(Backend::MsgZc) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ip link set lo up && echo 0 > /proc/sys/net/core/optmem_max && exec '{}' --exact enobufs_falls_back_to_copy --nocapture",
        exe.display()
    );
    let out = match std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .env(CHILD_ENV, "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP: cannot run unshare: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("child stdout:\n{stdout}\nchild stderr:\n{stderr}");
    if !out.status.success() && stderr.contains("unshare failed") {
        eprintln!("SKIP: no permission for a network namespace");
        return;
    }
    assert!(out.status.success(), "child failed");
    assert!(stdout.contains("ENOBUFS-CHILD-OK"));
}
