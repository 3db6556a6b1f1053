//! `SendZcLoop`: the bare io_uring `SEND_ZC` loop the benchmarks compare the engine against —
//! one ring, one send in flight, short sends resubmitted, no planner, no adaptivity.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use io_uring::{cqueue, opcode, types, IoUring};

const SEND: u64 = 1;

/// Sends one message, again and again, over a blocking socket with `IORING_OP_SEND_ZC`. It owns
/// the message and a handle to the socket, and on drop waits for every notification, so the
/// kernel never reads freed memory or a closed descriptor.
pub struct SendZcLoop {
    ring: IoUring,
    /// Keeps the descriptor open for as long as sends may reference it.
    sock: TcpStream,
    msg: Bytes,
    /// Sends whose notification has not arrived: the kernel may still read `msg`.
    notifs_pending: usize,
}

impl std::fmt::Debug for SendZcLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendZcLoop")
            .field("len", &self.msg.len())
            .field("notifs_pending", &self.notifs_pending)
            .finish()
    }
}

impl SendZcLoop {
    /// A loop sending `msg` over (a duplicate of) `sock`. Fails when the kernel has no
    /// `SEND_ZC`.
    pub fn new(sock: &TcpStream, msg: Bytes) -> io::Result<SendZcLoop> {
        let ring = IoUring::new(16)?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::SendZc::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "IORING_OP_SEND_ZC is not supported by this kernel",
            ));
        }
        Ok(SendZcLoop {
            ring,
            sock: sock.try_clone()?,
            msg,
            notifs_pending: 0,
        })
    }

    /// Sends the whole message once; returns when the kernel has taken every byte (its
    /// notifications may still be outstanding).
    pub fn send(&mut self) -> io::Result<()> {
        let mut off = 0;
        while off < self.msg.len() {
            let rest = &self.msg[off..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            let sqe = opcode::SendZc::new(types::Fd(self.sock.as_raw_fd()), rest.as_ptr(), len)
                .build()
                .user_data(SEND);
            // SAFETY: io_uring_prep_send_zc(3): the buffer must stay valid and unchanged until the
            // notification CQE. `msg` is immutable `Bytes` owned by `self`, and `self` (its drop)
            // waits for every notification; the fd is `self.sock`'s, open as long as `self`.
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("submission queue full"))?;
            off += self.wait_send_result()?;
        }
        Ok(())
    }

    /// Waits until the kernel has released the message from every send.
    pub fn finish(mut self) -> io::Result<()> {
        self.drain()
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.notifs_pending > 0 {
            self.ring.submit_and_wait(1)?;
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                self.account(&cqe);
            }
        }
        Ok(())
    }

    /// Waits for the result CQE of the one send in flight, counting notifications on the way.
    fn wait_send_result(&mut self) -> io::Result<usize> {
        loop {
            self.ring.submit_and_wait(1)?;
            let mut result = None;
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                self.account(&cqe);
                if !cqueue::notif(cqe.flags()) {
                    result = Some(cqe.result());
                }
            }
            match result {
                None => continue,
                Some(res) if res == -libc::EINTR => return Ok(0),
                Some(res) if res < 0 => return Err(io::Error::from_raw_os_error(-res)),
                Some(res) => return Ok(res as usize),
            }
        }
    }

    fn account(&mut self, cqe: &cqueue::Entry) {
        if cqueue::notif(cqe.flags()) {
            self.notifs_pending = self.notifs_pending.saturating_sub(1);
        } else if cqueue::more(cqe.flags()) {
            self.notifs_pending += 1;
        }
    }
}

impl Drop for SendZcLoop {
    fn drop(&mut self) {
        // The kernel may still read `msg`: keep it (and the fd) until every notification.
        if self.drain().is_err() {
            // The ring failed; leak the message rather than free memory the kernel may read.
            std::mem::forget(std::mem::take(&mut self.msg));
        }
    }
}
