//! One served connection: runs handlers for the machine's requests, aborts them when told.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::task::AbortHandle;

use crate::body::Body;
use crate::call_map::CallMap;
use crate::code::Code;
use crate::conn::Event;
use crate::driver::{Locked, Shared, SideHandler, EARLY_FRAMES, SEND_AHEAD};
use crate::error::{CallError, ConnectionError, Status};
use crate::response_metadata::ResponseMetadata;
use crate::service::{BoxFuture, Peer, ServerRequest, Service};
use crate::stream::{self, HasRoutes, Routes};
use crate::unwind::{self, CatchUnwind};

pub(crate) type Handler = CatchUnwind<BoxFuture<'static, Result<Body, Status>>>;

/// The most entries `ready` and `done` keep room for between inputs: the first allocation's
/// (a vector's smallest, 4 entries of about 450 bytes), so an idle connection holds at most
/// about 3.6 KiB for them; what a burst grew is freed, as it was before they were kept.
const KEEP_ENTRIES: usize = 4;

/// A streaming call's inbound channel.
type InboundRx = stream::InboxReceiver;

pub(crate) struct ServerSide {
    service: Arc<dyn Service>,
    /// Requests of the last input, not yet handed to the service (a streaming call's with
    /// `Some`: its inbound channel when the client streams, made into its handles once the
    /// shared state is at hand).
    ready: Vec<(u64, ServerRequest, Option<Option<InboundRx>>)>,
    /// The answers of the handlers that finished in their first poll ([`SideHandler::after_input`]),
    /// empty between inputs. Both vectors keep their allocation from one input to the next
    /// (up to [`KEEP_ENTRIES`]): made afresh, they were two allocations of about 1.8 KiB each,
    /// and their frees, per input (on a 64-byte round trip, the server's largest).
    done: Vec<(u64, Result<Body, Status>)>,
    /// Streaming calls: where their messages go.
    routes: Routes,
    /// Who is at the other end.
    peer: Peer,
    /// Handlers running as their own tasks.
    handlers: CallMap<AbortHandle>,
    /// Calls a [`crate::Responder`] answers (see [`ServerRequest::responder`]): each with its
    /// handler's future once its first poll left it pending, kept unpolled until the call
    /// ends and then dropped. Empty unless a service takes responders.
    deferred: CallMap<Option<Handler>>,
    /// Parked handlers of calls that ended with the connection: dropped when the connection's
    /// task ends ([`ServerSide::take_ended`]), outside the lock, where no runtime shutdown
    /// can drop them in place (a task spawned then is dropped at once, by the spawner).
    ended: Vec<Handler>,
    /// Set when a graceful shutdown began: close once every answered call is flushed.
    pub(crate) draining: bool,
    pub(crate) close_reason: Option<ConnectionError>,
    /// Write the warning of a connection dropped for bad input to stderr when no `tracing`
    /// subscriber is installed ([`crate::ServerBuilder::stderr_warnings`]).
    stderr_warnings: bool,
}

impl ServerSide {
    pub(crate) fn new(service: Arc<dyn Service>, peer: Peer, stderr_warnings: bool) -> Self {
        ServerSide {
            service,
            peer,
            stderr_warnings,
            ready: Vec::new(),
            done: Vec::new(),
            routes: Routes::default(),
            handlers: CallMap::default(),
            deferred: CallMap::default(),
            ended: Vec::new(),
            draining: false,
            close_reason: None,
        }
    }

    /// The parked handlers of the calls that ended with the connection, to drop outside the
    /// lock.
    pub(crate) fn take_ended(&mut self) -> Vec<Handler> {
        std::mem::take(&mut self.ended)
    }
}

/// True when no `tracing` subscriber would see an event (none installed, globally or for this
/// thread): a warning then goes to stderr, or nobody would learn of it.
pub(crate) fn no_subscriber() -> bool {
    tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>())
}

/// A handler's result, a panic turned into `INTERNAL`.
fn answer(result: Result<Result<Body, Status>, String>) -> Result<Body, Status> {
    result.unwrap_or_else(|what| Err(Status::new(Code::INTERNAL, format!("handler panicked: {what}"))))
}

impl HasRoutes for ServerSide {
    fn routes(&mut self) -> &mut Routes {
        &mut self.routes
    }
}

/// The call is over: its answer goes out, and its stream (if any) closes.
fn finish(g: &mut Locked<ServerSide>, id: u64, result: Result<Body, Status>) {
    g.conn.respond(id, result);
    g.side.routes.remove(id);
}

/// Ends the calls whose handlers answered on their first poll, in order (`done` is left empty).
fn finish_all(g: &mut Locked<ServerSide>, done: &mut Vec<(u64, Result<Body, Status>)>) {
    for (id, result) in done.drain(..) {
        finish_unless_deferred(g, id, result);
    }
}

/// The handler's answer ends the call, unless a responder took the call over
/// ([`ServerRequest::responder`]): then the handler's output is ignored.
fn finish_unless_deferred(g: &mut Locked<ServerSide>, id: u64, result: Result<Body, Status>) {
    // One branch on the ordinary path: the map is empty unless a service takes responders.
    if g.side.deferred.is_empty() || !g.side.deferred.contains_key(&id) {
        finish(g, id, result);
    }
}

/// A cancelled call's parked handler, dropped in a task of its own: a drop is user code, which
/// must not run under the connection's lock (it may answer a call, which takes the lock).
fn drop_outside_lock(parked: Handler) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move { drop(parked) });
        }
        // No runtime to run it (the connection's loops always have one): drop on a thread.
        Err(_) => {
            std::thread::spawn(move || drop(parked));
        }
    }
}

/// Marks call `id` as answered by a responder from now on; false when the call is over or
/// already has one.
pub(crate) fn defer(shared: &Shared<ServerSide>, id: u64) -> bool {
    let mut g = shared.lock();
    if !g.conn.is_open() || !g.conn.is_call_live(id) || g.side.deferred.contains_key(&id) {
        return false;
    }
    g.side.deferred.insert(id, None);
    true
}

/// A responder's answer to call `id`: the call ends with `result`, its handler's future (parked
/// or running as a task) is dropped. False when the call was over already.
pub(crate) fn answer_deferred(shared: &Shared<ServerSide>, id: u64, result: Result<Body, Status>) -> bool {
    let (parked, live) = shared.step(|g| {
        let Some(parked) = g.side.deferred.remove(&id) else { return (None, false) };
        if let Some(h) = g.side.handlers.remove(&id) {
            h.abort();
        }
        let live = g.conn.is_call_live(id);
        finish(g, id, result);
        (parked, live)
    });
    // Dropped here, outside the lock: a handler's drop is user code.
    drop(parked);
    live
}

impl SideHandler for ServerSide {
    fn on_event(g: &mut Locked<Self>, event: Event) {
        match event {
            Event::Request { id, method, mode, metadata, deadline, body } => {
                // The service is called after the lock is released (`after_input`): user code,
                // even the synchronous part of a hand-written `Service::call`, never runs here.
                // The client sends no stream (server streaming): no channel, the handler's
                // receiver has ended already. Measured on rpc-tonic's `per_call` loop (each
                // unary gRPC call a server-streaming zcrpc call): a channel made and ended per
                // call cost 1.2k of 26k instructions, and a batch of 128 of their blocks made
                // glibc grow and trim its heap on every batch.
                let inbound = mode.is_streaming().then(|| mode.client_stream.then(|| g.side.routes.open(id)));
                let peer = g.side.peer.clone();
                let response = ResponseMetadata::unbound();
                g.side.ready.push((id, ServerRequest { method, body, deadline, metadata, peer, stream: None, response }, inbound));
            }
            Event::StreamData { id, body } => {
                if let Err(body) = g.side.routes.message(id, body) {
                    // The handler stopped listening: its bytes are consumed here.
                    g.conn.consumed(id, body.len() as usize);
                }
            }
            Event::StreamMessages { id, messages } => {
                if let Err(messages) = g.side.routes.messages(id, messages) {
                    g.conn.consumed_many(id, messages.len(), messages.message_bytes());
                }
            }
            Event::StreamEnd { id, code } => {
                let result = match code {
                    Code::OK => Ok(()),
                    code => Err(CallError::Status(Status::new(code, "the client abandoned its stream"))),
                };
                g.side.routes.end(id, result, false);
            }
            Event::SendReady { id } => g.side.routes.wake(id),
            Event::Abort { id, reason } => {
                g.side.routes.remove(id);
                // Cancelled in the same input that started it: never run it.
                g.side.ready.retain(|(rid, _, _)| *rid != id);
                if let Some(h) = g.side.handlers.remove(&id) {
                    tracing::debug!(id, ?reason, "dropping handler");
                    h.abort();
                }
                if !g.side.deferred.is_empty() {
                    if let Some(Some(parked)) = g.side.deferred.remove(&id) {
                        tracing::debug!(id, ?reason, "dropping parked handler");
                        if g.conn.is_open() {
                            drop_outside_lock(parked);
                        } else {
                            g.side.ended.push(parked);
                        }
                    }
                }
            }
            Event::Closed(err) => {
                g.side.ready.clear();
                g.side.routes = Routes::default();
                for (_, h) in g.side.handlers.drain() {
                    h.abort();
                }
                let parked = g.side.deferred.drain().filter_map(|(_, parked)| parked);
                g.side.ended.extend(parked);
                match &err {
                    ConnectionError::Closed | ConnectionError::LocallyClosed => {}
                    ConnectionError::Decode(_) | ConnectionError::Protocol(_) | ConnectionError::HelloTimeout(_) => {
                        let peer = &g.side.peer;
                        if g.side.stderr_warnings && no_subscriber() {
                            eprintln!("WARN zcrpc server: dropped the connection from {peer}: {err}");
                        } else {
                            tracing::warn!(%peer, "dropped the connection: {err}");
                        }
                    }
                    _ => tracing::info!("connection closed: {err}"),
                }
                g.side.close_reason = Some(err);
            }
            Event::Connected(_) | Event::GoAway { .. } => {}
            Event::Refused { .. } | Event::Finished { .. } => {}
            Event::Headers { .. } | Event::Trailers { .. } => {}
        }
    }

    /// Calls the service for each new request and polls each handler once, here, outside the
    /// lock: most finish at once (no IO of their own), and their answers go out without a task
    /// spawned or a wakeup between tasks. The rest become tasks of their own.
    fn after_input(shared: &Arc<Shared<Self>>) {
        let (mut ready, mut done, service) = {
            let mut g = shared.lock();
            if g.side.ready.is_empty() {
                return;
            }
            (std::mem::take(&mut g.side.ready), std::mem::take(&mut g.side.done), g.side.service.clone())
        };
        let mut pending = Vec::new();
        // A no-op waker is enough for this first poll: the task spawned for a pending handler
        // polls it again at once, with its own waker, and a correct future checks again then.
        let mut cx = Context::from_waker(Waker::noop());
        for (id, mut request, inbound) in ready.drain(..) {
            if let Some(inbound) = inbound {
                request.stream = Some(stream::handles(shared.clone(), id, inbound, None::<()>));
            }
            // The connection's `Arc`, cloned: no allocation per call.
            request.response = ResponseMetadata::bound(shared.clone(), id);
            // A panic in the service's synchronous part fails only this call.
            let mut fut: Handler = match unwind::catch(|| service.call(request)) {
                Ok(fut) => CatchUnwind::new(fut),
                Err(what) => {
                    done.push((id, answer(Err(what))));
                    continue;
                }
            };
            let mut large = false;
            match Pin::new(&mut fut).poll(&mut cx) {
                Poll::Ready(result) => {
                    let result = answer(result);
                    large = result.as_ref().is_ok_and(|b| b.len() >= SEND_AHEAD as u64);
                    done.push((id, result));
                }
                Poll::Pending => pending.push((id, fut)),
            }
            // A burst's first answers go out now (the driver's early flush): the client
            // works on them while the rest are answered. A large answer is queued at once, so
            // that the handlers polled after it see the writer behind: one that makes its
            // answer in its turn (`StreamSender::writer_turn`) then waits for the writer
            // instead of making it beside all the others.
            if large || done.len() >= EARLY_FRAMES {
                shared.step(|g| finish_all(g, &mut done));
            }
        }
        let mut gone = Vec::new();
        shared.step(|g| {
            finish_all(g, &mut done);
            // Both go back, empty, for the next input (unless requests came meanwhile: the
            // next call here takes those).
            if g.side.ready.capacity() == 0 && ready.capacity() <= KEEP_ENTRIES {
                g.side.ready = ready;
            }
            if done.capacity() <= KEEP_ENTRIES {
                g.side.done = done;
            }
            for (id, fut) in pending {
                // Cancelled, or its deadline passed, during the first poll: the call is over,
                // and a task for it would run uncounted by the in-flight limit.
                if !g.conn.is_open() || !g.conn.is_call_live(id) {
                    gone.push(fut);
                    continue;
                }
                // Its responder answers: the future waits, unpolled, for the call to end.
                if let Some(slot) = g.side.deferred.get_mut(&id) {
                    *slot = Some(fut);
                    continue;
                }
                let shared = shared.clone();
                // The lock is held until the handle is recorded, so the task cannot finish
                // (and look for its entry) before it exists.
                let task = tokio::spawn(async move {
                    let result = answer(fut.await);
                    shared.step(|g| {
                        g.side.handlers.remove(&id);
                        finish_unless_deferred(g, id, result);
                    });
                });
                g.side.handlers.insert(id, task.abort_handle());
            }
        });
        // Dropped outside the lock: a handler's drop is user code.
        drop(gone);
    }

    fn after_step(g: &mut Locked<Self>) {
        stream::deliver(g);
        if g.side.draining && g.conn.is_open() && g.conn.calls_in_flight() == 0 && !g.conn.awaits_pieced_request() {
            g.conn.close(ConnectionError::LocallyClosed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::no_subscriber;

    #[test]
    fn a_subscriber_of_the_user_replaces_the_stderr_fallback() {
        assert!(no_subscriber(), "no subscriber is installed in this test");
        let subscriber = tracing_subscriber::fmt().with_test_writer().finish();
        tracing::subscriber::with_default(subscriber, || assert!(!no_subscriber()));
        assert!(no_subscriber());
    }
}
