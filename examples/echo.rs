//! Echo server and load client, reused by checks and benchmarks.
//!
//! ```text
//! cargo run --release --example echo -- serve --addr 127.0.0.1:PORT|unix:PATH [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--max-connections N] [--memory-budget BYTES] [--write-stall-ms MS] [--max-call-ms MS] [--max-age-ms MS]
//! cargo run --release --example echo -- call --addr 127.0.0.1:PORT|unix:PATH --size BYTES --count N \
//!     [--concurrency C] [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--stats-json]
//! # TLS 1.3 (tcp, uring and msgzc transports): --tls-cert PEM --tls-key PEM [--tls-ca PEM] on serve; --tls-ca PEM [--tls-name NAME] [--tls-cert PEM --tls-key PEM] on call
//! cargo run --release --example echo -- --help        # every option, its default, examples
//! ```
//!
//! `serve` runs until SIGINT or SIGTERM, then shuts down gracefully. `call` makes N echo calls
//! of BYTES each with C in flight, verifies every byte, and prints
//! `ok calls=N bytes=B secs=S`; with `--stats-json` also one JSON object with the client's
//! transport counters. A failed call prints the error and exits non-zero. On a terminal, a
//! long `call` shows its progress on stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rpc_core::Payload;
use zcrpc_examples::{connect_to, pattern, serve_at, Endpoint, TransportArgs};

/// The echo server and its load client: `echo serve` in one terminal, `echo call` in another.
#[derive(Debug, Parser)]
#[command(
    name = "echo",
    after_help = "Commands and their options (`echo serve --help`, `echo call --help` explain each):\n  \
        echo serve --addr HOST:PORT|unix:PATH [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] \
        [--recv read|uring|ring] [--max-connections N] [--memory-budget BYTES] [--write-stall-ms MS] [--max-call-ms MS] [--max-age-ms MS] \
        [--tls-cert PEM --tls-key PEM [--tls-ca PEM]]\n  \
        echo call --addr HOST:PORT|unix:PATH --size BYTES --count N [--concurrency C] [--transport uring|msgzc|tcp] \
        [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--stats-json] \
        [--tls-ca PEM [--tls-name NAME] [--tls-cert PEM --tls-key PEM]]\n\
        Defaults: --concurrency 1, --transport uring on Linux (tcp elsewhere), --zc adaptive, --recv read; \
        the server's limits (1024 connections, 64 MiB per connection, a 30 s write stall).\n\n\
        Examples:\n  \
        echo serve --addr 127.0.0.1:7411 &\n  \
        echo call --addr 127.0.0.1:7411 --size 1048576 --count 200 --concurrency 8 --stats-json\n  \
        echo serve --addr 127.0.0.1:7411 --transport tcp      # the portable transport\n  \
        echo serve --addr unix:/tmp/echo.sock                 # a Unix socket (same host)\n  \
        echo serve --addr 127.0.0.1:7411 --transport tcp --tls-cert server.pem --tls-key server.key   # TLS 1.3\n  \
        echo call --addr 127.0.0.1:7411 --transport tcp --tls-ca ca.pem --size 1048576 --count 100\n  \
        echo serve --addr 127.0.0.1:7411 --tls-cert server.pem --tls-key server.key   # TLS on the uring engine\n\n\
        Run `echo serve --help` or `echo call --help` for each command's options."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Echo service until SIGINT or SIGTERM, then shut down gracefully.
    #[command(after_help = "Prints `echo: serving on ADDR` on stderr once it listens.\n\n\
        Examples:\n  \
        echo serve --addr 127.0.0.1:7411\n  \
        echo serve --addr 0.0.0.0:0 --transport tcp --max-connections 64   # any free port")]
    Serve(ServeArgs),
    /// Make COUNT echo calls of SIZE bytes, CONCURRENCY of them in flight at a time, and check
    /// every byte that comes back.
    #[command(after_help = "Prints `ok calls=N bytes=B secs=S` on stdout (and, with --stats-json, a JSON \
        line of the client's transport counters); a failed call prints the error and exits 1. \
        On a terminal a long run shows its progress on stderr.\n\n\
        Examples:\n  \
        echo call --addr 127.0.0.1:7411 --size 1048576 --count 200 --concurrency 8\n  \
        echo call --addr 127.0.0.1:7411 --size 64 --count 100000 --transport tcp --stats-json")]
    Call(CallArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on: HOST:PORT (port 0 takes any free port; the one chosen is printed)
    /// or unix:PATH for a Unix socket, where --transport, --zc and --recv do not apply.
    #[arg(long, value_name = "HOST:PORT|unix:PATH")]
    addr: Endpoint,
    #[command(flatten)]
    transport: TransportArgs,
    /// Most connections at once; one more is told why and closed [default: the server's, 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Bytes one connection may hold (requests unanswered, answers unwritten) before the
    /// server stops reading it [default: the server's, 64 MiB].
    #[arg(long, value_name = "BYTES")]
    memory_budget: Option<usize>,
    /// Close a connection whose writes make no progress for this long [default: the
    /// server's, 30000].
    #[arg(long, value_name = "MS")]
    write_stall_ms: Option<u64>,
    /// The longest a call may run: calls without a deadline get this one, longer deadlines
    /// are cut to it [default: none].
    #[arg(long, value_name = "MS")]
    max_call_ms: Option<u64>,
    /// Close each connection gracefully after about this long (±10%; re-dialing clients
    /// reconnect) [default: none].
    #[arg(long, value_name = "MS")]
    max_age_ms: Option<u64>,
    #[command(flatten)]
    tls: zcrpc_examples::ServeTlsArgs,
}

#[derive(Debug, Args)]
struct CallArgs {
    /// Address of an `echo serve`: HOST:PORT or unix:PATH.
    #[arg(long, value_name = "HOST:PORT|unix:PATH")]
    addr: Endpoint,
    /// Bytes of each call's payload (sent as an attachment and echoed back).
    #[arg(long, value_name = "BYTES")]
    size: usize,
    /// Number of calls.
    #[arg(long, value_name = "N")]
    count: u64,
    /// Calls in flight at once, on the one connection.
    #[arg(long, value_name = "C", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    #[command(flatten)]
    transport: TransportArgs,
    /// Also print the client's transport counters as one JSON line (after closing, so every
    /// zero-copy notification is counted).
    #[arg(long)]
    stats_json: bool,
    #[command(flatten)]
    tls: zcrpc_examples::CallTlsArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Serve(args) => serve_until_signal(args).await,
        Command::Call(args) => call(args).await,
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_signal(args: ServeArgs) -> Result<(), String> {
    let addr = args.addr;
    let (transport, engine) = args.transport.choice()?;
    let mut builder = rpc_core::Server::builder();
    if let Some(n) = args.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(bytes) = args.memory_budget {
        builder = builder.connection_memory_budget(bytes);
    }
    if let Some(ms) = args.write_stall_ms {
        builder = builder.write_stall_timeout(Some(Duration::from_millis(ms)));
    }
    if let Some(ms) = args.max_call_ms {
        builder = builder.max_call_duration(Some(Duration::from_millis(ms)));
    }
    if let Some(ms) = args.max_age_ms {
        builder = builder.max_connection_age(Some(Duration::from_millis(ms)));
    }
    let (server, local) = match args.tls.config()? {
        Some(tls) => {
            let Endpoint::Tcp(tcp) = addr else {
                return Err("--tls-cert: TLS is served over TCP (HOST:PORT), not a Unix socket".into());
            };
            let server = builder.build(zcrpc_examples::EchoServer::new(zcrpc_examples::EchoImpl));
            let (server, local) = zcrpc_examples::serve_tls(server, tcp, tls, transport, engine).await?;
            (server, local.to_string())
        }
        None => {
            let (server, local) = serve_at(&addr, transport, engine, builder).await.map_err(|e| e.to_string())?;
            (server, local.to_string())
        }
    };
    eprintln!("echo: serving on {local}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("echo: shutting down");
    server.shutdown().await;
    Ok(())
}

async fn call(args: CallArgs) -> Result<(), String> {
    let CallArgs { addr, size, count, concurrency, .. } = args;
    let (transport, engine) = args.transport.choice()?;
    let client = match args.tls.config()? {
        Some(tls) => {
            let Endpoint::Tcp(tcp) = addr else {
                return Err("--tls-ca: TLS runs over TCP (HOST:PORT), not a Unix socket".into());
            };
            let config = rpc_core::ClientConfig::default();
            let client = zcrpc_examples::connect_tls(tcp, &args.tls.tls_name, tls, transport, engine, config).await?;
            zcrpc_examples::EchoClient::new(client)
        }
        None => connect_to(&addr, transport, engine, rpc_core::ClientConfig::default()).await.map_err(|e| e.to_string())?,
    };
    // A few distinct payloads, so a reply matched to the wrong call would show: windows of one
    // pattern at different offsets (filling one buffer, not four, matters for large sizes in a
    // debug build).
    let source = pattern(size + 3 * 8, 0);
    let payloads: Arc<Vec<bytes::Bytes>> = Arc::new((0..4).map(|i| source.slice(i * 8..i * 8 + size)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let progress = Progress::start(count, size as u64, done.clone());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let (client, payloads, next, done) = (client.clone(), payloads.clone(), next.clone(), done.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), String>(());
                }
                let data = &payloads[(i % 4) as usize];
                let back = client.echo(Payload::from(data.clone())).await.map_err(|e| format!("call {i}: {e}"))?;
                if back.len() != data.len() || back.to_bytes() != *data {
                    return Err(format!("call {i}: reply differs from the {size} bytes sent"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut result = Ok(());
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r.map_err(|e| e.to_string()).and_then(|r| r) {
            result = Err(e);
            break;
        }
    }
    if let Some(p) = progress {
        p.finish().await;
    }
    result?;
    let secs = start.elapsed().as_secs_f64();
    println!("ok calls={count} bytes={} secs={secs:.6}", count * size as u64);
    if args.stats_json {
        // Closing waits until the kernel is done with every zero-copy send, so the counters
        // include every notification.
        client.client().close().await;
        let stats = client.client().stats();
        println!("{}", serde_json::to_string(&stats).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// A progress line on stderr, redrawn a few times a second: only when stderr is a terminal
/// (scripts and tests read clean output) and the run is long enough to be worth watching.
struct Progress {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Bytes (both ways) from which a run shows its progress.
    const MIN_BYTES: u64 = 256 << 20;

    fn start(count: u64, size: u64, done: Arc<AtomicU64>) -> Option<Progress> {
        if !std::io::stderr().is_terminal() || count.saturating_mul(size).saturating_mul(2) < Self::MIN_BYTES {
            return None;
        }
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let n = done.load(Ordering::Relaxed);
                let mib = (n * size) as f64 / (1 << 20) as f64;
                let rate = mib / start.elapsed().as_secs_f64().max(1e-3);
                eprint!("\r{n}/{count} calls ({:.0}%), {mib:.0} MiB each way, {rate:.0} MiB/s   ", 100.0 * n as f64 / count as f64);
                let _ = std::io::stderr().flush();
            }
            // Erases the line (ANSI: stderr is a terminal) so that what follows starts clean.
            eprint!("\r\x1b[2K");
        });
        Some(Progress { stop, task })
    }

    async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
