//! What the reliability tests and the soak program watch in a process: resident memory, its
//! peak, and open file descriptors, read from `/proc` (Linux only; elsewhere every reading is
//! `None`).

/// One reading of a process's memory and descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcReading {
    /// Resident memory now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident memory (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fds: u64,
}

/// Reads `/proc/PID/status` and `/proc/PID/fd`; `None` once the process is gone.
pub fn read(pid: u32) -> Option<ProcReading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcReading { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")?, fds })
}

/// The same for this process.
pub fn read_self() -> Option<ProcReading> {
    read(std::process::id())
}

/// This process's limit on open files, `(soft, hard)`, from `/proc/self/limits`.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let parse = |s: &str| if s == "unlimited" { Some(u64::MAX) } else { s.parse().ok() };
    Some((parse(it.next()?)?, parse(it.next()?)?))
}

/// Raises this process's soft limit on open files to at least `need` (children inherit it),
/// within the hard limit, through the `prlimit` tool so no `unsafe` is needed here. Returns the
/// soft limit now in force, or why it is too low.
pub fn raise_nofile(need: u64) -> Result<u64, String> {
    let (soft, hard) = nofile_limit().ok_or("cannot read /proc/self/limits")?;
    if soft >= need {
        return Ok(soft);
    }
    if hard < need {
        return Err(format!("the hard limit on open files is {hard}, below the {need} needed"));
    }
    let pid = std::process::id().to_string();
    let target = format!("--nofile={hard}:{hard}");
    let ok = std::process::Command::new("prlimit").args(["--pid", &pid, &target]).status().map(|s| s.success());
    match (ok, nofile_limit()) {
        (Ok(true), Some((soft, _))) if soft >= need => Ok(soft),
        _ => Err(format!("could not raise the soft limit on open files from {soft} to {need} (prlimit)")),
    }
}
