//! The server-wide memory budget: bytes held by all of a server's connections together
//! (requests received and not yet answered, answers produced and not yet written).
//!
//! Each connection also has a budget of its own ([`crate::conn::ConnConfig::memory_budget`]);
//! a connection at either stops reading — backpressure, not an error: nothing is dropped and
//! nothing grows. What it holds drains as its peer reads (or, if the peer never does, when the
//! write-stall timeout ends the connection), and readers resume as it falls below the limit.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bytes held against a shared limit. See the module docs.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// Woken (all waiters) when `used` falls from at-or-above the limit to below it.
    freed: Notify,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> Self {
        MemoryBudget { limit, used: AtomicUsize::new(0), freed: Notify::new() }
    }

    /// True while the holders together are at or over the limit.
    pub(crate) fn is_over(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.limit
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// One holder's share moved from `from` to `to` bytes.
    pub(crate) fn update(&self, from: usize, to: usize) {
        if to >= from {
            self.used.fetch_add(to - from, Ordering::AcqRel);
            return;
        }
        let before = self.used.fetch_sub(from - to, Ordering::AcqRel);
        let after = before - (from - to);
        if before >= self.limit && after < self.limit {
            self.freed.notify_waiters();
        }
    }

    /// The notification of the next fall below the limit. Create it (and `enable` it) before
    /// checking [`MemoryBudget::is_over`], so that a fall between the two is not missed.
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn holders_add_up_and_a_fall_below_the_limit_wakes_waiters() {
        let b = MemoryBudget::new(100);
        b.update(0, 60);
        b.update(0, 50);
        assert!(b.is_over());
        let waiter = b.freed();
        tokio::pin!(waiter);
        waiter.as_mut().enable();
        b.update(60, 30);
        assert_eq!(b.used(), 80);
        assert!(!b.is_over());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(waiter.as_mut().poll(&mut cx).is_ready());
    }
}
