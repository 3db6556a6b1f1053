//! The `MSG_ZEROCOPY` backend (`Documentation/networking/msg_zerocopy.rst`): each successful
//! `sendmsg(MSG_ZEROCOPY)` takes the socket's next 32-bit sequence number; completions arrive on
//! the error queue as inclusive, possibly merged ranges `[ee_info, ee_data]`, flagged
//! `SO_EE_CODE_ZEROCOPY_COPIED` when the kernel copied after all. A reaper task waits for
//! `EPOLLERR` through tokio and releases the messages of each range.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};

use rpc_core::TransportStats;
use tokio::net::TcpStream;

use super::{raw_fd, Flight, Shared};
use crate::sys::sock::{self, ErrQueue, ZcRange};

/// Messages in flight by sequence number, and the next number the kernel will give.
#[derive(Default)]
struct Pending {
    next: u32,
    flights: HashMap<u32, Arc<Flight>>,
    /// No handle left: the reaper ends once `flights` is empty.
    closing: bool,
}

impl Pending {
    /// Removes the messages of `lo..=hi` (wrapping); returns them and how many there were.
    fn complete(&mut self, r: ZcRange) -> Vec<Arc<Flight>> {
        let span = r.hi.wrapping_sub(r.lo) as u64 + 1;
        if span > 2 * self.flights.len() as u64 {
            // A wide range (merged over many sends): walk the map instead of the numbers.
            let keys: Vec<u32> = self
                .flights
                .keys()
                .copied()
                .filter(|k| (k.wrapping_sub(r.lo) as u64) < span)
                .collect();
            return keys
                .into_iter()
                .filter_map(|k| self.flights.remove(&k))
                .collect();
        }
        let mut out = Vec::new();
        let mut seq = r.lo;
        loop {
            out.extend(self.flights.remove(&seq));
            if seq == r.hi {
                break;
            }
            seq = seq.wrapping_add(1);
        }
        out
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.flights.is_empty() {
            // The reaper is gone (runtime shut down) before the kernel said it is done with
            // these pages: leak them rather than let a pool buffer be rewritten in flight.
            for (_, f) in self.flights.drain() {
                std::mem::forget(f);
            }
        }
    }
}

struct Inner {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
}

impl Inner {
    /// Handles one error-queue message; returns the messages it releases (to be dropped
    /// outside the lock).
    fn completed(&self, fd: std::os::fd::RawFd, shared: &Shared, m: ErrQueue) -> Vec<Arc<Flight>> {
        match m {
            ErrQueue::Zerocopy(r) => {
                let released = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .complete(r);
                tracing::trace!(
                    fd,
                    lo = r.lo,
                    hi = r.hi,
                    copied = r.copied,
                    released = released.len(),
                    "MSG_ZEROCOPY completion"
                );
                shared.count_notifications(r.hi.wrapping_sub(r.lo) as u64 + 1, r.copied, true);
                released
            }
            ErrQueue::Other(errno) => {
                tracing::debug!("error queue: {}", io::Error::from_raw_os_error(errno));
                Vec::new()
            }
        }
    }
}

/// The `MSG_ZEROCOPY` submitter of one connection (held by the send half; the reaper holds
/// another reference).
pub(crate) struct MsgZc {
    inner: Arc<Inner>,
    waiter: sock::WriteWaiter,
}

/// The reaper's side of the connection's close (held by its
/// [`CloseHandle`](super::close::CloseHandle)).
pub(crate) struct ReaperHandle {
    inner: Arc<Inner>,
}

impl ReaperHandle {
    /// Both halves are gone (the socket is shut down): the reaper ends once the error queue
    /// has released every message, or aborts the connection at the close deadline.
    pub(crate) fn close(&self) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closing = true;
        self.inner.wake.notify_one();
    }
}

impl std::fmt::Debug for ReaperHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReaperHandle")
    }
}

impl MsgZc {
    /// Opts the socket in (`SO_ZEROCOPY`) and starts the reaper.
    pub(crate) fn start(
        stream: &Arc<TcpStream>,
        shared: &Arc<Shared>,
    ) -> io::Result<(MsgZc, ReaperHandle)> {
        sock::set_zerocopy(raw_fd(stream))?;
        let inner = Arc::new(Inner {
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
        });
        let handle = ReaperHandle {
            inner: inner.clone(),
        };
        let waiter = sock::WriteWaiter::new(raw_fd(stream))?;
        tokio::spawn(reap(stream.clone(), inner.clone(), shared.clone()));
        Ok((MsgZc { inner, waiter }, handle))
    }

    pub(crate) fn waiter(&self) -> &sock::WriteWaiter {
        &self.waiter
    }

    /// Reads completions that are already queued, without waiting: the reaper task may not
    /// have run yet (a busy sender), and the adaptive decision should not wait for it.
    pub(crate) fn poll_completions(&self, stream: &TcpStream, shared: &Shared) {
        let fd = raw_fd(stream);
        let mut done = Vec::new();
        while let Ok(Some(m)) = sock::recv_errqueue(fd) {
            done.extend(self.inner.completed(fd, shared, m));
        }
        drop(done);
    }

    /// Sends one message zero-copy, resubmitting short sends; `ENOBUFS` sends the rest by copy.
    pub(crate) async fn send(
        &self,
        stream: &TcpStream,
        shared: &Shared,
        flight: Arc<Flight>,
    ) -> io::Result<()> {
        let n = flight.chunks.len();
        let total = flight.len(0..n);
        let mut sent = 0usize;
        while sent < total {
            let r = {
                let slices: Vec<IoSlice<'_>> = flight
                    .slices(0..n, sent)
                    .into_iter()
                    .map(IoSlice::new)
                    .collect();
                // The lock is held across the call so the reaper cannot see this send's
                // completion before it is recorded.
                let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                let r = sock::sendmsg(socket2::SockRef::from(stream), &slices, libc::MSG_ZEROCOPY);
                if let Ok(k) = r {
                    if k > 0 {
                        let seq = p.next;
                        p.next = seq.wrapping_add(1);
                        tracing::trace!(fd = raw_fd(stream), seq, bytes = k, "MSG_ZEROCOPY send");
                        p.flights.insert(seq, flight.clone());
                    }
                }
                r
            };
            match r {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket accepted no bytes",
                    ))
                }
                Ok(k) => {
                    TransportStats::add(&shared.stats.sent_bytes, k as u64);
                    sent += k;
                    if sent < total {
                        TransportStats::add(&shared.stats.short_sends, 1);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.waiter.wait().await?,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    TransportStats::add(&shared.stats.enobufs_fallbacks, 1);
                    let mut io: Vec<IoSlice<'_>> = flight
                        .slices(0..n, sent)
                        .into_iter()
                        .map(IoSlice::new)
                        .collect();
                    return super::write_all_vectored(
                        stream,
                        super::Room::Epoll(&self.waiter),
                        &shared.stats,
                        &mut io,
                    )
                    .await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

async fn reap(stream: Arc<TcpStream>, inner: Arc<Inner>, shared: Arc<Shared>) {
    use std::os::fd::AsFd;
    let fd = raw_fd(&stream);
    let errq = match sock::ErrQueueFd::new(stream.as_fd()) {
        Ok(e) => e,
        Err(e) => {
            // Completions cannot be read: the messages stay parked (never freed under the
            // kernel) until the connection's memory is reclaimed by process exit.
            tracing::error!("MSG_ZEROCOPY reaper: cannot watch the error queue: {e}");
            return;
        }
    };
    // Set once the connection is closed: when to abort it if the peer has not taken its data
    // (see `engine::close`), and whether that was done.
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut aborted = false;
    loop {
        let in_flight = {
            let p = inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closing && p.flights.is_empty() {
                break;
            }
            if p.closing && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + shared.config.close_deadline);
            }
            p.flights.len()
        };
        let mut done = Vec::new();
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = errq.drain(|m| done.extend(inner.completed(fd, &shared, m))            ) => {
                if let Err(e) = r {
                    tracing::warn!("MSG_ZEROCOPY reaper: {e}");
                    break;
                }
            }
            _ = inner.wake.notified() => {}
            () = expired => {
                if aborted {
                    // The notifications the abort should have brought did not come: keep
                    // the memory parked (leaked by `Pending::drop`), never free it under the
                    // kernel; close the descriptor.
                    tracing::error!(fd, in_flight, "MSG_ZEROCOPY sends unreleased after aborting the connection");
                    break;
                }
                super::close::abort_stalled(&stream, in_flight);
                aborted = true;
                deadline = Some(tokio::time::Instant::now() + shared.config.close_deadline);
            }
        }
        drop(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_wrap() {
        let mut p = Pending {
            next: 0,
            flights: HashMap::new(),
            closing: false,
        };
        let shared = Shared::new(crate::UringConfig::default(), crate::Backend::MsgZc);
        for seq in [u32::MAX - 1, u32::MAX, 0, 1, 2] {
            p.flights.insert(
                seq,
                Arc::new(Flight::new(Vec::new(), Vec::new(), shared.clone())),
            );
        }
        let done = p.complete(ZcRange {
            lo: u32::MAX - 1,
            hi: 0,
            copied: false,
        });
        assert_eq!(done.len(), 3);
        assert_eq!(p.flights.len(), 2);
        let done = p.complete(ZcRange {
            lo: 1,
            hi: 1,
            copied: false,
        });
        assert_eq!(done.len(), 1);
        assert!(p.flights.contains_key(&2));
        drop(done);
        p.flights.clear();
    }
}
