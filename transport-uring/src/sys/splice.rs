//! What moving file pages to a socket in the kernel needs: the pipe that io_uring `SPLICE`
//! goes through (file → pipe → socket; `splice(2)` needs a pipe on one side), and `sendfile(2)`
//! for the backends without a ring.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The pipe one connection's splices go through. Each end is shared by `Arc` so that an
/// operation in the kernel keeps it open (see [`super::ring::FdOwner`]).
#[derive(Debug)]
pub(crate) struct Pipe {
    pub read: Arc<OwnedFd>,
    pub write: Arc<OwnedFd>,
    /// What the pipe holds at most: the largest splice from the file.
    pub capacity: usize,
}

impl Pipe {
    /// A pipe of about `want` bytes (`F_SETPIPE_SZ`; an unprivileged process gets at most
    /// `/proc/sys/fs/pipe-max-size`, 1 MiB by default, and keeps the 64 KiB default if even
    /// that is refused, for example past `pipe-user-pages-soft`).
    pub(crate) fn new(want: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array, which is live and two long.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut capacity = set_pipe_size(write.as_raw_fd(), want);
        if capacity.is_err() {
            capacity = set_pipe_size(write.as_raw_fd(), 1 << 20);
        }
        let capacity = match capacity {
            Ok(c) => c,
            Err(_) => get_pipe_size(write.as_raw_fd())?,
        };
        Ok(Pipe { read: Arc::new(read), write: Arc::new(write), capacity })
    }
}

fn set_pipe_size(fd: RawFd, want: usize) -> io::Result<usize> {
    let want = want.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours.
    let r = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn get_pipe_size(fd: RawFd) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ takes no argument and touches no memory of ours.
    let r = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One `sendfile(2)` of up to `len` bytes of `file` at `*offset` to the socket `sock`
/// (non-blocking as the socket is: `WouldBlock` when its buffer is full), advancing `*offset`.
/// `Ok(0)` means the file ended at `*offset`.
pub(crate) fn sendfile(sock: RawFd, file: &File, offset: &mut u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset past off_t"))?;
    // Linux moves at most 0x7ffff000 bytes per call.
    let len = len.min(0x7fff_f000);
    // SAFETY: sendfile reads and writes one off_t through the pointer, which points to a live
    // local; the descriptors are borrowed for the call (a closed one is EBADF).
    let r = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_is_at_least_the_default_size() {
        let p = Pipe::new(1 << 20).unwrap();
        assert!(p.capacity >= 64 << 10, "{}", p.capacity);
    }
}
