//! The client: one connection, any number of concurrent calls multiplexed on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use crate::body::Body;
use crate::call_map::CallMap;
use crate::conn::{ConnConfig, Connection, Event, Side};
use crate::driver::{self, Locked, Shared, SideHandler};
use crate::error::{CallError, ConnectError, ConnectionError};
use crate::frame::Hello;
use crate::stats::StatsSnapshot;
use crate::transport::{tcp, Transport};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Limits this side accepts and keepalive.
    pub conn: ConnConfig,
    /// Time allowed for connecting and the handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Deadline for calls that set none. Default: none.
    pub default_timeout: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { conn: ConnConfig::default(), connect_timeout: Duration::from_secs(10), default_timeout: None }
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// How long the call may take, counted from the call: sent to the server, which drops the
    /// handler when it passes; the caller gets [`CallError::DeadlineExceeded`].
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> Self {
        CallOptions { timeout: Some(timeout) }
    }
}

type Waiter = oneshot::Sender<Result<Body, CallError>>;

struct ClientSide {
    waiters: CallMap<Waiter>,
    handshake: Option<oneshot::Sender<Result<Hello, ConnectError>>>,
    /// Closed when the connection can take no more calls, so queued callers fail at once.
    permits: Arc<Semaphore>,
    close_reason: Option<ConnectionError>,
}

impl SideHandler for ClientSide {
    fn on_event(g: &mut Locked<Self>, event: Event) {
        let side = &mut g.side;
        match event {
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
                if let Some(tx) = side.waiters.remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Event::GoAway { .. } => side.permits.close(),
            Event::Closed(err) => {
                side.permits.close();
                if let Some(tx) = side.handshake.take() {
                    let _ = tx.send(Err(ConnectError::Handshake(err.clone())));
                }
                side.close_reason = Some(err);
            }
            Event::Request { .. } | Event::Abort { .. } => unreachable!("server events on a client"),
        }
    }
}

struct ClientInner {
    shared: Arc<Shared<ClientSide>>,
    permits: Arc<Semaphore>,
    default_timeout: Option<Duration>,
    peer: Hello,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shared.step(|g| g.conn.close(ConnectionError::LocallyClosed));
    }
}

/// A connection to a server. Cheap to clone (all clones share the connection), `Send + Sync`;
/// calls from any number of tasks are multiplexed on it. The connection closes when the last
/// clone is dropped.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use rpc_core::{Body, BoxFuture, CallOptions, Client, ClientConfig, Server, ServerRequest, Service, Status};
///
/// struct Echo;
/// impl Service for Echo {
///     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
///         Box::pin(async move { Ok(req.body) })
///     }
/// }
///
/// let (a, b) = rpc_core::transport::mem::pair();
/// let server = Server::builder().build(Echo);
/// tokio::spawn(server.serve_connection(b));
/// let client = Client::connect(a, ClientConfig::default()).await.unwrap();
/// let reply = client.call(1, Body::message("hi".into()), CallOptions::default()).await.unwrap();
/// assert_eq!(&reply.message[..], b"hi");
/// # });
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("transport", &self.inner.shared.stats.name()).finish()
    }
}

impl Client {
    /// Starts a connection over `transport`: sends our hello, waits for the server's (within
    /// `config.connect_timeout`), and spawns the connection's task on the current tokio runtime.
    pub async fn connect<T: Transport>(transport: T, config: ClientConfig) -> Result<Client, ConnectError> {
        let permits = Arc::new(Semaphore::new(0));
        let (tx, rx) = oneshot::channel();
        let side = ClientSide { waiters: CallMap::default(), handshake: Some(tx), permits: permits.clone(), close_reason: None };
        let conn = Connection::new(Side::Client, config.conn.clone(), Instant::now());
        let shared = Shared::new(conn, side, transport.stats(), None);
        tokio::spawn(driver::run(transport, shared.clone()));
        let peer = match tokio::time::timeout(config.connect_timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(ConnectError::Handshake(ConnectionError::Closed)),
            Err(_) => {
                shared.step(|g| g.conn.close(ConnectionError::LocallyClosed));
                return Err(ConnectError::Timeout(config.connect_timeout));
            }
        };
        Ok(Client { inner: Arc::new(ClientInner { shared, permits, default_timeout: config.default_timeout, peer }) })
    }

    /// Connects over TCP (see [`tcp`]); `config.connect_timeout` covers connect and handshake.
    pub async fn connect_tcp(addr: impl tokio::net::ToSocketAddrs, config: ClientConfig) -> Result<Client, ConnectError> {
        let limit = config.connect_timeout;
        let start = Instant::now();
        let transport = tokio::time::timeout(limit, tcp::connect(addr)).await.map_err(|_| ConnectError::Timeout(limit))??;
        let rest = ClientConfig { connect_timeout: limit.saturating_sub(start.elapsed()), ..config };
        Client::connect(transport, rest).await.map_err(|e| match e {
            ConnectError::Timeout(_) => ConnectError::Timeout(limit),
            e => e,
        })
    }

    /// Makes a call: `method` with `body`; waits for the reply. If the server already has as
    /// many calls in flight from this connection as it accepts, the call waits its turn (within
    /// its timeout). Dropping the returned future cancels the call on the server.
    pub async fn call(&self, method: u32, body: Body, options: CallOptions) -> Result<Body, CallError> {
        let timeout = options.timeout.or(self.inner.default_timeout);
        let start = Instant::now();
        let permit = match timeout {
            Some(t) => tokio::time::timeout(t, self.inner.permits.acquire())
                .await
                .map_err(|_| CallError::DeadlineExceeded(t))?,
            None => self.inner.permits.acquire().await,
        };
        let Ok(permit) = permit else { return Err(self.closed_error()) };
        let shared = &self.inner.shared;
        let (tx, rx) = oneshot::channel();
        let id = shared.step(|g| {
            let remaining = timeout.map(|t| t.saturating_sub(start.elapsed()));
            let id = g.conn.start_call(method, body, remaining, Instant::now())?;
            g.side.waiters.insert(id, tx);
            Ok::<_, CallError>(id)
        })?;
        let mut guard = CancelOnDrop { shared, id, armed: true };
        let result = rx.await;
        guard.armed = false;
        drop(permit);
        match result {
            // Report the deadline the caller set, not what was left of it when sent.
            Ok(Err(CallError::DeadlineExceeded(_))) => Err(CallError::DeadlineExceeded(timeout.unwrap_or_default())),
            Ok(r) => r,
            Err(_) => Err(self.closed_error()),
        }
    }

    fn closed_error(&self) -> CallError {
        let g = self.inner.shared.lock();
        match &g.side.close_reason {
            Some(e) => CallError::Connection(e.clone()),
            None => CallError::ShuttingDown,
        }
    }

    /// The transport's counters for this connection.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.shared.stats.snapshot()
    }

    /// What the server declared in its hello (its limits).
    pub fn server_hello(&self) -> Hello {
        self.inner.peer
    }

    /// True while the connection can take calls.
    pub fn is_open(&self) -> bool {
        !self.inner.shared.lock().conn.is_draining()
    }

    /// Closes the connection for every clone: calls in flight fail with a connection error.
    /// Waits until the transport is shut down.
    pub async fn close(&self) {
        self.inner.shared.step(|g| g.conn.close(ConnectionError::LocallyClosed));
        self.inner.shared.closed().await;
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
                    g.conn.cancel_call(id);
                }
            });
        }
    }
}
