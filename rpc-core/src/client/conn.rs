//! One connection of a client: its side of the state machine, its call permits, one call on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use crate::body::Body;
use crate::call_map::CallMap;
use crate::code::Code;
use crate::conn::{Connection, Event, Side};
use crate::driver::{self, Locked, Shared, SideHandler};
use crate::error::{CallError, ConnectError, ConnectionError};
use crate::error::Status;
use crate::metadata::Metadata;
use crate::frame::{CallMode, Hello};
use crate::stream::{self, CallStream, HasRoutes, Routes};
use crate::transport::Transport;

use super::ClientConfig;

/// A unary call's answer: its result, and the server's headers and trailers if it sent any
/// (`None` for none: a plain call allocates nothing for them).
pub(super) type Answer = (Result<Body, CallError>, Option<Box<ReplyMeta>>);

type Waiter = oneshot::Sender<Answer>;

/// The response headers and trailers of a unary call, kept until its answer.
#[derive(Debug, Default)]
pub(super) struct ReplyMeta {
    pub(super) headers: Metadata,
    pub(super) trailers: Metadata,
}

pub(super) struct ClientSide {
    waiters: CallMap<Waiter>,
    /// Unary calls' response metadata, until their answer.
    metadata: CallMap<Box<ReplyMeta>>,
    /// Streaming calls: where their messages and ends go.
    routes: Routes,
    handshake: Option<oneshot::Sender<Result<Hello, ConnectError>>>,
    /// Closed when the connection can take no more calls, so queued callers fail at once.
    permits: Arc<Semaphore>,
    close_reason: Option<ConnectionError>,
    /// False from the first goaway or close on: new calls go elsewhere (or wait for a new
    /// connection).
    usable: Arc<AtomicBool>,
    /// Told when the connection stops being usable (the redialer listens).
    lost: Arc<Notify>,
}

impl ClientSide {
    fn unusable(&mut self) {
        self.permits.close();
        if self.usable.swap(false, Ordering::AcqRel) {
            self.lost.notify_one();
        }
    }
}

impl HasRoutes for ClientSide {
    fn routes(&mut self) -> &mut Routes {
        &mut self.routes
    }
}

impl SideHandler for ClientSide {
    fn after_step(g: &mut Locked<Self>) {
        stream::deliver(g);
    }

    fn on_event(g: &mut Locked<Self>, event: Event) {
        let side = &mut g.side;
        match event {
            Event::StreamData { id, body } => {
                if let Err(body) = side.routes.message(id, body) {
                    // Nobody listens any more: the bytes are consumed here.
                    g.conn.consumed(id, body.len() as usize);
                }
            }
            Event::StreamMessages { id, messages } => {
                if let Err(messages) = side.routes.messages(id, messages) {
                    g.conn.consumed_many(id, messages.len(), messages.message_bytes());
                }
            }
            Event::StreamEnd { id, code } => {
                let result = match code {
                    Code::OK => Ok(()),
                    code => Err(CallError::Status(Status::new(code, "the server ended the stream"))),
                };
                side.routes.end(id, result, true);
            }
            Event::SendReady { id } => side.routes.wake(id),
            Event::Headers { id, metadata } => {
                if side.routes.is_open(id) {
                    side.routes.metadata(id, stream::Inbound::Headers(metadata));
                } else if side.waiters.contains_key(&id) {
                    side.metadata.entry(id).or_default().headers = metadata;
                }
            }
            Event::Trailers { id, metadata } => {
                if side.routes.is_open(id) {
                    side.routes.metadata(id, stream::Inbound::Trailers(metadata));
                } else if side.waiters.contains_key(&id) {
                    side.metadata.entry(id).or_default().trailers = metadata;
                }
            }
            // A streaming call's answer: its last message, then its end.
            Event::Finished { id, result } if side.routes.is_open(id) => {
                let result = result.map(|body| {
                    // A reader that went away needs no answer.
                    let _ = side.routes.message(id, body);
                });
                side.routes.end(id, result, true);
            }
            Event::Connected(hello) => {
                // The real limit is the server's; the placeholder had none.
                side.permits.add_permits(hello.max_calls_in_flight as usize);
                if let Some(tx) = side.handshake.take() {
                    let _ = tx.send(Ok(hello));
                }
            }
            Event::Refused { code, message } => {
                if let Some(tx) = side.handshake.take() {
                    let _ = tx.send(Err(ConnectError::Refused { code, message }));
                }
            }
            Event::Finished { id, result } => {
                // Looked up only when some call has metadata: the plain path stays as it was.
                let metadata = if side.metadata.is_empty() { None } else { side.metadata.remove(&id) };
                if let Some(tx) = side.waiters.remove(&id) {
                    let _ = tx.send((result, metadata));
                }
            }
            Event::GoAway { .. } => side.unusable(),
            Event::Closed(err) => {
                side.unusable();
                if let Some(tx) = side.handshake.take() {
                    let _ = tx.send(Err(ConnectError::Handshake(err.clone())));
                }
                side.close_reason = Some(err);
            }
            Event::Request { .. } | Event::Abort { .. } => unreachable!("server events on a client"),
        }
    }
}

/// One established connection.
pub(super) struct Conn {
    pub(super) shared: Arc<Shared<ClientSide>>,
    permits: Arc<Semaphore>,
    usable: Arc<AtomicBool>,
    pub(super) peer: Hello,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.step(|g| g.conn.close(ConnectionError::LocallyClosed));
    }
}

/// How one attempt of a call ended.
pub(super) enum Attempt {
    Done(Answer),
    /// The connection could not take the call; it was never sent, here is the body back.
    NotSent(Body),
}

impl Conn {
    /// Sends our hello over `transport`, waits for the server's (within `limit`, what is left
    /// of `config.connect_timeout`), and spawns the connection's task on the current tokio
    /// runtime. `lost` is told when the connection stops taking calls.
    pub(super) async fn establish<T: Transport>(
        transport: T,
        config: &ClientConfig,
        limit: Duration,
        lost: Arc<Notify>,
    ) -> Result<Conn, ConnectError> {
        let permits = Arc::new(Semaphore::new(0));
        let usable = Arc::new(AtomicBool::new(true));
        let (tx, rx) = oneshot::channel();
        let side = ClientSide {
            waiters: CallMap::default(),
            metadata: CallMap::default(),
            routes: Routes::default(),
            handshake: Some(tx),
            permits: permits.clone(),
            close_reason: None,
            usable: usable.clone(),
            lost,
        };
        let conn = Connection::new(Side::Client, config.conn.clone(), Instant::now());
        let shared = Shared::new(conn, side, transport.stats(), None);
        tokio::spawn(driver::run(transport, shared.clone()));
        // However this ends before the connection is handed out — an error, the timeout, or
        // this future dropped (a re-dial cut short by the client's end) — the connection closes.
        let mut unclaimed = CloseUnlessClaimed(Some(shared.clone()));
        let peer = match tokio::time::timeout(limit, rx).await {
            // Connected, and silence: whichever timer ran out first, say what it means.
            Ok(Ok(Err(ConnectError::Handshake(ConnectionError::HelloTimeout(d))))) => return Err(ConnectError::NoHello(d)),
            Err(_) => return Err(ConnectError::NoHello(config.connect_timeout)),
            Ok(Ok(Err(ConnectError::Handshake(ConnectionError::Closed)))) | Ok(Err(_)) => {
                return Err(ConnectError::ClosedBeforeHello)
            }
            Ok(Ok(r)) => r?,
        };
        unclaimed.0 = None;
        Ok(Conn { shared, permits, usable, peer })
    }

    /// True while new calls may start here.
    pub(super) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// One attempt of a call on this connection. `timeout` is what is left of the caller's.
    /// Queues the call at once when a call permit is free (the usual case, no future at all);
    /// otherwise waits for one in a box of its own, so that the wait and its timer do not make
    /// every call's future larger.
    ///
    /// (A plain function returning an `async` block, not an `async fn`: an `async fn` keeps
    /// each argument twice in its future, as it came and as moved into the body.)
    #[allow(clippy::manual_async_fn)] // deliberate: see above
    pub(super) fn call<'a>(
        &'a self,
        method: u32,
        body: Body,
        metadata: &'a Metadata,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Attempt> + 'a {
        async move {
            let start = Instant::now();
            let permit = match self.permits.try_acquire() {
                Ok(p) => p,
                Err(tokio::sync::TryAcquireError::Closed) => return Attempt::NotSent(body),
                Err(tokio::sync::TryAcquireError::NoPermits) => match Box::pin(self.wait_for_permit(timeout)).await {
                    Ok(p) => p,
                    Err(Some(t)) => return Attempt::Done((Err(CallError::DeadlineExceeded(t)), None)),
                    Err(None) => return Attempt::NotSent(body),
                },
            };
            // Bound first, then awaited: awaited inside the `match`, the whole `Result` would be
            // kept in the future beside it.
            let pending = match self.queue(method, body, metadata, timeout, start, permit) {
                Ok(pending) => pending,
                Err(attempt) => return attempt,
            };
            Attempt::Done(pending.await)
        }
    }

    /// Queues a unary call holding `permit`; `timeout` (what is left of the caller's, at
    /// `start`) becomes its deadline on the wire.
    fn queue<'a>(
        &'a self,
        method: u32,
        body: Body,
        metadata: &Metadata,
        timeout: Option<Duration>,
        start: Instant,
        permit: SemaphorePermit<'a>,
    ) -> Result<Pending<'a>, Attempt> {
        let (tx, rx) = oneshot::channel();
        let started = self.shared.step(|g| {
            if g.conn.is_draining() {
                return Err(body);
            }
            let (remaining, now) = left_of(timeout, start);
            let r = g.conn.start_call(method, body, CallMode::UNARY, metadata, remaining, now);
            if let Ok(id) = r {
                g.side.waiters.insert(id, tx);
            }
            Ok(r)
        });
        match started {
            Err(body) => Err(Attempt::NotSent(body)),
            Ok(Err(e)) => Err(Attempt::Done((Err(e), None))),
            Ok(Ok(id)) => Ok(Pending { conn: self, rx, guard: CancelOnDrop { shared: &self.shared, id, armed: true }, _permit: permit }),
        }
    }

    /// Waits for a call permit within `timeout`: `Err(Some(t))` when it passed, `Err(None)` when
    /// the connection takes no more calls.
    async fn wait_for_permit(&self, timeout: Option<Duration>) -> Result<tokio::sync::SemaphorePermit<'_>, Option<Duration>> {
        match timeout {
            Some(t) => match tokio::time::timeout(t, self.permits.acquire()).await {
                Ok(p) => p.map_err(|_| None),
                Err(_) => Err(Some(t)),
            },
            None => self.permits.acquire().await.map_err(|_| None),
        }
    }

    /// Opens a streaming call on this connection; `keep` is kept alive with its handles (the
    /// connection itself, so that it outlives the client handle that opened the call).
    pub(super) async fn open(
        &self,
        method: u32,
        body: Body,
        mode: CallMode,
        metadata: &Metadata,
        timeout: Option<Duration>,
        keep: Arc<Conn>,
    ) -> Result<CallStream, (CallError, Option<Body>)> {
        let start = Instant::now();
        let permit = match timeout {
            Some(t) => match tokio::time::timeout(t, self.permits.clone().acquire_owned()).await {
                Ok(p) => p,
                Err(_) => return Err((CallError::DeadlineExceeded(t), None)),
            },
            None => self.permits.clone().acquire_owned().await,
        };
        let Ok(permit) = permit else { return Err((self.closed_error(), Some(body))) };
        let shared = &self.shared;
        let opened = shared.step(|g| {
            if g.conn.is_draining() {
                return Err((CallError::ShuttingDown, Some(body)));
            }
            let (remaining, now) = left_of(timeout, start);
            let id = g.conn.start_call(method, body, mode, metadata, remaining, now).map_err(|e| (e, None))?;
            Ok((id, g.side.routes.open(id)))
        });
        let (id, inbound) = opened?;
        let keep: (OwnedSemaphorePermit, Arc<Conn>) = (permit, keep);
        Ok(stream::handles(shared.clone(), id, Some(inbound), Some(keep)))
    }

    pub(super) fn closed_error(&self) -> CallError {
        let g = self.shared.lock();
        match &g.side.close_reason {
            Some(e) => CallError::Connection(e.clone()),
            None => CallError::ShuttingDown,
        }
    }
}

/// Closes a connection still being established when dropped, unless it was claimed.
struct CloseUnlessClaimed(Option<Arc<Shared<ClientSide>>>);

impl Drop for CloseUnlessClaimed {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.step(|g| g.conn.close(ConnectionError::LocallyClosed));
        }
    }
}

/// Cancels the call on the server when the caller drops the call's future.
struct CancelOnDrop<'a> {
    shared: &'a Arc<Shared<ClientSide>>,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let id = self.id;
            self.shared.step(|g| {
                if g.side.waiters.remove(&id).is_some() {
                    g.side.metadata.remove(&id);
                    g.conn.cancel_call(id);
                }
            });
        }
    }
}

/// A queued unary call, until its answer: the whole of a call's state while it waits, kept
/// small because every call in flight holds one (a caller with many in flight pushes each
/// call's future into a task or a `FuturesUnordered`, copied and allocated per call). Dropped
/// before the answer, it cancels the call; its permit goes back when it is dropped.
struct Pending<'a> {
    conn: &'a Conn,
    rx: oneshot::Receiver<Answer>,
    guard: CancelOnDrop<'a>,
    _permit: SemaphorePermit<'a>,
}

impl Future for Pending<'_> {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let answer = ready!(Pin::new(&mut self.rx).poll(cx));
        self.guard.armed = false;
        Poll::Ready(answer.unwrap_or_else(|_| (Err(self.conn.closed_error()), None)))
    }
}

/// A streaming call keeps its permit and its connection; it is draining once the connection
/// stopped taking calls.
impl crate::stream::Keep for (OwnedSemaphorePermit, Arc<Conn>) {
    fn connection_draining(&self) -> bool {
        !self.1.is_usable()
    }
}

/// What is left at this moment of a call's `timeout` counted from `start`, and the moment, for
/// [`Connection::start_call`](crate::conn::Connection::start_call). One clock read for a call
/// with a deadline, none for one without: `start_call` uses the moment only to place a
/// deadline, so `start` serves.
fn left_of(timeout: Option<Duration>, start: Instant) -> (Option<Duration>, Instant) {
    match timeout {
        Some(t) => {
            let now = Instant::now();
            (Some(t.saturating_sub(now.saturating_duration_since(start))), now)
        }
        None => (None, start),
    }
}
