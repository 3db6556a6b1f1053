//! The fence around system calls: the io_uring driver ([`ring`]), the socket calls of the
//! `MSG_ZEROCOPY` backend ([`sock`]) and the pipe and `sendfile` of file regions
//! ([`splice`]). Everything outside `sys/` and `buf/` is safe code.
//!
//! Constants that the `libc` and `io-uring` crates lack are defined here once, under their
//! kernel header names.

pub(crate) mod affinity;
pub(crate) mod buf_ring;
pub(crate) mod ring;
pub(crate) mod send_zc_loop;
pub(crate) mod sock;
pub(crate) mod splice;
pub(crate) mod valgrind;

/// `include/uapi/linux/io_uring.h`: ask a zero-copy send's notification to report whether the
/// kernel copied after all (since 6.2).
pub(crate) const IORING_SEND_ZC_REPORT_USAGE: u16 = 8;
/// `include/uapi/linux/io_uring.h`: set in a notification's `res` when the data was copied.
pub(crate) const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
/// `include/uapi/linux/errqueue.h`: an error-queue message that reports zero-copy completion.
pub(crate) const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `include/uapi/linux/errqueue.h`: `ee_code` bit saying the kernel copied the range.
pub(crate) const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
/// `include/uapi/asm-generic/socket.h`: opt a socket in to `MSG_ZEROCOPY`.
pub(crate) const SO_ZEROCOPY: libc::c_int = 60;
/// `include/linux/uio.h`: the most iovecs one `sendmsg` takes.
pub(crate) const UIO_MAXIOV: usize = 1024;
