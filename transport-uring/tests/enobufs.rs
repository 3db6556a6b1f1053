//! A zero-copy send the kernel refuses for want of memory is sent by copy, counted, never an
//! error. Each case runs in a child process whose limits are lowered, so nothing else on the
//! machine is affected:
//!
//! - `MSG_ZEROCOPY` over the optmem limit (`ENOBUFS`): `net.core.optmem_max` set to 0 in a
//!   private network namespace (`unshare -n`; the sysctl is per namespace since 6.9);
//! - io_uring `SENDMSG_ZC` over `RLIMIT_MEMLOCK` (`ENOMEM`): without `CAP_IPC_LOCK` io_uring
//!   charges the pages a zero-copy send pins to the locked-memory limit; the child runs with
//!   the capability dropped (`setpriv`) and a 64 KiB limit (`prlimit`).

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use transport_uring::{Backend, UringConfig, ZcMode};

const CHILD_ENV: &str = "ZCRPC_ENOBUFS_CHILD";

/// Sends five 256 KiB messages zero-copy (forced) and checks every one went by copy instead,
/// byte-exact, with no error.
async fn five_refused_sends(backend: Backend) {
    let cfg = UringConfig {
        backend,
        mode: ZcMode::AlwaysZc,
        ..Default::default()
    };
    let (t, peer) = pair(cfg).await;
    assert_eq!(t.backend(), backend);
    let stats = t.stats();
    let reader = tokio::spawn(read_all(peer));
    let (_r, mut s) = t.split();
    let mut expect = Vec::new();
    for i in 0..5u8 {
        let t = transmit(&[i; 4], vec![Bytes::from(pattern(256 << 10, i))]);
        expect.extend(t.to_vec());
        s.send(&mut vec![t])
            .await
            .expect("a refused zero-copy send must not fail the send");
    }
    s.shutdown().await.unwrap();
    assert!(reader.await.unwrap() == expect, "bytes differ");
    let st = stats.snapshot();
    println!("{st:?}");
    assert_eq!(st.enobufs_fallbacks, 5);
    println!("CHILD-OK");
}

/// In the child: checks the lowered limit is in force (`check`), then runs the sends.
fn in_child(backend: Backend, check: impl FnOnce()) -> bool {
    if std::env::var_os(CHILD_ENV).is_none() {
        return false;
    }
    check();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(five_refused_sends(backend));
    true
}

/// Runs this binary's test `name` under `sh -c "<setup> && exec <test>"`, wrapped in `wrapper`.
/// `None` (after saying why) when the wrapper cannot run here.
fn run_child(name: &str, wrapper: &[&str], setup: &str) -> Option<()> {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "{setup} && exec '{}' --exact {name} --nocapture",
        exe.display()
    );
    let out = match std::process::Command::new(wrapper[0])
        .args(&wrapper[1..])
        .args(["sh", "-c", &script])
        .env(CHILD_ENV, "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP: cannot run {}: {e}", wrapper[0]);
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("child stdout:\n{stdout}\nchild stderr:\n{stderr}");
    if !out.status.success() && stderr.contains("Operation not permitted") && !stdout.contains("running 1 test") {
        eprintln!("SKIP: {} not permitted here", wrapper[0]);
        return None;
    }
    assert!(out.status.success(), "child failed");
    assert!(stdout.contains("CHILD-OK"));
    Some(())
}

#[test]
fn msgzc_enobufs_over_optmem_falls_back_to_copy() {
    let optmem_is_zero = || {
        let optmem = std::fs::read_to_string("/proc/sys/net/core/optmem_max").unwrap();
        assert_eq!(optmem.trim(), "0", "child must run with optmem_max = 0");
    };
    if in_child(Backend::MsgZc, optmem_is_zero) {
        return;
    }
    if !require(Backend::MsgZc) {
        return;
    }
    run_child(
        "msgzc_enobufs_over_optmem_falls_back_to_copy",
        &["unshare", "-n"],
        "ip link set lo up && echo 0 > /proc/sys/net/core/optmem_max",
    );
}

#[test]
fn uring_enomem_over_memlock_falls_back_to_copy() {
    let no_ipc_lock_and_64k = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
        let cap_eff = u64::from_str_radix(cap_eff, 16).unwrap();
        const CAP_IPC_LOCK: u32 = 14;
        assert_eq!(cap_eff & (1 << CAP_IPC_LOCK), 0, "child must run without CAP_IPC_LOCK");
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let memlock = limits.lines().find(|l| l.starts_with("Max locked memory")).unwrap();
        assert!(memlock.split_whitespace().any(|w| w == "65536"), "child must run with a 64 KiB memlock limit: {memlock}");
    };
    if in_child(Backend::Uring, no_ipc_lock_and_64k) {
        return;
    }
    if !require(Backend::Uring) {
        return;
    }
    run_child(
        "uring_enomem_over_memlock_falls_back_to_copy",
        &[
            "prlimit",
            "--memlock=65536:65536",
            "setpriv",
            "--bounding-set",
            "-ipc_lock",
            "--inh-caps",
            "-ipc_lock",
        ],
        "true",
    );
}
