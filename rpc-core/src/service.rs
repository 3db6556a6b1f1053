//! The `Service` trait: what a server runs for each call. `#[service]` implements it; so can
//! you, by hand.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::body::Body;
use crate::error::Status;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One call as the server receives it.
#[derive(Debug)]
pub struct ServerRequest {
    /// Method id.
    pub method: u32,
    /// The encoded arguments and attachments (slices of the receive buffer).
    pub body: Body,
    /// When the handler will be dropped, if the caller set a deadline.
    pub deadline: Option<Instant>,
}

/// Serves calls. Each call runs as its own task; the future is dropped when the caller
/// cancels, the deadline passes, or the connection ends.
pub trait Service: Send + Sync + 'static {
    /// Handles one call. Unknown methods answer [`Status::unimplemented`].
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>>;

    /// The service's name, for logs.
    fn name(&self) -> &'static str {
        "service"
    }
}

impl<S: Service + ?Sized> Service for std::sync::Arc<S> {
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        (**self).call(request)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }
}
