//! Configuration of a connection: backend, zero-copy mode, thresholds, snapshot policy.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Which kernel interface sends the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// The best the kernel offers ([`probe`](fn@crate::probe)): io_uring, else `MSG_ZEROCOPY`,
    /// else copy.
    #[default]
    Auto,
    /// io_uring `SENDMSG_ZC` (falls back like `Auto` when io_uring is refused).
    Uring,
    /// `MSG_ZEROCOPY` with completions from the socket's error queue (falls back to copy).
    MsgZc,
    /// Plain vectored writes: the kernel copies (stats name `tcp`).
    Copy,
}

impl Backend {
    /// The name in the stats and on the command line: `auto`, `uring`, `msgzc`, `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Uring => "uring",
            Backend::MsgZc => "msgzc",
            Backend::Copy => "tcp",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no backend or mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{got}` (expected one of: {expected})")]
pub struct ParseError {
    what: &'static str,
    got: String,
    expected: &'static str,
}

impl FromStr for Backend {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "msgzc" | "msg_zerocopy" | "msg-zerocopy" => Ok(Backend::MsgZc),
            "tcp" | "copy" => Ok(Backend::Copy),
            _ => Err(ParseError {
                what: "backend",
                got: s.into(),
                expected: "auto, uring, msgzc, tcp",
            }),
        }
    }
}

/// How the planner chooses between zero-copy and copy for messages above the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ZcMode {
    /// Zero-copy until notifications say the kernel copied anyway (`ZC_COPIED`: loopback,
    /// veth, no scatter-gather), then copy, probing zero-copy again every
    /// [`UringConfig::reprobe_every`] sends.
    #[default]
    Adaptive,
    /// Zero-copy for every message at or above the threshold, whatever the notifications say.
    AlwaysZc,
    /// Never zero-copy.
    NeverZc,
}

impl fmt::Display for ZcMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ZcMode::Adaptive => "adaptive",
            ZcMode::AlwaysZc => "always-zc",
            ZcMode::NeverZc => "never-zc",
        })
    }
}

impl FromStr for ZcMode {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "adaptive" => Ok(ZcMode::Adaptive),
            "always-zc" | "always" => Ok(ZcMode::AlwaysZc),
            "never-zc" | "never" => Ok(ZcMode::NeverZc),
            _ => Err(ParseError {
                what: "zero-copy mode",
                got: s.into(),
                expected: "adaptive, always-zc, never-zc",
            }),
        }
    }
}

/// What keeps a zero-copy message's bytes as they were when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SnapshotPolicy {
    /// Pool buffers are `mprotect`ed read-only from submission to notification (a write in
    /// flight faults); `Bytes` are immutable by type.
    #[default]
    WriteProtect,
    /// Rely on ownership alone: a sent `ZcBuf` can no longer be written through safe code.
    Ownership,
    /// Messages holding pool buffers go by the copy path: the kernel has the bytes before
    /// `send` returns.
    AlwaysCopy,
}

/// How the uring backend receives (the other backends read on readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RecvMode {
    /// Readiness + `read` straight into zcrpc's receive buffers (large frames into buffers of
    /// their exact size).
    #[default]
    Read,
    /// One `IORING_OP_RECV` per read, into the same buffers as `Read`.
    Uring,
    /// Multishot `IORING_OP_RECV` into a provided-buffer ring of
    /// [`UringConfig::recv_ring_buffers`] buffers of [`UringConfig::recv_ring_buf_size`] bytes:
    /// one armed receive for many, frames decoded in place in the ring's buffers, a buffer back
    /// in the ring when the last slice of it is dropped. A frame larger than a ring buffer
    /// stops the multishot receive and is received straight into a buffer of its exact size
    /// (what the ring already held of it is copied there once). When every ring buffer is held
    /// by live slices, reads go to zcrpc's own buffers until some come back.
    BufferRing,
}

impl RecvMode {
    /// The name on the command line: `read`, `uring`, `ring`.
    pub fn name(self) -> &'static str {
        match self {
            RecvMode::Read => "read",
            RecvMode::Uring => "uring",
            RecvMode::BufferRing => "ring",
        }
    }
}

impl fmt::Display for RecvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RecvMode {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_lowercase().as_str() {
            "read" => Ok(RecvMode::Read),
            "uring" | "recv" => Ok(RecvMode::Uring),
            "ring" | "buffer-ring" | "buf-ring" => Ok(RecvMode::BufferRing),
            _ => Err(ParseError {
                what: "receive mode",
                got: s.into(),
                expected: "read, uring, ring",
            }),
        }
    }
}

/// Published io_uring zero-copy crossover on kernels since 6.10 (loopback cannot measure it:
/// there every zero-copy send is copied).
pub const URING_COPY_THRESHOLD: usize = 3 * 1024;
/// Published `MSG_ZEROCOPY` crossover.
pub const MSGZC_COPY_THRESHOLD: usize = 10 * 1024;

/// Default [`UringConfig::tcp_user_timeout`].
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`UringConfig::close_deadline`].
pub const DEFAULT_CLOSE_DEADLINE: Duration = Duration::from_secs(10);
/// Default [`UringConfig::max_pool_bytes_in_flight`].
pub const DEFAULT_MAX_POOL_BYTES_IN_FLIGHT: usize = 2 << 20;

/// Configuration of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringConfig {
    /// Kernel interface; the one actually used is [`UringTransport::backend`](crate::UringTransport::backend).
    pub backend: Backend,
    /// Zero-copy policy.
    pub mode: ZcMode,
    /// Messages smaller than this go by the copy path. `None`: the backend's published
    /// crossover ([`URING_COPY_THRESHOLD`], [`MSGZC_COPY_THRESHOLD`]). `Some(0)` makes every
    /// message a zero-copy candidate.
    pub copy_threshold: Option<usize>,
    /// Most iovecs per zero-copy send (`UIO_MAXIOV` = 1024 at most; lower values model a NIC's
    /// scatter-gather entries, 17 in Linux). More segments are coalesced.
    pub max_iov: usize,
    /// Once on the copy path, try zero-copy again every this many eligible sends.
    pub reprobe_every: u32,
    /// Snapshot guarantee for pool buffers.
    pub snapshot: SnapshotPolicy,
    /// `SO_SNDBUF` to set, if any.
    pub sndbuf: Option<usize>,
    /// How the uring backend receives. Every mode is one kernel copy and none in user space
    /// for frames that fit in one receive. Default `Read`, the fastest here for one call at a
    /// time (pinned 64-byte p50 against `Uring` on 2026-11-25: 23.6 against 27.9 us; against
    /// `BufferRing`, see the README's transport section).
    pub recv: RecvMode,
    /// Buffers in the receive ring (`RecvMode::BufferRing`): a power of two, at most 32768.
    pub recv_ring_buffers: u16,
    /// Bytes per receive-ring buffer: frames up to this size are decoded in place in the ring.
    /// A multiple of 64, so that every buffer starts 64-byte aligned (a frame at a buffer's
    /// start hands out aligned attachments; see `docs/wire.md`, "Padding").
    pub recv_ring_buf_size: usize,
    /// `TCP_USER_TIMEOUT` of the connection's socket (connect and accept alike): how long sent
    /// data may stay unacknowledged — zero-window probes included, since Linux 5.11 — before
    /// the kernel gives up on the peer and fails the connection (`ETIMEDOUT`). Without it a
    /// dead peer holds the connection (and the pool buffers of its zero-copy sends) for
    /// `tcp_retries2` retransmissions, about 15 minutes. Default 30 s; `None` leaves the
    /// kernel default. From 1 ms to `u32::MAX` ms.
    pub tcp_user_timeout: Option<Duration>,
    /// After both halves of the connection are dropped, how long the kernel may keep
    /// zero-copy sends (and so the pool buffers and `Bytes` they read) waiting for their
    /// notification. A peer that never reads leaves them in the send queue with no bound;
    /// past this deadline the connection is aborted (`SO_LINGER` {on, 0} and a disconnect:
    /// an RST to the peer), the kernel purges the send queue, the notifications arrive and
    /// every segment, and the descriptor, are released. Default 10 s; from 1 ms to 1 hour.
    pub close_deadline: Duration,
    /// Most bytes of pool buffers ([`ZcBuf`](crate::ZcBuf)) one connection may hold in
    /// zero-copy sends awaiting their notification; a message that would go beyond it is sent
    /// by copy, which gives its buffers back as soon as the socket has taken the bytes (one
    /// message larger than the cap still goes zero-copy when nothing else is in flight). A
    /// peer that stops reading fills the socket's send buffer (up to `tcp_wmem`'s maximum,
    /// 4 MiB by default) with zero-copy sends, each holding its pool buffers; two such peers
    /// could drain a pool of the 8 MiB a non-root `RLIMIT_MEMLOCK` allows and stall every
    /// other connection waiting in [`BufferPool::take_wait`](crate::BufferPool::take_wait).
    /// Default 2 MiB (a quarter of such a pool); 0 allows one zero-copy message of pool
    /// buffers at a time.
    pub max_pool_bytes_in_flight: usize,
    /// Whether a receiver waiting for the rest of a large frame asks the kernel to wake it
    /// only once that much is queued (`SO_RCVLOWAT`; see `RecvHalf::expect_bytes`) rather than
    /// for every segment. On loopback the sender pays for each wake-up: measured on
    /// `upload_1m`, the server woke 3 times per MiB without it, once with it. The most it waits
    /// for follows the link: 256 KiB at first, doubled after each wait that took under 10 ms
    /// (up to 1 MiB, a whole frame of that size), halved after one that took over 250 ms (down
    /// to 64 KiB); and no wait for the mark lasts over 1 s: then the receiver takes what came,
    /// so keepalive sees a slow peer's bytes within a second (with a keepalive interval plus
    /// timeout of a few seconds or less, turn the mark off). Default true; false leaves the
    /// kernel's default (any byte wakes).
    pub recv_lowat: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            backend: Backend::Auto,
            mode: ZcMode::Adaptive,
            copy_threshold: None,
            max_iov: crate::sys::UIO_MAXIOV,
            reprobe_every: 256,
            snapshot: SnapshotPolicy::WriteProtect,
            sndbuf: None,
            recv: RecvMode::Read,
            recv_ring_buffers: 64,
            recv_ring_buf_size: 16 * 1024,
            tcp_user_timeout: Some(DEFAULT_TCP_USER_TIMEOUT),
            close_deadline: DEFAULT_CLOSE_DEADLINE,
            max_pool_bytes_in_flight: DEFAULT_MAX_POOL_BYTES_IN_FLIGHT,
            recv_lowat: true,
        }
    }
}

impl UringConfig {
    /// Checks the values the kernel would refuse (receive-ring sizes, `tcp_user_timeout`) and
    /// the bounds of the close deadline, so that a bad configuration fails where it is set up
    /// (`connect`, `from_tcp`, `UringAcceptor::bind`) with an error naming the field.
    /// `max_pool_bytes_in_flight` takes any value (0: one zero-copy message of pool buffers at
    /// a time).
    pub fn validate(&self) -> std::io::Result<()> {
        if let Some(t) = self.tcp_user_timeout {
            if t < Duration::from_millis(1) || t.as_millis() > u32::MAX as u128 {
                return Err(invalid(format!("tcp_user_timeout must be from 1 ms to {} ms, or None for the kernel default (got {t:?})", u32::MAX)));
            }
        }
        let d = self.close_deadline;
        if d < Duration::from_millis(1) || d > Duration::from_secs(3600) {
            return Err(invalid(format!("close_deadline must be from 1 ms to 1 hour (got {d:?})")));
        }
        if self.recv == RecvMode::BufferRing {
            let n = self.recv_ring_buffers;
            if !n.is_power_of_two() || n > 32768 {
                return Err(invalid(format!("recv_ring_buffers must be a power of two from 1 to 32768 (got {n})")));
            }
            let size = self.recv_ring_buf_size;
            if !(64..=1 << 30).contains(&size) || size % 64 != 0 {
                return Err(invalid(format!(
                    "recv_ring_buf_size must be a multiple of 64 bytes from 64 bytes to 1 GiB (got {size})"
                )));
            }
        }
        Ok(())
    }

    /// The copy threshold in force for `backend`.
    pub fn threshold_for(&self, backend: Backend) -> usize {
        self.copy_threshold.unwrap_or(match backend {
            Backend::MsgZc => MSGZC_COPY_THRESHOLD,
            _ => URING_COPY_THRESHOLD,
        })
    }
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        assert_eq!("uring".parse::<Backend>().unwrap(), Backend::Uring);
        assert_eq!("msgzc".parse::<Backend>().unwrap(), Backend::MsgZc);
        assert_eq!("tcp".parse::<Backend>().unwrap(), Backend::Copy);
        assert_eq!("auto".parse::<Backend>().unwrap(), Backend::Auto);
        assert!("x"
            .parse::<Backend>()
            .unwrap_err()
            .to_string()
            .contains("uring, msgzc, tcp"));
        assert_eq!("always-zc".parse::<ZcMode>().unwrap(), ZcMode::AlwaysZc);
        assert_eq!("never-zc".parse::<ZcMode>().unwrap(), ZcMode::NeverZc);
        assert_eq!("adaptive".parse::<ZcMode>().unwrap(), ZcMode::Adaptive);
        for m in [ZcMode::Adaptive, ZcMode::AlwaysZc, ZcMode::NeverZc] {
            assert_eq!(m.to_string().parse::<ZcMode>().unwrap(), m);
        }
        for m in [RecvMode::Read, RecvMode::Uring, RecvMode::BufferRing] {
            assert_eq!(m.to_string().parse::<RecvMode>().unwrap(), m);
        }
        assert!("x".parse::<RecvMode>().unwrap_err().to_string().contains("read, uring, ring"));
    }

    #[test]
    fn ring_sizes_the_kernel_refuses_are_named() {
        let ring = |buffers, size| UringConfig { recv: RecvMode::BufferRing, recv_ring_buffers: buffers, recv_ring_buf_size: size, ..Default::default() };
        assert!(UringConfig::default().validate().is_ok());
        assert!(ring(64, 16 << 10).validate().is_ok());
        let e = ring(48, 16 << 10).validate().unwrap_err();
        assert!(e.to_string().contains("recv_ring_buffers") && e.to_string().contains("48"), "{e}");
        let e = ring(0, 16 << 10).validate().unwrap_err();
        assert!(e.to_string().contains("recv_ring_buffers"), "{e}");
        let e = ring(64, 0).validate().unwrap_err();
        assert!(e.to_string().contains("recv_ring_buf_size"), "{e}");
        let e = ring(64, 1000).validate().unwrap_err();
        assert!(e.to_string().contains("recv_ring_buf_size") && e.to_string().contains("multiple of 64"), "{e}");
        let e = UringConfig { tcp_user_timeout: Some(Duration::ZERO), ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("tcp_user_timeout"), "{e}");
        let e = UringConfig { tcp_user_timeout: Some(Duration::from_secs(50 << 20)), ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("tcp_user_timeout"), "{e}");
        assert!(UringConfig { tcp_user_timeout: None, ..Default::default() }.validate().is_ok());
        let e = UringConfig { close_deadline: Duration::ZERO, ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("close_deadline"), "{e}");
        let e = UringConfig { close_deadline: Duration::from_secs(7200), ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("close_deadline"), "{e}");
        // Only checked when the ring is used.
        assert!(UringConfig { recv_ring_buffers: 3, ..Default::default() }.validate().is_ok());
    }
}
