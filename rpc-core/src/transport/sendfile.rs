//! Sending file regions from the page cache: `sendfile(2)` on TCP and Unix-domain sockets
//! (through rustix's safe wrapper), and the read-and-copy fallback for writers that are not a
//! socket (the in-memory pair, TLS, which has to encrypt the bytes anyway).

use std::io;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::TransportStats;
use crate::FileRegion;

/// A socket `sendfile` can write to, borrowed from a writer half.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FileSocket<'a> {
    /// A TCP socket.
    Tcp(&'a tokio::net::TcpStream),
    /// A Unix-domain stream socket.
    #[cfg(unix)]
    Unix(&'a tokio::net::UnixStream),
}

/// The most bytes one `sendfile` call moves (Linux caps a call at 0x7ffff000).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MAX_SENDFILE: usize = 0x7fff_f000;

/// Whether this platform sends file regions with `sendfile` (elsewhere they are read).
pub(crate) const HAS_SENDFILE: bool = cfg!(any(target_os = "linux", target_os = "android"));

impl FileSocket<'_> {
    /// Sends all of `region` with `sendfile`, waiting for room in the socket buffer as needed,
    /// counting each call's bytes in `sent_bytes` (the write-stall timeout watches it). A file
    /// that ends before the region does is [`FileRegion::shrank`]'s error: the frame cannot be
    /// completed, and the connection must end rather than send a short one.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) async fn send_region(self, region: &FileRegion, stats: &TransportStats) -> io::Result<()> {
        use tokio::io::Interest;
        let mut offset = region.offset();
        let end = region.offset() + region.len() as u64;
        while offset < end {
            let want = ((end - offset) as usize).min(MAX_SENDFILE);
            let call = || -> io::Result<usize> {
                let r = match self {
                    FileSocket::Tcp(s) => rustix::fs::sendfile(s, &**region.file(), Some(&mut offset), want),
                    FileSocket::Unix(s) => rustix::fs::sendfile(s, &**region.file(), Some(&mut offset), want),
                };
                r.map_err(io::Error::from)
            };
            // try_io clears tokio's write readiness when the call says WouldBlock, so the wait
            // below waits for the reactor instead of spinning.
            let r = match self {
                FileSocket::Tcp(s) => s.try_io(Interest::WRITABLE, call),
                FileSocket::Unix(s) => s.try_io(Interest::WRITABLE, call),
            };
            match r {
                Ok(0) => return Err(region.shrank((offset - region.offset()) as usize)),
                Ok(n) => TransportStats::add(&stats.sent_bytes, n as u64),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match self {
                    FileSocket::Tcp(s) => s.writable().await?,
                    FileSocket::Unix(s) => s.writable().await?,
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(crate) async fn send_region(self, region: &FileRegion, stats: &TransportStats) -> io::Result<()> {
        let _ = (region, stats);
        Err(io::Error::new(io::ErrorKind::Unsupported, "sendfile is not available on this platform"))
    }
}

/// Bytes read from a file region per step of the copy fallback.
const READ_CHUNK: usize = 256 << 10;

/// Sends `region` through `writer` by reading it, a chunk at a time (bounded memory), on
/// tokio's blocking pool (a read may wait for the disk). Counts the bytes in `file_read_bytes`
/// and, as the writer takes them, `sent_bytes`.
pub(crate) async fn copy_region<W: AsyncWrite + Unpin>(
    writer: &mut W,
    region: &FileRegion,
    stats: &TransportStats,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK.min(region.len())];
    let mut at = 0;
    while at < region.len() {
        let (n, back) = region.read_at_blocking(at, buf).await?;
        buf = back;
        TransportStats::add(&stats.file_read_bytes, n as u64);
        writer.write_all(&buf[..n]).await?;
        TransportStats::add(&stats.sent_bytes, n as u64);
        at += n;
    }
    Ok(())
}
