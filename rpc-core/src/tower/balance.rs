//! A client over several servers: `tower::balance::p2c` over [`Client`]s, with a health watch
//! that takes a server out of the choice when its connection goes and puts it back when a
//! re-dial brings one.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::SocketAddr;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;
use ::tower::balance::p2c::Balance;
use ::tower::buffer::Buffer;
use ::tower::discover::Change;
use ::tower::load::{CompleteOnResponse, PendingRequests};
use ::tower::{BoxError, Service};

use crate::body::Body;
use crate::client::{Client, ClientConfig};
use crate::error::{CallError, ConnectError};
use crate::service::BoxFuture;

use super::retry::find_call_error;
use super::Call;

/// Calls waiting for the balancer's task, across all clones of a [`Balanced`].
const QUEUE: usize = 1024;

/// A client that spreads calls over several servers: for each call it picks two ready
/// endpoints at random and sends to the one with fewer calls pending (tower's
/// power-of-two-choices balancer, `tower::balance::p2c`, with `PendingRequests` as the load).
///
/// The endpoints come from a static list ([`Balanced::connect_tcp`]) or from a discovery
/// stream of `tower::discover::Change<K, Client>` ([`Balanced::new`]). Each endpoint's health
/// is watched: an endpoint whose connection is lost leaves the choice at once (calls already
/// on it fail with [`CallError::Connection`]; those that can be retried, with a
/// [`RetryPolicy`](super::RetryPolicy) around this client, go to another endpoint), and comes
/// back when its client has re-dialed. When every endpoint it knows is down, a call fails at
/// once with [`CallError::Unavailable`] naming each one and why.
///
/// It is a `tower::Service<Call>` and cheap to clone (clones share the endpoints; the
/// balancer runs in a task of its own, fed through a bounded queue).
///
/// ```no_run
/// # async fn run() -> Result<(), tower::BoxError> {
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use rpc_core::tower::{Balanced, Call, RetryPolicy};
/// use rpc_core::{Body, ClientConfig};
///
/// let servers = ["10.0.0.1:7411".parse()?, "10.0.0.2:7411".parse()?, "10.0.0.3:7411".parse()?];
/// let balanced = Balanced::connect_tcp(&servers, ClientConfig::default()).await?;
/// let mut svc = ServiceBuilder::new()
///     .timeout(Duration::from_secs(10))
///     .retry(RetryPolicy::new(3))
///     .service(balanced);
/// let call = Call::path("Store/get", Body::message("k".into())).idempotent();
/// let reply = svc.ready().await?.call(call).await?;
/// # let _ = reply;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Balanced {
    buffer: Buffer<Call, BoxFuture<'static, Result<Body, BoxError>>>,
    health: Arc<Mutex<Health>>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Balanced").field("endpoints", &h.endpoints).finish()
    }
}

impl Balanced {
    /// A balancer over the clients `discover` yields: `Change::Insert(key, client)` adds one
    /// (or replaces the one of that key), `Change::Remove(key)` takes it out; an error is
    /// logged and the stream read on, the endpoints staying. Until the stream has inserted a
    /// usable endpoint (or after it removed them all), calls wait within their timeout
    /// ([`Call::timeout`], which counts from the balancer's `call`) rather than fail; a call
    /// without one waits until an endpoint comes.
    ///
    /// For an endpoint to leave the choice at once when its server goes, make its client with
    /// [`Reconnect::wait_for_connection`](crate::Reconnect::wait_for_connection) off: a call
    /// that reaches it while it re-dials then fails at once (and is retried elsewhere) instead
    /// of waiting for the re-dial. Must be called inside a tokio runtime (the balancer's task
    /// is spawned).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use tower::discover::Change;
    /// use rpc_core::tower::Balanced;
    /// use rpc_core::{Client, ClientConfig};
    /// # struct Echo;
    /// # impl rpc_core::Service for Echo {
    /// #     fn call(&self, req: rpc_core::ServerRequest) -> rpc_core::BoxFuture<'static, Result<rpc_core::Body, rpc_core::Status>> { Box::pin(async move { Ok(req.body) }) }
    /// # }
    ///
    /// let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Change<&str, Client>, std::convert::Infallible>>();
    /// let discover = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    /// let balanced = Balanced::new(Box::pin(discover));
    ///
    /// let (a, b) = rpc_core::transport::mem::pair();
    /// tokio::spawn(rpc_core::Server::builder().build(Echo).serve_connection(b));
    /// let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    /// tx.send(Ok(Change::Insert("a", client))).unwrap();
    /// # drop(balanced);
    /// # });
    /// ```
    pub fn new<D, K, E>(discover: D) -> Balanced
    where
        D: Stream<Item = Result<Change<K, Client>, E>> + Unpin + Send + 'static,
        K: Hash + Eq + Clone + Debug + Send + Sync + Unpin + 'static,
        E: Into<BoxError> + 'static,
    {
        let health = Arc::new(Mutex::new(Health::default()));
        let watched = Watched { discover: Some(Box::pin(Erased(discover))), endpoints: Vec::new(), health: health.clone() };
        let guarded = Guarded { balance: Balance::new(watched), health: health.clone(), fail_next: None };
        Balanced { buffer: Buffer::new(guarded, QUEUE), health }
    }

    /// Connects to each of `addrs` over TCP (as [`Client::connect_tcp`], concurrently) and
    /// balances across them; an endpoint that does not answer now is dialed again in the
    /// background, with the backoff of `config.reconnect`, and joins when it is up (until
    /// then [`Balanced::endpoints`] lists it with why, and the all-down error names it). Calls to
    /// an endpoint that is re-dialing fail at once (`wait_for_connection` is turned off for
    /// the endpoints) so that they go elsewhere.
    ///
    /// # Errors
    ///
    /// When no endpoint could be connected within `config.connect_timeout`: the error of
    /// each, with its address.
    pub async fn connect_tcp(addrs: &[SocketAddr], config: ClientConfig) -> Result<Balanced, ConnectError> {
        let mut config = config;
        config.reconnect.wait_for_connection = false;
        let dials = addrs.iter().map(|a| {
            let config = config.clone();
            let a = *a;
            async move { (a, Client::connect_tcp(a, config).await) }
        });
        let results = join_all(dials.collect::<Vec<_>>()).await;
        let mut up = Vec::new();
        let mut failed = Vec::new();
        for (addr, r) in results {
            match r {
                Ok(c) => up.push(Change::Insert(addr, c)),
                Err(e) => failed.push((addr, e)),
            }
        }
        if up.is_empty() {
            let why: Vec<String> = failed.iter().map(|(_, e)| e.to_string()).collect();
            return Err(ConnectError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("no endpoint of {} could be connected: {}", addrs.len(), why.join("; ")),
            )));
        }
        for (addr, e) in &failed {
            tracing::info!("endpoint {addr} is down ({e}); dialing it in the background");
        }
        let down: Vec<(String, String)> =
            failed.iter().map(|(addr, e)| (format!("{addr:?}"), format!("not connected yet, dialing again: {e}"))).collect();
        let later = failed.into_iter().map(|(addr, _)| redial(addr, config.clone())).collect();
        let balanced = Balanced::new(Box::pin(StaticList { ready: up, dialing: later }));
        // The endpoints being dialed are endpoints too (named as the health watch names them):
        // with the others down, the error names every one and says why, and so does
        // `endpoints`. A background dial that got there first has its say.
        let mut h = balanced.health.lock().unwrap_or_else(|e| e.into_inner());
        for (name, why) in down {
            h.endpoints.entry(name).or_insert(why);
        }
        drop(h);
        Ok(balanced)
    }

    /// The endpoints known now, each with whether it takes calls (`"up"`) or why not.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.endpoints.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl Service<Call> for Balanced {
    type Response = Body;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<Body, CallError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.buffer.poll_ready(cx).map_err(to_call_error)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let timeout = call.options.timeout;
        let fut = self.buffer.call(call);
        Box::pin(async move {
            let Some(t) = timeout else { return fut.await.map_err(to_call_error) };
            // The call's timeout counts from here, not only once an endpoint took it: a call
            // that waits for a usable endpoint (none inserted yet, every one removed) would
            // otherwise wait without end. Dropping the future cancels the call if it was sent.
            match tokio::time::timeout(t, fut).await {
                Ok(result) => result.map_err(to_call_error),
                Err(_) => Err(CallError::DeadlineExceeded(t)),
            }
        })
    }
}

/// The call error inside what the buffer and balancer report.
fn to_call_error(e: BoxError) -> CallError {
    match find_call_error(e.as_ref()) {
        Some(c) => c.clone(),
        None => CallError::Unavailable(format!("balancer: {e}")),
    }
}

/// What the balancer knows of its endpoints, for the "all down" error.
#[derive(Default)]
struct Health {
    /// Endpoint (its key, as `Debug` shows it) → `"up"` or why it is down.
    endpoints: BTreeMap<String, String>,
    up: usize,
}

impl Health {
    fn all_down(&self) -> Option<String> {
        if self.up > 0 || self.endpoints.is_empty() {
            return None;
        }
        let each: Vec<String> = self.endpoints.iter().map(|(k, why)| format!("{k}: {why}")).collect();
        Some(format!("all {} endpoints are down ({})", self.endpoints.len(), each.join("; ")))
    }
}

/// The balancer, failing calls at once while every known endpoint is down (p2c itself would
/// wait for one to come back, without bound).
struct Guarded<K: Hash + Eq + Clone + Debug + Send + Sync + Unpin + 'static> {
    balance: Balance<Watched<K>, Call>,
    health: Arc<Mutex<Health>>,
    /// Set when `poll_ready` said ready only to let `call` fail: every endpoint is down.
    fail_next: Option<String>,
}

/// An endpoint as the balancer sees it.
type Loaded = PendingRequests<Endpoint, CompleteOnResponse>;

impl<K> Service<Call> for Guarded<K>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + Unpin + 'static,
{
    type Response = Body;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Body, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.fail_next = None;
        match self.balance.poll_ready(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => match self.health.lock().unwrap_or_else(|e| e.into_inner()).all_down() {
                // Ready to answer with the error: `call` fails the call. (An error here would
                // end the buffer's task for good.)
                Some(why) => {
                    self.fail_next = Some(why);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            },
        }
    }

    fn call(&mut self, call: Call) -> Self::Future {
        match self.fail_next.take() {
            Some(why) => Box::pin(std::future::ready(Err(CallError::Unavailable(why).into()))),
            None => Box::pin(self.balance.call(call)),
        }
    }
}

/// One endpoint: its client, ready while its connection takes calls. Not ready means failed:
/// the balancer drops it at once, and the health watch puts it back when it is up again.
#[derive(Clone)]
struct Endpoint {
    client: Client,
}

impl Service<Call> for Endpoint {
    type Response = Body;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<Body, CallError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        if self.client.is_usable() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(CallError::Unavailable(self.client.why_unusable())))
        }
    }

    fn call(&mut self, call: Call) -> Self::Future {
        Service::call(&mut self.client, call)
    }
}

/// An endpoint's state in the health watch.
struct Watch<K> {
    key: K,
    client: Client,
    up: bool,
    changed: BoxFuture<'static, ()>,
}

/// The user's discovery stream, its error boxed.
type UserDiscover<K> = dyn Stream<Item = Result<Change<K, Client>, BoxError>> + Send;

/// The discovery stream the balancer reads: the user's changes, and the health watch's own
/// (an endpoint whose connection is lost is removed; when it is back, inserted again).
struct Watched<K> {
    discover: Option<Pin<Box<UserDiscover<K>>>>,
    endpoints: Vec<Watch<K>>,
    health: Arc<Mutex<Health>>,
}

impl<K> Watched<K>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + Unpin + 'static,
{
    fn record(&self, key: &K, state: Option<String>) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("{key:?}");
        match state {
            Some(s) => {
                h.endpoints.insert(name, s);
            }
            None => {
                h.endpoints.remove(&name);
            }
        }
        h.up = self.endpoints.iter().filter(|w| w.up).count();
    }

    fn insert(&mut self, key: K, client: Client) -> Option<Change<K, Loaded>> {
        let changed = client.state_changed();
        let up = client.is_usable();
        self.endpoints.retain(|w| w.key != key);
        self.endpoints.push(Watch { key: key.clone(), client: client.clone(), up, changed });
        let state = if up { "up".to_owned() } else { client.why_unusable() };
        self.record(&key, Some(state));
        up.then(|| Change::Insert(key, PendingRequests::new(Endpoint { client }, CompleteOnResponse::default())))
    }
}

impl<K> Stream for Watched<K>
where
    K: Hash + Eq + Clone + Debug + Send + Sync + Unpin + 'static,
{
    type Item = Result<Change<K, Loaded>, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Health first: a lost endpoint leaves before anything new is considered.
        for i in 0..this.endpoints.len() {
            let w = &mut this.endpoints[i];
            if w.changed.as_mut().poll(cx).is_pending() {
                continue;
            }
            w.changed = w.client.state_changed();
            let now = w.client.is_usable();
            if !now && !w.up {
                continue;
            }
            // Up after a change, even if it was up before: the balancer may have dropped it
            // meanwhile (a failed readiness check), so it is inserted again (replacing it).
            w.up = now;
            let (key, client) = (w.key.clone(), w.client.clone());
            let state = if now { "up".to_owned() } else { client.why_unusable() };
            this.record(&key, Some(state));
            let change = if now {
                tracing::info!("endpoint {key:?} is up again");
                Change::Insert(key, PendingRequests::new(Endpoint { client }, CompleteOnResponse::default()))
            } else {
                tracing::info!("endpoint {key:?} is down; its calls go to the others");
                Change::Remove(key)
            };
            return Poll::Ready(Some(Ok(change)));
        }
        while let Some(d) = this.discover.as_mut() {
            match d.as_mut().poll_next(cx) {
                Poll::Pending => break,
                // The user's stream ended: the endpoints it gave stay.
                Poll::Ready(None) => this.discover = None,
                // A lookup that failed: tower's balancer would end at it, and every later call
                // with it (its buffer's task stops for good). The endpoints stay, and the
                // stream is read on at the next poll, not this one (a stream that fails at
                // every poll must not hold the balancer's task).
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!("balancer: the discovery stream failed ({e}); its endpoints stay");
                    cx.waker().wake_by_ref();
                    break;
                }
                Poll::Ready(Some(Ok(Change::Insert(key, client)))) => {
                    if let Some(change) = this.insert(key.clone(), client) {
                        return Poll::Ready(Some(Ok(change)));
                    }
                    // Known but down: the balancer must forget an earlier service of that key.
                    return Poll::Ready(Some(Ok(Change::Remove(key))));
                }
                Poll::Ready(Some(Ok(Change::Remove(key)))) => {
                    this.endpoints.retain(|w| w.key != key);
                    this.record(&key, None);
                    return Poll::Ready(Some(Ok(Change::Remove(key))));
                }
            }
        }
        Poll::Pending
    }
}

/// A type-erasing constructor for the user's stream (its error boxed).
struct Erased<D>(D);

impl<D, K, E> Stream for Erased<D>
where
    D: Stream<Item = Result<Change<K, Client>, E>> + Unpin,
    E: Into<BoxError>,
{
    type Item = Result<Change<K, Client>, BoxError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx).map(|o| o.map(|r| r.map_err(Into::into)))
    }
}

/// The endpoints of [`Balanced::connect_tcp`]: those connected at once, then each of the others
/// when a background dial reaches it.
struct StaticList {
    ready: Vec<Change<SocketAddr, Client>>,
    dialing: Vec<BoxFuture<'static, (SocketAddr, Client)>>,
}

impl Stream for StaticList {
    type Item = Result<Change<SocketAddr, Client>, std::convert::Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(c) = self.ready.pop() {
            return Poll::Ready(Some(Ok(c)));
        }
        let mut i = 0;
        while i < self.dialing.len() {
            if let Poll::Ready((addr, client)) = self.dialing[i].as_mut().poll(cx) {
                drop(self.dialing.swap_remove(i));
                return Poll::Ready(Some(Ok(Change::Insert(addr, client))));
            }
            i += 1;
        }
        Poll::Pending
    }
}

/// Dials `addr` until it answers, waiting between attempts as a re-dialing client does.
fn redial(addr: SocketAddr, config: ClientConfig) -> BoxFuture<'static, (SocketAddr, Client)> {
    Box::pin(async move {
        let mut backoff = config.reconnect.initial_backoff;
        loop {
            match Client::connect_tcp(addr, config.clone()).await {
                Ok(c) => return (addr, c),
                Err(e) => tracing::debug!("dialing {addr} again failed: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2).min(config.reconnect.max_backoff);
        }
    })
}

/// Runs the futures at once and returns their outputs (each in its own task).
async fn join_all<T: Send + 'static>(futs: Vec<impl Future<Output = T> + Send + 'static>) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down.
            Err(_) => {}
        }
    }
    out
}
