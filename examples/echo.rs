//! Echo server and load client, reused by checks and benchmarks.
//!
//! ```text
//! cargo run --release --example echo -- serve --addr 127.0.0.1:PORT|unix:PATH [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--max-connections N] [--memory-budget BYTES] [--write-stall-ms MS]
//! cargo run --release --example echo -- call --addr 127.0.0.1:PORT|unix:PATH --size BYTES --count N \
//!     [--concurrency C] [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--stats-json]
//! ```
//!
//! `--addr unix:PATH` serves (or calls) over a Unix socket, where `--transport`, `--zc` and
//! `--recv` do not apply. `serve` runs until SIGINT or SIGTERM, then shuts down gracefully. `call` makes N echo calls
//! of BYTES each with C in flight, verifies every byte, and prints
//! `ok calls=N bytes=B secs=S`; with `--stats-json` also one JSON object with the client's
//! transport counters. A failed call prints the error and exits non-zero.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rpc_core::Payload;
use zcrpc_examples::{connect_to, pattern, serve_at, Endpoint, EngineOptions, TransportChoice};

const USAGE: &str = "usage:\n  echo serve --addr HOST:PORT|unix:PATH [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--max-connections N] [--memory-budget BYTES] [--write-stall-ms MS]\n  echo call --addr HOST:PORT|unix:PATH --size BYTES --count N [--concurrency C] [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--stats-json]";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().ok_or(USAGE)?;
    let opts = Options::parse(args)?;
    match cmd.as_str() {
        "serve" => serve_until_signal(opts).await,
        "call" => call(opts).await,
        _ => Err(USAGE.into()),
    }
}

struct Options {
    values: HashMap<String, String>,
    stats_json: bool,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut stats_json = false;
        while let Some(a) = args.next() {
            match a.as_str() {
                "--stats-json" => stats_json = true,
                "--addr" | "--size" | "--count" | "--concurrency" | "--transport" | "--zc" | "--recv" | "--max-connections"
                | "--memory-budget" | "--write-stall-ms" => {
                    let v = args.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"))?;
                    values.insert(a[2..].to_owned(), v);
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        Ok(Options { values, stats_json })
    }

    fn get<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.get(key) {
            Some(v) => v.parse().map_err(|e| format!("--{key} {v}: {e}")),
            None => default.ok_or_else(|| format!("--{key} is required\n{USAGE}")),
        }
    }

    fn transport(&self) -> Result<(TransportChoice, EngineOptions), String> {
        let mut engine = EngineOptions::default();
        for key in ["zc", "recv"] {
            if let Some(v) = self.values.get(key) {
                engine.set(&format!("--{key}"), v)?;
            }
        }
        Ok((self.get("transport", Some(TransportChoice::default()))?, engine))
    }
}

async fn serve_until_signal(opts: Options) -> Result<(), String> {
    let addr: Endpoint = opts.get("addr", None)?;
    let (transport, engine) = opts.transport()?;
    let mut builder = rpc_core::Server::builder();
    if opts.values.contains_key("max-connections") {
        builder = builder.max_connections(opts.get("max-connections", None)?);
    }
    if opts.values.contains_key("memory-budget") {
        builder = builder.connection_memory_budget(opts.get("memory-budget", None)?);
    }
    if opts.values.contains_key("write-stall-ms") {
        let ms: u64 = opts.get("write-stall-ms", None)?;
        builder = builder.write_stall_timeout(Some(std::time::Duration::from_millis(ms)));
    }
    let (server, local) = serve_at(&addr, transport, engine, builder).await.map_err(|e| format!("bind {addr}: {e}"))?;
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

async fn call(opts: Options) -> Result<(), String> {
    let addr: Endpoint = opts.get("addr", None)?;
    let size: usize = opts.get("size", None)?;
    let count: u64 = opts.get("count", None)?;
    let concurrency: u64 = opts.get("concurrency", Some(1))?;
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let (transport, engine) = opts.transport()?;
    let client = connect_to(&addr, transport, engine, rpc_core::ClientConfig::default()).await.map_err(|e| e.to_string())?;
    // A few distinct payloads, so a reply matched to the wrong call would show: windows of one
    // pattern at different offsets (filling one buffer, not four, matters for large sizes in a
    // debug build).
    let source = pattern(size + 3 * 8, 0);
    let payloads: Arc<Vec<bytes::Bytes>> = Arc::new((0..4).map(|i| source.slice(i * 8..i * 8 + size)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count.max(1)) {
        let (client, payloads, next) = (client.clone(), payloads.clone(), next.clone());
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
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("ok calls={count} bytes={} secs={secs:.6}", count * size as u64);
    if opts.stats_json {
        // Closing waits until the kernel is done with every zero-copy send, so the counters
        // include every notification.
        client.client().close().await;
        let stats = client.client().stats();
        println!("{}", serde_json::to_string(&stats).map_err(|e| e.to_string())?);
    }
    Ok(())
}
