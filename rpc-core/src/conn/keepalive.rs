//! Keepalive: is the peer still there?
//!
//! Any byte received is proof of life (`docs/wire.md`: "any traffic"), so a transfer that is
//! making progress never times out. When the connection has been quiet for the interval a ping
//! is queued; its timeout starts only once the writer has actually written it, since it may wait
//! behind a large frame of our own to a slow reader (a 24 MiB upload used to fail with a
//! keepalive timeout while its bytes were flowing). A writer that makes no progress at all is the
//! write-stall timeout's business, not this one's.

use std::time::{Duration, Instant};

/// What [`Keepalive::on_timeout`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing due.
    None,
    /// Queue a ping with this id.
    Ping(u64),
    /// The ping went unanswered, and nothing else came, for the whole timeout.
    Dead,
}

#[derive(Debug, Clone, Copy)]
struct OutPing {
    id: u64,
    /// The writer took the ping from the queue (it is in a batch being written).
    taken: bool,
    /// When the batch that carried it finished writing: the timeout counts from here.
    written_at: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Keepalive {
    interval: Option<Duration>,
    timeout: Duration,
    last_rx: Instant,
    ping: Option<OutPing>,
    next_id: u64,
}

impl Keepalive {
    pub(super) fn new(interval: Option<Duration>, timeout: Duration, now: Instant) -> Self {
        Keepalive { interval, timeout, last_rx: now, ping: None, next_id: 1 }
    }

    /// Bytes arrived: the peer is alive, whatever they were.
    pub(super) fn on_rx(&mut self, now: Instant) {
        self.last_rx = now;
        self.ping = None;
    }

    /// A pong arrived (any bytes already counted; this only matters for the id).
    pub(super) fn on_pong(&mut self, id: u64) {
        if self.ping.is_some_and(|p| p.id == id) {
            self.ping = None;
        }
    }

    /// The writer took every queued transmit, the ping among them if one is queued.
    pub(super) fn on_taken(&mut self) {
        if let Some(p) = &mut self.ping {
            p.taken = true;
        }
    }

    /// The batch the writer took last has been written.
    pub(super) fn on_written(&mut self, now: Instant) {
        if let Some(p) = &mut self.ping {
            if p.taken && p.written_at.is_none() {
                p.written_at = Some(now);
            }
        }
    }

    /// True while a ping is queued or being written (the driver then reports writes).
    pub(super) fn awaits_write(&self) -> bool {
        self.ping.is_some_and(|p| p.written_at.is_none())
    }

    /// When [`Keepalive::on_timeout`] must run next.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        // A sum past the clock's end (a `Duration::MAX` setting) is "never".
        match self.ping {
            Some(p) => p.written_at.and_then(|at| at.checked_add(self.timeout)),
            None => self.interval.and_then(|i| self.last_rx.checked_add(i)),
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) -> Action {
        let due = |from: Instant, after: Duration| from.checked_add(after).is_some_and(|at| now >= at);
        match self.ping {
            Some(OutPing { written_at: Some(at), .. }) if due(at, self.timeout) => Action::Dead,
            Some(_) => Action::None,
            None => match self.interval {
                Some(i) if due(self.last_rx, i) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.ping = Some(OutPing { id, taken: false, written_at: None });
                    Action::Ping(id)
                }
                _ => Action::None,
            },
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    #[cfg(test)]
    pub(super) fn ping_out(&self) -> bool {
        self.ping.is_some()
    }
}
