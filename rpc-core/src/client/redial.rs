//! Re-dialing: a client made from an address (or a dial function) gets a new connection when
//! its connection is lost — closed, reset, or told to go away — with exponential backoff and
//! jitter between attempts, so that many clients of a restarted server do not all knock at once.

use std::io;
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use super::conn::Conn;
use super::ClientConfig;
use crate::error::ConnectError;
use crate::jitter::jitter;
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
/// new one is up, publishing it in `link`. A connection lost sooner than the current backoff
/// after it came up (a server that closes each one at once: an age of zero, a goaway right
/// after its hello) counts as a failed dial: the next dial waits, and the backoff grows, so
/// that such a server is not dialed as fast as the handshakes go. One that lived longer
/// resets the backoff, and its loss is re-dialed at once.
pub(super) async fn supervise<T: Transport>(
    dial: Dial<T>,
    config: ClientConfig,
    link: watch::Sender<Link>,
    lost: Arc<Notify>,
    target: String,
) {
    let mut backoff = config.reconnect.initial_backoff;
    let mut up_since = tokio::time::Instant::now();
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
        if up_since.elapsed() < backoff {
            tracing::debug!("the connection to {target} was lost as soon as it came up; waiting before re-dialing");
            if !back_off(&mut backoff, config.reconnect.max_backoff, &link).await {
                return;
            }
        } else {
            backoff = config.reconnect.initial_backoff;
        }
        loop {
            match dial_once(&dial, &config, &lost).await {
                Ok(conn) => {
                    tracing::info!("reconnected to {target}");
                    link.send_replace(Link { conn: Arc::new(conn), last_error: None });
                    up_since = tokio::time::Instant::now();
                    break;
                }
                Err(e) => {
                    tracing::debug!("re-dialing {target} failed: {e}");
                    link.send_modify(|l| l.last_error = Some(format!("connecting to {target}: {e}")));
                    if !back_off(&mut backoff, config.reconnect.max_backoff, &link).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Waits `backoff` (spread ×0.5–1.5), then doubles it up to `max`. False if the client was
/// dropped meanwhile.
async fn back_off(backoff: &mut std::time::Duration, max: std::time::Duration, link: &watch::Sender<Link>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(jitter(*backoff, 0.5)) => {}
        _ = link.closed() => return false,
    }
    *backoff = backoff.saturating_mul(2).min(max);
    true
}
