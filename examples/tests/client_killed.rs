//! Issue 8: a client killed in the middle of a large upload leaves nothing behind on the
//! server — its connection count goes back to zero, its descriptors and its memory come back.
//!
//! The client is `echo call` in a child process, killed with SIGKILL while it uploads 64 MiB
//! attachments (a model shard or a large object, two in flight). The server runs in this
//! process (its `connections()` is visible) and, in the second test, as `echo serve` in a child
//! process (its descriptors and memory are its own). The tests of this file run one at a time,
//! each in a runtime of its own that is built and shut down while it holds the file's lock:
//! they read this process's memory and descriptors, which another test's runtime (its epoll and
//! eventfd descriptors, its threads) would otherwise change under them.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zcrpc_examples::{connect, procfs, serve, EngineOptions, TransportChoice};

use common::{echo_bin, eventually, spawn_server, HANG};

/// Each upload: 64 MiB, two in flight.
const UPLOAD: &str = "67108864";
/// How long the uploader may take to get going: `echo call` first fills its 64 MiB payload,
/// a second of work in a debug build and several times that on a loaded machine. Only a hang
/// bound: an unloaded run starts within a second or two.
const UPLOAD_START: Duration = Duration::from_secs(60);
/// Memory that may stay behind after the client is gone: allocator caches and runtime
/// threads' arenas, well under one 64 MiB upload (which is what a leaked receive buffer is).
const SETTLE_SLACK_KIB: u64 = 32 << 10;

/// How long the dead client's descriptors may take to come back: the uring engine releases a
/// connection's socket once the kernel has finished with its sends, at the latest at its close
/// deadline, which under load can come after the connection count reached zero; a hang bound
/// on top. A passing run takes a fraction of a second.
fn fds_back_within() -> Duration {
    transport_uring::DEFAULT_CLOSE_DEADLINE + HANG
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs one test alone: the lock is taken before its runtime exists and released after the
/// runtime has shut down, so no other test's runtime opens or closes descriptors meanwhile.
fn alone(test: impl std::future::Future<Output = ()>) {
    let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(test);
    drop(runtime);
}

/// Starts the uploading client; killed (SIGKILL) and reaped on drop.
struct Uploader(Child);

impl Uploader {
    fn start(addr: std::net::SocketAddr, t: TransportChoice) -> Uploader {
        let child = Command::new(echo_bin())
            .args(["call", "--addr", &addr.to_string(), "--transport", common::name(t)])
            .args(["--size", UPLOAD, "--count", "1000", "--concurrency", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Uploader(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn in_process_server_forgets_a_killed_uploader(t: TransportChoice) {
    let (server, addr) = serve("127.0.0.1:0".parse().unwrap(), t, EngineOptions::default()).await.unwrap();
    let server = server.server().clone();
    // One call first, so the runtime's threads and the transport's one-time setup are in the
    // baseline.
    let warm = connect(addr, t, EngineOptions::default()).await.unwrap();
    assert_eq!(warm.add(1, 1).await.unwrap(), 2);
    warm.client().close().await;
    drop(warm);
    assert!(eventually(HANG, || server.connections() == 0).await);
    let base = procfs::read_self().unwrap();
    let fds_before = fd_targets();
    let recv_before = server.stats().recv_bytes;

    let mut client = Uploader::start(addr, t);
    // Mid-upload: more than one attachment's worth in, less than all the calls.
    assert!(
        eventually(UPLOAD_START, || server.stats().recv_bytes - recv_before > 96 << 20).await,
        "the upload did not get going ({} bytes received)",
        server.stats().recv_bytes - recv_before
    );
    assert_eq!(server.connections(), 1);
    let during = procfs::read_self().unwrap();
    client.kill();

    assert!(eventually(HANG, || server.connections() == 0).await, "{} connections still served after the client died", server.connections());
    assert!(server.connection_stats().is_empty());
    let settled = eventually(HANG, || procfs::read_self().unwrap().rss_kib <= base.rss_kib + SETTLE_SLACK_KIB).await;
    let after = procfs::read_self().unwrap();
    eprintln!(
        "killed uploader ({}), in-process server: VmRSS {} KiB before, {} KiB mid-upload, {} KiB after; fds {} → {} → {}",
        common::name(t),
        base.rss_kib,
        during.rss_kib,
        after.rss_kib,
        base.fds,
        during.fds,
        after.fds
    );
    assert!(settled, "memory did not come back: VmRSS {} KiB, {} KiB before the upload", after.rss_kib, base.rss_kib);
    let fds_back = eventually(fds_back_within(), || procfs::read_self().unwrap().fds <= base.fds).await;
    assert!(
        fds_back,
        "descriptors left open: {} now, {} before; new since: {:?}",
        procfs::read_self().unwrap().fds,
        base.fds,
        fd_targets().into_iter().filter(|t| !fds_before.contains(t)).collect::<Vec<_>>()
    );
}

/// What this process's descriptors point at (`/proc/self/fd`), to name the ones left open.
fn fd_targets() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).map(|p| p.display().to_string()).collect()
}

async fn server_process_forgets_a_killed_uploader(t: TransportChoice) {
    let server = spawn_server(t);
    let pid = server.pid();
    let warm = connect(server.addr(), t, EngineOptions::default()).await.unwrap();
    assert_eq!(warm.add(1, 1).await.unwrap(), 2);
    warm.client().close().await;
    drop(warm);
    // The server closes its end once it sees ours closed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = procfs::read(pid).unwrap();

    let mut client = Uploader::start(server.addr(), t);
    assert!(
        eventually(UPLOAD_START, || procfs::read(pid).unwrap().rss_kib > base.rss_kib + (64 << 10)).await,
        "the upload did not get going"
    );
    let during = procfs::read(pid).unwrap();
    client.kill();

    let fds_back = eventually(fds_back_within(), || procfs::read(pid).unwrap().fds <= base.fds).await;
    let rss_back = eventually(HANG, || procfs::read(pid).unwrap().rss_kib <= base.rss_kib + SETTLE_SLACK_KIB).await;
    let after = procfs::read(pid).unwrap();
    eprintln!(
        "killed uploader ({}), server process: VmRSS {} KiB before, {} KiB mid-upload, {} KiB after (VmHWM {} KiB); fds {} → {} → {}",
        common::name(t),
        base.rss_kib,
        during.rss_kib,
        after.rss_kib,
        after.hwm_kib,
        base.fds,
        during.fds,
        after.fds
    );
    assert!(fds_back, "the server kept descriptors: {} open, {} before", after.fds, base.fds);
    assert!(rss_back, "the server's memory did not come back: VmRSS {} KiB, {} KiB before", after.rss_kib, base.rss_kib);
}

#[test]
fn killed_uploader_in_process_server_tcp() {
    alone(in_process_server_forgets_a_killed_uploader(TransportChoice::Tcp));
}

#[cfg(target_os = "linux")]
#[test]
fn killed_uploader_in_process_server_uring() {
    alone(in_process_server_forgets_a_killed_uploader(TransportChoice::Uring));
}

#[test]
fn killed_uploader_server_process_tcp() {
    alone(server_process_forgets_a_killed_uploader(TransportChoice::Tcp));
}

#[cfg(target_os = "linux")]
#[test]
fn killed_uploader_server_process_uring() {
    alone(server_process_forgets_a_killed_uploader(TransportChoice::Uring));
}
