//! CPU time of the client and the server threads over the measured window, from
//! `/proc/self/task/*`: `schedstat` gives each thread's run time in nanoseconds (precise), and
//! `stat`'s `utime`/`stime` (clock ticks) split it into user and system time. Threads are told
//! apart by name (`bench-client`, `bench-server`, see [`crate::placement::run_pair`]); any
//! other thread of the child (a runtime's helper, the parent waiting in `join`) is `other`.

use serde::Serialize;

/// One thread group's counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Raw {
    run_ns: u64,
    utime: u64,
    stime: u64,
}

/// Every role's counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    client: Raw,
    server: Raw,
    other: Raw,
}

/// CPU seconds spent in user space and in the kernel.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Times {
    /// User-space seconds.
    pub user_s: f64,
    /// Kernel seconds (system calls, the socket copies, softirqs charged to the thread).
    pub sys_s: f64,
}

impl Times {
    /// User plus system.
    pub fn total(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// CPU spent by each side between two snapshots.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Usage {
    /// The client thread.
    pub client: Times,
    /// The server thread.
    pub server: Times,
    /// Every other thread of the process.
    pub other: Times,
}

impl Usage {
    /// Everything, all threads.
    pub fn total(&self) -> f64 {
        self.client.total() + self.server.total() + self.other.total()
    }
}

/// `(comm, run_ns, utime, stime)` of one thread, or `None` if it went away.
fn read_task(dir: &std::path::Path) -> Option<(String, Raw)> {
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let schedstat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
    // The name in `stat` may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    let run_ns = schedstat.split_whitespace().next()?.parse().ok()?;
    Some((
        comm.trim().to_string(),
        Raw {
            run_ns,
            utime,
            stime,
        },
    ))
}

/// Reads every thread of this process now.
pub fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return s;
    };
    for task in tasks.flatten() {
        let Some((comm, raw)) = read_task(&task.path()) else {
            continue;
        };
        let slot = match comm.as_str() {
            "bench-client" => &mut s.client,
            "bench-server" => &mut s.server,
            _ => &mut s.other,
        };
        slot.run_ns += raw.run_ns;
        slot.utime += raw.utime;
        slot.stime += raw.stime;
    }
    s
}

fn delta(a: Raw, b: Raw) -> Times {
    let total = b.run_ns.saturating_sub(a.run_ns) as f64 / 1e9;
    let (u, s) = (
        b.utime.saturating_sub(a.utime),
        b.stime.saturating_sub(a.stime),
    );
    // Ticks are sampled (10 ms each at USER_HZ 100), so they only apportion the precise total.
    let user_share = if u + s == 0 {
        0.0
    } else {
        u as f64 / (u + s) as f64
    };
    Times {
        user_s: total * user_share,
        sys_s: total * (1.0 - user_share),
    }
}

impl Snapshot {
    /// CPU spent from `self` to `later`.
    pub fn until(&self, later: &Snapshot) -> Usage {
        Usage {
            client: delta(self.client, later.client),
            server: delta(self.server, later.server),
            other: delta(self.other, later.other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_named_thread_is_counted_under_its_role() {
        let used = std::thread::Builder::new()
            .name("bench-client".into())
            .spawn(|| {
                let before = snapshot();
                let t = std::time::Instant::now();
                let mut x = 0u64;
                while t.elapsed() < std::time::Duration::from_millis(50) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                (before.until(&snapshot()), t.elapsed().as_secs_f64())
            })
            .unwrap()
            .join()
            .unwrap();
        let (used, wall) = used;
        assert!(used.client.total() > 0.0, "{used:?}");
        assert!(used.client.total() <= wall + 0.01, "{used:?} in {wall} s");
        assert_eq!(used.server, Times::default());
    }
}
