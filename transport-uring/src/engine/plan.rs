//! The send planner: which path a message takes (copy, zero-copy, coalesce, file), the runs a
//! frame with file regions is sent in, and the adaptive switch between zero-copy and copy. Pure logic, no IO; public so that its decisions can be
//! benchmarked and reasoned about on their own.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use rpc_core::TransportStats;

use crate::config::ZcMode;

/// The path of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Gathered by the kernel from the iovecs (`writev`): below the threshold, or the
    /// connection is on the copy path.
    Copy,
    /// Zero-copy; segments beyond the iovec limit are coalesced first.
    ZeroCopy,
    /// The frame carries file regions: sent as [`file_runs`], the regions by splice or
    /// `sendfile`.
    File,
}

/// One run of a frame that carries file regions, in the frame's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Consecutive memory pieces, gathered by one `writev`.
    Memory(Range<usize>),
    /// One file region, moved from the page cache to the socket in the kernel (io_uring
    /// `SPLICE` through a pipe, or `sendfile`).
    File(usize),
}

/// Splits a frame's pieces (`is_file[i]` says whether piece `i` is a file region) into memory
/// runs and file runs, in order; empty memory runs are left out.
pub fn file_runs(is_file: &[bool]) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, &file) in is_file.iter().enumerate() {
        if file {
            if start < i {
                runs.push(Run::Memory(start..i));
            }
            runs.push(Run::File(i));
            start = i + 1;
        }
    }
    if start < is_file.len() {
        runs.push(Run::Memory(start..is_file.len()));
    }
    runs
}

/// Groups of consecutive pieces that make at most `max_iov` iovecs, copying as few bytes as
/// the rule allows: find the smallest size `t` such that merging every maximal run of
/// neighbouring pieces no larger than `t` brings the count down to `max_iov`. Returns the
/// groups in order; a group of more than one piece is copied into one buffer.
pub fn coalesce(lens: &[usize], max_iov: usize) -> Vec<Range<usize>> {
    let max_iov = max_iov.max(1);
    if lens.len() <= max_iov {
        return (0..lens.len()).map(|i| i..i + 1).collect();
    }
    let count_with = |t: usize| -> usize {
        let mut count = 0;
        let mut i = 0;
        while i < lens.len() {
            if lens[i] <= t {
                while i < lens.len() && lens[i] <= t {
                    i += 1;
                }
            } else {
                i += 1;
            }
            count += 1;
        }
        count
    };
    let mut sizes: Vec<usize> = lens.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    // count_with is non-increasing in t and count_with(max) == 1.
    let (mut lo, mut hi) = (0usize, sizes.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if count_with(sizes[mid]) <= max_iov {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let t = sizes[lo];
    let mut groups = Vec::with_capacity(max_iov);
    let mut i = 0;
    while i < lens.len() {
        let start = i;
        if lens[i] <= t {
            while i < lens.len() && lens[i] <= t {
                i += 1;
            }
        } else {
            i += 1;
        }
        groups.push(start..i);
    }
    groups
}

/// The adaptive zero-copy state of one connection.
#[derive(Debug)]
pub struct Adaptive {
    mode: ZcMode,
    reprobe_every: u32,
    /// Zero-copy is believed to pay (no `ZC_COPIED` seen since the last switch).
    zc_ok: AtomicBool,
    /// Eligible sends taken by copy since the last probe.
    since_probe: AtomicU32,
}

impl Adaptive {
    /// A connection's state in `mode`, re-probing zero-copy every `reprobe_every` eligible sends
    /// once on the copy path.
    pub fn new(mode: ZcMode, reprobe_every: u32) -> Self {
        Adaptive {
            mode,
            reprobe_every: reprobe_every.max(1),
            zc_ok: AtomicBool::new(true),
            since_probe: AtomicU32::new(0),
        }
    }

    /// The path of a message eligible for zero-copy (at or above the threshold).
    pub fn choose(&self) -> Path {
        match self.mode {
            ZcMode::NeverZc => Path::Copy,
            ZcMode::AlwaysZc => Path::ZeroCopy,
            ZcMode::Adaptive if self.zc_ok.load(Relaxed) => Path::ZeroCopy,
            ZcMode::Adaptive => {
                if self.since_probe.fetch_add(1, Relaxed) + 1 >= self.reprobe_every {
                    self.since_probe.store(0, Relaxed);
                    Path::ZeroCopy
                } else {
                    Path::Copy
                }
            }
        }
    }

    /// A notification arrived; `copied` is the kernel's `ZC_COPIED` report.
    pub fn notified(&self, copied: bool, stats: &TransportStats) {
        if self.mode != ZcMode::Adaptive {
            return;
        }
        if copied {
            if self.zc_ok.swap(false, Relaxed) {
                self.since_probe.store(0, Relaxed);
                TransportStats::add(&stats.path_switches, 1);
                tracing::debug!(
                    "zero-copy notifications say ZC_COPIED: switching to the copy path"
                );
            }
        } else if !self.zc_ok.swap(true, Relaxed) {
            TransportStats::add(&stats.path_switches, 1);
            tracing::debug!("zero-copy probe not copied: back to zero-copy");
        }
    }

    /// Whether the connection is on the zero-copy path now.
    pub fn on_zero_copy(&self) -> bool {
        self.zc_ok.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lens: &[usize], max: usize) -> Vec<Range<usize>> {
        let g = coalesce(lens, max);
        assert!(g.len() <= max.max(1), "{} groups > {max}", g.len());
        let mut next = 0;
        for r in &g {
            assert_eq!(r.start, next);
            assert!(r.end > r.start);
            next = r.end;
        }
        assert_eq!(next, lens.len());
        g
    }

    #[test]
    fn under_the_limit_nothing_merges() {
        let g = check(&[5, 6, 7], 3);
        assert!(g.iter().all(|r| r.len() == 1));
    }

    #[test]
    fn merges_the_smallest_neighbours() {
        // Big pieces stay alone; the small ones between them merge.
        let lens = [100_000, 10, 20, 30, 100_000, 5, 5, 100_000];
        let g = check(&lens, 5);
        assert_eq!(g, vec![0..1, 1..4, 4..5, 5..7, 7..8]);
    }

    #[test]
    fn equal_pieces_with_a_tight_limit() {
        let lens = vec![256; 4096];
        check(&lens, 17);
        check(&lens, 1);
        check(&lens, 1024);
    }

    #[test]
    fn file_runs_keep_the_order_and_split_at_each_region() {
        assert_eq!(file_runs(&[false, true]), vec![Run::Memory(0..1), Run::File(1)]);
        assert_eq!(
            file_runs(&[false, false, true, true, false]),
            vec![Run::Memory(0..2), Run::File(2), Run::File(3), Run::Memory(4..5)]
        );
        assert_eq!(file_runs(&[true]), vec![Run::File(0)]);
        assert_eq!(file_runs(&[false, false]), vec![Run::Memory(0..2)]);
    }

    #[test]
    fn adaptive_switches_and_reprobes() {
        let stats = TransportStats::new("uring");
        let a = Adaptive::new(ZcMode::Adaptive, 3);
        assert_eq!(a.choose(), Path::ZeroCopy);
        a.notified(true, &stats);
        a.notified(true, &stats);
        assert_eq!(stats.snapshot().path_switches, 1);
        assert_eq!(a.choose(), Path::Copy);
        assert_eq!(a.choose(), Path::Copy);
        assert_eq!(a.choose(), Path::ZeroCopy, "probe on the 3rd");
        a.notified(false, &stats);
        assert_eq!(stats.snapshot().path_switches, 2);
        assert_eq!(a.choose(), Path::ZeroCopy);
        let always = Adaptive::new(ZcMode::AlwaysZc, 3);
        always.notified(true, &stats);
        assert_eq!(always.choose(), Path::ZeroCopy);
    }
}
