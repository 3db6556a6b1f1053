//! Where the stream events of a connection go: each streaming call's inbound channel, and the
//! waker of a sender waiting for credit. Kept by each side behind the connection's lock.
//!
//! The messages of one call that arrive in one step (one read's worth of frames) go to its
//! receiver as one batch at the end of the step: one channel send and one wake-up for hundreds
//! of small messages, not one each (measured on `stream_64b`: the channel's push, pop and
//! wake-up per message were a tenth of the receiving side's time). The messages of a batch
//! frame are a batch already and go as they came: joining two would move them all into a
//! larger allocation (measured on `stream_64b`: three quarters of the client's page faults, as
//! the allocator gave such transient blocks back to the kernel and took them again).

use std::task::Waker;

use super::inbox::{inbox, InboxReceiver, InboxSender};
use super::{HasRoutes, Inbound};
use crate::body::Body;
use crate::driver::Locked;
use crate::call_map::CallMap;
use crate::error::CallError;
use crate::frame::BatchMessages;

/// The routes of one connection's streaming calls.
#[derive(Default)]
pub(crate) struct Routes {
    inbound: CallMap<InboxSender>,
    blocked: CallMap<Waker>,
    /// The messages of one call delivered during this step, not yet sent on.
    staged: Option<(u64, Staged)>,
    /// Messages whose receiver was gone when their batch was sent: (call, messages, bytes),
    /// for the connection to count as consumed.
    undelivered: Vec<(u64, usize, usize)>,
    /// Messages went to a receiver since the reader last asked ([`Routes::take_delivered`]).
    delivered: bool,
}

/// One message, messages that came one by one (the vector only once a second one comes), or
/// the messages of one batch frame.
enum Staged {
    One(Body),
    Ones(Vec<Body>),
    Batch(BatchMessages),
}

impl Staged {
    /// These messages, then `body`, if it joins them: a batch frame's messages take no more.
    fn then(self, body: Body) -> Result<Staged, (Staged, Body)> {
        match self {
            Staged::One(first) => {
                let mut v = Vec::with_capacity(64);
                v.push(first);
                v.push(body);
                Ok(Staged::Ones(v))
            }
            Staged::Ones(mut v) => {
                v.push(body);
                Ok(Staged::Ones(v))
            }
            batch @ Staged::Batch(_) => Err((batch, body)),
        }
    }
}

impl Routes {
    /// Opens call `id`'s inbound channel. Unbounded, because the connection bounds it: the peer
    /// sends no more than its credit (one window plus one frame) before the receiver consumes.
    pub(crate) fn open(&mut self, id: u64) -> InboxReceiver {
        let (tx, rx) = inbox();
        self.inbound.insert(id, tx);
        rx
    }

    /// True while call `id` has an inbound channel.
    pub(crate) fn is_open(&self, id: u64) -> bool {
        self.inbound.contains_key(&id)
    }

    /// Delivers a message of call `id`. Gives it back when nobody listens any more (the
    /// receiver was dropped, or the call has no route): its bytes are then consumed at once.
    /// A receiver dropped during the step finds its messages counted at the step's end
    /// ([`deliver`]).
    pub(crate) fn message(&mut self, id: u64, body: Body) -> Result<(), Body> {
        if !self.listens(id) {
            return Err(body);
        }
        self.stage(id, Staged::One(body));
        Ok(())
    }

    /// Delivers messages of call `id` that came together, as [`Routes::message`] does one.
    pub(crate) fn messages(&mut self, id: u64, mut messages: BatchMessages) -> Result<(), BatchMessages> {
        if !self.listens(id) {
            return Err(messages);
        }
        match messages.len() {
            0 => {}
            1 => self.stage(id, Staged::One(Body::message(messages.next().expect("one")))),
            _ => self.stage(id, Staged::Batch(messages)),
        }
        Ok(())
    }

    /// True while someone listens to call `id`'s messages.
    fn listens(&self, id: u64) -> bool {
        self.inbound.get(&id).is_some_and(|tx| !tx.is_closed())
    }

    /// Puts messages of call `id` behind those staged, if they are call `id`'s too and join them
    /// (see [`Staged::then`]); otherwise those go on first.
    fn stage(&mut self, id: u64, item: Staged) {
        let item = match (self.staged.take(), item) {
            (Some((staged_id, staged)), Staged::One(body)) if staged_id == id => match staged.then(body) {
                Ok(joined) => {
                    self.staged = Some((id, joined));
                    return;
                }
                Err((staged, body)) => {
                    self.staged = Some((id, staged));
                    Staged::One(body)
                }
            },
            (other, item) => {
                self.staged = other;
                item
            }
        };
        self.flush();
        self.staged = Some((id, item));
    }

    /// Sends the staged messages on, in one batch.
    fn flush(&mut self) {
        let Some((id, staged)) = self.staged.take() else { return };
        self.delivered = true;
        let item = match staged {
            Staged::One(body) => Inbound::Message(body),
            Staged::Ones(bodies) => Inbound::Messages(bodies),
            Staged::Batch(messages) => Inbound::Batch(messages),
        };
        let sent = match self.inbound.get(&id) {
            Some(tx) => tx.send(item),
            None => Err(item),
        };
        if let Err(item) = sent {
            let (messages, bytes) = item.counts();
            self.undelivered.push((id, messages, bytes));
        }
    }

    /// True when messages went to a receiver since the last call: the reader then lets the
    /// receivers run before it reads on (see `driver::read_loop`).
    pub(crate) fn take_delivered(&mut self) -> bool {
        std::mem::take(&mut self.delivered)
    }

    /// Delivers the server's response headers or trailers of call `id` (ahead of what they
    /// came with); false when the call has no route (a unary call, or one that ended).
    pub(crate) fn metadata(&mut self, id: u64, item: Inbound) -> bool {
        // After the messages staged before them (trailers follow the last message).
        self.flush();
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
        self.flush();
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
        self.flush();
        self.inbound.remove(&id);
        self.wake(id);
    }
}

/// The end of a step: the staged messages go to their receivers, and those nobody can take any
/// more are consumed (their credit goes back to the sender, their bytes to the budget).
pub(crate) fn deliver<H: HasRoutes>(g: &mut Locked<H>) {
    let routes = g.side.routes();
    routes.flush();
    if routes.undelivered.is_empty() {
        return;
    }
    for (id, messages, bytes) in std::mem::take(&mut routes.undelivered) {
        g.conn.consumed_many(id, messages, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(n: u8) -> Body {
        Body::message(Bytes::from(vec![n; 10]))
    }

    #[test]
    fn messages_of_one_step_reach_the_receiver_as_one_batch_in_order() {
        let mut routes = Routes::default();
        let mut rx = routes.open(1);
        let mut other = routes.open(2);
        for n in 0..3 {
            routes.message(1, body(n)).unwrap();
        }
        routes.message(2, body(9)).unwrap(); // another call: the first batch goes on
        routes.message(1, body(3)).unwrap();
        routes.flush();
        match rx.try_recv() {
            Some(Inbound::Messages(v)) => assert_eq!(v.iter().map(|b| b.message[0]).collect::<Vec<_>>(), [0, 1, 2]),
            _ => panic!("expected a batch"),
        }
        assert!(matches!(rx.try_recv(), Some(Inbound::Message(b)) if b.message[0] == 3));
        assert!(matches!(other.try_recv(), Some(Inbound::Message(b)) if b.message[0] == 9));
        assert!(routes.undelivered.is_empty());
    }

    #[test]
    fn batch_frames_go_on_as_they_came_and_single_messages_after_them_on_their_own() {
        let mut routes = Routes::default();
        let mut rx = routes.open(1);
        let batch = |ns: std::ops::Range<u8>| ns.map(|n| body(n).message).collect::<BatchMessages>();
        let (first, second) = (batch(0..3), batch(3..5));
        let (p1, p2) = (first.area().as_ptr(), second.area().as_ptr());
        routes.messages(1, first).unwrap();
        routes.messages(1, second).unwrap();
        routes.message(1, body(5)).unwrap();
        routes.message(1, body(6)).unwrap();
        routes.flush();
        // Each batch in the buffer it came in (never copied nor joined to another), in order.
        for (expect, ptr) in [(vec![0, 1, 2], p1), (vec![3, 4], p2)] {
            match rx.try_recv().unwrap() {
                Inbound::Batch(m) => {
                    assert_eq!(m.area().as_ptr(), ptr, "the batch was moved");
                    assert_eq!(m.map(|m| m[0]).collect::<Vec<_>>(), expect);
                }
                _ => panic!("expected a batch"),
            }
        }
        match rx.try_recv().unwrap() {
            Inbound::Messages(v) => assert_eq!(v.iter().map(|b| b.message[0]).collect::<Vec<_>>(), [5, 6]),
            _ => panic!("expected the single messages as one batch"),
        }
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_batch_whose_receiver_went_is_counted_for_consumption() {
        let mut routes = Routes::default();
        let rx = routes.open(1);
        routes.message(1, body(0)).unwrap();
        routes.message(1, body(1)).unwrap();
        drop(rx);
        routes.flush();
        assert_eq!(routes.undelivered, vec![(1, 2, 20)]);
        // Once it is known gone, a message is given straight back.
        assert!(routes.message(1, body(2)).is_err());
    }

    #[test]
    fn the_end_follows_the_messages_staged_before_it() {
        let mut routes = Routes::default();
        let mut rx = routes.open(1);
        routes.message(1, body(0)).unwrap();
        routes.end(1, Ok(()), false);
        assert!(matches!(rx.try_recv(), Some(Inbound::Message(_))));
        assert!(matches!(rx.try_recv(), Some(Inbound::End(Ok(())))));
    }
}
