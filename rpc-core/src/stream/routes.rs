//! Where the stream events of a connection go: each streaming call's inbound channel, and the
//! waker of a sender waiting for credit. Kept by each side behind the connection's lock.

use std::task::Waker;

use tokio::sync::mpsc;

use super::Inbound;
use crate::body::Body;
use crate::call_map::CallMap;
use crate::error::CallError;

/// The routes of one connection's streaming calls.
#[derive(Default)]
pub(crate) struct Routes {
    inbound: CallMap<mpsc::UnboundedSender<Inbound>>,
    blocked: CallMap<Waker>,
}

impl Routes {
    /// Opens call `id`'s inbound channel. Unbounded, because the connection bounds it: the peer
    /// sends no more than its credit (one window plus one frame) before the receiver consumes.
    pub(crate) fn open(&mut self, id: u64) -> mpsc::UnboundedReceiver<Inbound> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inbound.insert(id, tx);
        rx
    }

    /// True while call `id` has an inbound channel.
    pub(crate) fn is_open(&self, id: u64) -> bool {
        self.inbound.contains_key(&id)
    }

    /// Delivers a message of call `id`. Gives it back when nobody listens any more (the
    /// receiver was dropped, or the call has no route): its bytes are then consumed at once.
    pub(crate) fn message(&mut self, id: u64, body: Body) -> Result<(), Body> {
        let Some(tx) = self.inbound.get(&id) else { return Err(body) };
        tx.send(Inbound::Message(body)).map_err(|e| match e.0 {
            Inbound::Message(b) => b,
            _ => unreachable!("sent a message"),
        })
    }

    /// Delivers the server's response headers or trailers of call `id` (ahead of what they
    /// came with); false when the call has no route (a unary call, or one that ended).
    pub(crate) fn metadata(&mut self, id: u64, item: Inbound) -> bool {
        match self.inbound.get(&id) {
            Some(tx) => {
                // A receiver that went away needs no metadata.
                let _ = tx.send(item);
                true
            }
            None => false,
        }
    }

    /// Ends call `id`'s inbound stream with `result` and closes it; a sender waiting for credit
    /// is woken when `also_sending` (the whole call is over).
    pub(crate) fn end(&mut self, id: u64, result: Result<(), CallError>, also_sending: bool) {
        if let Some(tx) = self.inbound.remove(&id) {
            let _ = tx.send(Inbound::End(result));
        }
        if also_sending {
            self.wake(id);
        }
    }

    /// Records the waker of call `id`'s sender, out of credit.
    pub(crate) fn block(&mut self, id: u64, waker: &std::task::Waker) {
        match self.blocked.get_mut(&id) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                self.blocked.insert(id, waker.clone());
            }
        }
    }

    /// Wakes call `id`'s sender, if it waits.
    pub(crate) fn wake(&mut self, id: u64) {
        if let Some(w) = self.blocked.remove(&id) {
            w.wake();
        }
    }

    /// Forgets call `id` (its stream, its sender), waking a sender that waits.
    pub(crate) fn remove(&mut self, id: u64) {
        self.inbound.remove(&id);
        self.wake(id);
    }
}
