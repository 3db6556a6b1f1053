//! One served connection: runs handlers for the machine's requests, aborts them when told.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::AbortHandle;

use super::catch_unwind::CatchUnwind;
use crate::conn::Event;
use crate::driver::{Locked, Shared, SideHandler};
use crate::error::ConnectionError;
use crate::service::{ServerRequest, Service};

pub(crate) struct ServerSide {
    service: Arc<dyn Service>,
    handlers: HashMap<u64, AbortHandle>,
    /// Set when a graceful shutdown began: close once every answered call is flushed.
    pub(crate) draining: bool,
    pub(crate) close_reason: Option<ConnectionError>,
}

impl ServerSide {
    pub(crate) fn new(service: Arc<dyn Service>) -> Self {
        ServerSide { service, handlers: HashMap::new(), draining: false, close_reason: None }
    }
}

impl SideHandler for ServerSide {
    fn on_event(g: &mut Locked<Self>, event: Event, shared: &Arc<Shared<Self>>) {
        match event {
            Event::Request { id, method, deadline, body } => {
                let fut = CatchUnwind::new(g.side.service.call(ServerRequest { method, body, deadline }));
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
            Event::Abort { id, reason } => {
                if let Some(h) = g.side.handlers.remove(&id) {
                    tracing::debug!(id, ?reason, "dropping handler");
                    h.abort();
                }
            }
            Event::Closed(err) => {
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

    fn after_step(g: &mut Locked<Self>) {
        if g.side.draining && g.conn.is_open() && g.conn.calls_in_flight() == 0 {
            g.conn.close(ConnectionError::LocallyClosed);
        }
    }
}
