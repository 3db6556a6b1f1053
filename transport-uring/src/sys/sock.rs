//! Socket calls of the `MSG_ZEROCOPY` backend (`Documentation/networking/msg_zerocopy.rst`):
//! opting in with `SO_ZEROCOPY`, and reading completions from the error queue.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use socket2::SockRef;

use super::{SO_EE_CODE_ZEROCOPY_COPIED, SO_EE_ORIGIN_ZEROCOPY, SO_ZEROCOPY};

/// `setsockopt(SO_ZEROCOPY, 1)`: without it the kernel ignores `MSG_ZEROCOPY`.
pub(crate) fn set_zerocopy(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `optlen` bytes at `optval`, which points to a live c_int; a bad
    // fd is reported as EBADF, not undefined behaviour.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ZEROCOPY,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt(SO_RCVLOWAT, bytes)`: readiness (and the wake-up of a reader) only once this
/// many bytes are queued, or the peer closed or failed. TCP caps it at half of `tcp_rmem`'s
/// maximum and grows the receive buffer to fit it.
pub(crate) fn set_rcvlowat(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `optlen` bytes at `optval`, which points to a live c_int; a bad
    // fd is reported as EBADF, not undefined behaviour.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One non-blocking `sendmsg` of `slices` with `flags` (`MSG_ZEROCOPY`, `MSG_MORE`, ...).
pub(crate) fn sendmsg(
    sock: SockRef<'_>,
    slices: &[IoSlice<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    sock.send_vectored_with_flags(slices, flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
}

/// A zero-copy completion: sends numbered `lo..=hi` (inclusive, wrapping) are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZcRange {
    pub lo: u32,
    pub hi: u32,
    /// `SO_EE_CODE_ZEROCOPY_COPIED`: the kernel copied after all.
    pub copied: bool,
}

/// What one error-queue read found.
#[derive(Debug)]
pub(crate) enum ErrQueue {
    Zerocopy(ZcRange),
    /// A message of another origin (a real socket error); its errno.
    Other(i32),
}

/// Reads one message from the error queue (`MSG_ERRQUEUE`, never blocks): `Ok(None)` when the
/// message carried no extended error; `Err(WouldBlock)` when the queue is empty.
pub(crate) fn recv_errqueue(fd: RawFd) -> io::Result<Option<ErrQueue>> {
    // Room for a couple of cmsghdr + sock_extended_err (+ the offender address).
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg writes at most msg_controllen bytes into `control`, which lives on this
    // stack frame for the whole call; MSG_ERRQUEUE never blocks and reads no payload iovecs.
    let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = msg.msg_controllen.min(std::mem::size_of_val(&control));
    // SAFETY: `control` is a live, initialised u64 array; viewing its first `len` (≤ its size)
    // bytes as u8 is always valid.
    let bytes = unsafe { std::slice::from_raw_parts(control.as_ptr() as *const u8, len) };
    Ok(parse_cmsgs(bytes))
}

/// Parses `struct cmsghdr` entries for an `IP_RECVERR`/`IPV6_RECVERR` carrying a
/// `sock_extended_err` (plain byte parsing, no pointer casts).
pub(crate) fn parse_cmsgs(mut b: &[u8]) -> Option<ErrQueue> {
    const HDR: usize = std::mem::size_of::<usize>() + 8; // cmsg_len, cmsg_level, cmsg_type
    const ALIGN: usize = std::mem::size_of::<usize>();
    while b.len() >= HDR {
        let cmsg_len = usize::from_ne_bytes(b[..ALIGN].try_into().ok()?);
        let level = i32::from_ne_bytes(b[ALIGN..ALIGN + 4].try_into().ok()?);
        let ty = i32::from_ne_bytes(b[ALIGN + 4..ALIGN + 8].try_into().ok()?);
        if cmsg_len < HDR || cmsg_len > b.len() {
            return None;
        }
        let data = &b[HDR..cmsg_len];
        let is_recverr = (level == libc::SOL_IP && ty == libc::IP_RECVERR)
            || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR);
        if is_recverr && data.len() >= 16 {
            // struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad;
            //                            u32 ee_info; u32 ee_data; }
            let errno = u32::from_ne_bytes(data[0..4].try_into().ok()?);
            let origin = data[4];
            let code = data[6];
            let info = u32::from_ne_bytes(data[8..12].try_into().ok()?);
            let edata = u32::from_ne_bytes(data[12..16].try_into().ok()?);
            if origin == SO_EE_ORIGIN_ZEROCOPY && errno == 0 {
                return Some(ErrQueue::Zerocopy(ZcRange {
                    lo: info,
                    hi: edata,
                    copied: code & SO_EE_CODE_ZEROCOPY_COPIED != 0,
                }));
            }
            return Some(ErrQueue::Other(errno as i32));
        }
        let step = cmsg_len.div_ceil(ALIGN) * ALIGN;
        if step >= b.len() {
            break;
        }
        b = &b[step..];
    }
    None
}

/// A duplicate of a socket's descriptor registered with tokio for `EPOLLERR` only, so that
/// waiting for zero-copy completions never shares readiness state with the stream's reads and
/// writes.
pub(crate) struct ErrQueueFd {
    afd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl ErrQueueFd {
    pub(crate) fn new(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<ErrQueueFd> {
        let owned = fd.try_clone_to_owned()?;
        // SAFETY: AsyncFd requires the fd to stay open and unchanged while registered: the
        // AsyncFd owns this OwnedFd, which is closed only when the AsyncFd is dropped.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::ERROR)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(ErrQueueFd { afd })
    }

    /// Waits for `EPOLLERR`, then reads every queued message with `f` until the queue is empty.
    pub(crate) async fn drain(&self, mut f: impl FnMut(ErrQueue)) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut guard = self.afd.ready(tokio::io::Interest::ERROR).await?;
        let fd = self.afd.get_ref().as_raw_fd();
        loop {
            match recv_errqueue(fd) {
                Ok(Some(m)) => f(m),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Write readiness of a `SO_ZEROCOPY` socket, from a private epoll instance.
///
/// tokio's own readiness cannot serve here: mio reads `EPOLLOUT|EPOLLERR` (any wake-up while a
/// completion waits in the error queue) as "write closed", a state tokio never clears, after
/// which `writable()` returns at once forever while `sendmsg` says `EAGAIN`. This waiter
/// registers the socket edge-triggered for `EPOLLOUT` in an epoll of its own (itself watched by
/// tokio) and returns only on an event that really carries `EPOLLOUT`.
pub(crate) struct WriteWaiter {
    epfd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl WriteWaiter {
    pub(crate) fn new(sock: RawFd) -> io::Result<WriteWaiter> {
        use std::os::fd::FromRawFd;
        // SAFETY: epoll_create1 has no memory preconditions; it returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLOUT | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: epoll_ctl reads one epoll_event from the live `ev`; bad fds give EBADF.
        if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, sock, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the OwnedFd, so the epoll fd stays open and unchanged for
        // as long as it is registered.
        let epfd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(WriteWaiter { epfd })
    }

    /// Waits for an `EPOLLOUT` edge on the socket (one may already be queued: then at once).
    pub(crate) async fn wait(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.epfd.get_ref().as_raw_fd();
        loop {
            let mut guard = self.epfd.readable().await?;
            loop {
                let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
                // SAFETY: epoll_wait writes at most 4 events into the live array; timeout 0
                // never blocks.
                let n = unsafe { libc::epoll_wait(fd, evs.as_mut_ptr(), evs.len() as i32, 0) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                if n == 0 {
                    guard.clear_ready();
                    break;
                }
                let writable = evs[..n as usize].iter().any(|e| {
                    let bits = e.events;
                    bits & (libc::EPOLLOUT | libc::EPOLLHUP) as u32 != 0
                });
                if writable {
                    return Ok(());
                }
            }
        }
    }
}

/// Aborts a TCP connection in place: `SO_LINGER` {on, 0} and `connect(AF_UNSPEC)`, which runs
/// the kernel's `tcp_disconnect` — an RST to the peer (from any synchronized state) and a
/// purge of the send queue. Purging frees the queued zero-copy skbs, which releases their
/// pinned pages and queues their notifications; unlike `close`, the descriptor stays open, so
/// those notifications can still be read (the error queue is not purged) before the caller
/// closes it.
pub(crate) fn abort(sock: SockRef<'_>, fd: RawFd) -> io::Result<()> {
    // With linger {on, 0} the final close, too, resets rather than lingers.
    sock.set_linger(Some(std::time::Duration::ZERO))?;
    // SAFETY: an all-zero sockaddr is valid, and AF_UNSPEC is 0.
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: connect reads `addrlen` bytes from the live `addr`; for AF_UNSPEC the kernel
    // only looks at the family (inet_stream_connect → tcp_disconnect). A bad fd is EBADF.
    let r = unsafe {
        libc::connect(
            fd,
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
