//! A server's services as tower services, and tower services as a server's: what
//! [`ServerBuilder::layer`](crate::ServerBuilder::layer) puts layers between.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ::tower::{BoxError, Service as TowerServiceTrait, ServiceExt};

use crate::body::Body;
use crate::code::Code;
use crate::error::Status;
use crate::service::{BoxFuture, ServerRequest, Service};

/// A server's service (a `#[service]` server, a router of several, anything implementing
/// [`Service`]) as a `tower::Service<ServerRequest>`: what the innermost layer of
/// [`ServerBuilder::layer`](crate::ServerBuilder::layer) wraps. Always ready; cheap to clone.
#[derive(Clone)]
pub struct Handler {
    service: Arc<dyn Service>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("service", &self.service.name()).finish()
    }
}

impl Handler {
    /// The tower face of `service`.
    pub fn new(service: Arc<dyn Service>) -> Self {
        Handler { service }
    }
}

impl TowerServiceTrait<ServerRequest> for Handler {
    type Response = Body;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Body, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ServerRequest) -> Self::Future {
        self.service.call(request)
    }
}

/// A `tower::Service<ServerRequest>` (answering a [`Body`], failing with anything that
/// converts into a `tower::BoxError`) served as a server's [`Service`]: each call runs on a
/// clone of it, waits until it is ready, then calls it — so a `ConcurrencyLimit` inside holds
/// calls back until a slot is free, within their deadline.
///
/// Errors become the call's status: a [`Status`] as it is, tower's `timeout` error as
/// `DEADLINE_EXCEEDED`, its load-shed error as `RESOURCE_EXHAUSTED`, anything else as
/// `UNKNOWN` with the error's text.
///
/// ```
/// use rpc_core::tower::TowerService;
/// use rpc_core::{Body, Server, ServerRequest, Status};
///
/// let echo = tower::service_fn(|req: ServerRequest| async move { Ok::<_, Status>(req.body) });
/// let server = Server::builder().build(TowerService::new(echo));
/// # drop(server);
/// ```
pub struct TowerService<S> {
    /// Locked only to clone it: a tower service need not be `Sync`.
    service: Mutex<S>,
    name: &'static str,
    methods: &'static [(&'static str, u32)],
}

impl<S> std::fmt::Debug for TowerService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerService").field("name", &self.name).finish()
    }
}

impl<S> TowerService<S> {
    /// Serves `service`.
    pub fn new(service: S) -> Self {
        TowerService { service: Mutex::new(service), name: "tower", methods: &[] }
    }

    /// The service with this name and these methods, for logs and for routing beside others
    /// (see [`Service::name`], [`Service::methods`]).
    pub fn named(mut self, name: &'static str, methods: &'static [(&'static str, u32)]) -> Self {
        self.name = name;
        self.methods = methods;
        self
    }
}

impl<S> Service for TowerService<S>
where
    S: TowerServiceTrait<ServerRequest, Response = Body> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let service = self.service.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move { service.oneshot(request).await.map_err(|e| to_status(e.into())) })
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn methods(&self) -> &'static [(&'static str, u32)] {
        self.methods
    }
}

/// The status a layer's error becomes.
fn to_status(e: BoxError) -> Status {
    let e = match e.downcast::<Status>() {
        Ok(s) => return *s,
        Err(e) => e,
    };
    if e.is::<::tower::timeout::error::Elapsed>() {
        Status::new(Code::DEADLINE_EXCEEDED, format!("the server's timeout layer: {e}"))
    } else if e.is::<::tower::load_shed::error::Overloaded>() {
        Status::new(Code::RESOURCE_EXHAUSTED, format!("the server's load-shed layer: {e}"))
    } else {
        Status::new(Code::UNKNOWN, e.to_string())
    }
}

/// One layer as [`ServerBuilder`](crate::ServerBuilder) keeps it: wraps the service built so far.
pub(crate) type LayerFn = Arc<dyn Fn(Arc<dyn Service>) -> Arc<dyn Service> + Send + Sync>;

/// `layer` as a [`LayerFn`].
pub(crate) fn layer_fn<L>(layer: L) -> LayerFn
where
    L: ::tower::Layer<Handler> + Send + Sync + 'static,
    L::Service: TowerServiceTrait<ServerRequest, Response = Body> + Clone + Send + 'static,
    <L::Service as TowerServiceTrait<ServerRequest>>::Error: Into<BoxError>,
    <L::Service as TowerServiceTrait<ServerRequest>>::Future: Send + 'static,
{
    Arc::new(move |inner: Arc<dyn Service>| {
        let (name, methods) = (inner.name(), inner.methods());
        let layered = layer.layer(Handler::new(inner));
        Arc::new(TowerService::new(layered).named(name, methods)) as Arc<dyn Service>
    })
}
