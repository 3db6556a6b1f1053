//! Deadlines of the calls in flight, ordered so the next one is found without a scan.

use std::collections::BTreeSet;
use std::time::Instant;

/// A set of `(deadline, call id)`.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    set: BTreeSet<(Instant, u64)>,
}

impl Deadlines {
    pub(crate) fn insert(&mut self, at: Instant, id: u64) {
        self.set.insert((at, id));
    }

    pub(crate) fn remove(&mut self, at: Instant, id: u64) {
        self.set.remove(&(at, id));
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }

    /// Removes and returns every id whose deadline is at or before `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.set.first() {
            if at > now {
                break;
            }
            self.set.pop_first();
            out.push(id);
        }
        out
    }
}
