//! Turns to make a large message: producers that make each message afresh (a tonic body
//! encoding into a new buffer, a file read into memory) take turns, first come first served,
//! each once the connection's writer has taken what was queued before it.
//!
//! Without turns, a producer with a window of answers to make made them all at once: the
//! writer sent the first while the rest waited, made, in memory. With 1 MiB messages the
//! allocator grew and trimmed its heap around each window and every page of the next window
//! faulted in again (measured on `tonic_over_zcrpc download_1m`: 160,000 to 950,000 page faults
//! per 2-second run against 2,700 to 4,200 with turns, and half the throughput in half the
//! runs).
//!
//! A turn is only a wait before *making* a message, never before sending one (a sender waits
//! for the writer and for credit on its own): a producer that holds its turn while waiting
//! for anything but its own message would make the others wait for that too. Turns are
//! served in the order they were asked for, so a small call that asks behind a stream of
//! large messages waits for at most the messages asked for before it, never for ever (a
//! turn that went to whoever polled first would go to the stream every time on a
//! single-threaded runtime).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long a turn offered to the first in line waits for it to be taken. A woken producer is
/// polled within microseconds; one that is not polled for this long is not being polled at all
/// (a call future parked in a `select!` or held by a `buffered` stream while its owner awaits
/// something else, perhaps another call on this connection), and others in line may not be
/// either: the offer lapses and everyone leaves the line ([`Turns::lapse`]).
pub(crate) const GRACE: Duration = Duration::from_millis(2);

/// The queue of turns of one connection. Runs under the connection's lock.
#[derive(Default)]
pub(crate) struct Turns {
    /// Producers in line for a turn, by ticket (the order they asked in), with their wakers.
    waiting: BTreeMap<u64, Waker>,
    /// The next ticket to hand out.
    next_ticket: u64,
    /// A turn taken and not yet given back (its [`WriterTurn`] lives): nobody else's comes
    /// before it is.
    holder: Option<u64>,
    /// The turn offered to the first in line, woken to take it.
    offer: Option<Offer>,
}

/// A turn offered to a producer in line.
#[derive(Clone, Copy)]
struct Offer {
    ticket: u64,
    /// When the offer lapses if not taken ([`GRACE`]).
    lapses: Instant,
    /// Offered as the writer caught up: taken whatever the writer is doing when the producer
    /// looks. Else (offered as a turn was given back, before the producer that gave it back
    /// queued what it made) taken only if the writer is not behind then.
    sure: bool,
}

impl Turns {
    /// True while nobody is in line for a turn or holds one.
    pub(crate) fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.holder.is_none()
    }

    /// True when a producer is in line and nobody holds or is offered the turn: [`Turns::pass`]
    /// may offer it.
    pub(crate) fn may_pass(&self) -> bool {
        !self.waiting.is_empty() && self.holder.is_none() && self.offer.is_none()
    }

    /// When the turn's offer lapses, if one is out: the connection's timer runs
    /// [`Turns::lapse`] then.
    pub(crate) fn lapses(&self) -> Option<Instant> {
        self.offer.map(|o| o.lapses)
    }

    /// A producer asks for a turn (`ticket` its place, `None` before it asked), with the writer
    /// `behind` or not. Ready when it may make its message: at once if nobody is in line or
    /// holds a turn and the writer is not behind (then without a ticket: nothing to give back),
    /// else when its turn comes (the ticket is then the turn's, to give back): when it is
    /// offered the turn, or finds itself first in line with nobody holding or offered the turn
    /// and the writer not behind.
    pub(crate) fn poll(&mut self, ticket: &mut Option<u64>, behind: bool, waker: &Waker) -> Poll<()> {
        let t = match *ticket {
            None if self.is_idle() && !behind => return Poll::Ready(()),
            None => {
                let t = self.next_ticket;
                self.next_ticket += 1;
                *ticket = Some(t);
                t
            }
            Some(t) => t,
        };
        // In line, or back in it at its place (its ticket puts it first) after its offer lapsed.
        match self.waiting.get_mut(&t) {
            Some(w) => w.clone_from(waker),
            None => drop(self.waiting.insert(t, waker.clone())),
        }
        if let Some(o) = self.offer.filter(|o| o.ticket == t) {
            self.offer = None;
            if o.sure || !behind {
                return self.take(t);
            }
        }
        if self.holder.is_none() && self.offer.is_none() && !behind {
            if self.waiting.first_key_value().is_some_and(|(&first, _)| first == t) {
                return self.take(t);
            }
            // The writer caught up and the news has not come: to the first in line.
            self.pass(behind);
        }
        Poll::Pending
    }

    fn take(&mut self, t: u64) -> Poll<()> {
        self.waiting.remove(&t);
        self.holder = Some(t);
        Poll::Ready(())
    }

    /// Offers the turn to the first in line, and wakes it, if nobody holds or is offered it and
    /// the writer is not behind. Called whenever the writer may have caught up: it took the
    /// queue, or a step of the connection ran (one may have withdrawn queued frames, or closed
    /// the connection).
    pub(crate) fn pass(&mut self, behind: bool) {
        if self.holder.is_none() && self.offer.is_none() && !behind {
            self.offer_first(true);
        }
    }

    fn offer_first(&mut self, sure: bool) {
        if let Some((&ticket, w)) = self.waiting.first_key_value() {
            self.offer = Some(Offer { ticket, lapses: Instant::now() + GRACE, sure });
            w.wake_by_ref();
        }
    }

    /// Ticket `t` gives its turn back, or leaves the line (its producer went). The turn is
    /// offered to the first in line, to take if the writer is not behind when it looks (the
    /// producer that gave the turn back has usually queued what it made by then).
    pub(crate) fn leave(&mut self, t: u64) {
        if self.holder == Some(t) {
            self.holder = None;
        } else {
            self.waiting.remove(&t);
            if self.offer.is_some_and(|o| o.ticket == t) {
                self.offer = None;
            }
        }
        if self.holder.is_none() && self.offer.is_none() {
            self.offer_first(false);
        }
    }

    /// Everyone in line leaves it, woken (the connection closed, or an offer lapsed); nobody
    /// is offered the turn.
    pub(crate) fn close(&mut self) {
        self.offer = None;
        for (_, w) in std::mem::take(&mut self.waiting) {
            w.wake();
        }
    }

    /// The offer out lapsed if it was not taken by `now`: its producer is not being polled,
    /// and others in line may not be either (futures a `buffered` stream holds while its owner
    /// awaits something else). Everyone leaves the line, woken: those being polled come back
    /// at once, at their places, and the first of them to look takes the turn if the writer is
    /// not behind; those not polled come back when they are. So any number of them costs the
    /// others one lapse, not one each.
    pub(crate) fn lapse(&mut self, now: Instant) {
        if self.offer.is_some_and(|o| now >= o.lapses) {
            self.close();
        }
    }
}

/// A connection as turns see it (its shared state, behind the lock).
pub(crate) trait TurnHost: Send + Sync + 'static {
    /// True when a producer asking now would get a turn at once, as last published (without
    /// the lock: a look a step late at worst, which lets one more message be made). False
    /// until a producer first asks on the connection: that first ask takes the lock.
    fn turn_free(&self) -> bool;
    /// [`Turns::poll`] with the writer's state.
    fn poll_turn(&self, ticket: &mut Option<u64>, cx: &mut Context<'_>) -> Poll<()>;
    /// [`Turns::leave`].
    fn leave_turn(&self, ticket: u64);
}

/// A turn on `host`'s connection: at once, when first polled, if the connection says its turn
/// is free ([`TurnHost::turn_free`]: no lock taken), else once its turn comes. Dropped while
/// waiting, it gives up its place (or the turn, if it had just been given it).
pub(crate) async fn turn(host: Arc<dyn TurnHost>) -> WriterTurn {
    if host.turn_free() {
        return WriterTurn { host: None, ticket: None };
    }
    // The ticket is held from the first ask on: dropping this future drops the turn.
    let mut turn = WriterTurn { host: Some(host.clone()), ticket: None };
    std::future::poll_fn(|cx| host.poll_turn(&mut turn.ticket, cx)).await;
    turn
}

/// A turn to make a large message on a connection, from
/// [`StreamSender::writer_turn`](crate::StreamSender::writer_turn) or
/// [`Client::writer_turn`](crate::Client::writer_turn): the writer has taken what was queued
/// before it, and every producer that asked before has had its turn. Make the message while
/// holding it, then drop it, before sending the message (a send may wait for the peer's
/// credit): the next producer's turn comes only once this one is dropped, and the writer has
/// taken what this one queued.
#[must_use = "the turn is given back when dropped: make the message while holding it"]
pub struct WriterTurn {
    /// The connection, when the turn was waited for.
    host: Option<Arc<dyn TurnHost>>,
    /// The ticket to give back; `None` when the turn came at once, with nobody waiting.
    ticket: Option<u64>,
}

impl std::fmt::Debug for WriterTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterTurn").field("ticket", &self.ticket).finish()
    }
}

impl Drop for WriterTurn {
    fn drop(&mut self) {
        if let (Some(host), Some(t)) = (&self.host, self.ticket) {
            host.leave_turn(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A producer as the tests drive it: its waker, counting wakes, and its place.
    struct Producer {
        woken: Arc<Count>,
        waker: Waker,
        ticket: Option<u64>,
    }

    impl Producer {
        fn new() -> Producer {
            let woken = Arc::new(Count::default());
            Producer { waker: Waker::from(woken.clone()), woken, ticket: None }
        }

        /// Polls for a turn, with the writer `behind` or not: true when it came.
        fn ask(&mut self, turns: &mut Turns, behind: bool) -> bool {
            turns.poll(&mut self.ticket, behind, &self.waker).is_ready()
        }

        fn leave(&self, turns: &mut Turns) {
            turns.leave(self.ticket.expect("in line or holding the turn"));
        }

        fn woken(&self) -> usize {
            self.woken.0.load(Ordering::Relaxed)
        }
    }

    /// `n` producers in line, in order, behind a writer that is behind.
    fn in_line<const N: usize>(turns: &mut Turns) -> [Producer; N] {
        std::array::from_fn(|_| {
            let mut p = Producer::new();
            assert!(!p.ask(turns, true), "a turn with the writer behind");
            p
        })
    }

    #[test]
    fn a_turn_comes_at_once_when_nobody_waits_and_the_writer_keeps_up() {
        let mut turns = Turns::default();
        let mut p = Producer::new();
        assert!(p.ask(&mut turns, false));
        assert_eq!(p.ticket, None, "a turn given at once has nothing to give back");
        assert!(turns.is_idle());
    }

    #[test]
    fn turns_go_in_the_order_they_were_asked_for_one_at_a_time() {
        let mut turns = Turns::default();
        let [mut a, mut b] = in_line(&mut turns);
        // The writer took the queue: the turn is offered to the first asker, and only to it.
        turns.pass(false);
        assert_eq!((a.woken(), b.woken()), (1, 0));
        assert!(!b.ask(&mut turns, false), "b's turn came while a was offered its own");
        // An offer made as the writer caught up is taken even if the writer is behind again.
        assert!(a.ask(&mut turns, true));
        // A asks for another turn while holding one: it goes behind b.
        let mut a2 = Producer::new();
        assert!(!a2.ask(&mut turns, false));
        // A gives its turn back: b is offered it, to take only if the writer is not behind
        // (a queued a large message).
        a.leave(&mut turns);
        assert_eq!(b.woken(), 1, "b was not woken");
        assert!(!b.ask(&mut turns, true), "b's turn came with the writer behind");
        assert!(!a2.ask(&mut turns, false), "a went before b");
        turns.pass(false);
        assert_eq!(b.woken(), 2);
        assert!(b.ask(&mut turns, false));
        // B gives it back with the writer keeping up (it made a small message): a goes.
        b.leave(&mut turns);
        assert!(a2.ask(&mut turns, false));
        a2.leave(&mut turns);
        assert!(turns.is_idle());
    }

    #[test]
    fn a_newcomer_waits_behind_those_in_line_even_when_the_writer_keeps_up() {
        let mut turns = Turns::default();
        let [mut a] = in_line(&mut turns);
        // The writer caught up, and the news has not reached the turns: the newcomer waits,
        // and the first in line is offered the turn.
        let mut late = Producer::new();
        assert!(!late.ask(&mut turns, false), "the newcomer went before the first in line");
        assert_eq!(a.woken(), 1);
        assert!(a.ask(&mut turns, false));
        assert!(!late.ask(&mut turns, false), "two turns at once");
    }

    #[test]
    fn a_producer_that_goes_gives_back_its_place_or_its_turn() {
        let mut turns = Turns::default();
        let [a, b, mut c] = in_line(&mut turns);
        // b goes while in line; a is offered the turn and goes before taking it.
        b.leave(&mut turns);
        turns.pass(false);
        a.leave(&mut turns);
        assert_eq!(c.woken(), 1, "c was not offered the turn when a went");
        assert!(c.ask(&mut turns, false));
        c.leave(&mut turns);
        assert!(turns.is_idle());
    }

    #[test]
    fn an_offer_not_taken_lapses_once_for_all_the_parked_and_they_come_back_at_their_places() {
        let mut turns = Turns::default();
        // a and b are parked (their futures not polled), c is live.
        let [mut a, mut b, mut c] = in_line(&mut turns);
        turns.pass(false);
        let lapses = turns.lapses().expect("an offer is out");
        // Not yet lapsed: c still waits for a.
        turns.lapse(lapses - GRACE);
        assert!(!c.ask(&mut turns, false));
        // It lapses: everyone is woken and leaves the line; c, polled, takes the turn at once
        // (not after a lapse for b too).
        turns.lapse(lapses);
        assert_eq!((a.woken(), b.woken(), c.woken()), (2, 1, 1));
        assert!(turns.lapses().is_none());
        assert!(c.ask(&mut turns, false));
        // a and b look again while c holds the turn: back in line, first, in their order.
        assert!(!b.ask(&mut turns, false));
        assert!(!a.ask(&mut turns, false));
        let mut d = Producer::new();
        assert!(!d.ask(&mut turns, false));
        c.leave(&mut turns);
        assert!(!d.ask(&mut turns, false), "d went before a, who was first");
        assert!(!b.ask(&mut turns, false), "b went before a");
        assert!(a.ask(&mut turns, false));
    }

    #[test]
    fn a_closed_connection_wakes_everyone_in_line() {
        let mut turns = Turns::default();
        let [a, b] = in_line(&mut turns);
        turns.close();
        assert_eq!((a.woken(), b.woken()), (1, 1));
        assert!(turns.lapses().is_none());
    }
}
