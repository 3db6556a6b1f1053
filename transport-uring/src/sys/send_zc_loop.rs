//! `SendZcLoop`: the bare io_uring `SEND_ZC` loop the benchmarks compare the engine against —
//! one ring, one send in flight, short sends resubmitted, no planner, no adaptivity.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use bytes::Bytes;
use io_uring::{cqueue, opcode, types, IoUring};

const SEND: u64 = 1;

/// How long `enter` keeps retrying a submit the kernel refuses for now (`EBUSY`: completions
/// backed up; `EAGAIN`: no memory for the request) before it gives up: 1000 tries, 1 ms apart.
const BUSY_RETRIES: u32 = 1000;

/// Sends one message, again and again, over a blocking socket with `IORING_OP_SEND_ZC`. It owns
/// the message and a handle to the socket, and on drop waits for every send's result and every
/// notification, so the kernel never reads freed memory or a closed (and maybe reused)
/// descriptor. If the ring fails before that, both are leaked instead.
pub struct SendZcLoop {
    ring: IoUring,
    fd: RawFd,
    /// Keeps `fd` open for as long as sends may reference it (`None` only once leaked).
    sock: Option<TcpStream>,
    msg: Bytes,
    /// Sends submitted whose result CQE has not arrived: the kernel may still read `msg`.
    sends_pending: usize,
    /// Sends whose notification has not arrived: the kernel may still read `msg`.
    notifs_pending: usize,
    /// Tests: this many coming waits submit and then fail with `EINTR`.
    #[cfg(test)]
    interrupt_waits: usize,
}

impl std::fmt::Debug for SendZcLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendZcLoop")
            .field("len", &self.msg.len())
            .field("sends_pending", &self.sends_pending)
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
        let sock = sock.try_clone()?;
        Ok(SendZcLoop {
            ring,
            fd: sock.as_raw_fd(),
            sock: Some(sock),
            msg,
            sends_pending: 0,
            notifs_pending: 0,
            #[cfg(test)]
            interrupt_waits: 0,
        })
    }

    /// Sends the whole message once; returns when the kernel has taken every byte (its
    /// notifications may still be outstanding). On an error, a send may still be in flight:
    /// dropping the loop waits for it.
    pub fn send(&mut self) -> io::Result<()> {
        let mut off = 0;
        while off < self.msg.len() {
            let rest = &self.msg[off..];
            let len = rest.len().min(u32::MAX as usize) as u32;
            let sqe = opcode::SendZc::new(types::Fd(self.fd), rest.as_ptr(), len)
                .build()
                .user_data(SEND);
            // SAFETY: io_uring_prep_send_zc(3): the buffer must stay valid and unchanged until the
            // notification CQE. `msg` is immutable `Bytes` owned by `self`, and `self` (its drop)
            // waits for the result and the notification of every send it counted in
            // `sends_pending`; the fd is `self.sock`'s, open as long as `self` (or leaked).
            unsafe { self.ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("submission queue full"))?;
            self.sends_pending += 1;
            off += self.wait_send_result()?;
        }
        Ok(())
    }

    /// Waits until the kernel has released the message from every send.
    pub fn finish(mut self) -> io::Result<()> {
        self.drain()
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.sends_pending > 0 || self.notifs_pending > 0 {
            self.enter()?;
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                self.account(&cqe);
            }
        }
        Ok(())
    }

    /// Submits what is queued and waits for a completion. `EINTR` (a signal during the wait)
    /// is retried: returning it would leave a send in flight that the caller thinks failed.
    /// `EBUSY`/`EAGAIN` leave the entries queued: retried (bounded) after completions are
    /// reaped or a moment passes.
    fn enter(&mut self) -> io::Result<()> {
        let mut busy = 0;
        loop {
            #[cfg(test)]
            let r = if self.interrupt_waits > 0 {
                self.interrupt_waits -= 1;
                // As a signal would: the entries went in, the wait was interrupted.
                self.ring.submit()?;
                Err(io::Error::from_raw_os_error(libc::EINTR))
            } else {
                self.ring.submit_and_wait(1)
            };
            #[cfg(not(test))]
            let r = self.ring.submit_and_wait(1);
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
                    if !self.ring.completion().is_empty() {
                        // Reaping makes room; the caller comes back.
                        return Ok(());
                    }
                    busy += 1;
                    if busy >= BUSY_RETRIES {
                        return Err(e);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for the result CQE of the one send in flight, counting notifications on the way.
    fn wait_send_result(&mut self) -> io::Result<usize> {
        loop {
            self.enter()?;
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
        } else {
            self.sends_pending = self.sends_pending.saturating_sub(1);
            if cqueue::more(cqe.flags()) {
                self.notifs_pending += 1;
            }
        }
    }
}

impl Drop for SendZcLoop {
    fn drop(&mut self) {
        // The kernel may still read `msg` and use the fd: keep both until every completion.
        if self.drain().is_err() {
            // The ring failed; leak the message and the descriptor rather than free memory
            // the kernel may read or let the fd number go to another file.
            std::mem::forget(std::mem::take(&mut self.msg));
            std::mem::forget(self.sock.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn interrupted_wait_does_not_abandon_the_send() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        // Small enough for the socket buffers: the send and its notification complete without
        // the peer reading (so the test needs no second thread, which valgrind could not run
        // while this one blocks in io_uring_enter).
        let msg = Bytes::from((0..16u32 << 10).map(|i| i as u8).collect::<Vec<u8>>());
        let mut lp = match SendZcLoop::new(&c, msg.clone()) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                eprintln!("SKIP: {e}");
                return;
            }
            r => r.unwrap(),
        };
        // A signal interrupts the wait after the send went in.
        lp.interrupt_waits = 1;
        lp.send().expect("an interrupted wait is not a failed send");
        assert_eq!(lp.sends_pending, 0);
        lp.finish().unwrap();
        let mut got = vec![0u8; msg.len()];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, &msg[..]);
    }
}
