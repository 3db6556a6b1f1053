//! `compare`: zcrpc side by side with raw sockets, tonic and tarpc, in one run.
//!
//! ```text
//! cargo run --release -p rpc-bench --bin compare -- [--quick] [--json PATH] [--svg PATH]
//!     [--only SCENARIO,...] [--systems SYSTEM,...] [--reps N] [--malloc default|keep]
//! ```
//!
//! Prints a markdown table on stdout, writes JSON and an SVG chart, and reports progress on
//! stderr. Every measurement runs in a child process of this binary
//! (`compare --child SYSTEM SCENARIO ...`), so each system starts from a fresh allocator and
//! its peak RSS (`VmHWM`) is its own. `ZCRPC_BENCH_RECV=read|uring|ring` picks the receive mode
//! of the io_uring systems (default `read`).
//!
//! `--malloc keep` runs every child with glibc's malloc told to keep what it frees (trim and
//! mmap thresholds of 1 GiB, through `GLIBC_TUNABLES`), as a server moving large data is often
//! configured; by default glibc hands freed memory of large calls back to the kernel and a
//! system that allocates per call faults it in again every call (the report says which).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rpc_bench::machine::{load_average, utc_now, vmhwm_kib, Machine};
use rpc_bench::meter::Timing;
use rpc_bench::placement::{bind_current_thread, Placement, LAYOUT};
use rpc_bench::report::{fmt_value, PeakRss, Report, ResultRow, Skipped, TransportStatsRow};
use rpc_bench::scenario::{Metric, Scenario, System};
use rpc_bench::stats::rotated;
use rpc_bench::systems::{self, NoResult};
use serde_json::{json, Value};

const USAGE: &str = "usage: compare [--quick] [--json PATH] [--svg PATH] [--only SCENARIO,...] \
[--systems SYSTEM,...] [--reps N] [--malloc default|keep]";

/// What `--malloc keep` gives every child: glibc's malloc neither trims its heap nor maps
/// large blocks of their own (which it unmaps when freed), below 1 GiB.
const MALLOC_KEEP: &str = "glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=1073741824";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1..]);
    }
    match parent(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---- the child: one measurement -------------------------------------------------------

fn child(args: &[String]) -> ExitCode {
    let out = match child_measure(args) {
        Ok((metrics, stats)) => json!({
            "metrics": metrics,
            "vmhwm_kib": vmhwm_kib(),
            "transport_stats": stats,
        }),
        Err(NoResult::Unavailable(reason)) => json!({ "unavailable": reason }),
        Err(NoResult::Failed(reason)) => json!({ "failed": reason }),
    };
    println!("{out}");
    // The server thread is still serving; the process ends here rather than join it.
    std::process::exit(0)
}

type Measured = (BTreeMap<String, f64>, Option<Value>);

/// The JSON name of one side's share of a CPU metric: `cpu_s_per_gb.client_user`.
fn split_key(metric: Metric, side: &str, kind: &str) -> String {
    format!("{}.{side}_{kind}", metric.name())
}

fn child_measure(args: &[String]) -> Result<Measured, NoResult> {
    let bad = |what: &str| NoResult::Failed(format!("child: {what}"));
    let [system, scenario, warmup_ms, measure_ms] = args else {
        return Err(bad(
            "expects SYSTEM SCENARIO WARMUP_MS (MEASURE_MS | calls:N)",
        ));
    };
    let system = System::from_name(system).ok_or_else(|| bad("unknown system"))?;
    let scenario = Scenario::from_name(scenario).ok_or_else(|| bad("unknown scenario"))?;
    let ms = |s: &str| {
        s.parse()
            .map(Duration::from_millis)
            .map_err(|_| bad("bad time"))
    };
    // `calls:N` in place of the measured time: exactly N counted calls (callgrind.sh).
    let timing = match measure_ms.strip_prefix("calls:") {
        Some(n) => Timing {
            warmup: ms(warmup_ms)?,
            measure: Duration::ZERO,
            calls: Some(n.parse().map_err(|_| bad("bad call count"))?),
        },
        None => Timing {
            warmup: ms(warmup_ms)?,
            measure: ms(measure_ms)?,
            calls: None,
        },
    };
    let cpus = Machine::detect().cpus;
    if scenario.pinned() {
        bind_current_thread(0).map_err(|e| bad(&format!("binding to CPU 0: {e}")))?;
    }
    let placement = Placement::for_scenario(scenario.pinned(), cpus);
    let mut sample = systems::run(system, scenario, placement, timing)?;
    let mut metrics = BTreeMap::new();
    let gb = sample.calls as f64 * scenario.shape().payload_per_call() as f64 / 1e9;
    for &metric in scenario.metrics() {
        // CPU per unit: seconds per GB, or microseconds per call (per message on a stream).
        let per_unit = |cpu_s: f64| match metric {
            Metric::CpuSPerGb => cpu_s / gb,
            _ => cpu_s * 1e6 / sample.calls as f64,
        };
        let v = match metric {
            Metric::P50Us => sample.latency_quantile_us(0.50),
            Metric::P99Us => sample.latency_quantile_us(0.99),
            Metric::CallsPerS | Metric::MsgsPerS => sample.calls_per_s(),
            // With calls beside the measured ones, theirs (the measured calls are small).
            Metric::GbPerS => sample.beside_gb_per_s.unwrap_or_else(|| {
                sample.calls_per_s() * scenario.shape().payload_per_call() as f64 / 1e9
            }),
            Metric::CpuSPerGb | Metric::CpuUsPerCall | Metric::CpuUsPerMsg => {
                let Some(cpu) = sample.cpu else {
                    continue;
                };
                for (side, t) in [
                    ("client", cpu.client),
                    ("server", cpu.server),
                    ("other", cpu.other),
                ] {
                    metrics.insert(split_key(metric, side, "user"), per_unit(t.user_s));
                    metrics.insert(split_key(metric, side, "sys"), per_unit(t.sys_s));
                }
                per_unit(cpu.total())
            }
        };
        metrics.insert(metric.name().to_string(), v);
    }
    Ok((metrics, sample.transport_stats.take()))
}

// ---- the parent: the plan, the children, the report -----------------------------------

#[derive(Debug)]
struct Options {
    quick: bool,
    json: PathBuf,
    svg: PathBuf,
    scenarios: Vec<Scenario>,
    systems: Vec<System>,
    reps: usize,
    /// `--malloc keep`: the children's glibc malloc keeps what it frees.
    malloc_keep: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let out_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("compare")))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut opts = Options {
        quick: false,
        json: out_dir.join("compare.json"),
        svg: out_dir.join("compare.svg"),
        scenarios: Scenario::ALL.to_vec(),
        systems: System::ALL.to_vec(),
        reps: 0,
        malloc_keep: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or(format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--json" => opts.json = PathBuf::from(value()?),
            "--svg" => opts.svg = PathBuf::from(value()?),
            "--only" => {
                opts.scenarios = value()?
                    .split(',')
                    .map(|s| Scenario::from_name(s).ok_or(format!("unknown scenario {s}")))
                    .collect::<Result<_, _>>()?;
            }
            "--systems" => {
                opts.systems = value()?
                    .split(',')
                    .map(|s| System::from_name(s).ok_or(format!("unknown system {s}")))
                    .collect::<Result<_, _>>()?;
            }
            "--reps" => {
                opts.reps = value()?
                    .parse()
                    .map_err(|_| "--reps needs a number".to_string())?;
            }
            "--malloc" => {
                opts.malloc_keep = match value()?.as_str() {
                    "keep" => true,
                    "default" => false,
                    other => return Err(format!("--malloc takes default or keep, not {other}")),
                };
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if opts.reps == 0 {
        opts.reps = if opts.quick { 3 } else { 5 };
    } else if opts.reps < 3 {
        eprintln!(
            "compare: --reps {} is for trying things out; published values need at least 3",
            opts.reps
        );
    }
    // Keep table order whatever order they were named in.
    opts.scenarios.sort();
    opts.scenarios.dedup();
    opts.systems.sort();
    opts.systems.dedup();
    Ok(opts)
}

/// What came back from the children of one (scenario, system).
#[derive(Debug, Default)]
struct Cell {
    runs: BTreeMap<String, Vec<f64>>,
    vmhwm: Vec<u64>,
    unavailable: Option<String>,
    failures: Vec<String>,
    transport_stats: Option<Value>,
}

/// `client copy/zc/coalesced/file a/b/c/d (notifs copied x/y)` and the same for the server.
fn send_paths(stats: &Value) -> String {
    let side = |name: &str| {
        let s = &stats[name];
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        format!(
            "{name} {} sends copy/zc/coalesced/file {}/{}/{}/{} notifs copied {}/{}",
            s["transport"].as_str().unwrap_or("?"),
            n("sends_copy"),
            n("sends_zc"),
            n("sends_coalesced"),
            n("sends_file"),
            n("notifications_copied"),
            n("notifications")
        )
    };
    format!("[{}; {}]", side("client"), side("server"))
}

fn parent(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let machine = Machine::detect();
    let timing = if opts.quick {
        Timing {
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(500),
            calls: None,
        }
    } else {
        Timing {
            warmup: Duration::from_millis(500),
            measure: Duration::from_millis(1500),
            calls: None,
        }
    };
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let tunables = child_tunables(opts.malloc_keep);
    let mut cells: BTreeMap<(Scenario, System), Cell> = BTreeMap::new();
    let mut skipped = Vec::new();
    for &scenario in &opts.scenarios {
        for &system in &opts.systems {
            match system.not_applicable(scenario) {
                Some(reason) => skipped.push(Skipped {
                    scenario: scenario.name().into(),
                    system: system.name().into(),
                    status: "not_applicable".into(),
                    reason: reason.into(),
                }),
                None => {
                    cells.insert((scenario, system), Cell::default());
                }
            }
        }
    }
    let total = cells.len() * opts.reps;
    eprintln!(
        "compare: {} on {}; {} measurements ({} reps), {:.1}+{:.1} s each",
        if opts.quick { "quick" } else { "full" },
        machine.line(),
        total,
        opts.reps,
        timing.warmup.as_secs_f64(),
        timing.measure.as_secs_f64()
    );
    let load_at_start = load_average();
    // The 1-minute load before every measurement: the other work sharing the machine.
    let mut loads: Vec<f64> = Vec::new();
    let started = Instant::now();
    let mut done = 0usize;
    for rep in 0..opts.reps {
        for &scenario in &opts.scenarios {
            // Rotate the system order between repetitions (and scenarios), so that no system
            // always runs first, on a cold machine, or last, after the heaviest neighbour.
            let order = rotated(&opts.systems, rep + scenario as usize);
            for system in order {
                let Some(cell) = cells.get_mut(&(scenario, system)) else {
                    continue;
                };
                done += 1;
                if cell.unavailable.is_some() {
                    continue;
                }
                loads.push(load_1m());
                let outcome = run_child(&exe, system, scenario, timing, tunables.as_deref());
                let summary = match outcome {
                    Ok(result) => {
                        let mut parts = Vec::new();
                        for &metric in scenario.metrics() {
                            let v = result
                                .metrics
                                .get(metric.name())
                                .copied()
                                .unwrap_or(f64::NAN);
                            parts.push(format!("{} {}", metric.name(), fmt_value(v)));
                        }
                        for (k, &v) in &result.metrics {
                            cell.runs.entry(k.clone()).or_default().push(v);
                        }
                        if let Some(kib) = result.vmhwm_kib {
                            cell.vmhwm.push(kib);
                            parts.push(format!("VmHWM {:.1} MiB", kib as f64 / 1024.0));
                        }
                        if let Some(stats) = result.transport_stats {
                            parts.push(send_paths(&stats));
                            cell.transport_stats = Some(stats);
                        }
                        parts.join(", ")
                    }
                    Err(NoResult::Unavailable(reason)) => {
                        let s = format!("unavailable: {reason}");
                        cell.unavailable = Some(reason);
                        s
                    }
                    Err(NoResult::Failed(reason)) => {
                        let s = format!("FAILED: {reason}");
                        cell.failures.push(reason);
                        s
                    }
                };
                let elapsed = started.elapsed().as_secs_f64();
                let eta = elapsed / done as f64 * (total - done) as f64;
                eprintln!(
                    "[{done:>3}/{total}] rep {}/{} {scenario:<18} {system:<14} {summary}  ({elapsed:.0} s, ~{eta:.0} s left)",
                    rep + 1,
                    opts.reps
                );
            }
        }
    }

    let mut results = Vec::new();
    let mut peak_rss = Vec::new();
    let mut transport_stats = Vec::new();
    for (&(scenario, system), cell) in &cells {
        if let Some(reason) = &cell.unavailable {
            skipped.push(Skipped {
                scenario: scenario.name().into(),
                system: system.name().into(),
                status: "unavailable".into(),
                reason: reason.clone(),
            });
            continue;
        }
        if cell.runs.is_empty() {
            skipped.push(Skipped {
                scenario: scenario.name().into(),
                system: system.name().into(),
                status: "failed".into(),
                reason: cell.failures.first().cloned().unwrap_or_default(),
            });
            continue;
        }
        // The scenario's metrics in table order, then the per-side CPU splits.
        let mut keys: Vec<String> = scenario
            .metrics()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        keys.extend(cell.runs.keys().filter(|k| k.contains('.')).cloned());
        for key in keys {
            let runs = cell.runs.get(&key).cloned().unwrap_or_default();
            results.push(ResultRow::new(scenario.name(), system.name(), &key, runs));
        }
        if let Some(stats) = &cell.transport_stats {
            transport_stats.push(TransportStatsRow {
                system: system.name().into(),
                scenario: scenario.name().into(),
                stats: stats.clone(),
            });
        }
        if let Some(&max) = cell.vmhwm.iter().max() {
            peak_rss.push(PeakRss {
                system: system.name().into(),
                scenario: scenario.name().into(),
                vmhwm_kib: max,
                runs: cell.vmhwm.clone(),
            });
        }
        if !cell.failures.is_empty() {
            eprintln!(
                "compare: {scenario} {system}: {} of {} runs failed, first: {}",
                cell.failures.len(),
                opts.reps,
                cell.failures[0]
            );
        }
    }
    let report = Report {
        schema: 2,
        affinity: Placement::describe(machine.cpus),
        machine,
        layout: LAYOUT.to_string(),
        allocator: allocator_line(tunables.as_deref()),
        date: utc_now(),
        command: std::iter::once("cargo run --release -p rpc-bench --bin compare --")
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        repetitions: opts.reps,
        warmup_s: timing.warmup.as_secs_f64(),
        measure_s: timing.measure.as_secs_f64(),
        load_average: [load_at_start, load_average()],
        load_1m_range: [
            loads.iter().copied().fold(f64::INFINITY, f64::min),
            loads.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ],
        results,
        peak_rss,
        transport_stats,
        skipped,
        systems: opts.systems.clone(),
        scenarios: opts.scenarios.clone(),
    };
    write_file(
        &opts.json,
        &serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?,
    )?;
    write_file(&opts.svg, &report.svg())?;
    for warning in report
        .load_warnings()
        .into_iter()
        .chain(report.ceiling_warnings())
    {
        eprintln!("compare: WARNING: {warning}");
    }
    print!("{}", report.markdown());
    eprintln!(
        "compare: done in {:.0} s; JSON {}, SVG {}",
        started.elapsed().as_secs_f64(),
        opts.json.display(),
        opts.svg.display()
    );
    Ok(())
}

/// The 1-minute load average now (NaN if unreadable).
fn load_1m() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn write_file(path: &PathBuf, contents: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// What one child reported.
#[derive(Debug)]
struct ChildResult {
    metrics: BTreeMap<String, f64>,
    vmhwm_kib: Option<u64>,
    transport_stats: Option<Value>,
}

type ChildOutcome = Result<ChildResult, NoResult>;

/// Runs one measurement in a child process and reads its one line of JSON.
/// The `GLIBC_TUNABLES` the children get: `--malloc keep`'s after any the parent was given.
fn child_tunables(malloc_keep: bool) -> Option<String> {
    let inherited = std::env::var("GLIBC_TUNABLES").ok().filter(|t| !t.is_empty());
    match (inherited, malloc_keep) {
        (Some(t), true) => Some(format!("{t}:{MALLOC_KEEP}")),
        (Some(t), false) => Some(t),
        (None, true) => Some(MALLOC_KEEP.to_string()),
        (None, false) => None,
    }
}

/// The report's allocator line for children run with `tunables`.
fn allocator_line(tunables: Option<&str>) -> String {
    match tunables {
        None => "the system's malloc (glibc) with its defaults: freed memory of large calls goes back to \
                 the kernel, and is faulted in again by a system that allocates per call"
            .to_string(),
        Some(t) if t.contains(MALLOC_KEEP) => format!(
            "the system's malloc (glibc) keeping what it frees (`--malloc keep`: GLIBC_TUNABLES={t})"
        ),
        Some(t) => format!("the system's malloc (glibc), GLIBC_TUNABLES={t}"),
    }
}

fn run_child(
    exe: &PathBuf,
    system: System,
    scenario: Scenario,
    timing: Timing,
    glibc_tunables: Option<&str>,
) -> ChildOutcome {
    let failed = |s: String| NoResult::Failed(s);
    let mut command = Command::new(exe);
    if let Some(t) = glibc_tunables {
        command.env("GLIBC_TUNABLES", t);
    }
    let mut child = command
        .arg("--child")
        .arg(system.name())
        .arg(scenario.name())
        .arg(timing.warmup.as_millis().to_string())
        .arg(timing.measure.as_millis().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("spawning the child: {e}")))?;
    // Block on the child's output instead of polling (a polling parent would wake a CPU the
    // measurement is using); a watchdog kills a child that overruns. The child is reaped only
    // after the watchdog is done with it, so its pid cannot have been reused.
    let limit = Duration::from_secs(30) + (timing.warmup + timing.measure) * 10;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let child = std::sync::Arc::new(std::sync::Mutex::new(child));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let child = child.clone();
        std::thread::spawn(move || {
            let overran = done_rx.recv_timeout(limit).is_err();
            if overran {
                let _ = child.lock().map(|mut c| c.kill());
            }
            overran
        })
    };
    let stderr_reader = std::thread::spawn(move || {
        let mut stderr = String::new();
        if let Some(err) = err_pipe.as_mut() {
            let _ = err.read_to_string(&mut stderr);
        }
        stderr
    });
    let mut stdout = String::new();
    if let Some(out) = out_pipe.as_mut() {
        let _ = out.read_to_string(&mut stdout);
    }
    let stderr = stderr_reader.join().unwrap_or_default();
    let _ = done_tx.send(());
    let overran = watchdog.join().unwrap_or(false);
    let status = child
        .lock()
        .map_err(|_| failed("child handle poisoned".into()))?
        .wait()
        .map_err(|e| failed(format!("waiting for the child: {e}")))?;
    if overran {
        return Err(failed(format!("timed out after {} s", limit.as_secs())));
    }
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let Some(value) = line.and_then(|l| serde_json::from_str::<Value>(l).ok()) else {
        let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        return Err(failed(format!("child exited with {status}: {tail}")));
    };
    if let Some(reason) = value.get("unavailable").and_then(Value::as_str) {
        return Err(NoResult::Unavailable(reason.to_string()));
    }
    if let Some(reason) = value.get("failed").and_then(Value::as_str) {
        return Err(failed(reason.to_string()));
    }
    let metrics = value
        .get("metrics")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(ChildResult {
        metrics,
        vmhwm_kib: value.get("vmhwm_kib").and_then(Value::as_u64),
        transport_stats: value
            .get("transport_stats")
            .filter(|v| !v.is_null())
            .cloned(),
    })
}
