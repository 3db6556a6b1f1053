//! The write-stall watch: a writer inside a send whose byte count has not moved for the whole
//! timeout is stuck behind a peer that does not read (or is gone without a reset). Progress is
//! the transport's `sent_bytes` counter, so a large write that trickles out is not a stall.

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(super) struct StallWatch {
    /// The sent count last seen while sending, and since when it has not moved.
    seen: Option<(u64, Instant)>,
}

impl StallWatch {
    /// How often to look: a quarter of the timeout (a stall is then seen within 1.25 × it).
    pub(super) fn tick(timeout: Duration) -> Duration {
        (timeout / 4).max(Duration::from_millis(5))
    }

    /// Looks at the writer now; true once it has been sending without progress for `timeout`.
    pub(super) fn stalled(&mut self, sending: bool, sent: u64, now: Instant, timeout: Duration) -> bool {
        if !sending {
            self.seen = None;
            return false;
        }
        match self.seen {
            Some((count, since)) if count == sent => now.duration_since(since) >= timeout,
            _ => {
                self.seen = Some((sent, now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_send_without_progress_for_the_whole_timeout_is_a_stall() {
        let t0 = Instant::now();
        let d = Duration::from_secs(4);
        let mut w = StallWatch::default();
        assert!(!w.stalled(true, 10, t0, d));
        // Progress resets the clock.
        assert!(!w.stalled(true, 11, t0 + Duration::from_secs(3), d));
        assert!(!w.stalled(true, 11, t0 + Duration::from_secs(6), d));
        assert!(w.stalled(true, 11, t0 + Duration::from_secs(7), d));
        // Idle (nothing to send) is never a stall.
        let mut w = StallWatch::default();
        assert!(!w.stalled(false, 0, t0, d));
        assert!(!w.stalled(false, 0, t0 + Duration::from_secs(100), d));
    }
}
