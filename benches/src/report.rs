//! The comparison's results and their three renderings: JSON (schema 2: issue 4's schema 1
//! plus CPU cost, spreads and the load range, issue 15), a markdown table with ratios against
//! `raw_tcp_best`, and an SVG bar chart.

use std::fmt::Write as _;

use serde::Serialize;

use crate::machine::Machine;
use crate::scenario::{Metric, Scenario, System};
use crate::stats::median;

/// A spread (max − min over the median) above this is printed in the table.
pub const SPREAD_SHOWN: f64 = 0.10;
/// A 1-minute load average that moved by more than this during the run draws a warning.
pub const LOAD_MOVED: f64 = 0.5;

/// One (scenario, system, metric): the median and every run behind it.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    /// Scenario name.
    pub scenario: String,
    /// System name.
    pub system: String,
    /// `p50_us`, `p99_us`, `calls_per_s`, `gb_per_s`, `cpu_us_per_call`, `cpu_s_per_gb`, or
    /// one side's share of a CPU metric (`cpu_s_per_gb.server_sys`: side `client`, `server` or
    /// `other`, kind `user` or `sys`).
    pub metric: String,
    /// Median of `runs`.
    pub value: f64,
    /// Smallest of `runs`.
    pub min: f64,
    /// Largest of `runs`.
    pub max: f64,
    /// `(max - min) / value`: the noise between repetitions.
    pub spread: f64,
    /// Every run, in the order they ran.
    pub runs: Vec<f64>,
}

impl ResultRow {
    /// A row from its runs: median, min, max and spread.
    pub fn new(scenario: &str, system: &str, metric: &str, runs: Vec<f64>) -> ResultRow {
        let finite = || runs.iter().copied().filter(|v| v.is_finite());
        let value = median(&runs);
        let min = finite().fold(f64::INFINITY, f64::min);
        let max = finite().fold(f64::NEG_INFINITY, f64::max);
        let spread = if value.abs() > 0.0 && min.is_finite() {
            (max - min) / value.abs()
        } else {
            f64::NAN
        };
        ResultRow {
            scenario: scenario.into(),
            system: system.into(),
            metric: metric.into(),
            value,
            min,
            max,
            spread,
            runs,
        }
    }
}

/// Peak resident memory of the child processes of one (system, scenario).
#[derive(Debug, Clone, Serialize)]
pub struct PeakRss {
    /// System name.
    pub system: String,
    /// Scenario name.
    pub scenario: String,
    /// The largest `VmHWM` of the runs, KiB (client and server together).
    pub vmhwm_kib: u64,
    /// `VmHWM` of every run, KiB.
    pub runs: Vec<u64>,
}

/// A system's own counters after the last run of a (system, scenario): for zcrpc, which send
/// path each side's engine took and what the kernel's notifications said.
#[derive(Debug, Clone, Serialize)]
pub struct TransportStatsRow {
    /// System name.
    pub system: String,
    /// Scenario name.
    pub scenario: String,
    /// `{"client": StatsSnapshot, "server": StatsSnapshot}`.
    pub stats: serde_json::Value,
}

/// A (scenario, system) without a number, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Scenario name.
    pub scenario: String,
    /// System name.
    pub system: String,
    /// `not_applicable`, `unavailable` or `failed`.
    pub status: String,
    /// What happened.
    pub reason: String,
}

/// Everything one `compare` run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always 1.
    pub schema: u32,
    /// Where it ran.
    pub machine: Machine,
    /// CPU placement of every scenario.
    pub affinity: String,
    /// Process and thread layout, the same for every system.
    pub layout: String,
    /// The memory allocator of every child, and how it was configured.
    pub allocator: String,
    /// When it ran (UTC).
    pub date: String,
    /// The command line that reproduces it.
    pub command: String,
    /// Repetitions of every (scenario, system); values are medians over them.
    pub repetitions: usize,
    /// Warm-up per run, seconds.
    pub warmup_s: f64,
    /// Measured time per run, seconds.
    pub measure_s: f64,
    /// Load averages (1, 5, 15 min) when the run started and when it ended: anything else
    /// running on the machine shares its CPUs with the measurement.
    pub load_average: [String; 2],
    /// Lowest and highest 1-minute load average seen before any measurement of the run.
    pub load_1m_range: [f64; 2],
    /// The numbers.
    pub results: Vec<ResultRow>,
    /// Peak RSS per (system, scenario).
    pub peak_rss: Vec<PeakRss>,
    /// Transport counters per (system, scenario), last run.
    pub transport_stats: Vec<TransportStatsRow>,
    /// Pairs without a number.
    pub skipped: Vec<Skipped>,
    /// Systems in column order.
    #[serde(skip)]
    pub systems: Vec<System>,
    /// Scenarios in row order.
    #[serde(skip)]
    pub scenarios: Vec<Scenario>,
}

impl Report {
    fn row(&self, scenario: Scenario, system: System, metric: &str) -> Option<&ResultRow> {
        self.results.iter().find(|r| {
            r.scenario == scenario.name() && r.system == system.name() && r.metric == metric
        })
    }

    fn value(&self, scenario: Scenario, system: System, metric: Metric) -> Option<f64> {
        self.row(scenario, system, metric.name())
            .map(|r| r.value)
            .filter(|v| v.is_finite())
    }

    /// `c 0.01+0.20 · s 0.01+0.19`: each side's user + system share of a CPU metric.
    fn cpu_split(&self, scenario: Scenario, system: System, metric: Metric) -> Option<String> {
        let get = |side: &str, kind: &str| {
            self.row(
                scenario,
                system,
                &format!("{}.{side}_{kind}", metric.name()),
            )
            .map(|r| r.value)
        };
        let side = |side: &str| {
            Some(format!(
                "{}+{}",
                fmt_value(get(side, "user")?),
                fmt_value(get(side, "sys")?)
            ))
        };
        let mut out = format!("c {} · s {}", side("client")?, side("server")?);
        let other = get("other", "user").unwrap_or(0.0) + get("other", "sys").unwrap_or(0.0);
        if other > 0.0 {
            let _ = write!(out, " · other {}", fmt_value(other));
        }
        Some(out)
    }

    /// Every RPC system whose runs all beat every run of its ceiling (`raw_tcp_best`;
    /// `raw_stream` on the streaming scenarios) on a rate or a latency (the ranges do not
    /// overlap): the ceiling is then not one, and the README must say why.
    pub fn ceiling_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for &scenario in &self.scenarios {
            for &metric in scenario.metrics().iter().filter(|m| !m.is_cpu()) {
                let (base, ceiling_system) = ceiling_of(scenario);
                let Some(ceiling) = self.row(base, ceiling_system, metric.name()) else {
                    continue;
                };
                for &system in self.systems.iter().filter(|s| !s.is_raw()) {
                    let Some(r) = self.row(scenario, system, metric.name()) else {
                        continue;
                    };
                    let beats = if metric.lower_is_better() {
                        r.max < ceiling.min
                    } else {
                        r.min > ceiling.max
                    };
                    if beats {
                        out.push(format!(
                            "{system} beats {ceiling_system} on {scenario} {} beyond noise \
                             ({}–{} against {}–{})",
                            metric.name(),
                            fmt_value(r.min),
                            fmt_value(r.max),
                            fmt_value(ceiling.min),
                            fmt_value(ceiling.max)
                        ));
                    }
                }
            }
        }
        out
    }

    /// What moved on the machine while the run went on, if anything did.
    pub fn load_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let one = |s: &str| s.split_whitespace().next()?.parse::<f64>().ok();
        if let (Some(a), Some(b)) = (one(&self.load_average[0]), one(&self.load_average[1])) {
            if (b - a).abs() > LOAD_MOVED {
                out.push(format!(
                    "the 1-minute load average moved from {a:.2} to {b:.2} during the run"
                ));
            }
        }
        let [lo, hi] = self.load_1m_range;
        if lo.is_finite() && hi - lo > LOAD_MOVED {
            out.push(format!(
                "the 1-minute load average before a measurement ranged from {lo:.2} to {hi:.2}"
            ));
        }
        out
    }

    fn skipped(&self, scenario: Scenario, system: System) -> Option<&Skipped> {
        self.skipped
            .iter()
            .find(|s| s.scenario == scenario.name() && s.system == system.name())
    }

    /// The baseline a cell's ratio is taken against (see [`ceiling_of`]).
    fn baseline(&self, scenario: Scenario, metric: Metric) -> Option<f64> {
        let (base, system) = ceiling_of(scenario);
        self.value(base, system, metric)
    }

    /// Why `scenario` ran on none of the systems, if it did not: every system skipped it as
    /// not applicable, for one reason. The tables leave its rows out and the legend says why.
    fn run_nowhere(&self, scenario: Scenario) -> Option<&str> {
        let mut reason = None;
        for &system in &self.systems {
            match self.skipped(scenario, system) {
                Some(s) if s.status == "not_applicable" && reason.is_none_or(|r| r == s.reason) => {
                    reason = Some(s.reason.as_str())
                }
                _ => return None,
            }
        }
        reason
    }

    /// What a "—" in the table means, one line per reason: the scenarios no system ran (left
    /// out of the tables), then which systems do not run which scenarios, and why.
    pub fn dash_legend(&self) -> Vec<String> {
        let mut lines = vec!["— = not applicable to that system; where, and why:".to_string()];
        for &scenario in &self.scenarios {
            if let Some(reason) = self.run_nowhere(scenario) {
                lines.push(format!(
                    "- `{scenario}` ({}): not run on any system, so not in the tables: {reason}.",
                    scenario.describe()
                ));
            }
        }
        // (reason, scenarios, systems): systems not running the same scenarios for the same
        // reason share a line, in the order of the table.
        let mut groups: Vec<(&str, Vec<Scenario>, Vec<System>)> = Vec::new();
        for &system in &self.systems {
            let mut mine: Vec<(&str, Vec<Scenario>)> = Vec::new();
            for &scenario in self.scenarios.iter().filter(|&&s| self.run_nowhere(s).is_none()) {
                let Some(s) = self.skipped(scenario, system).filter(|s| s.status == "not_applicable") else {
                    continue;
                };
                match mine.iter_mut().find(|m| m.0 == s.reason) {
                    Some(m) => m.1.push(scenario),
                    None => mine.push((s.reason.as_str(), vec![scenario])),
                }
            }
            for (reason, scenarios) in mine {
                match groups.iter_mut().find(|g| g.0 == reason && g.1 == scenarios) {
                    Some(g) => g.2.push(system),
                    None => groups.push((reason, scenarios, vec![system])),
                }
            }
        }
        for (reason, scenarios, systems) in groups {
            let join = |v: Vec<String>| v.join(", ");
            lines.push(format!(
                "- {} on {}: {reason}.",
                join(systems.iter().map(|s| format!("`{s}`")).collect()),
                join(scenarios.iter().map(|s| format!("`{s}`")).collect())
            ));
        }
        if lines.len() == 1 {
            lines.clear();
        }
        lines
    }

    /// The markdown table, with the machine, date, layout and affinity above it.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {} — {}  ", self.machine.line(), self.date);
        let _ = writeln!(out, "Command: `{}`  ", self.command);
        let _ = writeln!(out, "Layout: {}.  ", self.layout);
        let _ = writeln!(out, "Affinity: {}.  ", self.affinity);
        let _ = writeln!(out, "Allocator: {}.  ", self.allocator);
        let _ = writeln!(
            out,
            "Load average (1/5/15 min) at start: {}; at end: {}.  ",
            self.load_average[0], self.load_average[1]
        );
        let [lo, hi] = self.load_1m_range;
        let _ = writeln!(
            out,
            "1-minute load before each measurement: {lo:.2} to {hi:.2}.  "
        );
        for warning in self.load_warnings() {
            let _ = writeln!(
                out,
                "**Warning: {warning}; compare ratios, not absolute values.**  "
            );
        }
        for warning in self.ceiling_warnings() {
            let _ = writeln!(out, "**Warning: {warning}.**  ");
        }
        let _ = writeln!(
            out,
            "Each cell: median of {} runs ({:.1} s warm-up + {:.1} s measured each); \
             (×N) = ratio to raw_tcp_best on the same scenario (segments_4k: to raw_tcp_best \
             upload_1m; the stream_ scenarios: to raw_stream); [min–max] over the runs where they spread more than {:.0}% of the median; \
             GB = 10^9 bytes of payload; cpu = CPU time of client + server threads (user + system) \
             over the measured window, per GB or per call (split below).\n",
            self.repetitions,
            self.warmup_s,
            self.measure_s,
            SPREAD_SHOWN * 100.0
        );
        let _ = write!(out, "| scenario | metric |");
        for system in &self.systems {
            let _ = write!(out, " {system} |");
        }
        let _ = write!(out, "\n|---|---|");
        for _ in &self.systems {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        let mut notes: Vec<String> = Vec::new();
        for &scenario in self.scenarios.iter().filter(|&&s| self.run_nowhere(s).is_none()) {
            for &metric in scenario.metrics() {
                let arrow = if metric.lower_is_better() {
                    "↓"
                } else {
                    "↑"
                };
                let _ = write!(out, "| {scenario} | {} {arrow} |", metric.name());
                for &system in &self.systems {
                    let cell = match self.value(scenario, system, metric) {
                        Some(v) => {
                            let base = self.baseline(scenario, metric);
                            let mut cell = match base {
                                Some(b) if system != ceiling_of(scenario).1 && b > 0.0 => {
                                    format!("{} ({:.2}×)", fmt_value(v), v / b)
                                }
                                _ => fmt_value(v),
                            };
                            if let Some(r) = self.row(scenario, system, metric.name()) {
                                if r.spread > SPREAD_SHOWN {
                                    let _ = write!(
                                        cell,
                                        " [{}–{}]",
                                        fmt_value(r.min),
                                        fmt_value(r.max)
                                    );
                                }
                            }
                            cell
                        }
                        None => match self.skipped(scenario, system) {
                            Some(s) if s.status == "not_applicable" => "—".to_string(),
                            Some(s) => {
                                let note = format!("{}: {}", s.status, s.reason);
                                let idx = match notes.iter().position(|n| *n == note) {
                                    Some(i) => i,
                                    None => {
                                        notes.push(note);
                                        notes.len() - 1
                                    }
                                };
                                format!("{} [{}]", s.status, idx + 1)
                            }
                            None => "—".to_string(),
                        },
                    };
                    let _ = write!(out, " {cell} |");
                }
                out.push('\n');
            }
        }
        let _ = write!(out, "| peak RSS | MiB, max over scenarios |");
        for &system in &self.systems {
            let peak = self
                .peak_rss
                .iter()
                .filter(|p| p.system == system.name())
                .map(|p| p.vmhwm_kib)
                .max();
            match peak {
                Some(kib) => {
                    let _ = write!(out, " {:.1} |", kib as f64 / 1024.0);
                }
                None => {
                    let _ = write!(out, " — |");
                }
            }
        }
        out.push('\n');
        if !notes.is_empty() {
            out.push('\n');
            for (i, note) in notes.iter().enumerate() {
                let _ = writeln!(out, "[{}] {note}", i + 1);
            }
        }
        out.push('\n');
        for line in self.dash_legend() {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
        // Where the CPU went: each side's user + system share of the cpu row above it.
        let _ = write!(out, "CPU split, client (c) and server (s), user+sys, same unit as the cpu row:\n\n| scenario | metric |");
        for system in &self.systems {
            let _ = write!(out, " {system} |");
        }
        let _ = write!(out, "\n|---|---|");
        for _ in &self.systems {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        for &scenario in self.scenarios.iter().filter(|&&s| self.run_nowhere(s).is_none()) {
            for &metric in scenario.metrics().iter().filter(|m| m.is_cpu()) {
                let _ = write!(out, "| {scenario} | {} |", metric.name());
                for &system in &self.systems {
                    let split = self.cpu_split(scenario, system, metric);
                    let _ = write!(out, " {} |", split.as_deref().unwrap_or("—"));
                }
                out.push('\n');
            }
        }
        out.push('\n');
        for &scenario in &self.scenarios {
            let _ = writeln!(out, "- `{scenario}`: {}", scenario.describe());
        }
        out.push('\n');
        for &system in &self.systems {
            let _ = writeln!(out, "- `{system}`: {}", system.describe());
        }
        out
    }

    /// A bar chart: one panel per (scenario, metric), one bar per system, scaled to the
    /// panel's largest value.
    pub fn svg(&self) -> String {
        const WIDTH: f64 = 900.0;
        const LABEL: f64 = 130.0;
        const BAR_H: f64 = 16.0;
        const GAP: f64 = 4.0;
        const PANEL_HEAD: f64 = 24.0;
        const COLORS: [&str; 11] = [
            "#000000", "#4d4d4d", "#9e9e9e", "#bdbdbd", "#1f77b4", "#2ca02c", "#17becf", "#9467bd",
            "#8c564b", "#d62728", "#ff7f0e",
        ];
        let panels: Vec<(Scenario, Metric)> = self
            .scenarios
            .iter()
            .flat_map(|&s| s.metrics().iter().map(move |&m| (s, m)))
            .collect();
        let panel_h = PANEL_HEAD + self.systems.len() as f64 * (BAR_H + GAP) + 10.0;
        let height = 40.0 + panels.len() as f64 * panel_h;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            out,
            r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14" font-weight="bold">zcrpc compare — {} — {}</text>"#,
            xml_escape(&self.machine.line()),
            xml_escape(&self.date)
        );
        for (i, (scenario, metric)) in panels.iter().enumerate() {
            let top = 40.0 + i as f64 * panel_h;
            let better = if metric.lower_is_better() {
                "lower is better"
            } else {
                "higher is better"
            };
            let _ = writeln!(
                out,
                r#"<text x="10" y="{:.1}" font-weight="bold">{scenario} — {} ({better})</text>"#,
                top + 16.0,
                metric.name()
            );
            let max = self
                .systems
                .iter()
                .filter_map(|&s| self.value(*scenario, s, *metric))
                .fold(0.0f64, f64::max);
            for (j, &system) in self.systems.iter().enumerate() {
                let y = top + PANEL_HEAD + j as f64 * (BAR_H + GAP);
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{system}</text>"#,
                    LABEL - 6.0,
                    y + BAR_H - 4.0
                );
                let (w, label) = match self.value(*scenario, system, *metric) {
                    Some(v) if max > 0.0 => {
                        let mut label = fmt_value(v);
                        if let Some(r) = self.row(*scenario, system, metric.name()) {
                            if r.spread > SPREAD_SHOWN {
                                let _ =
                                    write!(label, " [{}–{}]", fmt_value(r.min), fmt_value(r.max));
                            }
                        }
                        if let Some(split) = self.cpu_split(*scenario, system, *metric) {
                            let _ = write!(label, " ({split})");
                        }
                        ((WIDTH - LABEL - 320.0) * v / max, label)
                    }
                    _ => (
                        0.0,
                        self.skipped(*scenario, system)
                            .map_or("—".to_string(), |s| s.status.replace('_', " ")),
                    ),
                };
                let _ = writeln!(
                    out,
                    r#"<rect x="{LABEL}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                    COLORS[system as usize % COLORS.len()],
                    LABEL + w + 4.0,
                    y + BAR_H - 4.0,
                    xml_escape(&label)
                );
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

/// The ceiling a scenario's cells are compared with: `raw_tcp_best` on the same scenario, or on
/// `upload_1m` for `segments_4k` (the same bytes per call, in one segment); `raw_stream` for the
/// server-streaming scenarios (one-way traffic, which no request/response program carries).
pub fn ceiling_of(scenario: Scenario) -> (Scenario, System) {
    match scenario {
        Scenario::Segments4k => (Scenario::Upload1m, System::RawTcpBest),
        s if s.is_server_stream() => (s, System::RawStream),
        s => (s, System::RawTcpBest),
    }
}

/// Three significant digits, thousands without decimals.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        "NaN".to_string()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of no measurements over every scenario and system, skipped where `compare`
    /// skips them.
    fn empty_report() -> Report {
        let mut skipped = Vec::new();
        for scenario in Scenario::ALL {
            for system in System::ALL {
                if let Some(reason) = system.not_applicable(scenario) {
                    skipped.push(Skipped {
                        scenario: scenario.name().into(),
                        system: system.name().into(),
                        status: "not_applicable".into(),
                        reason: reason.into(),
                    });
                }
            }
        }
        Report {
            schema: 2,
            machine: Machine { cpus: 2, kernel: "6.1".into(), cpu_model: "test".into() },
            affinity: String::new(),
            layout: String::new(),
            allocator: String::new(),
            date: String::new(),
            command: String::new(),
            repetitions: 1,
            warmup_s: 0.5,
            measure_s: 1.5,
            load_average: [String::new(), String::new()],
            load_1m_range: [0.0, 0.0],
            results: Vec::new(),
            peak_rss: Vec::new(),
            transport_stats: Vec::new(),
            skipped,
            systems: System::ALL.to_vec(),
            scenarios: Scenario::ALL.to_vec(),
        }
    }

    #[test]
    fn every_dash_is_explained_and_a_scenario_run_nowhere_has_no_row() {
        let report = empty_report();
        let legend = report.dash_legend();
        println!("{}", legend.join("\n"));
        assert!(legend[0].starts_with("— = not applicable"), "{legend:?}");
        assert!(
            legend.iter().any(|l| l.contains("on `file_1g`") && l.contains("a file download is compared as read+write")),
            "{legend:?}"
        );
        assert!(
            legend.iter().any(|l| l.starts_with("- `tarpc`, `tarpc_over_zcrpc` on `stream_64b`, `stream_1m`: tarpc has no streaming")),
            "{legend:?}"
        );
        // Every skipped pair is covered by a line naming its reason.
        for s in &report.skipped {
            assert!(legend.iter().any(|l| l.contains(&s.reason)), "{} / {} unexplained", s.scenario, s.system);
        }
        let table = report.markdown();
        assert!(table.contains("| file_1g |") && table.contains("| stream_1m |"), "{table}");
        // A scenario that no system runs (for one reason) gets no row.
        let mut nowhere = report;
        nowhere.skipped.retain(|s| s.scenario != Scenario::File1g.name());
        for system in System::ALL {
            nowhere.skipped.push(Skipped {
                scenario: Scenario::File1g.name().into(),
                system: system.name().into(),
                status: "not_applicable".into(),
                reason: "not run here".into(),
            });
        }
        let table = nowhere.markdown();
        assert!(!table.contains("| file_1g |"), "{table}");
    }

    #[test]
    fn streams_are_compared_with_the_one_way_stream() {
        assert_eq!(
            ceiling_of(Scenario::Stream64b),
            (Scenario::Stream64b, System::RawStream)
        );
        assert_eq!(
            ceiling_of(Scenario::Segments4k),
            (Scenario::Upload1m, System::RawTcpBest)
        );
        assert_eq!(
            ceiling_of(Scenario::Qps64b),
            (Scenario::Qps64b, System::RawTcpBest)
        );
    }
}
