//! Soak: mixed calls for a long time through the fault proxy while peers are killed, stalled,
//! delayed, cut mid-frame and reset at random; the server's memory and descriptors must stay
//! flat. Not a test (it runs for minutes); issue 8.
//!
//! ```text
//! cargo run --release --example soak -- [--secs N] [--transport tcp|uring] [--seed S]
//! ```
//!
//! The echo server runs in a child process (this program, re-executed as `soak serve`), so
//! its `VmRSS`, `VmHWM` and descriptor count are its own. In front of it sits a
//! [`FaultProxy`]; every client connects through it: [`CLIENT_SLOTS`] in-process clients
//! making small `add` calls and 64 KiB–8 MiB echoes (each verified byte for byte, reconnecting
//! after a failure), and [`UPLOADERS`] client processes (`soak upload`) streaming large echoes.
//! Every 1–4 s one fault strikes: an uploader killed with SIGKILL, a connection stalled (the
//! proxy stops reading one way) for 1–6 s, a delay on one direction for 2–10 s, a cut after a
//! random number of bytes, or a reset. Every 10 s (every sixth of a run under a minute) a line
//! reports the server's memory and descriptors and the calls so far.
//!
//! At the end the load stops and the program prints a summary. It exits non-zero if an echo
//! came back wrong, if the server died, or if the server grew between the first and the last
//! window (a minute each, a third of the run if shorter): the largest `VmRSS` of the last
//! window may exceed that of the first by [`RSS_TOLERANCE`] (a fraction) plus
//! [`RSS_SLACK_KIB`], and the largest descriptor count by [`FD_SLACK`]. Once every client is
//! gone the server must be back to the descriptors it had before the first connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rpc_core::Payload;
use zcrpc_examples::child::ServerProcess;
use zcrpc_examples::fault_proxy::{Direction, Fault, FaultProxy};
use zcrpc_examples::procfs::{self, ProcReading};
use zcrpc_examples::{connect, pattern, serve, EngineOptions, TransportChoice};


/// In-process clients, each making one call at a time.
const CLIENT_SLOTS: usize = 8;
/// Client processes uploading large echoes (killed at random and restarted).
const UPLOADERS: usize = 2;
/// A call not answered in this long counts as failed and its connection is dropped (a stall
/// lasts at most 6 s and a delay at most 50 ms a chunk, so a live connection answers well
/// within it).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest echo: 8 MiB.
const MAX_ECHO: usize = 8 << 20;
/// How much the server's largest `VmRSS` in the last window may exceed the first window's:
/// this fraction of it plus [`RSS_SLACK_KIB`]. Connections come and go with up to 8 MiB frames
/// and their receive caches, so resident memory swings by tens of MiB from sample to sample;
/// a leak of one frame per fault (hundreds over a run) is far beyond this.
const RSS_TOLERANCE: f64 = 0.5;
const RSS_SLACK_KIB: u64 = 64 << 10;
/// Descriptors the last window's largest count may exceed the first window's by.
const FD_SLACK: u64 = 8;

/// Mixed calls through a fault proxy for a long time while peers are killed, stalled, delayed,
/// cut and reset; fails if an echo comes back wrong, the server dies, or its memory or
/// descriptors grow.
#[derive(Debug, Parser)]
#[command(
    name = "soak",
    after_help = "Prints a line every 10 s (every sixth of a run shorter than a minute: the server's memory \
        and descriptors, the calls so far) and a summary at the end; exits 1 on a wrong echo, a dead server, or growth.\n\n\
        Examples:\n  \
        cargo run --release --example soak -- --secs 600 --transport uring\n  \
        cargo run --release --example soak -- --secs 60 --seed 42     # repeat a run's faults"
)]
struct Cli {
    /// How long the load runs, in seconds (at least 10).
    #[arg(long, value_name = "N", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..))]
    secs: u64,
    /// The transport of the server and every client: `tcp` or `uring` (Linux).
    #[arg(long, value_name = "TRANSPORT", default_value_t = TransportChoice::Tcp)]
    transport: TransportChoice,
    /// Seed of the fault schedule and the call sizes [default: the process id].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// The program re-executed as the server or an uploader (hidden: not for people).
    #[command(subcommand)]
    child: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The echo server, until killed.
    #[command(hide = true)]
    Serve {
        #[arg(long, default_value_t = TransportChoice::Tcp)]
        transport: TransportChoice,
    },
    /// Large echoes, two in flight, until killed or the connection fails.
    #[command(hide = true)]
    Upload {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = TransportChoice::Tcp)]
        transport: TransportChoice,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.child {
        Some(Role::Serve { transport }) => serve_child(transport).await,
        Some(Role::Upload { addr, transport, seed }) => upload_child(addr, transport, seed).await,
        None => soak(cli.secs, cli.transport, cli.seed.unwrap_or(std::process::id() as u64)).await,
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `soak serve --transport T`: the echo server, until killed.
async fn serve_child(t: TransportChoice) -> Result<ExitCode, String> {
    let (_server, local) = serve("127.0.0.1:0".parse().unwrap(), t, EngineOptions::default()).await.map_err(|e| e.to_string())?;
    eprintln!("soak: serving on {local}");
    std::future::pending::<()>().await;
    Ok(ExitCode::SUCCESS)
}

/// `soak upload --addr A --transport T --seed S`: large echoes, two in flight, until killed
/// or the connection fails.
async fn upload_child(addr: SocketAddr, t: TransportChoice, seed: u64) -> Result<ExitCode, String> {
    let client = connect(addr, t, EngineOptions::default()).await.map_err(|e| e.to_string())?;
    let data = pattern(MAX_ECHO, seed);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..2u64 {
        let (client, data) = (client.clone(), data.clone());
        workers.spawn(async move {
            let mut rng = Rng::new(seed ^ (w + 1));
            loop {
                let len = rng.log_size(4 << 20, MAX_ECHO);
                let sent = data.slice(..len);
                match tokio::time::timeout(CALL_TIMEOUT, client.echo(Payload::from(sent.clone()))).await {
                    Ok(Ok(back)) if back.to_bytes() == sent => {}
                    Ok(Ok(_)) => return Err("an upload came back wrong".to_owned()),
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("an upload timed out".to_owned()),
                }
            }
        });
    }
    let r = workers.join_next().await.expect("two workers").map_err(|e| e.to_string())?;
    r.map(|()| ExitCode::SUCCESS)
}

/// xorshift64*: enough randomness for choosing faults, and repeatable from `--seed`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }

    /// A size between `lo` and `hi`, uniform in its logarithm (as many 64 KiB calls as 4 MiB).
    fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let x = a + (b - a) * (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (x.exp() as usize).clamp(lo, hi)
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    wrong: AtomicU64,
    connects_failed: AtomicU64,
    bytes: AtomicU64,
}

/// One in-process client slot: connect through the proxy, call until a failure or the end of
/// its random lifetime, drop the connection, again.
async fn client_slot(proxy: SocketAddr, t: TransportChoice, seed: u64, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    let data = pattern(MAX_ECHO, seed);
    while !stop.load(Ordering::Relaxed) {
        let client = match tokio::time::timeout(Duration::from_secs(10), connect(proxy, t, EngineOptions::default())).await {
            Ok(Ok(c)) => c,
            _ => {
                counts.connects_failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let end_of_life = Instant::now() + rng.millis(2_000, 30_000);
        while Instant::now() < end_of_life && !stop.load(Ordering::Relaxed) {
            let ok = if rng.range(0, 2) == 0 {
                let (a, b) = (rng.next() >> 2, rng.next() >> 2);
                match tokio::time::timeout(CALL_TIMEOUT, client.add(a, b)).await {
                    Ok(Ok(s)) if s == a + b => Ok(()),
                    Ok(Ok(_)) => Err(&counts.wrong),
                    Ok(Err(_)) => Err(&counts.failed),
                    Err(_) => Err(&counts.timed_out),
                }
            } else {
                let len = rng.log_size(64 << 10, MAX_ECHO);
                let off = rng.range(0, (MAX_ECHO - len) as u64 + 1) as usize;
                let sent = data.slice(off..off + len);
                match tokio::time::timeout(CALL_TIMEOUT, client.echo(Payload::from(sent.clone()))).await {
                    Ok(Ok(back)) if back.to_bytes() == sent => {
                        counts.bytes.fetch_add(len as u64, Ordering::Relaxed);
                        Ok(())
                    }
                    Ok(Ok(_)) => Err(&counts.wrong),
                    Ok(Err(_)) => Err(&counts.failed),
                    Err(_) => Err(&counts.timed_out),
                }
            };
            match ok {
                Ok(()) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(counter) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

struct Uploader {
    child: Option<Child>,
    started: u64,
}

impl Uploader {
    fn ensure_running(&mut self, proxy: SocketAddr, t: TransportChoice, rng: &mut Rng) {
        if let Some(c) = &mut self.child {
            if matches!(c.try_wait(), Ok(None)) {
                return;
            }
        }
        let exe = std::env::current_exe().expect("own path");
        let seed = rng.next().to_string();
        let child = Command::new(exe)
            .args(["upload", "--addr", &proxy.to_string(), "--transport", t.name(), "--seed", &seed])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(c) = child {
            self.child = Some(c);
            self.started += 1;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Sample {
    at: Duration,
    server: ProcReading,
}

fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

async fn soak(secs: u64, t: TransportChoice, seed: u64) -> Result<ExitCode, String> {
    let run = Duration::from_secs(secs.max(10));
    // A sample every 10 s, or every sixth of a short run, so that the first and the last window
    // of even a 10 s run hold samples to compare.
    let every = (run / 6).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut server = ServerProcess::spawn(&exe, &["serve", "--transport", t.name()]).map_err(|e| e.to_string())?;
    let pid = server.pid();
    let idle = procfs::read(pid).ok_or("cannot read the server's /proc entry")?;
    let proxy = FaultProxy::start(server.addr()).await.map_err(|e| e.to_string())?;
    println!(
        "soak: {} s over {}, seed {seed}; server pid {pid} on {}, proxy {}; idle server VmRSS {}, {} fds",
        run.as_secs(),
        t.name(),
        server.addr(),
        proxy.local_addr(),
        kib(idle.rss_kib),
        idle.fds
    );

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut slots = Vec::new();
    for i in 0..CLIENT_SLOTS as u64 {
        slots.push(tokio::spawn(client_slot(proxy.local_addr(), t, seed.wrapping_add(i * 7919 + 1), counts.clone(), stop.clone())));
    }
    let mut rng = Rng::new(seed);
    let mut uploaders: Vec<Uploader> = (0..UPLOADERS).map(|_| Uploader { child: None, started: 0 }).collect();
    let faults: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::default();
    let mut samples: Vec<Sample> = Vec::new();
    let start = Instant::now();
    let mut next_report = every;
    let mut next_fault = rng.millis(1_000, 4_000);
    let mut server_died = false;
    while start.elapsed() < run {
        for u in &mut uploaders {
            u.ensure_running(proxy.local_addr(), t, &mut rng);
        }
        let now = start.elapsed();
        if now >= next_fault {
            next_fault = now + rng.millis(1_000, 4_000);
            let open: Vec<_> = proxy.connections().into_iter().filter(|c| !c.is_closed()).collect();
            let dir = if rng.range(0, 2) == 0 { Direction::ClientToServer } else { Direction::ServerToClient };
            let kind = rng.range(0, 5);
            let name = match (kind, open.is_empty()) {
                (0, _) => {
                    let i = rng.range(0, UPLOADERS as u64) as usize;
                    uploaders[i].kill();
                    "uploader killed"
                }
                (_, true) => "none (no open connection)",
                (k, false) => {
                    let conn = open[rng.range(0, open.len() as u64) as usize].clone();
                    match k {
                        1 => {
                            conn.apply(Fault::StopReading(dir));
                            let lift = rng.millis(1_000, 6_000);
                            tokio::spawn(async move {
                                tokio::time::sleep(lift).await;
                                conn.apply(Fault::PassThrough);
                            });
                            "stall"
                        }
                        2 => {
                            conn.apply(Fault::Delay(dir, rng.millis(1, 50)));
                            let lift = rng.millis(2_000, 10_000);
                            tokio::spawn(async move {
                                tokio::time::sleep(lift).await;
                                conn.apply(Fault::PassThrough);
                            });
                            "delay"
                        }
                        3 => {
                            conn.apply(Fault::CutAfter(dir, rng.range(1, 4 << 20)));
                            "cut mid-frame"
                        }
                        _ => {
                            conn.apply(Fault::Reset);
                            "reset"
                        }
                    }
                }
            };
            *faults.lock().unwrap().entry(name).or_default() += 1;
        }
        if now >= next_report {
            next_report += every;
            let Some(r) = procfs::read(pid) else {
                server_died = true;
                println!("[{:>4} s] the server is gone", now.as_secs());
                break;
            };
            samples.push(Sample { at: now, server: r });
            println!(
                "[{:>4} s] server VmRSS {:>10}  VmHWM {:>10}  fds {:>3} | calls ok {:>7} failed {:>5} timed out {:>3} wrong {} | proxy conns open {:>2}, {:.1} GiB echoed",
                now.as_secs(),
                kib(r.rss_kib),
                kib(r.hwm_kib),
                r.fds,
                counts.ok.load(Ordering::Relaxed),
                counts.failed.load(Ordering::Relaxed),
                counts.timed_out.load(Ordering::Relaxed),
                counts.wrong.load(Ordering::Relaxed),
                proxy.open_connections(),
                counts.bytes.load(Ordering::Relaxed) as f64 / (1u64 << 30) as f64,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wind down: stop the load, let every connection go, and see what the server keeps.
    stop.store(true, Ordering::Relaxed);
    proxy.apply_all(Fault::PassThrough);
    for u in &mut uploaders {
        u.kill();
    }
    for s in slots {
        let _ = tokio::time::timeout(CALL_TIMEOUT, s).await;
    }
    for c in proxy.connections() {
        c.close();
    }
    let mut drained = None;
    for _ in 0..100 {
        match procfs::read(pid) {
            Some(r) if r.fds <= idle.fds => {
                drained = Some(r);
                break;
            }
            None => server_died = true,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = procfs::read(pid);
    server.kill();

    // First and last window.
    let window = Duration::from_secs(60).min(run / 3);
    let first: Vec<&Sample> = samples.iter().filter(|s| s.at <= window + Duration::from_secs(1)).collect();
    let last_from = samples.last().map_or(Duration::ZERO, |s| s.at.saturating_sub(window));
    let last: Vec<&Sample> = samples.iter().filter(|s| s.at >= last_from).collect();
    let max = |v: &[&Sample], f: fn(&ProcReading) -> u64| v.iter().map(|s| f(&s.server)).max().unwrap_or(0);
    let (rss_first, rss_last) = (max(&first, |r| r.rss_kib), max(&last, |r| r.rss_kib));
    let (fds_first, fds_last) = (max(&first, |r| r.fds), max(&last, |r| r.fds));
    let rss_allowed = (rss_first as f64 * (1.0 + RSS_TOLERANCE)) as u64 + RSS_SLACK_KIB;
    let wrong = counts.wrong.load(Ordering::Relaxed);

    println!("\n== soak summary ({} s over {}, seed {seed}) ==", start.elapsed().as_secs(), t.name());
    println!(
        "calls: {} ok, {} failed, {} timed out, {} wrong; {} connects failed; {:.1} GiB echoed",
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.timed_out.load(Ordering::Relaxed),
        wrong,
        counts.connects_failed.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed) as f64 / (1u64 << 30) as f64
    );
    let f = faults.lock().unwrap();
    println!(
        "faults: {}; uploader processes started {}",
        f.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        uploaders.iter().map(|u| u.started).sum::<u64>(),
    );
    println!("proxy: {} connections, {} bytes client→server, {} server→client", proxy.connections().len(), proxy.moved().client_to_server, proxy.moved().server_to_client);
    println!(
        "server VmRSS max: first {} s {}, last {} s {} (allowed {}); fds max: first {fds_first}, last {fds_last} (allowed {})",
        window.as_secs(),
        kib(rss_first),
        window.as_secs(),
        kib(rss_last),
        kib(rss_allowed),
        fds_first + FD_SLACK
    );
    match end {
        Some(e) => println!(
            "server at the end, every client gone: VmRSS {} (idle at start {}), VmHWM {}, fds {} (idle at start {})",
            kib(e.rss_kib),
            kib(idle.rss_kib),
            kib(e.hwm_kib),
            e.fds,
            idle.fds
        ),
        None => println!("server at the end: gone"),
    }

    let mut failures = Vec::new();
    if server_died {
        failures.push("the server died".to_owned());
    }
    if wrong > 0 {
        failures.push(format!("{wrong} calls came back wrong"));
    }
    if samples.is_empty() {
        failures.push("no samples (the run was too short)".to_owned());
    }
    if rss_last > rss_allowed {
        failures.push(format!("server memory grew: {} → {}", kib(rss_first), kib(rss_last)));
    }
    if fds_last > fds_first + FD_SLACK {
        failures.push(format!("server descriptors grew: {fds_first} → {fds_last}"));
    }
    if drained.is_none() {
        failures.push(format!("the server kept descriptors after every client left: {:?} (idle {})", end.map(|e| e.fds), idle.fds));
    }
    if failures.is_empty() {
        println!("result: PASS");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("result: FAIL: {}", failures.join("; "));
        Ok(ExitCode::FAILURE)
    }
}
