//! Counting completed calls over a warm-up and a measurement window, the same way for every
//! system: the blocking raw loops call [`Meter::complete`] directly, the async RPC clients go
//! through [`closed_loop`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

/// How long one measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Calls completed before this much time has passed are not counted.
    pub warmup: Duration,
    /// Calls are counted for this long after the warm-up.
    pub measure: Duration,
    /// Stop after exactly this many counted calls instead of after `measure` (used under
    /// callgrind, where time means nothing and instruction counts must compare).
    pub calls: Option<u64>,
}

/// Fewer calls than this in the window and the measurement goes on past its end, so a slow
/// system on `call_64m` still reports a rate from more than one call.
const MIN_CALLS: u64 = 3;

/// What one measurement saw.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Calls completed in the window.
    pub calls: u64,
    /// From the first completion after the warm-up to the last counted one.
    pub elapsed: Duration,
    /// Per-call latency in nanoseconds, kept only when asked for.
    pub latencies_ns: Vec<u64>,
    /// The system's own counters at the end (zcrpc: both ends' transport statistics).
    pub transport_stats: Option<serde_json::Value>,
    /// CPU time of the client and the server threads over the same window as `elapsed`.
    pub cpu: Option<crate::cpu::Usage>,
    /// With large calls looping beside the measured ones ([`Shape::beside_len`]): their
    /// payload bytes per second after the warm-up, in units of 10^9.
    ///
    /// [`Shape::beside_len`]: crate::scenario::Shape::beside_len
    pub beside_gb_per_s: Option<f64>,
}

impl Sample {
    /// Calls per second.
    pub fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the recorded latencies, in microseconds.
    pub fn latency_quantile_us(&mut self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        self.latencies_ns.sort_unstable();
        let idx = ((self.latencies_ns.len() - 1) as f64 * q).round() as usize;
        self.latencies_ns[idx] as f64 / 1e3
    }
}

/// Tracks the warm-up and measurement windows as calls complete.
#[derive(Debug)]
pub struct Meter {
    start: Instant,
    timing: Timing,
    record_latency: bool,
    window_start: Option<Instant>,
    cpu_start: Option<crate::cpu::Snapshot>,
    sample: Sample,
}

impl Meter {
    /// Starts the clock now.
    pub fn new(timing: Timing, record_latency: bool) -> Meter {
        Meter {
            start: Instant::now(),
            timing,
            record_latency,
            window_start: None,
            cpu_start: None,
            sample: Sample::default(),
        }
    }

    /// Records a call that started at `started` and just completed. Returns false once the
    /// measurement is over and no more calls should be issued.
    pub fn complete(&mut self, started: Instant) -> bool {
        let now = Instant::now();
        let Some(window_start) = self.window_start else {
            if now.duration_since(self.start) >= self.timing.warmup {
                self.cpu_start = Some(crate::cpu::snapshot());
                self.window_start = Some(Instant::now());
            }
            return true;
        };
        self.sample.calls += 1;
        self.sample.elapsed = now.duration_since(window_start);
        if self.record_latency {
            self.sample
                .latencies_ns
                .push(now.duration_since(started).as_nanos() as u64);
        }
        self.go_on()
    }

    /// Whether the measurement goes on after what was just counted; at its end, the CPU time is
    /// read, after the last counted call, over the same window as `elapsed` (reading /proc costs
    /// tens of microseconds, outside both).
    fn go_on(&mut self) -> bool {
        let go_on = match self.timing.calls {
            Some(limit) => self.sample.calls < limit,
            None => !(self.sample.elapsed >= self.timing.measure && self.sample.calls >= MIN_CALLS),
        };
        if !go_on {
            self.sample.cpu = self
                .cpu_start
                .map(|start| start.until(&crate::cpu::snapshot()));
        }
        go_on
    }

    /// Records `n` stream messages that just arrived, with one clock read for all of them (a
    /// clock read per 64-byte message would cost a sizeable share of the message). Before the
    /// warm-up ends they are not counted; the window starts at the first batch after it. With
    /// a call limit, counts at most up to it. Returns false once the measurement is over.
    pub fn complete_many(&mut self, n: u64) -> bool {
        if n == 0 {
            return true;
        }
        let now = Instant::now();
        let Some(window_start) = self.window_start else {
            if now.duration_since(self.start) >= self.timing.warmup {
                self.cpu_start = Some(crate::cpu::snapshot());
                self.window_start = Some(Instant::now());
            }
            return true;
        };
        self.sample.calls += match self.timing.calls {
            Some(limit) => n.min(limit.saturating_sub(self.sample.calls)),
            None => n,
        };
        self.sample.elapsed = now.duration_since(window_start);
        self.go_on()
    }

    /// The finished sample.
    pub fn finish(self) -> Sample {
        self.sample
    }

    /// When the warm-up ends, counted from the meter's start.
    pub fn warmup_ends(&self) -> Instant {
        self.start + self.timing.warmup
    }
}

/// Which call [`closed_loop`] asks a system for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// One of the measured calls: the scenario's request.
    Measured,
    /// One of the large calls looping beside them on the same connection, of
    /// [`Shape::beside_len`](crate::scenario::Shape::beside_len) bytes.
    Beside,
}

impl Call {
    /// `measured` or `beside`, as this call is.
    pub fn pick<T: Clone>(self, measured: &T, beside: &T) -> T {
        match self {
            Call::Measured => measured.clone(),
            Call::Beside => beside.clone(),
        }
    }
}

/// Keeps `shape.window` calls in flight, made by `call`, until the meter says stop; with
/// `shape.beside_len`, one large call after another beside them on the same connection, whose
/// throughput is the sample's `beside_gb_per_s`. The futures are polled from the current task
/// (no `spawn`), the same for every async system.
pub async fn closed_loop<F, Fut, E>(shape: crate::scenario::Shape, meter: Meter, call: F) -> Result<Sample, String>
where
    F: Fn(Call) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if shape.beside_len == 0 {
        return measured_loop(shape.window, meter, &call).await;
    }
    let counting_from = meter.warmup_ends();
    let bytes = AtomicU64::new(0);
    let beside = async {
        loop {
            if let Err(e) = call(Call::Beside).await {
                return format!("a call beside failed: {e}");
            }
            if Instant::now() >= counting_from {
                bytes.fetch_add(shape.beside_len as u64, Ordering::Relaxed);
            }
        }
    };
    let mut sample = tokio::select! {
        sample = measured_loop(shape.window, meter, &call) => sample?,
        e = beside => return Err(e),
    };
    let secs = Instant::now().saturating_duration_since(counting_from).as_secs_f64().max(1e-9);
    sample.beside_gb_per_s = Some(bytes.load(Ordering::Relaxed) as f64 / secs / 1e9);
    Ok(sample)
}

/// The measured calls of [`closed_loop`], `window` in flight.
///
/// One call at a time is a plain loop awaiting each call, as an application writes it.
/// `FuturesUnordered` would cost every system a task poll per call that no application pays:
/// once it has polled each of its futures in one pass (with one future, after every poll that
/// returns `Pending`), it wakes its own task and yields to the executor.
async fn measured_loop<F, Fut, E>(window: usize, mut meter: Meter, call: &F) -> Result<Sample, String>
where
    F: Fn(Call) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if window == 1 {
        loop {
            let started = Instant::now();
            call(Call::Measured).await.map_err(|e| format!("call failed: {e}"))?;
            if !meter.complete(started) {
                return Ok(meter.finish());
            }
        }
    }
    let mut in_flight = FuturesUnordered::new();
    let issue = |in_flight: &mut FuturesUnordered<_>| {
        let started = Instant::now();
        let fut = call(Call::Measured);
        in_flight.push(async move { fut.await.map(|()| started) });
    };
    for _ in 0..window {
        issue(&mut in_flight);
    }
    while let Some(done) = in_flight.next().await {
        let started = done.map_err(|e| format!("call failed: {e}"))?;
        if !meter.complete(started) {
            return Ok(meter.finish());
        }
        issue(&mut in_flight);
    }
    Err("no call in flight".to_string())
}

/// Stream messages counted per clock read by [`StreamCounter`]: a batch of 64-byte messages
/// arrives in a few microseconds, far below the resolution a 0.5 s window needs.
pub const MESSAGES_PER_TICK: u64 = 256;

/// Counts a stream's messages one by one and hands them to the [`Meter`] in batches of
/// `per_tick`, so that the clock is read once per batch whatever the system.
#[derive(Debug)]
pub struct StreamCounter {
    meter: Meter,
    per_tick: u64,
    pending: u64,
}

impl StreamCounter {
    /// Counts messages of `message_len` bytes: [`MESSAGES_PER_TICK`] per clock read for
    /// messages under 64 KiB, every message for larger ones.
    pub fn new(meter: Meter, message_len: usize) -> StreamCounter {
        StreamCounter {
            meter,
            per_tick: if message_len < (64 << 10) {
                MESSAGES_PER_TICK
            } else {
                1
            },
            pending: 0,
        }
    }

    /// Counts `n` messages received; false once the measurement is over.
    pub fn add(&mut self, n: u64) -> bool {
        self.pending += n;
        if self.pending < self.per_tick {
            return true;
        }
        let n = std::mem::take(&mut self.pending);
        self.meter.complete_many(n)
    }

    /// The finished sample.
    pub fn finish(self) -> Sample {
        self.meter.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counter_stops_at_the_call_limit() {
        let timing = Timing {
            warmup: Duration::ZERO,
            measure: Duration::ZERO,
            calls: Some(1000),
        };
        let mut counter = StreamCounter::new(Meter::new(timing, false), 64);
        // The first batch only ends the (zero) warm-up.
        let mut fed = 0u64;
        while counter.add(1) {
            fed += 1;
            assert!(fed < 10_000, "never stopped");
        }
        let sample = counter.finish();
        assert_eq!(sample.calls, 1000);
        assert!(sample.cpu.is_some());
        // Messages are handed over a batch at a time.
        assert_eq!((fed + 1) % MESSAGES_PER_TICK, 0);
    }

    #[test]
    fn large_messages_are_counted_one_by_one() {
        let timing = Timing {
            warmup: Duration::ZERO,
            measure: Duration::ZERO,
            calls: Some(3),
        };
        let mut counter = StreamCounter::new(Meter::new(timing, false), 1 << 20);
        assert!(counter.add(1)); // ends the warm-up
        assert!(counter.add(1));
        assert!(counter.add(1));
        assert!(!counter.add(1));
        assert_eq!(counter.finish().calls, 3);
    }
}
