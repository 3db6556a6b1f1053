//! The client: one connection at a time, any number of concurrent calls multiplexed on it;
//! made from an address, it comes back after the connection is lost.

mod conn;
mod redial;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

use bytes::Bytes;

use crate::body::Body;
use crate::conn::ConnConfig;
use crate::metadata::{Metadata, MetadataError};
use crate::error::{CallError, ConnectError, ConnectionError};
use crate::frame::{CallMode, Hello};
use crate::stream::CallStream;
use crate::stats::StatsSnapshot;
#[cfg(feature = "tower")]
use crate::service::BoxFuture;
use crate::transport::{tcp, Transport};
use conn::{Attempt, Conn};
use redial::{Dial, Link};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Limits this side accepts and keepalive.
    pub conn: ConnConfig,
    /// Time allowed for connecting and the handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Deadline for calls that set none. Default: none.
    pub default_timeout: Option<Duration>,
    /// How a client made from an address ([`Client::connect_tcp`], [`Client::connect_with`])
    /// comes back when its connection is lost.
    pub reconnect: Reconnect,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            conn: ConnConfig::default(),
            connect_timeout: Duration::from_secs(10),
            default_timeout: None,
            reconnect: Reconnect::default(),
        }
    }
}

/// Re-dialing after a lost connection. Calls in flight on the lost connection fail with
/// [`CallError::Connection`] (they are replayed on the new one only when marked
/// [`CallOptions::idempotent`]); calls made while there is no connection wait for the next one.
/// Unary calls the server's goaway says it never took (sent as it closed the connection
/// gracefully: a shutdown, a connection's maximum age) never ran, and go again on the next
/// connection whatever their kind, as calls made while there is no connection do (so with
/// `wait_for_connection` off they fail [`CallError::Unavailable`] unless it is already up); a
/// streaming call is never sent again. To send them again, a re-dialing client keeps each
/// unary call's body (its buffers, pool buffers and file regions, shared, not copied) until
/// the call's answer, where a client over one transport lets go of it once it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// The first wait before dialing again; doubled after each failed dial, up to
    /// `max_backoff`, and each wait is spread by a random factor of 0.5 to 1.5. A connection
    /// lost sooner than the backoff after it came up (a server that closes each at once)
    /// counts as a failed dial; one that lived longer is re-dialed at once. Default 100 ms.
    pub initial_backoff: Duration,
    /// The longest wait between dials. Default 5 s.
    pub max_backoff: Duration,
    /// True (the default): a call made while there is no connection waits for one, up to its
    /// deadline (or, if it has none, `connect_timeout` from when it starts waiting: also when
    /// it waits again to be sent after a goaway). False: it fails at once with
    /// [`CallError::Unavailable`].
    pub wait_for_connection: bool,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5), wait_for_connection: true }
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// How long the call may take, counted from the call: sent to the server, which drops the
    /// handler when it passes; the caller gets [`CallError::DeadlineExceeded`]. A timeout too
    /// large for the clock (`Duration::MAX`) is no deadline.
    pub timeout: Option<Duration>,
    /// The call may run twice without harm: if the connection is lost while it is in flight, a
    /// client that re-dials sends it again on the new connection (within its deadline).
    pub idempotent: bool,
    /// Headers sent with the call; the handler reads them in [`crate::ServerRequest::metadata`].
    /// Checked against the server's declared limit before sending.
    pub metadata: Metadata,
}

impl CallOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> Self {
        CallOptions { timeout: Some(timeout), ..CallOptions::default() }
    }

    /// Marks the call idempotent (see [`CallOptions::idempotent`]).
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }

    /// Adds a header (see [`CallOptions::metadata`]); an invalid key (empty, over 255 bytes, not
    /// printable ASCII) is an error.
    pub fn header(mut self, key: &str, value: impl Into<Bytes>) -> Result<Self, MetadataError> {
        self.metadata.insert(key, value)?;
        Ok(self)
    }
}

/// A unary call's result with the server's response metadata, as
/// [`Client::call_with_metadata`] returns it (`R` = `Result<Body, CallError>`) and a generated
/// client's `<method>_with_metadata` (`R` = the method's own result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<R = Result<Body, CallError>> {
    /// The reply, or why there is none.
    pub result: R,
    /// The server's response headers (empty when it sent none).
    pub headers: Metadata,
    /// The server's trailers (empty when it sent none); they come with an error status too.
    pub trailers: Metadata,
}

struct ClientInner {
    link: watch::Receiver<Link>,
    default_timeout: Option<Duration>,
    /// Set for a client that re-dials.
    reconnect: Option<Reconnect>,
    connect_timeout: Duration,
    /// A client over one transport keeps its link's sender here (nobody else publishes).
    _fixed: Option<watch::Sender<Link>>,
    supervisor: Option<AbortHandle>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if let Some(s) = &self.supervisor {
            s.abort();
        }
    }
}

/// A connection to a server. Cheap to clone (all clones share the connection), `Send + Sync`;
/// calls from any number of tasks are multiplexed on it. The connection closes when the last
/// clone is dropped.
///
/// Made from an address ([`Client::connect_tcp`]) or a dial function
/// ([`Client::connect_with`]), it dials again when the connection is lost (see [`Reconnect`]);
/// made from one transport ([`Client::connect`]), it ends with that transport.
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
        f.debug_struct("Client")
            .field("transport", &self.conn().shared.stats.name())
            .field("reconnect", &self.inner.reconnect)
            .finish()
    }
}

impl Client {
    /// Starts a connection over `transport`: sends our hello, waits for the server's (within
    /// `config.connect_timeout`), and spawns the connection's task on the current tokio runtime.
    /// The client ends with this transport: it does not re-dial.
    pub async fn connect<T: Transport>(transport: T, config: ClientConfig) -> Result<Client, ConnectError> {
        let conn = Conn::establish(transport, &config, config.connect_timeout, Arc::new(Notify::new())).await?;
        let (tx, rx) = watch::channel(Link { conn: Arc::new(conn), last_error: None });
        Ok(Client {
            inner: Arc::new(ClientInner {
                link: rx,
                default_timeout: config.default_timeout,
                reconnect: None,
                connect_timeout: config.connect_timeout,
                _fixed: Some(tx),
                supervisor: None,
            }),
        })
    }

    /// Connects over TCP (see [`tcp`]) to `addr`, and re-dials it whenever the connection is
    /// lost ([`ClientConfig::reconnect`]); `config.connect_timeout` covers connect and handshake.
    /// The first connection must succeed: its error names the address
    /// ([`ConnectError::Dialing`]: `connecting to 127.0.0.1:7411: could not connect: Connection
    /// refused`).
    pub async fn connect_tcp(addr: impl tokio::net::ToSocketAddrs, config: ClientConfig) -> Result<Client, ConnectError> {
        Client::connect_resolved(addr, "", |addrs| async move { tcp::connect(&addrs[..]).await }, config).await
    }

    /// Resolves `addr` (within `config.connect_timeout`) and connects through `dial`, handed
    /// the resolved addresses each time it dials, re-dialling whenever the connection is lost,
    /// as [`Client::connect_tcp`] does over TCP (for example
    /// `|addrs| async move { transport_uring::connect(&addrs[..], cfg).await }`, `cfg` cloned
    /// per dial). The first connection must succeed; its error names the address, followed by
    /// `label` when not empty (`connecting to 127.0.0.1:7411 (io_uring engine): ...`).
    pub async fn connect_resolved<T, F, Fut>(
        addr: impl tokio::net::ToSocketAddrs,
        label: &str,
        dial: F,
        config: ClientConfig,
    ) -> Result<Client, ConnectError>
    where
        T: Transport,
        F: Fn(Arc<[SocketAddr]>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<T>> + Send + 'static,
    {
        let limit = config.connect_timeout;
        let addrs: Vec<SocketAddr> = tokio::time::timeout(limit, tokio::net::lookup_host(addr))
            .await
            .map_err(|_| ConnectError::Timeout(limit))??
            .collect();
        let mut target = match addrs.as_slice() {
            [one] => one.to_string(),
            many => format!("{many:?}"),
        };
        if !label.is_empty() {
            target = format!("{target} {label}");
        }
        let addrs: Arc<[SocketAddr]> = addrs.into();
        Client::dialing(Arc::new(move || Box::pin(dial(addrs.clone()))), config, target.clone())
            .await
            .map_err(|e| e.with_target(target))
    }

    /// Connects over TLS 1.3 (see [`crate::transport::tls`]) to `addr`, checks that the
    /// server's certificate is valid for `server_name` and signed by a CA of `tls`, and re-dials
    /// whenever the connection is lost, as [`Client::connect_tcp`] does.
    /// `config.connect_timeout` covers connect, TLS handshake and zcrpc hello. Errors name the
    /// address and what TLS found (`connecting to 127.0.0.1:7411: could not connect: TLS
    /// handshake failed: the peer's certificate is not signed by a CA this side trusts ...`).
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        addr: impl tokio::net::ToSocketAddrs,
        server_name: &str,
        tls: crate::transport::tls::TlsClientConfig,
        config: ClientConfig,
    ) -> Result<Client, ConnectError> {
        let rustls = tls.rustls().map_err(io::Error::from)?;
        let name: Arc<str> = server_name.into();
        let dial = move |addrs: Arc<[SocketAddr]>| {
            let (name, rustls) = (name.clone(), rustls.clone());
            async move { crate::transport::tls::connect(&addrs[..], &name, rustls).await }
        };
        Client::connect_resolved(addr, &format!("(tls, {server_name})"), dial, config).await
    }

    /// Connects over a Unix socket (see [`crate::transport::unix`]) to `path`, and re-dials it
    /// whenever the connection is lost, as [`Client::connect_tcp`] does. Errors name the path
    /// (`unix:/run/app.sock`).
    #[cfg(unix)]
    pub async fn connect_unix(path: impl AsRef<std::path::Path>, config: ClientConfig) -> Result<Client, ConnectError> {
        let path: Arc<std::path::Path> = path.as_ref().into();
        let target = format!("unix:{}", path.display());
        Client::dialing(
            Arc::new(move || {
                let path = path.clone();
                Box::pin(async move {
                    let stream = tokio::net::UnixStream::connect(&*path).await?;
                    Ok(crate::transport::unix::from_stream(stream, &path))
                })
            }),
            config,
            target.clone(),
        )
        .await
        .map_err(|e| e.with_target(target))
    }

    /// A client that gets its transports from `dial` (for example
    /// `move || transport_uring::connect(addr, cfg.clone())`), and dials again whenever the
    /// connection is lost. The first connection must succeed; name the address in its error
    /// with [`ConnectError::with_target`].
    pub async fn connect_with<T, F, Fut>(dial: F, config: ClientConfig) -> Result<Client, ConnectError>
    where
        T: Transport,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = io::Result<T>> + Send + 'static,
    {
        Client::dialing(Arc::new(move || Box::pin(dial())), config, "the server".to_owned()).await
    }

    async fn dialing<T: Transport>(dial: Dial<T>, config: ClientConfig, target: String) -> Result<Client, ConnectError> {
        let lost = Arc::new(Notify::new());
        let conn = redial::dial_once(&dial, &config, &lost).await?;
        let (tx, rx) = watch::channel(Link { conn: Arc::new(conn), last_error: None });
        let supervisor = tokio::spawn(redial::supervise(dial, config.clone(), tx, lost, target));
        Ok(Client {
            inner: Arc::new(ClientInner {
                link: rx,
                default_timeout: config.default_timeout,
                reconnect: Some(config.reconnect),
                connect_timeout: config.connect_timeout,
                _fixed: None,
                supervisor: Some(supervisor.abort_handle()),
            }),
        })
    }

    /// Makes a call: `method` with `body`; waits for the reply. If the server already has as
    /// many calls in flight from this connection as it accepts, the call waits its turn (within
    /// its timeout). Dropping the returned future cancels the call on the server.
    ///
    /// The server's response headers and trailers, if it sent any, are dropped here: see
    /// [`Client::call_with_metadata`].
    pub fn call(&self, method: u32, body: Body, options: CallOptions) -> impl Future<Output = Result<Body, CallError>> + '_ {
        self.call_answer(method, body, options, |(result, _)| result)
    }

    /// Makes a call like [`Client::call`], and returns its result with the server's response
    /// headers and trailers (empty when it sent none; trailers come with an error status too).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use rpc_core::{Body, BoxFuture, CallOptions, Client, ClientConfig, Server, ServerRequest, Service, Status};
    ///
    /// struct Tagged;
    /// impl Service for Tagged {
    ///     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
    ///         req.response.set_header("server", "tagged/1").unwrap();
    ///         req.response.set_trailer("cost-us", "42").unwrap();
    ///         Box::pin(async move { Ok(req.body) })
    ///     }
    /// }
    ///
    /// let (a, b) = rpc_core::transport::mem::pair();
    /// tokio::spawn(Server::builder().build(Tagged).serve_connection(b));
    /// let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    /// let reply = client.call_with_metadata(1, Body::message("hi".into()), CallOptions::default()).await;
    /// assert_eq!(reply.headers.get_str("server"), Some("tagged/1"));
    /// assert_eq!(reply.trailers.get_str("cost-us"), Some("42"));
    /// assert_eq!(&reply.result.unwrap().message[..], b"hi");
    /// # });
    /// ```
    pub fn call_with_metadata(&self, method: u32, body: Body, options: CallOptions) -> impl Future<Output = Reply> + '_ {
        self.call_answer(method, body, options, |(result, metadata)| {
            let metadata = metadata.map(|m| *m).unwrap_or_default();
            Reply { result, headers: metadata.headers, trailers: metadata.trailers }
        })
    }

    /// A unary call, to its answer, handed to `finish`: one future for [`Client::call`] and
    /// [`Client::call_with_metadata`], not one inside the other.
    ///
    /// Not an `async fn`, like [`Conn::call`]: an `async fn` keeps each argument twice in its
    /// future (as it came and as moved into its body), and every call in flight holds one
    /// future (`tests/allocations.rs` reports its size).
    #[allow(clippy::manual_async_fn)] // deliberate: see above
    fn call_answer<R>(
        &self,
        method: u32,
        mut body: Body,
        options: CallOptions,
        finish: impl FnOnce(conn::Answer) -> R + Send + 'static,
    ) -> impl Future<Output = R> + '_ {
        async move {
            let timeout = options.timeout.or(self.inner.default_timeout);
            let start = Instant::now();
            let answer = loop {
                let conn = match self.usable_conn(start, timeout).await {
                    Ok(c) => c,
                    Err(e) => break (Err(e), None),
                };
                let remaining = timeout.map(|t| t.saturating_sub(start.elapsed()));
                // A re-dialing client sends a call again on the next connection when the server's
                // goaway says it never took it (`ShuttingDown`: sent as the server closed, at its
                // shutdown or its connection's maximum age), and, if idempotent, when it was lost
                // in flight with its connection. So it keeps a copy of the body until the answer:
                // reference counts, not a copy of the bytes, but they stay alive until then.
                let replay = self.inner.reconnect.is_some().then(|| body.clone());
                match conn.call(method, body, &options.metadata, remaining).await {
                    // Report the deadline the caller set, not what was left of it when sent.
                    Attempt::Done((Err(CallError::DeadlineExceeded(_)), m)) => {
                        break (Err(CallError::DeadlineExceeded(timeout.unwrap_or_default())), m)
                    }
                    Attempt::Done((Err(CallError::ShuttingDown), _)) if replay.is_some() => body = replay.expect("checked"),
                    Attempt::Done((Err(CallError::Connection(_)), _)) if options.idempotent && replay.is_some() => {
                        body = replay.expect("checked");
                    }
                    Attempt::Done(answer) => break answer,
                    Attempt::NotSent(b) if self.inner.reconnect.is_some() => body = b,
                    Attempt::NotSent(_) => break (Err(conn.closed_error()), None),
                }
            };
            finish(answer)
        }
    }

    /// Opens a streaming call: `method` with `body` as its request, streaming the ways `mode`
    /// says. Returns the call's two ends: the [`crate::StreamSender`] sends the request stream (dropping
    /// it or [`crate::StreamSender::finish`] ends it), the [`crate::StreamReceiver`] yields the answers — the
    /// server's stream, or the one response of a client-streaming call — then `None`. Dropping
    /// both before the call ended cancels it on the server. The timeout (`options`, or the
    /// client's default) bounds the whole call, stream included. A streaming call is never sent
    /// again on a new connection.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use rpc_core::{Body, BoxFuture, CallMode, CallOptions, Client, ClientConfig, Server, ServerRequest, Service, Status};
    ///
    /// /// Answers each message with its length, as a stream.
    /// struct Lengths;
    /// impl Service for Lengths {
    ///     fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
    ///         Box::pin(async move {
    ///             let (mut tx, mut rx) = req.stream.take().expect("a streaming call").split();
    ///             while let Some(msg) = rx.recv().await {
    ///                 let n = msg.map_err(|e| Status::new(e.code(), e.to_string()))?.message.len();
    ///                 tx.send(Body::message(n.to_string().into())).await.map_err(|e| Status::new(e.code(), e.to_string()))?;
    ///             }
    ///             Ok(Body::default())
    ///         })
    ///     }
    /// }
    ///
    /// let (a, b) = rpc_core::transport::mem::pair();
    /// tokio::spawn(Server::builder().build(Lengths).serve_connection(b));
    /// let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    /// let call = client.open(1, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap();
    /// let (mut tx, mut rx) = call.split();
    /// tx.send(Body::message("hello".into())).await.unwrap();
    /// assert_eq!(&rx.recv().await.unwrap().unwrap().message[..], b"5");
    /// tx.finish();
    /// assert!(rx.recv().await.is_none(), "the server ended the call cleanly");
    /// # });
    /// ```
    pub async fn open(
        &self,
        method: u32,
        body: Body,
        mode: CallMode,
        options: CallOptions,
    ) -> Result<CallStream, CallError> {
        let timeout = options.timeout.or(self.inner.default_timeout);
        let start = Instant::now();
        let mut body = body;
        loop {
            let conn = self.usable_conn(start, timeout).await?;
            let remaining = timeout.map(|t| t.saturating_sub(start.elapsed()));
            match conn.open(method, body, mode, &options.metadata, remaining, conn.clone()).await {
                Ok(ends) => return Ok(ends),
                Err((CallError::DeadlineExceeded(_), _)) => {
                    return Err(CallError::DeadlineExceeded(timeout.unwrap_or_default()))
                }
                Err((_, Some(b))) if self.inner.reconnect.is_some() => body = b,
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// The connection to call on: the current one while it takes calls; otherwise, for a
    /// client that re-dials, the next one, waited for within the call's deadline (or
    /// `connect_timeout`).
    async fn usable_conn(&self, start: Instant, timeout: Option<Duration>) -> Result<Arc<Conn>, CallError> {
        {
            let l = self.inner.link.borrow();
            // The fast path: the current connection takes calls (or is the only one there is).
            match &self.inner.reconnect {
                Some(r) if !l.conn.is_usable() && !r.wait_for_connection => {
                    return Err(CallError::Unavailable(self.why_down(&l)))
                }
                Some(_) if !l.conn.is_usable() => {}
                _ => return Ok(l.conn.clone()),
            }
        }
        // The wait (with its timer) lives in a box of its own, so that it does not make every
        // call's future larger: the fast path above is the usual one.
        Box::pin(self.wait_for_conn(start, timeout)).await
    }

    /// The slow half of [`Client::usable_conn`]: waits for a re-dial to bring a connection.
    async fn wait_for_conn(&self, start: Instant, timeout: Option<Duration>) -> Result<Arc<Conn>, CallError> {
        let mut link = self.inner.link.clone();
        // Within the call's deadline; a call without one waits up to `connect_timeout` from
        // now, not from its start: a call sent again after a goaway (which may come long after
        // the call was made) gets a whole wait for the next connection too.
        // A timeout too large to add to the clock (`Duration::MAX`) is no deadline (as on the
        // wire, see `Connection::start_call`): such a call waits as one without a deadline does,
        // not for ever.
        let timeout = timeout.filter(|&t| start.checked_add(t).is_some());
        let (limit, until) = match timeout {
            Some(t) => (t, start.checked_add(t)),
            None => (self.inner.connect_timeout, Instant::now().checked_add(self.inner.connect_timeout)),
        };
        let until = until.map(tokio::time::Instant::from_std);
        loop {
            {
                let l = link.borrow_and_update();
                if l.conn.is_usable() {
                    return Ok(l.conn.clone());
                }
            }
            let changed = async {
                match until {
                    Some(at) => tokio::time::timeout_at(at, link.changed()).await.ok(),
                    None => Some(link.changed().await),
                }
            };
            match changed.await {
                Some(Ok(())) => {}
                Some(Err(_)) => return Err(CallError::Unavailable("the client was closed".into())),
                None if timeout.is_some() => return Err(CallError::DeadlineExceeded(limit)),
                None => {
                    let why = self.why_down(&link.borrow());
                    return Err(CallError::Unavailable(format!("no connection within {limit:?}: {why}")));
                }
            }
        }
    }

    fn why_down(&self, link: &Link) -> String {
        match &link.last_error {
            Some(e) => format!("reconnecting; the last attempt failed: {e}"),
            None => format!("reconnecting; the connection was lost: {}", link.conn.closed_error()),
        }
    }

    /// True while the current connection takes new calls (false from its goaway or close on,
    /// until a re-dial brings a new one).
    #[cfg(feature = "tower")]
    pub(crate) fn is_usable(&self) -> bool {
        self.conn().is_usable() && self.is_open()
    }

    /// Why the client cannot take calls now (for errors naming each endpoint of a balancer).
    #[cfg(feature = "tower")]
    pub(crate) fn why_unusable(&self) -> String {
        match self.inner.reconnect {
            Some(_) => self.why_down(&self.inner.link.borrow()),
            None => format!("the connection was lost: {}", self.conn().closed_error()),
        }
    }

    /// Resolves when the client's connection may have changed state: it was lost (a re-dialing
    /// client says so before dialing), or a re-dial brought a new one, or a dial failed. Read
    /// [`Client::is_usable`] after arming it. A client over one transport whose connection is
    /// gone never changes again: then it never resolves.
    #[cfg(feature = "tower")]
    pub(crate) fn state_changed(&self) -> BoxFuture<'static, ()> {
        let mut link = self.inner.link.clone();
        let conn = link.borrow_and_update().conn.clone();
        let open = conn.is_usable();
        Box::pin(async move {
            let closed = async {
                if open {
                    conn.shared.closed().await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                r = link.changed() => if r.is_err() { std::future::pending::<()>().await },
                _ = closed => {}
            }
        })
    }

    /// The newest connection.
    fn conn(&self) -> Arc<Conn> {
        self.inner.link.borrow().conn.clone()
    }

    /// Waits for the current connection's turn to make a large request, as
    /// [`StreamSender::writer_turn`](crate::StreamSender::writer_turn) does for a stream's
    /// messages: for a caller that makes each request afresh (encodes it into a new buffer),
    /// so that a window of large requests is made as fast as it goes out. Make the request
    /// while holding the returned [`WriterTurn`](crate::WriterTurn), then drop it before
    /// calling. The wait is not bounded by a call's deadline (there is no call yet): wrap it in
    /// a timeout where that matters. Once the connection has closed, turns come at once.
    pub fn writer_turn(&self) -> impl Future<Output = crate::WriterTurn> + Send + 'static {
        crate::driver::turn(self.inner.link.borrow().conn.shared.clone())
    }

    /// The transport's counters for the current connection.
    pub fn stats(&self) -> StatsSnapshot {
        self.conn().shared.stats.snapshot()
    }

    /// The timeout of a call whose options have none ([`ClientConfig::default_timeout`]).
    pub fn default_timeout(&self) -> Option<Duration> {
        self.inner.default_timeout
    }

    /// What the server declared in its hello (its limits), on the current connection.
    pub fn server_hello(&self) -> Hello {
        self.conn().peer
    }

    /// True while the current connection can take calls.
    pub fn is_open(&self) -> bool {
        // The machine itself, not the flag: a caller woken by its call's failure may ask
        // before the flag is cleared by the same close.
        !self.conn().shared.lock().conn.is_draining()
    }

    /// Closes the connection for every clone and stops re-dialing: calls in flight fail with a
    /// connection error, later calls fail at once. Waits until the transport is shut down.
    pub async fn close(&self) {
        if let Some(s) = &self.inner.supervisor {
            s.abort();
        }
        let conn = self.conn();
        conn.shared.step(|g| g.conn.close(ConnectionError::LocallyClosed));
        conn.shared.closed().await;
    }
}
