//! One served connection: runs handlers for the machine's requests, aborts them when told.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::task::AbortHandle;

use super::catch_unwind::CatchUnwind;
use crate::call_map::CallMap;
use crate::conn::Event;
use crate::driver::{Locked, Shared, SideHandler};
use crate::error::ConnectionError;
use crate::service::{ServerRequest, Service};

pub(crate) struct ServerSide {
    service: Arc<dyn Service>,
    /// Handlers started by the last input, not yet polled.
    ready: Vec<(u64, CatchUnwind)>,
    /// Handlers running as their own tasks.
    handlers: CallMap<AbortHandle>,
    /// Set when a graceful shutdown began: close once every answered call is flushed.
    pub(crate) draining: bool,
    pub(crate) close_reason: Option<ConnectionError>,
}

impl ServerSide {
    pub(crate) fn new(service: Arc<dyn Service>) -> Self {
        ServerSide { service, ready: Vec::new(), handlers: CallMap::default(), draining: false, close_reason: None }
    }
}

impl SideHandler for ServerSide {
    fn on_event(g: &mut Locked<Self>, event: Event) {
        match event {
            Event::Request { id, method, deadline, body } => {
                let fut = CatchUnwind::new(g.side.service.call(ServerRequest { method, body, deadline }));
                g.side.ready.push((id, fut));
            }
            Event::Abort { id, reason } => {
                // Cancelled in the same input that started it: never run it.
                g.side.ready.retain(|(rid, _)| *rid != id);
                if let Some(h) = g.side.handlers.remove(&id) {
                    tracing::debug!(id, ?reason, "dropping handler");
                    h.abort();
                }
            }
            Event::Closed(err) => {
                g.side.ready.clear();
                for (_, h) in g.side.handlers.drain() {
                    h.abort();
                }
                if !matches!(err, ConnectionError::Closed | ConnectionError::LocallyClosed) {
                    tracing::info!("connection closed: {err}");
                }
                g.side.close_reason = Some(err);
            }
            Event::Connected(_) | Event::GoAway { .. } => {}
            Event::Refused { .. } | Event::Finished { .. } => {}
        }
    }

    /// Polls each new handler once, here, outside the lock: most finish at once (no IO of their
    /// own), and their answers go out without a task spawned or a wakeup between tasks. The
    /// rest become tasks of their own.
    fn after_input(shared: &Arc<Shared<Self>>) {
        let ready = std::mem::take(&mut shared.lock().side.ready);
        if ready.is_empty() {
            return;
        }
        let mut done = Vec::new();
        let mut pending = Vec::new();
        // A no-op waker is enough for this first poll: the task spawned for a pending handler
        // polls it again at once, with its own waker, and a correct future checks again then.
        let mut cx = Context::from_waker(Waker::noop());
        for (id, mut fut) in ready {
            match Pin::new(&mut fut).poll(&mut cx) {
                Poll::Ready(result) => done.push((id, result)),
                Poll::Pending => pending.push((id, fut)),
            }
        }
        shared.step(|g| {
            for (id, result) in done {
                g.conn.respond(id, result);
            }
            if !g.conn.is_open() {
                return;
            }
            for (id, fut) in pending {
                let shared = shared.clone();
                // The lock is held until the handle is recorded, so the task cannot finish
                // (and look for its entry) before it exists.
                let task = tokio::spawn(async move {
                    let result = fut.await;
                    shared.step(|g| {
                        g.side.handlers.remove(&id);
                        g.conn.respond(id, result);
                    });
                });
                g.side.handlers.insert(id, task.abort_handle());
            }
        });
    }

    fn after_step(g: &mut Locked<Self>) {
        if g.side.draining && g.conn.is_open() && g.conn.calls_in_flight() == 0 {
            g.conn.close(ConnectionError::LocallyClosed);
        }
    }
}
