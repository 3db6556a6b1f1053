//! Re-dialing: a client made from an address (or a dial function) gets a new connection when
//! its connection is lost — closed, reset, or told to go away — with exponential backoff and
//! jitter between attempts, so that many clients of a restarted server do not all knock at once.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::conn::Conn;
use super::ClientConfig;
use crate::error::ConnectError;
use crate::service::BoxFuture;
use crate::transport::Transport;

/// What callers see of the client's connection.
pub(super) struct Link {
    /// The newest connection (it may have stopped being usable: see `Conn::is_usable`).
    pub(super) conn: Arc<Conn>,
    /// Why the last dial failed, while the connection is down.
    pub(super) last_error: Option<String>,
}

/// Makes a new transport to the same server.
pub(super) type Dial<T> = Arc<dyn Fn() -> BoxFuture<'static, io::Result<T>> + Send + Sync>;

/// One dial and handshake, bounded by `connect_timeout` in all.
pub(super) async fn dial_once<T: Transport>(
    dial: &Dial<T>,
    config: &ClientConfig,
    lost: &Arc<Notify>,
) -> Result<Conn, ConnectError> {
    let limit = config.connect_timeout;
    let start = tokio::time::Instant::now();
    // The dial and the handshake are timed apart, so that the error says which one hung.
    let transport = tokio::time::timeout(limit, dial()).await.map_err(|_| ConnectError::Timeout(limit))??;
    Conn::establish(transport, config, limit.saturating_sub(start.elapsed()), lost.clone()).await
}

/// Runs until the client is dropped: waits for the connection to be lost, then dials until a
/// new one is up, publishing it in `link`.
pub(super) async fn supervise<T: Transport>(
    dial: Dial<T>,
    config: ClientConfig,
    link: watch::Sender<Link>,
    lost: Arc<Notify>,
    target: String,
) {
    loop {
        while link.borrow().conn.is_usable() {
            tokio::select! {
                _ = lost.notified() => {}
                _ = link.closed() => return,
            }
        }
        // Tell whoever watches the link (a balancer's health watch) that the connection went
        // down, before the first re-dial, which may take up to `connect_timeout`.
        link.send_modify(|_| {});
        let mut backoff = config.reconnect.initial_backoff;
        loop {
            match dial_once(&dial, &config, &lost).await {
                Ok(conn) => {
                    tracing::info!("reconnected to {target}");
                    link.send_replace(Link { conn: Arc::new(conn), last_error: None });
                    break;
                }
                Err(e) => {
                    tracing::debug!("re-dialing {target} failed: {e}");
                    link.send_modify(|l| l.last_error = Some(format!("connecting to {target}: {e}")));
                    tokio::select! {
                        _ = tokio::time::sleep(jitter(backoff)) => {}
                        _ = link.closed() => return,
                    }
                    backoff = backoff.saturating_mul(2).min(config.reconnect.max_backoff);
                }
            }
        }
    }
}

/// `d` scaled by a random factor in [0.5, 1.5).
fn jitter(d: Duration) -> Duration {
    // A fresh `RandomState` is randomly keyed: enough randomness for spreading retries.
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    Duration::try_from_secs_f64(d.as_secs_f64() * (0.5 + (r % 1024) as f64 / 1024.0)).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half_and_varies() {
        let d = Duration::from_millis(100);
        let seen: Vec<Duration> = (0..64).map(|_| jitter(d)).collect();
        assert!(seen.iter().all(|j| *j >= d / 2 && *j < d * 3 / 2), "{seen:?}");
        assert!(seen.iter().any(|j| *j != seen[0]), "{seen:?}");
    }
}
