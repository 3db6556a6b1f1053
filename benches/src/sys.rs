//! The system calls the raw ceilings need and std does not wrap: epoll, socket buffer sizes
//! and the receive low-water mark, a memfd, sendfile. Each is one small function around one call; nothing else in the crate
//! may use `unsafe` (`#![deny(unsafe_code)]` in `lib.rs`).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An epoll instance watching one socket, edge-triggered for both directions.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates the instance and registers `sock` for `EPOLLIN | EPOLLOUT | EPOLLET`.
    pub fn watch(sock: &impl AsRawFd) -> io::Result<Epoll> {
        // SAFETY: epoll_create1(2) takes only flags; a non-negative result is a new fd we own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
            u64: 0,
        };
        // SAFETY: epoll_ctl(2) with a valid epoll fd, a valid socket fd, and a pointer to an
        // initialised event that lives across the call.
        cvt(unsafe {
            libc::epoll_ctl(
                fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                sock.as_raw_fd(),
                &mut ev,
            )
        })?;
        Ok(Epoll { fd })
    }

    /// Blocks until the socket has an event (any: the caller retries both directions).
    pub fn wait(&self) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: epoll_wait(2) writes at most `maxevents` (1) events into `ev`, which is
            // valid for one event for the duration of the call.
            let ret = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), &mut ev, 1, -1) };
            match cvt(ret) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sets an integer socket option.
fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket option too large"))?;
    // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from a pointer to a live c_int.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `SO_SNDBUF` (`FORCE`: past `wmem_max`, needs `CAP_NET_ADMIN`, falls back to the plain one).
/// The kernel doubles the value for its bookkeeping and stops autotuning this socket.
pub fn set_sndbuf(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes)
        .or_else(|_| set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes))
}

/// `SO_RCVBUF`, as [`set_sndbuf`].
pub fn set_rcvbuf(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let fd = sock.as_raw_fd();
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
        .or_else(|_| set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes))
}

/// `SO_RCVLOWAT`: the socket reports readable (epoll, a blocking read) and wakes its reader
/// only once `bytes` are queued. TCP also grows an autotuned receive buffer to hold that much.
pub fn set_rcvlowat(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    set_int_opt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes)
}

/// An anonymous in-memory file (memfd_create(2)) holding `data`.
pub fn memfd_with(data: &[u8]) -> io::Result<File> {
    // SAFETY: memfd_create(2) reads a NUL-terminated name (a static C string literal) and
    // returns a new fd on success.
    let fd = cvt(unsafe { libc::memfd_create(c"zcrpc-bench-stream".as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    std::io::Write::write_all(&mut &file, data)?;
    Ok(file)
}

/// sendfile(2) of up to `len` bytes of `file` from `offset` to `sock`; returns the bytes sent.
pub fn sendfile(sock: &impl AsRawFd, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    // SAFETY: sendfile(2) with two valid fds; `off` is a live off_t it reads and updates.
    let ret = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}
