//! A tokio socket shared by a transport's halves and the driver's direct path: the reader waits
//! to read while the writer writes, and a caller's task may write a small frame without waiting
//! ([`DirectWrite`]) while the writer is idle. tokio lets one task wait for readability while
//! another waits for writability on the same socket; everything here borrows it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::DirectWrite;

/// What the shared halves need of a tokio stream socket (TCP, Unix).
pub trait Socket: std::fmt::Debug + Send + Sync + 'static {
    /// Waits for room to write (tokio's `poll_write_ready`).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes without waiting (tokio's `try_write_vectored`).
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Waits for something to read (tokio's `poll_read_ready`).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads without waiting (tokio's `try_read_buf`).
    fn try_read_buf(&self, buf: &mut ReadBuf<'_>) -> io::Result<usize>;
    /// Shuts down the write direction (the peer reads the end).
    fn shutdown_write(&self) -> io::Result<()>;
}

macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }

            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$t>::try_write_vectored(self, bufs)
            }

            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }

            fn try_read_buf(&self, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
                // Into the unfilled part as it is (a `BufMut`): no zeroing of the spare room.
                <$t>::try_read_buf(self, buf)
            }

            fn shutdown_write(&self) -> io::Result<()> {
                socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write)
            }
        }
    };
}

socket!(tokio::net::TcpStream);
#[cfg(unix)]
socket!(tokio::net::UnixStream);

/// The writing side of a socket transport: its writes, and the write direction shut down when
/// it is dropped (as tokio's own write halves do), so the peer sees the end even while the
/// driver's direct path still holds the socket for a moment.
#[derive(Debug)]
pub struct SocketWrite<S: Socket>(pub(crate) Arc<S>);

impl<S: Socket> AsyncWrite for SocketWrite<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown_write())
    }
}

impl<S: Socket> Drop for SocketWrite<S> {
    fn drop(&mut self) {
        // Already shut down, or the peer gone: nothing to report.
        let _ = self.0.shutdown_write();
    }
}

/// The reading side of a socket transport, as an `AsyncRead`.
#[derive(Debug)]
pub struct SocketRead<S: Socket>(pub(crate) Arc<S>);

impl<S: Socket> AsyncRead for SocketRead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r.map(|_| ())),
            }
        }
    }
}

/// The driver's direct path on a socket: a non-blocking `writev`.
#[derive(Debug)]
pub(crate) struct SocketDirect<S: Socket>(pub(crate) Arc<S>);

impl<S: Socket> DirectWrite for SocketDirect<S> {
    fn try_write(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(slices)
    }
}
