//! The driver: the async loops that move bytes between a [`Transport`] and a [`Connection`].
//!
//! One connection = three loops, each a task of its own (the reader in the connection's task,
//! the writer and the timer spawned beside it): the reader feeds received bytes to the state
//! machine, the writer sends whatever transmits it queued (batched: under load many frames
//! leave in one vectored write), and the timer runs deadlines and keepalive. The state
//! machine sits behind a mutex held only for short, non-blocking steps; each side (client,
//! server) reacts to the machine's events through [`SideHandler`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{watch, Notify};

mod recv_buffer;

use recv_buffer::RecvBuffer;

use crate::conn::{Connection, Event};
use crate::error::ConnectionError;
use crate::stats::TransportStats;
use crate::transport::{Chunk, RecvHalf, SendHalf, Transport};

/// What a side does with the state machine's events. Runs with the lock held: must not block.
pub(crate) trait SideHandler: Send + Sized + 'static {
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
}

/// Shared between the loops and the handles.
pub(crate) struct Shared<H> {
    locked: Mutex<Locked<H>>,
    wake_writer: Notify,
    wake_timer: Notify,
    closed: watch::Sender<bool>,
    pub(crate) stats: Arc<TransportStats>,
}

impl<H: SideHandler> Shared<H> {
    pub(crate) fn new(conn: Connection, side: H, stats: Arc<TransportStats>) -> Arc<Self> {
        Arc::new(Shared {
            locked: Mutex::new(Locked { conn, side, timer_at: None }),
            wake_writer: Notify::new(),
            wake_timer: Notify::new(),
            closed: watch::channel(false).0,
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
    pub(crate) fn step<R>(self: &Arc<Self>, f: impl FnOnce(&mut Locked<H>) -> R) -> R {
        let mut g = self.lock();
        let r = f(&mut g);
        self.dispatch(&mut g);
        r
    }

    fn dispatch(self: &Arc<Self>, g: &mut Locked<H>) {
        loop {
            while let Some(ev) = g.conn.poll_event() {
                H::on_event(g, ev);
            }
            H::after_step(g);
            if !g.conn.has_events() {
                break;
            }
        }
        if g.conn.has_transmits() || !g.conn.is_open() {
            self.wake_writer.notify_one();
        }
        let next = g.conn.poll_timeout();
        if next.is_some() && (g.timer_at.is_none() || next < g.timer_at) {
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
    let (recv, send) = transport.split();
    // The writer and the timer are tasks of their own: a wake-up of one polls only it (three
    // loops joined in one task were all polled on every wake-up of any: measured, pinned 64-byte
    // p50 8.3 -> 7.8 us). They end with the connection, or when this future is dropped.
    let writer = Loop::spawn(&shared, |shared| async move { write_loop(send, &shared).await });
    let timer = Loop::spawn(&shared, |shared| async move { timer_loop(&shared).await });
    read_loop(recv, &shared).await;
    let panicked = writer.join().await | timer.join().await;
    if panicked {
        // The machine may still think it is open: close it, so that calls in flight fail
        // instead of waiting for an answer nobody will read.
        shared.step(|g| g.conn.close(ConnectionError::Io("a connection task panicked (a bug in zcrpc or the transport)".into())));
    }
    shared.stats.snapshot().emit("connection closed");
    let _ = shared.closed.send_replace(true);
}

async fn read_loop<R: RecvHalf, H: SideHandler>(mut recv: R, shared: &Arc<Shared<H>>) {
    let (mut rb, mut needed) = {
        let g = shared.lock();
        (RecvBuffer::new(g.conn.config().recv_cache_bytes), g.conn.bytes_needed())
    };
    let chunk_size = recv.chunk_size();
    let mut closed = shared.closed.subscribe();
    loop {
        // A frame that fits in the transport's own buffers is taken from them, in place; a
        // larger one gets a buffer of its exact size.
        let chunk = if rb.wants_chunk(needed, chunk_size) {
            tokio::select! {
                r = recv.recv_chunk() => r,
                _ = signalled(&mut closed) => return,
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
                let buf = std::mem::take(&mut rb.buf);
                let (r, buf) = tokio::select! {
                    r = recv.recv(buf) => r,
                    // The writer marks the end once it has flushed the last frames of a closed
                    // machine.
                    _ = signalled(&mut closed) => return,
                };
                rb.buf = buf;
                Input::Read(r)
            }
        };
        let rb = &mut rb;
        let open = shared.step(|g| {
            let now = Instant::now();
            match input {
                Input::Chunk(bytes) => rb.feed_chunk(&mut g.conn, bytes, &shared.stats, now),
                Input::Read(Ok(0)) => g.conn.handle_eof(&rb.buf),
                Input::Read(Ok(_)) => {
                    // The error is already recorded in the machine (goaway queued, closed).
                    let _ = g.conn.handle_input(&mut rb.buf, now);
                }
                Input::Read(Err(e)) => g.conn.handle_io_error(&e),
            }
            needed = g.conn.bytes_needed();
            g.conn.is_open()
        });
        H::after_input(shared);
        if !open {
            return;
        }
    }
}

/// A connection loop running as its own task: aborted if the connection's future is dropped
/// first; if it ends by a panic (a bug), the connection is marked closed so the others end too.
struct Loop(Option<tokio::task::JoinHandle<()>>);

impl Loop {
    fn spawn<H: SideHandler, F>(shared: &Arc<Shared<H>>, body: impl FnOnce(Arc<Shared<H>>) -> F) -> Loop
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let closer = CloseOnDrop(shared.clone());
        let body = body(shared.clone());
        Loop(Some(tokio::spawn(async move {
            let _closer = closer;
            body.await
        })))
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

/// Marks the connection's loops done when dropped (at a loop's end, or by unwinding).
struct CloseOnDrop<H>(Arc<Shared<H>>);

impl<H> Drop for CloseOnDrop<H> {
    fn drop(&mut self) {
        let _ = self.0.closed.send_replace(true);
    }
}

/// One receive's outcome.
enum Input {
    /// Into the driver's buffer: a count (0 at the end of the stream) or an error.
    Read(std::io::Result<usize>),
    /// A chunk of the transport's own memory.
    Chunk(bytes::Bytes),
}

async fn write_loop<S: SendHalf, H: SideHandler>(mut send: S, shared: &Arc<Shared<H>>) {
    let mut batch = Vec::new();
    loop {
        let open = {
            let mut g = shared.lock();
            g.conn.take_transmits(&mut batch);
            g.conn.is_open()
        };
        if !batch.is_empty() {
            if let Err(e) = send.send(&mut batch).await {
                batch.clear();
                shared.step(|g| g.conn.handle_io_error(&e));
                break;
            }
            continue;
        }
        if !open {
            break;
        }
        shared.wake_writer.notified().await;
        // With several calls in flight, whoever woke us is usually one of many tasks with a
        // frame to send (callers, handlers). tokio runs a woken task next (its LIFO slot), which
        // would send one frame per write; yielding once lets the others queue theirs so they
        // leave in one vectored write. With one call in flight there is nobody to wait for, and
        // the yield (a pass through the scheduler and the IO driver) would only add latency.
        if shared.lock().conn.calls_in_flight() > 1 {
            tokio::task::yield_now().await;
        }
    }
    // Bounded: a peer that stopped reading must not keep a closing connection alive.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), send.shutdown()).await;
    let _ = shared.closed.send_replace(true);
}

async fn timer_loop<H: SideHandler>(shared: &Arc<Shared<H>>) {
    let mut closed = shared.closed.subscribe();
    loop {
        let next = {
            let mut g = shared.lock();
            g.timer_at = g.conn.poll_timeout();
            g.timer_at
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => shared.step(|g| g.conn.handle_timeout(Instant::now())),
            _ = shared.wake_timer.notified() => {}
            _ = signalled(&mut closed) => break,
        }
    }
}

/// Resolves once a watched flag is true (or its sender is gone).
pub(crate) async fn signalled(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, inside.
    let _ = rx.wait_for(|set| *set).await.map(|_| ());
}
