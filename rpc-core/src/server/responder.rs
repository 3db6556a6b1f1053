//! `Responder`: a call answered from outside its handler.

use std::fmt;
use std::sync::Arc;

use crate::body::Body;
use crate::code::Code;
use crate::driver::Shared;
use crate::error::Status;

use super::connection::{self, ServerSide};

/// The answer of one call, taken out of its handler ([`crate::ServerRequest::responder`]): for
/// a service that hands its calls to something else (a queue, a batcher, another framework's
/// dispatcher) and lets that answer them, without a task per call waiting for it.
///
/// Once a call has a responder, the responder's answer is the call's: the handler's future is
/// polled once, as every handler is, and then no more — its output, if any, is ignored. A future
/// still pending then is kept, unpolled, until the call ends, and dropped then: when the
/// responder answers, or when the call ends without its answer (the client cancelled it, its
/// deadline passed, the connection closed), so that dropping is how a handler learns of a
/// cancel, as always.
///
/// A responder dropped without answering answers the call with `INTERNAL` ("the call's
/// responder was dropped without answering"): a call never waits for an answer nobody can give.
/// Answering a call that is over already does nothing ([`Responder::respond`] says so).
///
/// ```
/// use rpc_core::{Body, BoxFuture, Responder, ServerRequest, Service, Status};
/// use tokio::sync::mpsc;
///
/// /// Hands every call to a worker that answers them in batches.
/// struct Batched(mpsc::UnboundedSender<(Body, Responder)>);
///
/// impl Service for Batched {
///     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
///         let Some(responder) = req.responder() else {
///             // Not a call of a connection (a `ServerRequest::new` of a test).
///             return Box::pin(async { Err(Status::internal("no connection to answer on")) });
///         };
///         let _ = self.0.send((req.body, responder)); // dropped unanswered: INTERNAL
///         // Never polled again: it only waits to be dropped when the call ends.
///         Box::pin(std::future::pending())
///     }
/// }
///
/// async fn worker(mut calls: mpsc::UnboundedReceiver<(Body, Responder)>) {
///     while let Some((body, responder)) = calls.recv().await {
///         responder.respond(Ok(body)); // an echo
///     }
/// }
/// ```
pub struct Responder {
    /// The call's connection; `None` once answered.
    shared: Option<Arc<Shared<ServerSide>>>,
    id: u64,
}

impl Responder {
    /// The responder of call `id`, if it has none yet and is not over.
    pub(crate) fn take(shared: Arc<Shared<ServerSide>>, id: u64) -> Option<Self> {
        connection::defer(&shared, id).then(|| Responder { shared: Some(shared), id })
    }

    /// Answers the call: `Ok(body)` as its response, `Err(status)` as its error, exactly as
    /// a handler's output. Returns false when the call was over already (cancelled, past its
    /// deadline, its connection closed): nobody gets the answer.
    pub fn respond(mut self, result: Result<Body, Status>) -> bool {
        match self.shared.take() {
            Some(shared) => connection::answer_deferred(&shared, self.id, result),
            None => false,
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let status = Status::new(Code::INTERNAL, "the call's responder was dropped without answering");
            connection::answer_deferred(&shared, self.id, Err(status));
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").field("call", &self.id).field("answered", &self.shared.is_none()).finish()
    }
}
