//! Waking a receiver once per useful amount of input: `SO_RCVLOWAT` from the bytes certain to
//! come.
//!
//! On loopback the sender's thread runs the receiver's TCP input, and each segment it queues
//! while the receiver sleeps wakes the receiver (a cross-CPU interrupt the sender pays for).
//! A receiver that drains faster than its peer sends (the server of an upload: it only reads)
//! then sleeps and wakes once per 64 KiB segment, reading a segment at a time. Before it
//! sleeps, the receiver asks the kernel not to wake it until the bytes it is certain to get
//! (the rest of the frame being received, from [`RecvHalf::expect_bytes`]) are queued, at
//! most [`MAX_LOWAT`]: one wake-up and one read per 256 KiB instead of several. Never more
//! than is certain to come, or the wait would not end; the peer closing or failing wakes the
//! reader whatever the mark.
//!
//! [`RecvHalf::expect_bytes`]: rpc_core::transport::RecvHalf::expect_bytes

use std::os::fd::RawFd;

/// The most a receiver waits for before it is woken.
pub(crate) const MAX_LOWAT: usize = 256 << 10;

/// Below this many certain bytes the receiver is woken by any input (the kernel's default):
/// a smaller mark would save little and cost a system call per change.
pub(crate) const MIN_LOWAT: usize = 64 << 10;

/// The low-water mark of one socket, as last set.
#[derive(Debug)]
pub(crate) struct RecvLowat {
    fd: RawFd,
    /// The mark in force (1: the kernel's default).
    set: usize,
    /// Bytes the peer is certain to send, as the caller said for the next receive.
    certain: usize,
    /// False when not configured, or once the kernel refused the option: the receiver is
    /// woken by any input.
    enabled: bool,
}

impl RecvLowat {
    /// The mark of `fd`, left at the kernel's default unless `enabled`.
    pub(crate) fn new(fd: RawFd, enabled: bool) -> RecvLowat {
        RecvLowat { fd, set: 1, certain: 0, enabled }
    }

    /// The bytes the peer is certain to send from now on (for the next receive).
    pub(crate) fn expect(&mut self, bytes: usize) {
        self.certain = bytes;
    }

    /// What the last [`RecvLowat::expect`] said, for this receive; forgotten (0) for the next.
    pub(crate) fn take_expected(&mut self) -> usize {
        std::mem::take(&mut self.certain)
    }

    /// The mark for `certain` bytes to come: them, at most [`MAX_LOWAT`], rounded down to
    /// 16 KiB so that a frame's last waits change it seldom; 1 below [`MIN_LOWAT`].
    pub(crate) fn mark(certain: usize) -> usize {
        if certain < MIN_LOWAT {
            1
        } else {
            certain.min(MAX_LOWAT) & !((16 << 10) - 1)
        }
    }

    /// Before a wait for input, with `certain` bytes still certain to come: sets the mark for
    /// them, if it differs from the one in force.
    pub(crate) fn before_wait(&mut self, certain: usize) {
        if !self.enabled {
            return;
        }
        let want = Self::mark(certain);
        if want == self.set {
            return;
        }
        match crate::sys::sock::set_rcvlowat(self.fd, want) {
            Ok(()) => self.set = want,
            Err(e) => {
                tracing::debug!("SO_RCVLOWAT refused ({e}); the receiver is woken by any input");
                self.enabled = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_is_never_more_than_certain() {
        for certain in [0, 1, 100, MIN_LOWAT - 1, MIN_LOWAT, MIN_LOWAT + 5, 200_000, MAX_LOWAT, 1 << 20, usize::MAX] {
            let m = RecvLowat::mark(certain);
            assert!(m >= 1 && (m == 1 || m <= certain), "{certain} -> {m}");
            assert!(m <= MAX_LOWAT);
        }
        assert_eq!(RecvLowat::mark(MIN_LOWAT - 1), 1);
        assert_eq!(RecvLowat::mark(MIN_LOWAT), MIN_LOWAT);
        assert_eq!(RecvLowat::mark(1 << 20), MAX_LOWAT);
    }
}
