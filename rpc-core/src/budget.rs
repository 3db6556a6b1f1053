//! The server-wide memory budget: bytes held by all of a server's connections together
//! (requests received and not yet answered, answers produced and not yet written), and, under
//! a limit of their own, the large receive buffers they keep for reuse.
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
    /// Most bytes of receive buffers kept for reuse, all connections together.
    cache_limit: usize,
    cached: AtomicUsize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize, cache_limit: usize) -> Self {
        MemoryBudget { limit, used: AtomicUsize::new(0), freed: Notify::new(), cache_limit, cached: AtomicUsize::new(0) }
    }

    /// Takes `bytes` of the receive-buffer cache for a buffer a connection keeps; false (and
    /// nothing taken) when that would pass the cache's limit: the buffer is then freed after use.
    pub(crate) fn try_cache(&self, bytes: usize) -> bool {
        self.cached
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_add(bytes).filter(|&t| t <= self.cache_limit))
            .is_ok()
    }

    /// Gives back `bytes` a connection no longer keeps.
    pub(crate) fn uncache(&self, bytes: usize) {
        self.cached.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes of receive buffers kept now.
    pub(crate) fn cached(&self) -> usize {
        self.cached.load(Ordering::Acquire)
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
        let b = MemoryBudget::new(100, 0);
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

    #[test]
    fn the_receive_cache_takes_what_fits_its_limit_and_gets_it_back() {
        let b = MemoryBudget::new(100, 50);
        assert!(b.try_cache(30));
        assert!(!b.try_cache(30), "60 of 50");
        assert!(b.try_cache(20));
        assert_eq!(b.cached(), 50);
        assert!(!b.is_over(), "the cache is not held memory");
        b.uncache(30);
        assert!(b.try_cache(30));
        assert!(!b.try_cache(usize::MAX), "no overflow");
        assert_eq!(b.cached(), 50);
    }
}
