//! The driver: the async loops that move bytes between a [`Transport`] and a [`Connection`].
//!
//! One connection = three loops, each a task of its own (the reader in the connection's task,
//! the writer and the timer spawned beside it): the reader feeds received bytes to the state
//! machine, the writer sends whatever transmits it queued (batched: under load many frames
//! leave in one vectored write), and the timer runs deadlines, keepalive and the write-stall
//! watch. The state machine sits behind a mutex held only for short, non-blocking steps; each
//! side (client, server) reacts to the machine's events through [`SideHandler`]. One call at a
//! time, its small request or response skips the writer task: the task that queued it writes it
//! without waiting (`direct`), where the transport offers a non-blocking write.
//!
//! Every wait on the peer is bounded: the reader pauses at the memory budget (the writer drains
//! it, or the write-stall timeout ends the connection), a writer that makes no progress for
//! `write_stall_timeout` is dropped, the last frames after a close get `drain_timeout`, and the
//! linger after our side is shut down gets `linger`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use std::task::{Context, Poll, Waker};

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

mod direct;
pub(crate) use direct::EARLY_FRAMES;
mod recv_buffer;
mod stall;
mod turns;

use recv_buffer::RecvBuffer;
use stall::StallWatch;
pub(crate) use turns::{turn, TurnHost};
use turns::Turns;
pub use turns::WriterTurn;

use crate::budget::MemoryBudget;
use crate::conn::{Connection, Event, Side};
use crate::error::ConnectionError;
use crate::stats::TransportStats;
use crate::stream::HasRoutes;
use crate::transport::{Chunk, DirectWrite, RecvHalf, SendHalf, Transport};
use crate::Transmit;
use crate::unwind::CatchUnwind;

/// What a side does with the state machine's events. Runs with the lock held: must not block.
pub(crate) trait SideHandler: HasRoutes + Send + Sized + 'static {
    fn on_event(locked: &mut Locked<Self>, event: Event);

    /// Called after every step; a side can decide the connection is done (server: drained).
    fn after_step(_locked: &mut Locked<Self>) {}

    /// Called by the reader after each batch of input, without the lock (server: runs the
    /// handlers the input started).
    fn after_input(_shared: &Arc<Shared<Self>>) {}
}

/// The state behind the lock.
pub(crate) struct Locked<H> {
    pub(crate) conn: Connection,
    pub(crate) side: H,
    /// When the timer loop sleeps until; it is woken only when something earlier appears.
    timer_at: Option<Instant>,
    /// The timer last saw the machine open: it must wake when it closes, to bound the drain.
    timer_saw_open: bool,
    /// The connection's bytes as last charged to the server-wide budget.
    charged: usize,
    /// The connection's loops are over: its share of the budget is given back for good.
    released: bool,
    /// The reader is waiting for the connection to fall below its own budget.
    reader_paused: bool,
    /// Stream senders waiting for the writer to take what they queued ([`Locked::wait_for_writer`]).
    writer_waiters: Vec<Waker>,
    /// Producers taking turns to make large messages ([`WriterTurn`]).
    turns: Turns,
    /// A producer asked for a turn on this connection: from then on every step keeps the turns
    /// moving and [`Shared::turn_free`] up to date. (Before, a producer's first ask takes the
    /// lock: plain zcrpc calls, which never ask, pay no more than a look at this.)
    turns_in_use: bool,
    /// The writer waits for work with nothing of its own to write: the direct path may write.
    writer_parked: bool,
    /// The last input that brought messages brought one (a request, an answer, a stream
    /// message) and found at most one call in flight, before it and after it: calls (or a
    /// stream's requests) go one at a time, and the direct path may write, once. With more (a client
    /// whose answers wake several callers at once, a server given several requests in one read,
    /// a stream's burst of messages) the writer gathers the frames that follow, but for a
    /// burst's first calls or answers, written early (see `direct`); after one direct write,
    /// so does it (a stream sender queues its messages faster than one write each).
    lone_call: bool,
    /// The transport's non-blocking write, for the direct path (`None`: the writer writes all).
    direct: Option<Arc<dyn DirectWrite>>,
    /// Frames the direct path took and did not finish: the writer writes them first.
    handover: Vec<Transmit>,
    /// The direct path's batch, kept for its allocation.
    direct_batch: Vec<Transmit>,
}

impl<H> Locked<H> {
    /// Parks a stream sender that is [`SEND_AHEAD`] bytes ahead of the writer until the writer
    /// takes the queue (or the connection closes). Without it a sender with credit would queue a
    /// whole window before the writer, on the same runtime thread, wrote a byte: the receiver
    /// would idle while the sender queued, then the sender while the receiver read (measured on
    /// `stream_64b`: both sides busy about half the time).
    pub(crate) fn wait_for_writer(&mut self, waker: &Waker) {
        if !self.writer_waiters.iter().any(|w| w.will_wake(waker)) {
            self.writer_waiters.push(waker.clone());
        }
    }

    /// True when a stream sender should wait for the writer before queueing more, and a
    /// producer before making a large message (its turn, [`WriterTurn`]). The pieces of a
    /// message of over 2 MiB that other frames may go between do not count
    /// ([`Connection::queued_bytes`]): a small call made now goes between them, and a turn that
    /// waited for them would hold it up for the whole message.
    pub(crate) fn ahead_of_writer(&self) -> bool {
        self.conn.is_open() && self.conn.queued_bytes() >= SEND_AHEAD
    }

    fn wake_writer_waiters(&mut self) {
        for w in self.writer_waiters.drain(..) {
            w.wake();
        }
        self.pass_turn();
    }

    /// Gives the next producer its turn if it may have one now.
    fn pass_turn(&mut self) {
        if self.turns_in_use && self.turns.may_pass() {
            let behind = self.ahead_of_writer();
            self.turns.pass(behind);
        }
    }
}

impl<H: SideHandler> TurnHost for Shared<H> {
    fn turn_free(&self) -> bool {
        self.turn_free.load(Ordering::Acquire)
    }

    fn poll_turn(&self, ticket: &mut Option<u64>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self.lock();
        if !g.conn.is_open() {
            // Turns are over (`Turns::close`): a send says why.
            if let Some(t) = ticket.take() {
                g.turns.leave(t);
            }
            return Poll::Ready(());
        }
        g.turns_in_use = true;
        let behind = g.ahead_of_writer();
        let ready = g.turns.poll(ticket, behind, cx.waker());
        self.after_turns(&g);
        ready
    }

    fn leave_turn(&self, ticket: u64) {
        let mut g = self.lock();
        g.turns.leave(ticket);
        self.after_turns(&g);
    }
}

/// How many bytes of stream frames a sender may queue ahead of the writer: one write's worth
/// each time (the writer takes them while it writes the last batch).
pub(crate) const SEND_AHEAD: usize = 256 << 10;

/// Shared between the loops and the handles.
pub(crate) struct Shared<H> {
    locked: Mutex<Locked<H>>,
    wake_writer: Notify,
    wake_timer: Notify,
    wake_reader: Notify,
    /// Set when the writer loop has ended (its last frames written, or given up on).
    writer_done: watch::Sender<bool>,
    /// Set when every loop of the connection has ended.
    closed: watch::Sender<bool>,
    /// The writer is inside a send: what the write-stall watch looks at.
    sending: AtomicBool,
    /// The connection's held bytes as last accounted, for the reader's check without the lock.
    held: AtomicUsize,
    /// A producer asking now would get a turn at once, as of the last step: for
    /// [`TurnHost::turn_free`], without the lock. False until a producer first asks (see
    /// `Locked::turns_in_use`).
    turn_free: AtomicBool,
    /// The server-wide budget this connection's bytes count against, if any.
    budget: Option<Arc<MemoryBudget>>,
    pub(crate) stats: Arc<TransportStats>,
}

impl<H: SideHandler> Shared<H> {
    pub(crate) fn new(
        conn: Connection,
        side: H,
        stats: Arc<TransportStats>,
        budget: Option<Arc<MemoryBudget>>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            locked: Mutex::new(Locked {
                conn,
                side,
                timer_at: None,
                timer_saw_open: true,
                charged: 0,
                released: false,
                reader_paused: false,
                writer_waiters: Vec::new(),
                turns: Turns::default(),
                turns_in_use: false,
                writer_parked: false,
                lone_call: false,
                direct: None,
                handover: Vec::new(),
                direct_batch: Vec::new(),
            }),
            wake_writer: Notify::new(),
            wake_timer: Notify::new(),
            wake_reader: Notify::new(),
            writer_done: watch::channel(false).0,
            closed: watch::channel(false).0,
            sending: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            turn_free: AtomicBool::new(false),
            budget,
            stats,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Locked<H>> {
        // A panic while holding this lock would be a bug in this crate, never in user code
        // (handlers run outside it); the state stays consistent step by step, so go on.
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a step on the state machine, then dispatches its events and wakes the loops that
    /// have work.
    pub(crate) fn step<R>(&self, f: impl FnOnce(&mut Locked<H>) -> R) -> R {
        let mut g = self.lock();
        let r = f(&mut g);
        self.dispatch(&mut g);
        r
    }

    fn dispatch(&self, g: &mut Locked<H>) {
        loop {
            while let Some(ev) = g.conn.poll_event() {
                H::on_event(g, ev);
            }
            H::after_step(g);
            if !g.conn.has_events() {
                break;
            }
        }
        // A lone call's small frames go now from this task if the writer is idle (the direct
        // path), and so do a burst's first ones (the early flush); a frame that follows them (a
        // commit) is the writer's.
        let writer_has_work = g.conn.has_transmits() && (!(self.write_direct(g) || self.write_early(g)) || g.conn.has_transmits());
        if writer_has_work || !g.conn.is_open() {
            self.wake_writer.notify_one();
        }
        if !g.conn.is_open() {
            g.wake_writer_waiters();
            g.turns.close();
        }
        // A step may have withdrawn queued frames (a cancelled call's) or closed the connection.
        g.pass_turn();
        self.after_turns(g);
        let next = g.conn.poll_timeout();
        let closed_unseen = g.timer_saw_open && !g.conn.is_open();
        if closed_unseen || (next.is_some() && (g.timer_at.is_none() || next < g.timer_at)) {
            self.wake_timer.notify_one();
        }
        self.account(g);
    }

    /// Charges the connection's held bytes to the server-wide budget, and wakes a reader that
    /// paused at the connection's own budget once it is below it.
    fn account(&self, g: &mut Locked<H>) {
        // What stops reading: stream data and requests held for their commit are bounded by
        // the protocol instead (see `Connection::pausing_bytes`).
        let held = if g.released { 0 } else { g.conn.pausing_bytes() };
        if held == g.charged {
            return;
        }
        if let Some(b) = &self.budget {
            b.update(g.charged, held);
        }
        g.charged = held;
        self.held.store(held, Ordering::Release);
        if g.reader_paused && held < g.conn.config().memory_budget {
            g.reader_paused = false;
            self.wake_reader.notify_one();
        }
    }

    /// After turns may have changed: publishes whether a turn is free now (for a producer's
    /// look without the lock), and wakes the timer if an offer out lapses before it would wake.
    fn after_turns(&self, g: &Locked<H>) {
        if !g.turns_in_use {
            return;
        }
        let free = g.turns.is_idle() && !g.ahead_of_writer();
        // Stored only when it changes: every step of every call comes here.
        if self.turn_free.load(Ordering::Relaxed) != free {
            self.turn_free.store(free, Ordering::Release);
        }
        if g.turns.lapses().is_some_and(|at| g.timer_at.is_none_or(|t| at < t)) {
            self.wake_timer.notify_one();
        }
    }

    /// Waits until the connection's loops have ended.
    pub(crate) async fn closed(&self) {
        signalled(&mut self.closed.subscribe()).await;
    }
}

/// Runs a connection to its end (the side handler sees why, as [`Event::Closed`]).
pub(crate) async fn run<T: Transport, H: SideHandler>(transport: T, shared: Arc<Shared<H>>) {
    // Dropped before the end (the task aborted): the machine is closed so handlers stop and
    // callers fail, and the budget is given back.
    let mut guard = RunGuard { shared: shared.clone(), finished: false };
    let (recv, send) = transport.split();
    shared.lock().direct = send.direct();
    // The writer and the timer are tasks of their own: a wake-up of one polls only it (three
    // loops joined in one task were all polled on every wake-up of any: measured, pinned 64-byte
    // p50 8.3 -> 7.8 us). They end with the connection, or when this future is dropped.
    let writer = Loop::spawn(&shared, |shared| async move {
        let _done = SignalOnDrop(shared.clone());
        write_loop(send, &shared).await
    });
    let writer_abort = writer.abort_handle();
    let timer = Loop::spawn(&shared, |shared| async move {
        let _guard = CloseOnPanic(shared.clone(), "timer");
        timer_loop(&shared, writer_abort).await
    });
    let mut panicked = false;
    if let Err(what) = CatchUnwind::new(Box::pin(read_loop(recv, &shared))).await {
        tracing::error!("connection reader panicked (a bug in zcrpc or the transport): {what}");
        panicked = true;
        shared.step(|g| g.conn.close(ConnectionError::Io(format!("the connection's reader panicked: {what}"))));
    }
    panicked |= writer.join().await;
    panicked |= timer.stop().await;
    if panicked {
        // The machine may still think it is open: close it, so that calls in flight fail
        // instead of waiting for an answer nobody will read.
        shared.step(|g| g.conn.close(ConnectionError::Io("a connection task panicked (a bug in zcrpc or the transport)".into())));
    }
    guard.finish();
    // Before `closed` is signalled (by the guard's drop), so whoever waits for the close sees it.
    shared.stats.snapshot().emit("connection closed");
}

/// Closes the machine and gives the connection's budget back however [`run`] ends.
struct RunGuard<H: SideHandler> {
    shared: Arc<Shared<H>>,
    finished: bool,
}

impl<H: SideHandler> RunGuard<H> {
    fn finish(&mut self) {
        self.finished = true;
        self.shared.step(|g| {
            g.conn.close(ConnectionError::LocallyClosed);
            g.released = true;
            // The socket closes with the transport's halves, not when the last handle goes.
            g.direct = None;
        });
    }
}

impl<H: SideHandler> Drop for RunGuard<H> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish();
        }
        let _ = self.shared.closed.send_replace(true);
    }
}

async fn read_loop<R: RecvHalf, H: SideHandler>(mut recv: R, shared: &Arc<Shared<H>>) {
    let (mut rb, mut needed, side, budget) = {
        let g = shared.lock();
        let config = g.conn.config();
        (RecvBuffer::new(config.recv_cache_bytes, shared.budget.clone()), g.conn.bytes_needed(), g.conn.side(), config.memory_budget)
    };
    // Within a pieced frame: what the next read may bring (the rest of a piece, or a marker).
    let mut piece_room = None;
    let chunk_size = recv.chunk_size();
    // The writer ends once it has flushed the last frames of a closed machine. One wait for
    // it, polled by every receive below that waits (input first: the machine is closed by
    // then, so the loop ends after that input): made afresh for each receive, it cost a
    // registration with the watch and its removal per read (about a tenth of the reader's
    // instructions on a 64-byte round trip).
    let mut writer_gone = std::pin::pin!(writer_ended(shared.writer_done.subscribe()));
    loop {
        let under_budget = shared.held.load(Ordering::Acquire) < budget && !shared.budget.as_ref().is_some_and(|b| b.is_over());
        if side == Side::Server && !under_budget && !wait_for_budget(shared, writer_gone.as_mut()).await {
            break;
        }
        // A frame that fits in the transport's own buffers is taken from them, in place; a
        // larger one gets a buffer of its exact size.
        let chunk = if rb.wants_chunk(needed, chunk_size) {
            tokio::select! {
                biased;
                r = recv.recv_chunk() => r,
                _ = writer_gone.as_mut() => break,
            }
        } else {
            Ok(Chunk::Unavailable)
        };
        let input = match chunk {
            Ok(Chunk::Data(bytes)) => Input::Chunk(bytes),
            Ok(Chunk::Eof) => Input::Read(Ok(0)),
            Err(e) => Input::Read(Err(e)),
            Ok(Chunk::Unavailable) => {
                rb.prepare(needed, &shared.stats);
                rb.bound(piece_room);
                // What the peer is certain to send: the rest of the frame, or of a piece (a
                // pieced frame may end early, at an abort marker).
                recv.expect_bytes(piece_room.unwrap_or(needed.saturating_sub(rb.buf.len())));
                let buf = std::mem::take(&mut rb.buf);
                let (r, buf) = tokio::select! {
                    biased;
                    r = recv.recv(buf) => r,
                    _ = writer_gone.as_mut() => break,
                };
                rb.buf = buf;
                rb.rejoin();
                Input::Read(r)
            }
        };
        let eof = matches!(input, Input::Read(Ok(0)) | Input::Read(Err(_)));
        let rb = &mut rb;
        let (open, burst) = shared.step(|g| {
            let now = Instant::now();
            let calls_before = g.conn.calls_in_flight();
            let messages_before = g.conn.messages_received();
            match input {
                Input::Chunk(bytes) => rb.feed_chunk(&mut g.conn, bytes, &shared.stats, now),
                Input::Read(Ok(0)) => g.conn.handle_eof(&rb.buf),
                Input::Read(Ok(_)) => {
                    // The error is already recorded in the machine (goaway queued, closed).
                    let _ = rb.handle_input(&mut g.conn, &shared.stats, now);
                }
                Input::Read(Err(e)) => g.conn.handle_io_error(&e),
            }
            needed = g.conn.bytes_needed();
            piece_room = g.conn.piece_room(rb.buf.len());
            // Input without a message (credit, a ping) leaves it as it was.
            let messages = g.conn.messages_received() - messages_before;
            if messages > 0 {
                g.lone_call = messages == 1 && calls_before <= 1 && g.conn.calls_in_flight() <= 1;
            }
            let lone = messages == 1 && g.lone_call;
            (g.conn.is_open(), g.side.routes().take_delivered() && !lone)
        });
        H::after_input(shared);
        if eof {
            return;
        }
        if !open {
            break;
        }
        if burst {
            // Stream messages went to their receivers: let them take those before reading on.
            // Otherwise, on a runtime thread shared with them, this loop reads whatever the
            // socket holds (up to a window) before they run: memory for all of it, and credit
            // returned only once they have taken half a window, while the sender waits for it
            // (measured on `stream_64b`: both ends idle about half the time). One message of a
            // lone call (a stream's requests one at a time) is no burst: the socket holds no
            // more, and the yield would only cost a pass through the scheduler.
            tokio::task::yield_now().await;
        } else {
            // A peer that keeps the socket full would otherwise keep this task running without
            // ever returning to tokio: its writer, its timer and other connections on this
            // worker starved (a quiet connection's call took over 10 s behind a flood). Spend
            // tokio's cooperative budget, which yields now and then.
            tokio::task::consume_budget().await;
        }
    }
    linger(&mut recv, shared, &mut shared.writer_done.subscribe()).await;
}

/// Server: waits while the connection, or the server as a whole, holds as much as its budget.
/// False if the connection's writer ended meanwhile.
async fn wait_for_budget<H: SideHandler>(shared: &Arc<Shared<H>>, mut writer_gone: Pin<&mut impl Future<Output = ()>>) -> bool {
    loop {
        let global = shared.budget.as_ref().map(|b| b.freed());
        tokio::pin!(global);
        if let Some(n) = global.as_mut().as_pin_mut() {
            n.enable();
        }
        let own = shared.wake_reader.notified();
        tokio::pin!(own);
        let over = {
            let mut g = shared.lock();
            g.reader_paused = g.conn.pausing_bytes() >= g.conn.config().memory_budget;
            g.reader_paused || shared.budget.as_ref().is_some_and(|b| b.is_over())
        };
        if !over {
            return true;
        }
        TransportStats::add(&shared.stats.budget_pauses, 1);
        tokio::select! {
            _ = own => {}
            true = async {
                match global.as_pin_mut() {
                    Some(n) => {
                        n.await;
                        true
                    }
                    None => false,
                }
            } => {}
            _ = writer_gone.as_mut() => return false,
        }
    }
}

/// After the machine closed: keep reading, and discard, until the peer closes too, so that the
/// socket is not closed with unread input (the kernel would answer with a reset and drop what
/// of our last frames it had not sent yet). Bounded: while the writer finishes (itself bounded
/// by the drain timeout), then for `linger` more.
async fn linger<R: RecvHalf, H: SideHandler>(recv: &mut R, shared: &Arc<Shared<H>>, writer_done: &mut watch::Receiver<bool>) {
    let linger = shared.lock().conn.config().linger;
    let mut scratch = bytes::BytesMut::with_capacity(recv_buffer::READ_CHUNK);
    tokio::select! {
        _ = discard_until_eof(recv, &mut scratch) => return,
        _ = signalled(writer_done) => {}
    }
    let _ = tokio::time::timeout(linger, discard_until_eof(recv, &mut scratch)).await;
}

/// Reads and drops input until the peer closes (or the transport fails).
async fn discard_until_eof<R: RecvHalf>(recv: &mut R, scratch: &mut bytes::BytesMut) {
    loop {
        scratch.clear();
        // A receive dropped mid-way (the select in `linger`) took the buffer with it.
        if scratch.capacity() < recv_buffer::READ_CHUNK {
            *scratch = bytes::BytesMut::with_capacity(recv_buffer::READ_CHUNK);
        }
        let (r, buf) = recv.recv(std::mem::take(scratch)).await;
        *scratch = buf;
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
}

/// A connection loop running as its own task: aborted if the connection's future is dropped
/// first; if it ends by a panic (a bug), the connection is marked closed so the others end too.
/// The server runs a connection's watcher (shutdown, maximum age) as one as well.
pub(crate) struct Loop(Option<tokio::task::JoinHandle<()>>);

impl Loop {
    pub(crate) fn spawn<H: SideHandler, F>(shared: &Arc<Shared<H>>, body: impl FnOnce(Arc<Shared<H>>) -> F) -> Loop
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let body = body(shared.clone());
        Loop(Some(tokio::spawn(body)))
    }

    fn abort_handle(&self) -> AbortHandle {
        self.0.as_ref().expect("running").abort_handle()
    }

    /// Ends the loop now; true if it had panicked.
    async fn stop(self) -> bool {
        if let Some(h) = &self.0 {
            h.abort();
        }
        self.join().await
    }

    /// Waits for the loop's end; true if it panicked.
    async fn join(mut self) -> bool {
        match self.0.take() {
            Some(h) => h.await.is_err_and(|e| e.is_panic()),
            None => false,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Marks the writer done when dropped (at its end, by unwinding, or when aborted). A writer
/// gone while the machine is still open (a panic: a bug) closes it first, so calls in flight
/// fail at once instead of waiting for answers that cannot be asked for.
struct SignalOnDrop<H: SideHandler>(Arc<Shared<H>>);

impl<H: SideHandler> Drop for SignalOnDrop<H> {
    fn drop(&mut self) {
        self.0.sending.store(false, Ordering::Release);
        let why = if std::thread::panicking() {
            "the connection's writer panicked (a bug in zcrpc or the transport)"
        } else {
            "the connection's writer stopped"
        };
        self.0.step(|g| {
            if g.conn.is_open() {
                g.conn.close(ConnectionError::Io(why.into()));
            }
        });
        let _ = self.0.writer_done.send_replace(true);
    }
}

/// Closes the machine if dropped by a panic (a bug), so that the connection does not run on
/// without the loop (without deadlines and the stall watch, when it is the timer's).
struct CloseOnPanic<H: SideHandler>(Arc<Shared<H>>, &'static str);

impl<H: SideHandler> Drop for CloseOnPanic<H> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let what = self.1;
            self.0.step(|g| g.conn.close(ConnectionError::Io(format!("the connection's {what} panicked (a bug in zcrpc)"))));
        }
    }
}

/// One receive's outcome.
enum Input {
    /// Into the driver's buffer: a count (0 at the end of the stream) or an error.
    Read(std::io::Result<usize>),
    /// A chunk of the transport's own memory.
    Chunk(bytes::Bytes),
}

/// Puts the task at the back of the runtime's queue once: the tasks already woken run first.
///
/// Not `tokio::task::yield_now`, which leaves the task out of the queue until the runtime next
/// polls its IO driver: on a thread whose tasks keep waking each other, after all of their
/// work (61 task polls at most). Answers then waited for it: tarpc's channel and the handlers
/// it spawns decoded and answered a window of eight 1 MiB requests before the first answer
/// left, the client idle meanwhile (`an_answer_does_not_wait_for_the_tasks_that_keep_its_
/// server_thread_busy` in `tests/direct_write.rs`).
async fn requeue() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut queued, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Bytes of a batch after which the writer yields before taking the next.
const YIELD_AFTER: usize = 256 << 10;

async fn write_loop<S: SendHalf, H: SideHandler>(mut send: S, shared: &Arc<Shared<H>>) {
    let mut batch = Vec::new();
    let mut written = 0usize;
    loop {
        let open = if written > 0 {
            // Report what the last batch wrote: it no longer counts against the budget, and a
            // keepalive ping in it starts its timeout now.
            shared.step(|g| {
                report_written(&mut g.conn, written);
                take_work(g, &mut batch)
            })
        } else {
            let mut g = shared.lock();
            let open = take_work(&mut g, &mut batch);
            shared.after_turns(&g);
            open
        };
        written = 0;
        if !batch.is_empty() {
            let bytes = batch.iter().map(crate::Transmit::len).sum();
            shared.sending.store(true, Ordering::Release);
            let r = send.send(&mut batch).await;
            shared.sending.store(false, Ordering::Release);
            if let Err(e) = r {
                batch.clear();
                shared.step(|g| g.conn.handle_io_error(&e));
                break;
            }
            written = bytes;
            if bytes >= YIELD_AFTER {
                // A large batch took a while (a megabyte is over 100 µs): let the reader and the
                // callers run before the next. On a thread shared with them, a writer whose
                // socket never fills (loopback, a fast peer) otherwise writes on until tokio's
                // budget runs out, at a batch per unit about a whole 64 MiB request, while the
                // answers of the small calls going between its pieces wait unread (measured:
                // answered after 13-18 ms, the large request's whole time).
                tokio::task::yield_now().await;
            } else {
                tokio::task::consume_budget().await;
            }
            continue;
        }
        if !open {
            break;
        }
        shared.wake_writer.notified().await;
        // With several calls in flight, whoever woke us is usually one of many tasks with a
        // frame to send (callers, handlers). tokio runs a woken task next (its LIFO slot), which
        // would send one frame per write; going to the back of the queue once lets the others
        // queue theirs so they leave in one vectored write. With one call in flight there is
        // nobody to wait for, and the pass through the scheduler would only add latency.
        if shared.lock().conn.calls_in_flight() > 1 {
            requeue().await;
        }
    }
    // Bounded: a peer that stopped reading must not keep a closing connection alive.
    let drain = {
        let mut g = shared.lock();
        g.writer_parked = false;
        g.conn.config().drain_timeout
    };
    let _ = tokio::time::timeout(drain, send.shutdown()).await;
}

/// Tells the connection that the writer wrote `bytes` bytes of what it took. The clock is read
/// only while a keepalive ping waits to be written (its timeout starts then): on every other
/// write it was a read per frame for nothing.
pub(super) fn report_written(conn: &mut Connection, bytes: usize) {
    if conn.awaits_write_time() {
        conn.handle_written(bytes, Instant::now());
    } else {
        conn.handle_written_part(bytes);
    }
}

/// The writer's next batch: what the direct path left it, then what the machine queued. With
/// nothing to write the writer parks (the direct path may then write); true while open.
fn take_work<H>(g: &mut Locked<H>, batch: &mut Vec<Transmit>) -> bool {
    batch.append(&mut g.handover);
    g.conn.take_transmits(batch);
    g.wake_writer_waiters();
    let open = g.conn.is_open();
    g.writer_parked = batch.is_empty() && open;
    open
}

/// Deadlines and keepalive (the machine's timeouts), the write-stall watch, and the bound on
/// the writer's last frames after a close.
async fn timer_loop<H: SideHandler>(shared: &Arc<Shared<H>>, writer: AbortHandle) {
    let mut closed = shared.closed.subscribe();
    let (stall_after, drain) = {
        let g = shared.lock();
        (g.conn.config().write_stall_timeout, g.conn.config().drain_timeout)
    };
    let mut stall = StallWatch::default();
    let mut closed_at: Option<Instant> = None;
    loop {
        let (next, lapse, open) = {
            let mut g = shared.lock();
            let (next, lapse) = (g.conn.poll_timeout(), g.turns.lapses());
            g.timer_at = [next, lapse].into_iter().flatten().min();
            g.timer_saw_open = g.conn.is_open();
            (next, lapse, g.timer_saw_open)
        };
        let now = Instant::now();
        // While a stall timeout is set, look at the writer's progress a few times per period.
        let tick = stall_after.and_then(|d| now.checked_add(StallWatch::tick(d)));
        let drain_at = if open { None } else { closed_at.get_or_insert(now).checked_add(drain) };
        let wake = [next, lapse, tick, drain_at].into_iter().flatten().min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                let now = Instant::now();
                if next.is_some_and(|at| now >= at) {
                    shared.step(|g| g.conn.handle_timeout(now));
                }
                if lapse.is_some_and(|at| now >= at) {
                    shared.step(|g| g.turns.lapse(now));
                }
                if let Some(d) = stall_after {
                    let sent = shared.stats.sent_bytes.load(Ordering::Relaxed);
                    if stall.stalled(shared.sending.load(Ordering::Acquire), sent, now, d) {
                        TransportStats::add(&shared.stats.write_stalls, 1);
                        shared.step(|g| g.conn.close(ConnectionError::WriteStalled(d)));
                        writer.abort();
                    }
                }
                if drain_at.is_some_and(|at| now >= at) {
                    // The last frames after a close did not go out in time: give up on them.
                    writer.abort();
                }
            }
            _ = shared.wake_timer.notified() => {}
            _ = signalled(&mut closed) => break,
        }
    }
}

/// [`signalled`] on a receiver of its own: a future that can be kept across the loop's turns.
async fn writer_ended(mut rx: watch::Receiver<bool>) {
    signalled(&mut rx).await
}

/// Resolves once a watched flag is true (or its sender is gone).
pub(crate) async fn signalled(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, inside.
    let _ = rx.wait_for(|set| *set).await.map(|_| ());
}
