//! The handshakes a server-side acceptor has in progress (TLS over TCP here, TLS over io_uring
//! in `transport-uring`): each a task of its own, at most a set number at once, each bounded by
//! the handshake timeout; a failed one is reported, never an accept error.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

/// Most handshakes in progress at once on one acceptor, by default: a client that connects
/// and says nothing holds one slot until the handshake timeout, and once all are taken the
/// acceptor stops taking connections (they wait in the listen backlog) rather than spend
/// memory on more.
pub const MAX_HANDSHAKES: usize = 256;

/// The handshake timeout of an acceptor not given to [`crate::Server::serve`] (which sets
/// its own, [`crate::ServerBuilder::handshake_timeout`]).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed server-side handshake: who, and why.
#[derive(Debug)]
pub struct HandshakeError {
    /// The client's address.
    pub peer: SocketAddr,
    /// What went wrong, in words.
    pub error: io::Error,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS handshake with {} failed: {}", self.peer, self.error)
    }
}

impl std::error::Error for HandshakeError {}

/// What a TLS acceptor does with a failed handshake by default: a `warn` event, or a line on
/// stderr when no `tracing` subscriber is installed (transports other than TCP use it too).
pub fn log_handshake_error(e: &HandshakeError) {
    if crate::server::no_subscriber() {
        eprintln!("WARN zcrpc server: {e}");
    } else {
        tracing::warn!(peer = %e.peer, "{e}");
    }
}

type OnError = Arc<dyn Fn(&HandshakeError) + Send + Sync>;

/// The handshakes in progress on one acceptor, yielding the connections they made: at most
/// [`Handshakes::set_max`] at once, each cut off at [`Handshakes::set_timeout`], a failure
/// handed to [`Handshakes::set_on_error`] and dropped.
pub struct Handshakes<T> {
    tasks: JoinSet<Option<T>>,
    max: usize,
    timeout: Duration,
    on_error: OnError,
}

impl<T> fmt::Debug for Handshakes<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshakes").field("in_progress", &self.tasks.len()).field("max", &self.max).field("timeout", &self.timeout).finish()
    }
}

impl<T: Send + 'static> Default for Handshakes<T> {
    fn default() -> Self {
        Handshakes { tasks: JoinSet::new(), max: MAX_HANDSHAKES, timeout: DEFAULT_TIMEOUT, on_error: Arc::new(log_handshake_error) }
    }
}

impl<T: Send + 'static> Handshakes<T> {
    /// Most handshakes at once (at least 1).
    pub fn set_max(&mut self, n: usize) {
        self.max = n.max(1);
    }

    /// How long one handshake may take, from its connection's accept; for those started
    /// from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Called with every failed handshake, in place of [`log_handshake_error`]. It runs on the
    /// handshake's task: keep it quick.
    pub fn set_on_error(&mut self, f: impl Fn(&HandshakeError) + Send + Sync + 'static) {
        self.on_error = Arc::new(f);
    }

    /// How many are in progress.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// True while another may start.
    pub fn has_room(&self) -> bool {
        self.tasks.len() < self.max
    }

    /// Starts the handshake `work` with the client at `peer`, as a task of its own.
    pub fn start(&mut self, peer: SocketAddr, work: impl Future<Output = io::Result<T>> + Send + 'static) {
        let (limit, on_error) = (self.timeout, self.on_error.clone());
        self.tasks.spawn(async move {
            let done = match tokio::time::timeout(limit, work).await {
                Ok(done) => done,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("the TLS handshake did not finish within {limit:?}"))),
            };
            done.map_err(|error| on_error(&HandshakeError { peer, error })).ok()
        });
    }

    /// The next connection a handshake made; pending while none is in progress. Cancel-safe:
    /// a finished handshake is never lost when this future is dropped.
    pub async fn next(&mut self) -> T {
        loop {
            match self.tasks.join_next().await {
                Some(Ok(Some(connection))) => return connection,
                // Failed (and reported), or its task panicked.
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[tokio::test]
    async fn yields_what_succeeds_and_reports_what_fails_or_times_out() {
        let failed = Arc::new(Mutex::new(Vec::new()));
        let mut h = Handshakes::default();
        let seen = failed.clone();
        h.set_on_error(move |e| seen.lock().unwrap().push(e.error.to_string()));
        h.set_timeout(Duration::from_millis(20));
        h.start(peer(), async { Err(io::Error::other("bad certificate")) });
        h.start(peer(), std::future::pending());
        h.start(peer(), async { Ok(7u32) });
        assert_eq!(h.next().await, 7);
        // Nothing more succeeds: the other two end as reports, and `next` stays pending.
        assert!(tokio::time::timeout(Duration::from_millis(200), h.next()).await.is_err());
        assert!(h.is_empty());
        let mut failed = failed.lock().unwrap().clone();
        failed.sort();
        assert_eq!(failed, ["bad certificate", "the TLS handshake did not finish within 20ms"]);
    }

    #[tokio::test]
    async fn room_is_bounded_and_at_least_one() {
        let mut h = Handshakes::<u32>::default();
        h.set_max(0);
        assert!(h.has_room());
        h.start(peer(), std::future::pending());
        assert!(!h.has_room());
        assert_eq!(h.len(), 1);
    }
}
