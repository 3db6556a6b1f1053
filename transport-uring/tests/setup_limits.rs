//! Set-up refused for want of locked memory: the connection falls back, says so, and keeps
//! nothing of what it could not set up. Each case runs in a child process without
//! `CAP_IPC_LOCK` (`setpriv`) and with a low `RLIMIT_MEMLOCK` (`prlimit`), to which io_uring
//! then charges the memory it pins (rings, provided-buffer rings), so nothing else on the
//! machine is affected.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use rpc_core::transport::{RecvHalf, Transport};
use tokio::io::AsyncWriteExt;
use transport_uring::{Backend, RecvMode, UringConfig};

const CHILD_ENV: &str = "ZCRPC_SETUP_LIMITS_CHILD";

/// Whether this process runs without `CAP_IPC_LOCK` and with a memlock limit of `bytes`.
fn limited_to(bytes: u64) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    let cap_eff = u64::from_str_radix(cap_eff, 16).unwrap();
    const CAP_IPC_LOCK: u32 = 14;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let memlock = limits.lines().find(|l| l.starts_with("Max locked memory")).unwrap();
    cap_eff & (1 << CAP_IPC_LOCK) == 0 && memlock.split_whitespace().any(|w| w == bytes.to_string())
}

/// The process's mapped address space, in bytes (`VmSize`).
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmSize:")).unwrap();
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
}

/// A test that checks what happens under a small locked-memory limit: in the test process it
/// runs itself again as a child without `CAP_IPC_LOCK` and with [`SMALL_MEMLOCK`] bytes of
/// locked memory (when every one of `backends` is here); in that child it runs `body` on a
/// runtime of its own, on the test's thread alone: a second thread's first allocation would
/// map a malloc arena of its own (64 MiB of address space), which the address-space checks
/// would count.
fn in_limited_child<F: std::future::Future<Output = ()>>(name: &str, backends: &[Backend], body: impl FnOnce() -> F) {
    if std::env::var_os(CHILD_ENV).is_none() {
        if backends.iter().all(|&b| require(b)) {
            run_child(name, SMALL_MEMLOCK);
        }
        return;
    }
    assert!(limited_to(SMALL_MEMLOCK), "child must run without CAP_IPC_LOCK and with a {SMALL_MEMLOCK}-byte memlock limit");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        init_tracing();
        body().await;
    });
}

/// Runs this binary's test `name` in a child without `CAP_IPC_LOCK` and with `memlock` bytes
/// of locked memory. `None` (after saying why) when the wrappers cannot run here, or the child
/// found the limit too tight for what it checks (twice: io_uring charges locked memory to the
/// user, not the process, and a ring closed a moment ago is uncharged a little later).
fn run_child(name: &str, memlock: u64) -> Option<()> {
    // One child at a time: their charges add up in the one user's count.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..2 {
        match run_child_once(name, memlock) {
            Some(true) => return Some(()),
            Some(false) if attempt == 0 => std::thread::sleep(Duration::from_secs(1)),
            _ => break,
        }
    }
    None
}

/// [`run_child`] once: whether the child checked (false: it skipped, saying why).
fn run_child_once(name: &str, memlock: u64) -> Option<bool> {
    let exe = std::env::current_exe().unwrap();
    let limit = format!("--memlock={memlock}:{memlock}");
    let out = match std::process::Command::new("prlimit")
        .args([&limit[..], "setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock"])
        .arg(&exe)
        .args(["--exact", name, "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIP: cannot run prlimit: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("child stdout:\n{stdout}\nchild stderr:\n{stderr}");
    if !out.status.success() && stderr.contains("Operation not permitted") && !stdout.contains("running 1 test") {
        eprintln!("SKIP: prlimit/setpriv not permitted here");
        return None;
    }
    assert!(out.status.success(), "child failed");
    if stdout.contains("CHILD-SKIP") {
        return Some(false);
    }
    assert!(stdout.contains("CHILD-OK"));
    Some(true)
}

/// Locked memory for the child: enough for a few connection rings (a few pages each), far
/// too little for a provided-buffer ring of 32768 entries (512 KiB of entries to pin).
const SMALL_MEMLOCK: u64 = 128 << 10;

/// A connection asked to receive through a buffer ring that io_uring refuses (`ENOMEM`:
/// its entries are charged to `RLIMIT_MEMLOCK`) receives with single-shot `RECV` instead, and
/// the ring's memory, which the kernel never took, is unmapped at once. Before the fix, the
/// refused ring was "unregistered" on drop, which failed (`ENOENT`), and its mappings (here
/// 128 MiB of buffers a connection) were leaked with a warning saying so.
#[test]
fn a_buffer_ring_refused_for_memlock_falls_back_and_keeps_no_memory() {
    in_limited_child("a_buffer_ring_refused_for_memlock_falls_back_and_keeps_no_memory", &[Backend::Uring], || async {
        // 32768 buffers of 4 KiB: 128 MiB of (unpopulated) buffers and 512 KiB of entries.
        let cfg = UringConfig {
            recv: RecvMode::BufferRing,
            recv_ring_buffers: 32768,
            recv_ring_buf_size: 4096,
            ..Default::default()
        };
        // One connection first, so that what every connection maps anyway is counted before.
        let (first, _first_peer) = pair(cfg.clone()).await;
        if first.backend() != Backend::Uring {
            println!("CHILD-SKIP: the connection's ring itself was refused under this limit ({})", first.backend());
            return;
        }
        let before = vm_size();
        let mut held = Vec::new();
        for i in 0..4u8 {
            let (t, mut peer) = pair(cfg.clone()).await;
            assert_eq!(t.backend(), Backend::Uring, "connection {i}: its ring was refused");
            let (mut r, s) = t.split();
            assert_eq!(r.mode(), RecvMode::Uring, "connection {i}: the refused buffer ring falls back to single-shot RECV");
            peer.write_all(&[i; 100]).await.unwrap();
            let mut got = Vec::new();
            while got.len() < 100 {
                let (n, buf) = tokio::time::timeout(Duration::from_secs(20), r.recv(BytesMut::with_capacity(256)))
                    .await
                    .expect("receive timed out");
                assert!(n.unwrap() > 0, "connection {i}: early end of stream");
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, vec![i; 100]);
            held.push((r, s, peer));
        }
        let grown = vm_size().saturating_sub(before);
        println!("address space grew by {grown} bytes over 4 connections");
        // Each leak would be 128 MiB; what a connection maps when nothing leaks is well under 16.
        assert!(grown < 64 << 20, "refused buffer rings kept {grown} bytes mapped");
        drop(held);
        println!("CHILD-OK");
    });
}

/// Connections opened until io_uring refuses one its ring (each ring's memory is charged to
/// `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK`): that connection, and those after it, run on the
/// `MSG_ZEROCOPY` backend, say so in their stats, and carry bytes; the earlier ones go on on
/// io_uring.
#[test]
fn connections_past_the_memlock_limit_for_rings_fall_back_to_msg_zerocopy() {
    in_limited_child("connections_past_the_memlock_limit_for_rings_fall_back_to_msg_zerocopy", &[Backend::Uring, Backend::MsgZc], || async {
        let mut held = Vec::new();
        let mut fell_back = None;
        for i in 0..200 {
            let (t, peer) = pair(UringConfig::default()).await;
            let backend = t.backend();
            held.push((t, peer));
            if backend != Backend::Uring {
                fell_back = Some((i, backend));
                break;
            }
        }
        let Some((i, backend)) = fell_back else {
            println!("CHILD-SKIP: 200 rings fit in {SMALL_MEMLOCK} bytes of locked memory here");
            return;
        };
        println!("connection {i} fell back to {backend}");
        assert_eq!(backend, Backend::MsgZc);
        if i == 0 {
            println!("CHILD-SKIP: the first connection's ring was refused: nothing to compare with");
            return;
        }
        // The first (io_uring) and the last (fallen back) both carry a message.
        let last = held.pop().unwrap();
        let first = held.swap_remove(0);
        for (k, (t, peer), name) in [(i, last, "msgzc"), (0, first, "uring")] {
            let stats = t.stats();
            assert_eq!(stats.snapshot().transport, name, "connection {k}: the stats name the backend in use");
            let reader = tokio::spawn(read_all(peer));
            let (_r, mut s) = t.split();
            let msg = transmit(b"head", vec![bytes::Bytes::from(pattern(64 << 10, 3))]);
            let expect = msg.to_vec();
            rpc_core::transport::SendHalf::send(&mut s, &mut vec![msg]).await.unwrap();
            rpc_core::transport::SendHalf::shutdown(&mut s).await.unwrap();
            drop((_r, s));
            let got = tokio::time::timeout(Duration::from_secs(20), reader).await.unwrap().unwrap();
            assert!(got == expect, "connection {k}: bytes differ");
            println!("connection {k}: {}", stats.snapshot().transport);
        }
        println!("CHILD-OK");
    });
}
