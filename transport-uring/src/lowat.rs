//! Waking a receiver once per useful amount of input: `SO_RCVLOWAT` from the bytes certain to
//! come.
//!
//! On loopback the sender's thread runs the receiver's TCP input, and each segment it queues
//! while the receiver sleeps wakes the receiver (a cross-CPU interrupt the sender pays for).
//! A receiver that drains faster than its peer sends (the server of an upload: it only reads)
//! then sleeps and wakes once per 64 KiB segment, reading a segment at a time. Before it
//! sleeps, the receiver asks the kernel not to wake it until the bytes it is certain to get
//! (the rest of the frame being received, from [`RecvHalf::expect_bytes`]) are queued, at
//! most the connection's cap: one wake-up and one read per megabyte instead of sixteen. Never
//! more than is certain to come, or the wait would not end; the peer closing or failing wakes
//! the reader whatever the mark.
//!
//! What the mark holds back is not seen by keepalive either, so the cap follows the link: it
//! starts at [`FIRST_CAP`] (256 KiB), doubles after each wait for a mark that took under
//! [`GROW_WITHIN`] (up to [`MAX_LOWAT`], 1 MiB: the whole of a 1 MiB frame or piece), and halves
//! after one that took over [`SHRINK_AFTER`] (down to [`MIN_LOWAT`], 64 KiB). And no wait for a
//! mark lasts longer than [`PATIENCE`] (1 s): past it the receiver lowers the mark to any byte
//! ([`RecvLowat::impatient`]: the kernel then wakes it at once if anything came), takes what
//! came, and the cap drops to 64 KiB. Bytes that arrive are seen within a second, however
//! slow the link, or suddenly it slowed.
//!
//! [`RecvHalf::expect_bytes`]: rpc_core::transport::RecvHalf::expect_bytes

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// The most a receiver waits for before it is woken: a whole 1 MiB frame (the size of a piece
/// of a larger one). Measured on loopback against the earlier fixed 256 KiB, in alternating
/// runs: `upload_1m` 4.9 → 6.3 GB/s, `download_1m` 5.7 → 7.4, `call_64m` 5.0 → 5.9.
pub(crate) const MAX_LOWAT: usize = 1 << 20;

/// The cap of a new connection, before any wait has measured its link.
pub(crate) const FIRST_CAP: usize = 256 << 10;

/// Below this many certain bytes the receiver is woken by any input (the kernel's default):
/// a smaller mark would save little and cost a system call per change. Also the smallest cap.
pub(crate) const MIN_LOWAT: usize = 64 << 10;

/// A wait for a mark that ended within this doubles the cap (a link of over 25 MB/s for
/// 256 KiB).
pub(crate) const GROW_WITHIN: Duration = Duration::from_millis(10);

/// A wait for a mark that took longer than this halves the cap.
pub(crate) const SHRINK_AFTER: Duration = Duration::from_millis(250);

/// The longest a receiver waits for a mark: then it lowers the mark to any byte.
pub(crate) const PATIENCE: Duration = Duration::from_secs(1);

/// The low-water mark of one socket, as last set.
#[derive(Debug)]
pub(crate) struct RecvLowat {
    fd: RawFd,
    /// The mark in force (1: the kernel's default).
    set: usize,
    /// Bytes the peer is certain to send, as the caller said for the next receive.
    certain: usize,
    /// The most the mark may be now (see the module docs).
    cap: usize,
    /// When the wait for the mark in force began (none while the mark is the default).
    waiting_since: Option<Instant>,
    /// False when not configured, or once the kernel refused the option: the receiver is
    /// woken by any input.
    enabled: bool,
}

impl RecvLowat {
    /// The mark of `fd`, left at the kernel's default unless `enabled`.
    pub(crate) fn new(fd: RawFd, enabled: bool) -> RecvLowat {
        RecvLowat { fd, set: 1, certain: 0, cap: FIRST_CAP, waiting_since: None, enabled }
    }

    /// The bytes the peer is certain to send from now on (for the next receive).
    pub(crate) fn expect(&mut self, bytes: usize) {
        self.certain = bytes;
    }

    /// What the last [`RecvLowat::expect`] said, for this receive; forgotten (0) for the next.
    pub(crate) fn take_expected(&mut self) -> usize {
        std::mem::take(&mut self.certain)
    }

    /// The mark for `certain` bytes to come under `cap`: them, at most `cap`, rounded down to
    /// 16 KiB so that a frame's last waits change it seldom; 1 below [`MIN_LOWAT`].
    pub(crate) fn mark(certain: usize, cap: usize) -> usize {
        if certain < MIN_LOWAT {
            1
        } else {
            certain.min(cap) & !((16 << 10) - 1)
        }
    }

    /// Before a wait for input, with `certain` bytes still certain to come: sets the mark for
    /// them, if it differs from the one in force, and notes when the wait began.
    pub(crate) fn before_wait(&mut self, certain: usize) {
        if !self.enabled {
            return;
        }
        let want = Self::mark(certain, self.cap);
        if want == 1 {
            self.waiting_since = None;
        } else if self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        if want == self.set {
            return;
        }
        match crate::sys::sock::set_rcvlowat(self.fd, want) {
            Ok(()) => self.set = want,
            Err(e) => self.refused(e),
        }
    }

    /// The kernel refused to change the mark: no more marks on this socket, and the one in
    /// force, if any, back to any byte (a mark left high would hold back every later read,
    /// unbounded by [`PATIENCE`] once disabled).
    fn refused(&mut self, e: std::io::Error) {
        tracing::debug!("SO_RCVLOWAT refused ({e}); the receiver is woken by any input");
        self.enabled = false;
        self.waiting_since = None;
        if self.set != 1 && crate::sys::sock::set_rcvlowat(self.fd, 1).is_ok() {
            self.set = 1;
        }
    }

    /// Waits for `stream` to be readable, with `certain` bytes still certain to come: under the
    /// mark for them ([`RecvLowat::before_wait`]), at most [`PATIENCE`] when that is more than
    /// any byte. Past it the mark goes back to any byte ([`RecvLowat::impatient`]), `certain`
    /// to 0 for the rest of the caller's read, and it returns so that the caller reads what
    /// came. (Not raised again at the caller's next wait: tokio has not yet seen the readiness
    /// the lower mark gave, so the read retried at once finds nothing, and a mark raised again
    /// before tokio asks would make the kernel drop that readiness.)
    pub(crate) async fn wait_readable(&mut self, stream: &TcpStream, certain: &mut usize) -> io::Result<()> {
        // A mark the kernel would not take back, still in force, is bounded too.
        let marked = (self.enabled && Self::mark(*certain, self.cap) > 1) || self.set > 1;
        self.before_wait(*certain);
        if !marked {
            return stream.readable().await;
        }
        match tokio::time::timeout(PATIENCE, stream.readable()).await {
            Ok(ready) => ready,
            Err(_) => {
                self.impatient();
                *certain = 0;
                Ok(())
            }
        }
    }

    /// A wait for the mark lasted [`PATIENCE`]: the mark goes back to any byte (setting it
    /// makes the kernel wake the waiting reader at once if anything is queued), and the cap to
    /// [`MIN_LOWAT`].
    fn impatient(&mut self) {
        self.cap = MIN_LOWAT;
        self.waiting_since = None;
        if self.set == 1 {
            return;
        }
        match crate::sys::sock::set_rcvlowat(self.fd, 1) {
            Ok(()) => self.set = 1,
            Err(e) => self.refused(e),
        }
    }

    /// After a read that brought bytes: a wait for a mark that ended quickly lets the next
    /// one be larger, a slow one makes it smaller.
    pub(crate) fn after_read(&mut self) {
        let Some(began) = self.waiting_since.take() else { return };
        self.cap = Self::next_cap(self.cap, began.elapsed());
    }

    /// The cap after a wait that took `took` under `cap`.
    fn next_cap(cap: usize, took: Duration) -> usize {
        if took <= GROW_WITHIN {
            (cap * 2).min(MAX_LOWAT)
        } else if took >= SHRINK_AFTER {
            (cap / 2).max(MIN_LOWAT)
        } else {
            cap
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_never_more_than_certain_nor_the_cap() {
        for cap in [MIN_LOWAT, FIRST_CAP, MAX_LOWAT] {
            for certain in [0, 1, 100, MIN_LOWAT - 1, MIN_LOWAT, MIN_LOWAT + 5, 200_000, FIRST_CAP, 1 << 20, usize::MAX] {
                let m = RecvLowat::mark(certain, cap);
                assert!(m >= 1 && (m == 1 || m <= certain), "{certain} -> {m}");
                assert!(m <= cap, "{certain} under {cap} -> {m}");
            }
        }
        assert_eq!(RecvLowat::mark(MIN_LOWAT - 1, MAX_LOWAT), 1);
        assert_eq!(RecvLowat::mark(MIN_LOWAT, FIRST_CAP), MIN_LOWAT);
        assert_eq!(RecvLowat::mark(1 << 20, FIRST_CAP), FIRST_CAP);
        assert_eq!(RecvLowat::mark(1 << 20, MAX_LOWAT), 1 << 20);
        assert_eq!(RecvLowat::mark((1 << 20) + 20, MAX_LOWAT), 1 << 20);
    }

    #[test]
    fn the_cap_grows_on_a_fast_link_and_shrinks_on_a_slow_one_within_its_bounds() {
        let fast = Duration::from_micros(50);
        let slow = Duration::from_secs(2);
        let mut cap = FIRST_CAP;
        for _ in 0..10 {
            cap = RecvLowat::next_cap(cap, fast);
        }
        assert_eq!(cap, MAX_LOWAT);
        // In between: it stays.
        assert_eq!(RecvLowat::next_cap(cap, Duration::from_millis(100)), MAX_LOWAT);
        for _ in 0..10 {
            cap = RecvLowat::next_cap(cap, slow);
        }
        assert_eq!(cap, MIN_LOWAT);
        assert_eq!(RecvLowat::next_cap(MIN_LOWAT, fast), 2 * MIN_LOWAT);
    }
}
