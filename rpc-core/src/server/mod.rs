//! The server: a builder with limits and services, a task per connection (its writer and timer
//! beside it), graceful shutdown.

mod authorize;
mod connection;
mod responder;
mod router;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::budget::MemoryBudget;
use crate::code::Code;
use crate::conn::{ConnConfig, Connection, Side};
use crate::driver::{self, Shared};
use crate::error::{ConnectionError, Status};
use crate::jitter::jitter;
use crate::service::Service;
use crate::stats::{StatsSnapshot, TransportStats};
use crate::transport::{Acceptor, Transport};
pub(crate) use connection::ServerSide;
#[cfg(feature = "tls")]
pub(crate) use connection::no_subscriber;
pub use authorize::CallInfo;
pub use responder::Responder;
pub use router::RouteError;
use router::Router;

/// Server settings; see [`ServerBuilder`].
#[derive(Debug, Clone)]
struct ServerConfig {
    conn: ConnConfig,
    max_connections: usize,
    grace_period: Duration,
    max_connection_age: Option<Duration>,
    memory_budget: usize,
    recv_cache_total: usize,
    stderr_warnings: bool,
}

/// Builds a [`Server`].
///
/// ```
/// use std::time::Duration;
/// # use rpc_core::{Body, BoxFuture, ServerRequest, Service, Status};
/// # struct Echo;
/// # impl Service for Echo {
/// #     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> { Box::pin(async move { Ok(req.body) }) }
/// # }
/// let server = rpc_core::Server::builder()
///     .max_frame(64 << 20)
///     .max_calls_in_flight(1000)
///     .max_connections(100)
///     .grace_period(Duration::from_secs(5))
///     .build(Echo);
/// # drop(server);
/// ```
///
/// Several services share a server when each is added with [`ServerBuilder::add_service`]:
/// a call goes to the service that owns its method ([`Service::methods`]), and a method no
/// service has is answered `UNIMPLEMENTED`.
///
/// ```
/// use rpc_core::{service, Server};
///
/// #[service]
/// pub trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
/// #[service]
/// pub trait Counter {
///     async fn add(&self, a: u64, b: u64) -> u64;
/// }
/// # struct G;
/// # impl Greeter for G { async fn hello(&self, name: String) -> String { name } }
/// # struct C;
/// # impl Counter for C { async fn add(&self, a: u64, b: u64) -> u64 { a + b } }
///
/// let server = Server::builder()
///     .add_service(GreeterServer::new(G))
///     .add_service(CounterServer::new(C))
///     .try_build()
///     .expect("no two services claim one method");
/// # drop(server);
/// ```
#[derive(Clone)]
pub struct ServerBuilder {
    config: ServerConfig,
    services: Vec<Arc<dyn Service>>,
    authorize: Option<authorize::Hook>,
    /// tower layers, outermost first.
    #[cfg(feature = "tower")]
    layers: Vec<crate::tower::LayerFn>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("services", &services)
            .field("authorize", &self.authorize.is_some())
            .field("layers", &self.layer_count())
            .finish()
    }
}

impl ServerBuilder {
    fn layer_count(&self) -> usize {
        #[cfg(feature = "tower")]
        return self.layers.len();
        #[cfg(not(feature = "tower"))]
        0
    }

    /// Wraps the server's services (all of them, after routing and the
    /// [`authorize`](ServerBuilder::authorize) hook) in a tower layer: `layer` gets the
    /// services as a `tower::Service<ServerRequest>` ([`crate::tower::Handler`]) and returns one
    /// answering a [`Body`](crate::Body) or an error (a [`Status`] goes back as it is; see
    /// [`crate::tower::TowerService`] for the others). Several calls nest like
    /// `tower::ServiceBuilder`: the first layer added is the outermost. Each call runs on a clone
    /// of the layered service, in the call's own task: a layer that waits (a concurrency limit)
    /// holds that call back, not the connection. Feature `tower`.
    ///
    /// ```
    /// use rpc_core::{Body, Server, ServerRequest, Status};
    /// # use rpc_core::{BoxFuture, Service};
    /// # struct Echo;
    /// # impl Service for Echo {
    /// #     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> { Box::pin(async move { Ok(req.body) }) }
    /// # }
    /// // Refuses calls without a `token` header, before the service sees them.
    /// let auth = tower::filter::FilterLayer::new(|req: ServerRequest| match req.metadata.get_str("token") {
    ///     Some("secret") => Ok(req),
    ///     _ => Err(Status::unauthenticated("a token is required")),
    /// });
    /// let server = Server::builder()
    ///     .layer(tower::limit::ConcurrencyLimitLayer::new(64))
    ///     .layer(auth)
    ///     .build(Echo);
    /// # drop(server);
    /// ```
    #[cfg(feature = "tower")]
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: ::tower::Layer<crate::tower::Handler> + Send + Sync + 'static,
        L::Service: ::tower::Service<crate::ServerRequest, Response = crate::Body> + Clone + Send + 'static,
        <L::Service as ::tower::Service<crate::ServerRequest>>::Error: Into<::tower::BoxError>,
        <L::Service as ::tower::Service<crate::ServerRequest>>::Future: Send + 'static,
    {
        self.layers.push(crate::tower::layer_fn(layer));
        self
    }

    /// Largest frame accepted, in bytes: a request's message (its encoded arguments, and its
    /// metadata block with a 4-byte length when it has one) and **all its attachments
    /// together**; the frame header, the attachment table and alignment padding are not
    /// counted. Default 128 MiB. So a 64 MiB attachment needs a little more than `64 << 20`:
    /// leave room for the message (a few bytes) and the metadata. A connection may make
    /// the server allocate up to this much for one frame; the total is bounded by
    /// `max_frame × max_connections`.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.config.conn.max_frame = bytes;
        self
    }

    /// Most attachments in one request. Default 1024.
    pub fn max_attachments(mut self, n: u32) -> Self {
        self.config.conn.max_attachments = n;
        self
    }

    /// Most calls served at once per connection; clients queue beyond it, and a client that
    /// does not is answered `RESOURCE_EXHAUSTED`. Default 10 000. Must be at least 1.
    pub fn max_calls_in_flight(mut self, n: u32) -> Self {
        self.config.conn.max_calls_in_flight = n.max(1);
        self
    }

    /// Most connections at once; one more is told why and closed. Default 1024.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// After a shutdown starts, how long calls in flight may take to finish before they are
    /// dropped. Default 10 s.
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.config.grace_period = d;
        self
    }

    /// Closes each connection gracefully once it is this old (give or take a tenth, at random,
    /// so that connections opened together do not all close together): goaway, its calls in
    /// flight get the [`grace_period`](ServerBuilder::grace_period), then it closes whatever
    /// still runs. A client made from an address re-dials at the goaway, its calls waiting for
    /// the new connection; one over a single transport fails its next calls `ShuttingDown`.
    ///
    /// Two uses: clients spread again over servers added behind a load balancer (a long-lived
    /// connection otherwise stays where it was first placed), and a bound on how long one
    /// connection can hold the server's resources — a stream whose reader never grants credit
    /// ties up its handler until the call's deadline, if it has one; with this, not past the
    /// age plus the grace period. Default `None`: connections live as long as their peers keep
    /// them.
    pub fn max_connection_age(mut self, age: Option<Duration>) -> Self {
        self.config.max_connection_age = age;
        self
    }

    /// The longest any call may run on this server, its streams included: a call without a
    /// deadline gets this one, and a longer deadline is cut to it; when it passes, the handler
    /// is dropped and the caller gets `DEADLINE_EXCEEDED` ("deadline of … exceeded; handler
    /// dropped"). Bounds what a caller that never sets a deadline can hold: a slow handler, or
    /// a stream whose reader never grants credit. Default `None`. See
    /// [`ConnConfig::max_call_duration`].
    pub fn max_call_duration(mut self, limit: Option<Duration>) -> Self {
        self.config.conn.max_call_duration = limit;
        self
    }

    /// Keepalive: ping after `interval` of silence, close if no answer in `timeout`.
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.config.conn.keepalive_interval = interval;
        self.config.conn.keepalive_timeout = timeout;
        self
    }

    /// How long a new connection may take to send its hello, and (over TLS) to complete its
    /// TLS handshake before that. Default 10 s.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.config.conn.handshake_timeout = d;
        self
    }

    /// Bytes of large receive buffers each connection keeps for reuse (see
    /// [`ConnConfig::recv_cache_bytes`]). Default 160 MiB; 0 keeps none.
    pub fn recv_cache_bytes(mut self, bytes: usize) -> Self {
        self.config.conn.recv_cache_bytes = bytes;
        self
    }

    /// Bytes of large receive buffers all connections together keep for reuse, within each
    /// one's [`ServerBuilder::recv_cache_bytes`]. A buffer that would pass it is freed after
    /// use instead, so peers that each send one large frame and then idle cannot make the
    /// server keep a cache's worth per connection. Default 512 MiB;
    /// [`Server::recv_cache_held`] says how much is kept now.
    pub fn recv_cache_total(mut self, bytes: usize) -> Self {
        self.config.recv_cache_total = bytes;
        self
    }

    /// Bytes one connection may hold (requests not yet answered, answers not yet written)
    /// before the server stops reading from it until its peer reads. Default 64 MiB. See
    /// [`ConnConfig::memory_budget`].
    pub fn connection_memory_budget(mut self, bytes: usize) -> Self {
        self.config.conn.memory_budget = bytes;
        self
    }

    /// Bytes all connections together may hold before every connection stops reading until
    /// some are written out. Default 1 GiB.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.config.memory_budget = bytes;
        self
    }

    /// Close a connection whose writes make no progress for this long (a peer that stopped
    /// reading). Default 30 s; `None` waits forever.
    pub fn write_stall_timeout(mut self, d: Option<Duration>) -> Self {
        self.config.conn.write_stall_timeout = d;
        self
    }

    /// How long the last frames of a closed connection may take to be written. Default 5 s.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.config.conn.drain_timeout = d;
        self
    }

    /// How long a closed connection keeps reading until its peer closes too. Default 2 s.
    pub fn linger(mut self, d: Duration) -> Self {
        self.config.conn.linger = d;
        self
    }

    /// Whether a connection dropped because its peer broke the protocol (bad magic, a
    /// malformed frame, ...) is reported on stderr when the program installed no `tracing`
    /// subscriber. Default on: such a failure is otherwise silent. With a subscriber, it is a
    /// `warn` event (target `rpc_core::server::connection`) whatever this says.
    pub fn stderr_warnings(mut self, on: bool) -> Self {
        self.config.stderr_warnings = on;
        self
    }

    /// All connection settings at once.
    pub fn conn_config(mut self, conn: ConnConfig) -> Self {
        self.config.conn = conn;
        self
    }

    /// Checks every call before its handler runs: `hook` sees the call's method (id and path),
    /// its peer (over TLS, the client's verified certificate: [`crate::Peer::tls`]) and its
    /// metadata, and returns `Err(status)` to refuse it — [`crate::Status::unauthenticated`]
    /// for a caller that is not known, [`crate::Status::permission_denied`] for one that may
    /// not call this method. A refused call is answered with that status and its handler never
    /// runs. The hook runs on the connection's task: keep it quick (no IO).
    ///
    /// ```
    /// use rpc_core::{CallInfo, Server, Status};
    /// # use rpc_core::{Body, BoxFuture, ServerRequest, Service};
    /// # struct Admin;
    /// # impl Service for Admin {
    /// #     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> { Box::pin(async move { Ok(req.body) }) }
    /// # }
    /// fn policy(call: &CallInfo<'_>) -> Result<(), Status> {
    ///     let Some(id) = call.peer.tls.as_ref().filter(|id| id.is_authenticated()) else {
    ///         return Err(Status::unauthenticated("a client certificate is required"));
    ///     };
    ///     match call.path {
    ///         Some(p) if p.starts_with("Admin/") && !id.has_name("ops.example.com") => {
    ///             Err(Status::permission_denied(format!("{} may not call {p}", id.subject)))
    ///         }
    ///         _ => Ok(()),
    ///     }
    /// }
    /// let server = Server::builder().authorize(policy).build(Admin);
    /// # drop(server);
    /// ```
    pub fn authorize(mut self, hook: impl Fn(&CallInfo<'_>) -> Result<(), Status> + Send + Sync + 'static) -> Self {
        self.authorize = Some(Arc::new(hook));
        self
    }

    /// Adds a service to serve beside the others added so: each call goes to the service that
    /// owns its method id ([`Service::methods`]; `#[service]` lists them). Finish with
    /// [`ServerBuilder::try_build`], which refuses two services claiming one method.
    pub fn add_service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Builds the server around the services added with [`ServerBuilder::add_service`]. One
    /// service is served as [`ServerBuilder::build`] serves it; several get a router, built
    /// here, that hands each call to the owner of its method id.
    ///
    /// # Errors
    ///
    /// [`RouteError::Duplicate`] when two services claim one method id (it names both services
    /// and paths), [`RouteError::NoMethods`] for a service among several that lists no methods,
    /// [`RouteError::Empty`] when none was added.
    pub fn try_build(mut self) -> Result<Server, RouteError> {
        let methods: Vec<(&'static str, u32)> = self.services.iter().flat_map(|s| s.methods().iter().copied()).collect();
        let service: Arc<dyn Service> = match self.services.len() {
            0 => return Err(RouteError::Empty),
            1 => self.services.pop().expect("one service"),
            _ => Arc::new(Router::new(std::mem::take(&mut self.services))?),
        };
        Ok(self.serving(service, &methods))
    }

    /// Builds the server around `service` (the common case of one service). With services
    /// added by [`ServerBuilder::add_service`], `service` is served beside them.
    ///
    /// # Panics
    ///
    /// When services were added and two of them claim one method (see
    /// [`ServerBuilder::try_build`], which returns the error instead).
    pub fn build(self, service: impl Service) -> Server {
        if self.services.is_empty() {
            let methods = service.methods();
            return self.serving(Arc::new(service), methods);
        }
        self.add_service(service).try_build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The server of `service`, whose methods (for the authorization hook's paths) are `methods`.
    fn serving(self, service: Arc<dyn Service>, methods: &[(&'static str, u32)]) -> Server {
        let wrapping = Wrapping {
            authorize: self.authorize,
            #[cfg(feature = "tower")]
            layers: self.layers,
        };
        let service = wrapping.wrap(service, methods);
        let (shutdown, _) = watch::channel(false);
        Server {
            inner: Arc::new(ServerInner {
                service,
                wrapping,
                budget: Arc::new(MemoryBudget::new(self.config.memory_budget, self.config.recv_cache_total)),
                config: self.config,
                shutdown,
                live: AtomicUsize::new(0),
                stats: Mutex::new(StatsBook::default()),
            }),
        }
    }
}

/// What wraps every service the server serves: the authorization hook, then the tower layers.
struct Wrapping {
    authorize: Option<authorize::Hook>,
    /// tower layers, outermost first.
    #[cfg(feature = "tower")]
    layers: Vec<crate::tower::LayerFn>,
}

impl Wrapping {
    /// `service` behind the hook and the layers; `methods` name its paths for the hook.
    fn wrap(&self, service: Arc<dyn Service>, methods: &[(&'static str, u32)]) -> Arc<dyn Service> {
        let service: Arc<dyn Service> = match &self.authorize {
            None => service,
            Some(hook) => Arc::new(authorize::Authorized::new(service, hook.clone(), methods)),
        };
        // The last layer added wraps first: the first added ends outermost.
        #[cfg(feature = "tower")]
        let service = self.layers.iter().rev().fold(service, |s, layer| layer(s));
        service
    }
}

#[derive(Default)]
struct StatsBook {
    live: Vec<Weak<TransportStats>>,
    closed: StatsSnapshot,
}

struct ServerInner {
    service: Arc<dyn Service>,
    /// For the services of connections served with their own.
    wrapping: Wrapping,
    config: ServerConfig,
    shutdown: watch::Sender<bool>,
    live: AtomicUsize,
    stats: Mutex<StatsBook>,
    budget: Arc<MemoryBudget>,
}

/// A server: serves connections from an [`Acceptor`] or one at a time. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("service", &self.inner.service.name()).field("config", &self.inner.config).finish()
    }
}

impl Server {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig {
                conn: ConnConfig::default(),
                max_connections: 1024,
                grace_period: Duration::from_secs(10),
                max_connection_age: None,
                memory_budget: 1 << 30,
                recv_cache_total: 512 << 20,
                stderr_warnings: true,
            },
            services: Vec::new(),
            authorize: None,
            #[cfg(feature = "tower")]
            layers: Vec::new(),
        }
    }

    /// Accepts connections until [`ServerHandle::shutdown`]; each runs as its own task.
    ///
    /// Call it once per acceptor to serve the same services on several at once (TCP and a Unix
    /// socket, say): they share the server's limits, memory budget and counters, and a
    /// shutdown through any of the handles (or [`Server::shutdown`]) stops them all.
    pub fn serve<A: Acceptor>(&self, mut acceptor: A) -> ServerHandle {
        acceptor.set_handshake_timeout(self.inner.config.conn.handshake_timeout);
        let server = self.clone();
        let mut shutdown = self.inner.shutdown.subscribe();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = acceptor.accept() => match r {
                        Ok(t) => { conns.spawn(server.clone().serve_connection(t)); }
                        Err(e) => {
                            // Out of file descriptors and the like: keep serving the rest.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    _ = driver::signalled(&mut shutdown) => break,
                }
            }
            drop(acceptor);
            // Every connection got the signal; each ends within the grace period (+ slack for
            // a peer that stops reading), after which it is dropped.
            let limit = server.inner.config.grace_period + Duration::from_secs(6);
            if tokio::time::timeout(limit, async { while conns.join_next().await.is_some() {} }).await.is_err() {
                conns.abort_all();
            }
        });
        ServerHandle { server: self.clone(), task: Some(task) }
    }

    /// Serves one connection to its end. The future resolves with why it ended.
    pub async fn serve_connection<T: Transport>(self, transport: T) -> ConnectionError {
        let service = self.inner.service.clone();
        self.serve_one(transport, service, std::future::pending()).await
    }

    /// Serves one connection with a service of its own in place of the server's, for state
    /// that belongs to one connection: an adapter whose calls go to a handle it gives out per
    /// connection (rpc-tarpc's transports). Everything else is as for
    /// [`Server::serve_connection`]: the server's limits, memory budget, receive cache,
    /// counters and shutdown, and its [`authorize`](ServerBuilder::authorize) hook and layers
    /// around `service`. When `stop` completes, this connection alone closes gracefully, as
    /// every connection does at a shutdown: goaway, its calls in flight get the grace period.
    ///
    /// The layers wrap `service` anew for this connection: a layer with state of its own (a
    /// `ConcurrencyLimitLayer`, a rate limit) bounds this connection's calls, not the
    /// server's, which share one instance only among the connections served with the
    /// server's own service.
    ///
    /// ```
    /// use rpc_core::{Body, BoxFuture, Client, ClientConfig, Server, ServerRequest, Service, Status};
    ///
    /// /// Answers with the number of the connection it serves.
    /// struct Numbered(u8);
    /// impl Service for Numbered {
    ///     fn call(&self, _: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
    ///         let n = self.0;
    ///         Box::pin(async move { Ok(Body::message(vec![n].into())) })
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// // The service given to `build` serves the connections that bring none of their own.
    /// let server = Server::builder().memory_budget(256 << 20).build(Numbered(0));
    /// let (a, b) = rpc_core::transport::mem::pair();
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let stopped = async move { let _ = stopped.await; };
    /// let serving = tokio::spawn(server.clone().serve_connection_with(b, Numbered(7), stopped));
    /// let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    /// let answer = client.call(1, Body::default(), Default::default()).await.unwrap();
    /// assert_eq!(&answer.message[..], [7]);
    /// assert_eq!(server.connections(), 1);
    /// drop(stop); // this connection closes gracefully; the server serves on
    /// serving.await.unwrap();
    /// assert_eq!(server.connections(), 0);
    /// # });
    /// ```
    pub async fn serve_connection_with<T: Transport>(
        self,
        transport: T,
        service: impl Service,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> ConnectionError {
        let methods = service.methods();
        let service = self.inner.wrapping.wrap(Arc::new(service), methods);
        self.serve_one(transport, service, stop).await
    }

    /// Serves one connection with `service` until it ends, closing it gracefully at a shutdown
    /// of the server or when `stop` completes.
    async fn serve_one<T: Transport>(
        self,
        transport: T,
        service: Arc<dyn Service>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> ConnectionError {
        let inner = &self.inner;
        let stats = transport.stats();
        let live = inner.live.fetch_add(1, Ordering::AcqRel) + 1;
        let _count = LiveGuard(&inner.live);
        let refusal = if *inner.shutdown.borrow() {
            Some((Code::UNAVAILABLE, "server is shutting down".to_owned()))
        } else if live > inner.config.max_connections {
            let max = inner.config.max_connections;
            Some((Code::RESOURCE_EXHAUSTED, format!("server is at its limit of {max} connections")))
        } else {
            None
        };
        let now = Instant::now();
        let refused = refusal.is_some();
        let conn = match refusal {
            Some((code, msg)) => Connection::refuse(inner.config.conn.clone(), now, code, msg),
            None => Connection::new(Side::Server, inner.config.conn.clone(), now),
        };
        let mut side = ServerSide::new(service, transport.peer(), inner.config.stderr_warnings);
        side.draining = refused;
        let shared = Shared::new(conn, side, stats.clone(), Some(inner.budget.clone()));
        inner.stats.lock().unwrap_or_else(|e| e.into_inner()).live.push(Arc::downgrade(&stats));
        if refused {
            shared.step(|_| ());
        }
        let mut shutdown = inner.shutdown.subscribe();
        let grace = inner.config.grace_period;
        let age = inner.config.max_connection_age.map(|age| jitter(age, 0.1));
        // A task of its own, woken only by a shutdown, the stop, the age or its grace timer:
        // joined to the connection's (the reader's), it was polled on every wake-up of it, every
        // read (about 450 instructions a read, measured on a 64-byte round trip). Aborted when
        // the connection ends.
        let watcher = driver::Loop::spawn(&shared, move |shared| async move {
            let aged = async {
                match age {
                    Some(age) => tokio::time::sleep(age).await,
                    None => std::future::pending().await,
                }
            };
            let why = tokio::select! {
                () = driver::signalled(&mut shutdown) => "server is shutting down",
                () = stop => "the server closes this connection",
                () = aged => "the connection reached the server's maximum age; connect again",
            };
            shared.step(|g| {
                g.side.draining = true;
                g.conn.goaway(why);
            });
            tokio::time::sleep(grace).await;
            shared.step(|g| g.conn.close(ConnectionError::LocallyClosed));
            std::future::pending::<()>().await
        });
        driver::run(transport, shared.clone()).await;
        drop(watcher);
        let mut book = inner.stats.lock().unwrap_or_else(|e| e.into_inner());
        book.closed.merge(&stats.snapshot());
        book.live.retain(|w| w.upgrade().is_some_and(|s| !Arc::ptr_eq(&s, &stats)));
        drop(book);
        let (reason, ended) = {
            let mut g = shared.lock();
            (g.side.close_reason.clone(), g.side.take_ended())
        };
        // The parked handlers of calls that ended with the connection, dropped outside the lock.
        drop(ended);
        reason.unwrap_or(ConnectionError::Closed)
    }

    /// Counters summed over every connection, live and closed.
    pub fn stats(&self) -> StatsSnapshot {
        let book = self.inner.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = book.closed.clone();
        for s in book.live.iter().filter_map(Weak::upgrade) {
            total.merge(&s.snapshot());
        }
        total
    }

    /// Counters of each connection being served now, in the order they were accepted (the
    /// totals, closed connections included, are [`Server::stats`]).
    pub fn connection_stats(&self) -> Vec<StatsSnapshot> {
        let book = self.inner.stats.lock().unwrap_or_else(|e| e.into_inner());
        book.live.iter().filter_map(Weak::upgrade).map(|s| s.snapshot()).collect()
    }

    /// Bytes all connections hold now against the server's memory budget (requests not yet
    /// answered, answers not yet written).
    pub fn memory_held(&self) -> usize {
        self.inner.budget.used()
    }

    /// Bytes of large receive buffers all connections keep for reuse now (at most
    /// [`ServerBuilder::recv_cache_total`]; a buffer in use counts while it is kept).
    pub fn recv_cache_held(&self) -> usize {
        self.inner.budget.cached()
    }

    /// Connections being served now.
    pub fn connections(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Starts a graceful shutdown of every connection of this server (also those served with
    /// [`Server::serve_connection`]): goaway, calls in flight get the grace period, new calls
    /// and connections are refused.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send_replace(true);
    }
}

struct LiveGuard<'a>(&'a AtomicUsize);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running accept loop.
#[derive(Debug)]
pub struct ServerHandle {
    server: Server,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Graceful shutdown of the whole server: stops accepting (on every acceptor it serves, not
    /// only this handle's), sends goaway on every connection, lets calls in flight finish
    /// within the grace period, then returns once this handle's acceptor and connections are
    /// done.
    pub async fn shutdown(mut self) {
        self.server.shutdown();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
