//! Issue 8: a peer that stops reading. The client keeps sending echo requests but never reads
//! the answers (the fault proxy stops reading from the server), so the server's answers can
//! only pile up. The server must stop reading at its per-connection memory budget instead of
//! holding every answer, and end the connection once its writes have made no progress for the
//! write-stall timeout.
//!
//! The server runs with a budget of [`BUDGET_KIB`] and a write-stall timeout of [`WRITE_STALL`]
//! (`echo serve --memory-budget --write-stall-ms`; the defaults, 64 MiB and 30 s, behave the same
//! at their scale).

mod common;

use std::time::{Duration, Instant};

use rpc_core::Payload;
use zcrpc_examples::fault_proxy::{Direction, Fault, FaultProxy};
use zcrpc_examples::{connect, pattern, procfs, EngineOptions, TransportChoice};

use common::{spawn_server_with, HANG};

/// Requests the stalled client sends: 128 × 1 MiB, eight times what the budget lets in.
const REQUESTS: usize = 128;
const SIZE: usize = 1 << 20;
/// The per-connection budget the server holds to (requests received and not answered plus
/// answers produced and not written), and what the frame being received, the receive buffers
/// kept for reuse and the allocator add.
const BUDGET_KIB: u64 = 16 << 10;
const SLACK_KIB: u64 = 32 << 10;
/// The write-stall timeout.
const WRITE_STALL: Duration = Duration::from_secs(2);

struct Stalled {
    server: zcrpc_examples::child::ServerProcess,
    proxy: FaultProxy,
    base_rss_kib: u64,
    /// The server's open fds before the client connected.
    idle_fds: u64,
    calls: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `echo serve`, a client through the proxy with its answers stalled, and the
/// requests; returns once the server has stopped taking them in (or took them all).
async fn stall(t: TransportChoice) -> Stalled {
    let budget = (BUDGET_KIB << 10).to_string();
    let stall_ms = WRITE_STALL.as_millis().to_string();
    let server = spawn_server_with(t, &["--memory-budget", &budget, "--write-stall-ms", &stall_ms]);
    let idle_fds = procfs::read(server.pid()).unwrap().fds;
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let client = connect(proxy.local_addr(), t, EngineOptions::default()).await.unwrap();
    assert_eq!(client.add(1, 1).await.unwrap(), 2);
    let base_rss_kib = procfs::read(server.pid()).unwrap().rss_kib;
    let conn = proxy.connection(0).await;
    conn.apply(Fault::StopReading(Direction::ServerToClient));
    let data = pattern(SIZE, 4);
    let calls = (0..REQUESTS)
        .map(|_| {
            let (client, data) = (client.clone(), data.clone());
            tokio::spawn(async move {
                let _ = client.echo(Payload::from(data)).await;
            })
        })
        .collect();
    // Until the bytes toward the server stop moving for a second (or all went through).
    let start = Instant::now();
    let mut last = u64::MAX;
    loop {
        let now = conn.moved().client_to_server;
        if now == last && now > 0 {
            break;
        }
        assert!(start.elapsed() < HANG * 3, "the upload never settled");
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Stalled { server, proxy, base_rss_kib, idle_fds, calls }
}

async fn memory_stays_within_the_budget(t: TransportChoice) {
    let s = stall(t).await;
    let r = procfs::read(s.server.pid()).unwrap();
    let taken = s.proxy.connection(0).await.moved().client_to_server;
    eprintln!(
        "stalled peer ({}): the server took {} MiB of {} MiB of requests; VmRSS {} KiB (was {} KiB), VmHWM {} KiB",
        common::name(t),
        taken >> 20,
        (REQUESTS * SIZE) >> 20,
        r.rss_kib,
        s.base_rss_kib,
        r.hwm_kib
    );
    assert!(
        r.rss_kib <= s.base_rss_kib + BUDGET_KIB + SLACK_KIB,
        "the server holds {} KiB for a peer that does not read (budget {BUDGET_KIB} KiB)",
        r.rss_kib - s.base_rss_kib
    );
    for c in s.calls {
        c.abort();
    }
}

async fn the_connection_ends_within_the_write_stall_timeout(t: TransportChoice) {
    let s = stall(t).await;
    let stalled_at = Instant::now();
    // The server's side of the connection is gone once its fds are back to their idle count
    // (the proxy, which stopped reading from the server, cannot tell).
    // The uring engine then holds the socket until its close deadline (10 s by default) lets it
    // reset the connection, which frees the pages a zero-copy send pinned.
    let close_deadline = if t == TransportChoice::Tcp { Duration::ZERO } else { transport_uring::DEFAULT_CLOSE_DEADLINE };
    let limit = WRITE_STALL + close_deadline + Duration::from_secs(10);
    let pid = s.server.pid();
    let ended = common::eventually(limit, || procfs::read(pid).is_some_and(|r| r.fds <= s.idle_fds)).await;
    eprintln!("stalled peer ({}): connection ended: {ended} after {:?}", common::name(t), stalled_at.elapsed());
    assert!(ended, "the server kept a connection whose writes made no progress for {limit:?}");
    for c in s.calls {
        c.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_memory_tcp() {
    memory_stays_within_the_budget(TransportChoice::Tcp).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_memory_uring() {
    memory_stays_within_the_budget(TransportChoice::Uring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_write_stall_tcp() {
    the_connection_ends_within_the_write_stall_timeout(TransportChoice::Tcp).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_write_stall_uring() {
    the_connection_ends_within_the_write_stall_timeout(TransportChoice::Uring).await;
}
