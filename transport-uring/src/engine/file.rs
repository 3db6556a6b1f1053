//! The file path: a frame that carries file regions goes out as runs ([`plan::file_runs`]):
//! its memory by `writev`, each region from the page cache to the socket in the kernel —
//! io_uring `SPLICE` file → pipe → socket on the io_uring backend, `sendfile` on the others —
//! never through user space. Counted in `sends_file` and `bytes_file`.

use std::io::{self, IoSlice};

use rpc_core::{FileRegion, Transmit, TransportStats};
use tokio::io::Interest;

use super::plan::{self, Run};
use super::{write_all_vectored, Room, Submitter, UringSend};
use crate::sys::ring::{FdOwner, RingHandle};
use crate::sys::splice::{self, Pipe};

/// The pipe a connection's splices go through: 1 MiB (`pipe-max-size` by default) takes a
/// large region in few round trips.
const PIPE_SIZE: usize = 1 << 20;

impl UringSend {
    /// Sends one frame with file regions, in order.
    pub(crate) async fn send_file_frame(&mut self, t: Transmit) -> io::Result<()> {
        TransportStats::add(&self.shared.stats.sends_file, 1);
        TransportStats::add(&self.shared.stats.bytes_file, t.len() as u64);
        if matches!(self.submitter, Submitter::Uring(_)) && self.pipe.is_none() {
            self.pipe = Some(Pipe::new(PIPE_SIZE)?);
        }
        // Piece 0 is the head, piece i the segment i - 1.
        let is_file: Vec<bool> =
            std::iter::once(false).chain(t.segments.iter().map(|s| s.file().is_some())).collect();
        for run in plan::file_runs(&is_file) {
            match run {
                Run::Memory(r) => {
                    let mut slices: Vec<IoSlice<'_>> = r
                        .map(|i| match i {
                            0 => &t.head[..],
                            i => t.segments[i - 1].memory().unwrap_or_default(),
                        })
                        .filter(|s| !s.is_empty())
                        .map(IoSlice::new)
                        .collect();
                    write_all_vectored(&self.stream, self.room(), &self.shared.stats, &mut slices)
                        .await?;
                }
                Run::File(i) => {
                    let Some(region) = t.segments[i - 1].file() else {
                        continue;
                    };
                    match (&self.submitter, &self.pipe) {
                        (Submitter::Uring(ring), Some(pipe)) => {
                            self.splice_region(ring, pipe, region).await?
                        }
                        _ => self.sendfile_region(region).await?,
                    }
                }
            }
        }
        Ok(())
    }

    /// io_uring `SPLICE`: up to a pipe's worth from the file into the pipe, then from the
    /// pipe to the socket until it is empty, again until the region is sent. The file, the
    /// pipe's ends and the socket stay open in the ring until each operation's completion,
    /// whatever happens to this future (a cancelled send leaves the connection unusable,
    /// see [`UringSend::send`](rpc_core::transport::SendHalf::send)).
    async fn splice_region(
        &self,
        ring: &RingHandle,
        pipe: &Pipe,
        region: &FileRegion,
    ) -> io::Result<()> {
        let file: FdOwner = region.file().clone();
        let sock: FdOwner = self.stream.clone();
        let mut at = 0usize;
        while at < region.len() {
            let want = (region.len() - at).min(pipe.capacity).min(u32::MAX as usize) as u32;
            let offset = i64::try_from(region.offset() + at as u64).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "file offset past i64")
            })?;
            let c = ring
                .ring()
                .splice(file.clone(), offset, pipe.write.clone(), want)?
                .await;
            let n = match c.res {
                0 => return Err(region.shrank(at)),
                r if r > 0 => r as usize,
                r if -r == libc::EINTR || -r == libc::EAGAIN => continue,
                r => return Err(io::Error::from_raw_os_error(-r)),
            };
            let mut left = n;
            while left > 0 {
                let c = ring
                    .ring()
                    .splice(pipe.read.clone(), -1, sock.clone(), left as u32)?
                    .await;
                match c.res {
                    r if r > 0 => {
                        left -= r as usize;
                        // The write-stall timeout watches this move.
                        TransportStats::add(&self.shared.stats.sent_bytes, r as u64);
                    }
                    0 => {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "socket accepted no bytes",
                        ))
                    }
                    // The socket is non-blocking (tokio's): wait for room through the ring.
                    r if -r == libc::EAGAIN => {
                        let p = ring.ring().poll_writable(sock.clone())?.await;
                        if p.res < 0 {
                            return Err(io::Error::from_raw_os_error(-p.res));
                        }
                    }
                    r if -r == libc::EINTR => {}
                    r => return Err(io::Error::from_raw_os_error(-r)),
                }
            }
            at += n;
        }
        Ok(())
    }

    /// `sendfile` from the file to the socket, waiting for room as the backend does.
    async fn sendfile_region(&self, region: &FileRegion) -> io::Result<()> {
        let fd = super::raw_fd(&self.stream);
        let room = self.room();
        let mut offset = region.offset();
        let end = region.offset() + region.len() as u64;
        while offset < end {
            let want = (end - offset) as usize;
            let mut call = || splice::sendfile(fd, region.file(), &mut offset, want);
            let r = match room {
                // try_io clears tokio's readiness on WouldBlock, so the wait below waits.
                Room::Tokio => self.stream.try_io(Interest::WRITABLE, call),
                Room::Epoll(_) => call(),
            };
            match r {
                Ok(0) => return Err(region.shrank((offset - region.offset()) as usize)),
                Ok(n) => TransportStats::add(&self.shared.stats.sent_bytes, n as u64),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => room.wait(&self.stream).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
