//! Closing a connection while the kernel still holds some of its zero-copy sends.
//!
//! A zero-copy send's pages (pool buffers, `Bytes`) stay with the kernel until its
//! notification, and that comes only once the peer has acknowledged the bytes: a peer that
//! never reads holds them for as long as the connection lives — forever when it keeps
//! acknowledging zero-window probes. When the last half of a connection is dropped, its
//! socket is shut down (FIN after the queued data, as a plain close does) and given
//! [`UringConfig::close_deadline`](crate::UringConfig::close_deadline) to drain; past it the
//! connection is aborted ([`sock::abort`]: RST, send queue purged), the notifications arrive,
//! and every segment and the descriptor are released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;

use super::msgzc;
use super::{raw_fd, Shared};
use crate::sys::sock;

/// Counted by a connection's two halves; the last one to go closes the connection as above.
pub(crate) struct CloseHandle {
    conn: Arc<Conn>,
}

struct Conn {
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    halves: AtomicUsize,
    /// The `MSG_ZEROCOPY` reaper, which reads the notifications and enforces the deadline
    /// itself (it holds the socket open for that).
    msgzc: Option<msgzc::ReaperHandle>,
}

impl CloseHandle {
    pub(crate) fn new(
        stream: Arc<TcpStream>,
        shared: Arc<Shared>,
        msgzc: Option<msgzc::ReaperHandle>,
    ) -> CloseHandle {
        CloseHandle {
            conn: Arc::new(Conn {
                stream,
                shared,
                halves: AtomicUsize::new(1),
                msgzc,
            }),
        }
    }
}

impl Clone for CloseHandle {
    fn clone(&self) -> Self {
        self.conn.halves.fetch_add(1, Ordering::AcqRel);
        CloseHandle {
            conn: self.conn.clone(),
        }
    }
}

impl std::fmt::Debug for CloseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CloseHandle")
    }
}

impl Drop for CloseHandle {
    fn drop(&mut self) {
        if self.conn.halves.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let conn = &self.conn;
        // Both halves are gone: close the connection as a drop of a TcpStream would (FIN
        // after the queued data); the descriptor may stay open a while for the notifications.
        let _ = socket2::SockRef::from(&*conn.stream).shutdown(std::net::Shutdown::Both);
        if let Some(r) = &conn.msgzc {
            r.close();
            return;
        }
        if conn.shared.in_flight() == 0 {
            return;
        }
        // io_uring: the ring's reaper takes the notifications whether the socket is open or
        // not; this task only keeps it open to abort it at the deadline. Without a runtime
        // (it is shutting down) the socket is closed now and the kernel's own bounds
        // (TCP_USER_TIMEOUT, orphan retries) end it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(conn.stream.clone(), conn.shared.clone()));
        }
    }
}

/// Waits up to the close deadline for the kernel to release every zero-copy send, aborts the
/// connection if it has not, and waits (as long again, at most) for the notifications the
/// abort brings. The socket closes when this returns.
async fn linger(stream: Arc<TcpStream>, shared: Arc<Shared>) {
    let deadline = shared.config.close_deadline;
    if tokio::time::timeout(deadline, shared.wait_drained()).await.is_ok() {
        return;
    }
    abort_stalled(&stream, shared.in_flight());
    if tokio::time::timeout(deadline, shared.wait_drained()).await.is_err() {
        tracing::error!(
            in_flight = shared.in_flight(),
            "zero-copy sends still unreleased after aborting the connection; their memory \
             stays with the kernel"
        );
    }
}

/// Aborts a connection whose peer has not taken its data by the close deadline.
pub(crate) fn abort_stalled(stream: &TcpStream, in_flight: usize) {
    let fd = raw_fd(stream);
    tracing::debug!(
        fd,
        in_flight,
        "close deadline passed with zero-copy sends unreleased; resetting the connection"
    );
    if let Err(e) = sock::abort(socket2::SockRef::from(stream), fd) {
        tracing::warn!(fd, "aborting a stalled connection failed: {e}");
    }
}
