//! # transport-uring: the Linux zero-copy transport of zcrpc
//!
//! Large payloads leave the process without a copy: io_uring `SENDMSG_ZC` (or `MSG_ZEROCOPY`
//! where io_uring is refused), segments kept alive — and pool buffers write-protected — until
//! the kernel's notification. Small messages, local peers (loopback copies anyway: the
//! notifications say `ZC_COPIED`) and payloads in too many pieces go by a copy path the engine
//! picks by itself; every choice is counted in [`rpc_core::TransportStats`].
//!
//! ```no_run
//! use rpc_core::transport::{SendHalf, Transport};
//! use rpc_core::Transmit;
//! use transport_uring::{BufferPool, UringConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = transport_uring::connect("127.0.0.1:7000", UringConfig::default()).await?;
//! println!("backend: {}", transport.backend());
//! let stats = transport.stats();
//! let (_recv, mut send) = transport.split();
//! let pool = BufferPool::new(16 << 20, 1 << 20)?;
//! let mut buf = pool.take_wait().await;
//! buf.fill_from(&[7u8; 1 << 20]);
//! let t = Transmit { head: bytes::Bytes::from_static(b"hdr"), segments: vec![buf.into_segment()] };
//! send.send(&mut vec![t]).await?;
//! println!("{:?}", stats.snapshot());
//! # Ok(()) }
//! ```
//!
//! TLS 1.3 ([`tls`]): rustls's handshake, then records sealed straight into pool buffers and
//! opened in the frame's receive buffer, one pass over the data on each side.
//!
//! Layout: `sys/` (the io_uring driver and socket calls) and `buf/` (the pinned pool and
//! `mprotect`) hold all the unsafe code; `engine/` plans and submits sends; `transport.rs`
//! implements `rpc_core`'s `Transport`.
//!
//! Decisions worth knowing:
//!
//! - **One ring per connection**, its completions reaped by a tokio task through `AsyncFd` on
//!   the ring fd: no runtime-global state, so it works in any runtime (multi-threaded tokio,
//!   `tokio_uring::start`) and many runtimes per process (tests). Every operation parks its
//!   memory in the ring's slab until its final CQE; dropped futures only mark the slot.
//! - **Pool registration**: each [`BufferPool`] registers its pages once, on a small ring of its
//!   own; a connection ring clones that table (`IORING_REGISTER_CLONE_BUFFERS`, 6.12) the first
//!   time it sends from the pool. Cloning shares the pins and works while pages are read-only.
//!   A message is sent as runs: pool buffers of one registration go in one `SENDMSG_ZC` with
//!   its `buf_index` (vectored fixed, 6.15), together with the frame head, which is copied
//!   into a head arena at the start of the registration; other pieces (`Bytes` segments, a
//!   head too large for an arena slot) go in runs of their own, with `MSG_MORE` between runs.
//! - **File regions** (`rpc_core::FileRegion`): a frame that carries them goes as runs (the
//!   planner's `file_runs`): memory by `writev`, each region by io_uring `SPLICE` from the file
//!   into a per-connection pipe (1 MiB, `F_SETPIPE_SZ`) and from the pipe to the socket, in
//!   the kernel's io-wq workers, never through user space (`sendfile` on the `MSG_ZEROCOPY` and
//!   copy backends). A full socket answers the splice with `EAGAIN`; the engine then waits
//!   with an io_uring `POLL_ADD` for `POLLOUT`.
//! - **Receive** ([`RecvMode`]): readiness + `read` (default), single-shot `IORING_OP_RECV`,
//!   or a multishot receive into a provided-buffer ring whose buffers are handed to the driver
//!   as chunks, frames decoded in place, each buffer back in the ring when its last slice is
//!   dropped. Frames larger than a ring buffer go straight into a buffer of their exact size.
//!   A receive whose future is dropped stays in the kernel; the next call takes its bytes, so
//!   nothing is lost.
//! - **`MSG_ZEROCOPY` sockets and tokio**: mio reads `EPOLLOUT|EPOLLERR` (any wake-up while a
//!   completion waits in the error queue) as "write closed", which tokio never clears; from
//!   then on `writable()` never waits. The backend therefore waits for room through a private
//!   epoll and reads the error queue through a duplicate descriptor.

#![cfg(target_os = "linux")]
#![warn(missing_docs)]

mod buf;
mod config;
mod engine;
mod probe;
mod lowat;
mod recv;
mod sys;
pub mod tls;
mod transport;

pub use buf::{BufferPool, PoolError, ZcBuf};
pub use config::{
    Backend, ParseError, RecvMode, SnapshotPolicy, UringConfig, ZcMode, DEFAULT_CLOSE_DEADLINE,
    DEFAULT_MAX_POOL_BYTES_IN_FLIGHT, DEFAULT_TCP_USER_TIMEOUT, MSGZC_COPY_THRESHOLD,
    URING_COPY_THRESHOLD,
};
pub use engine::{plan, UringSend};
pub use probe::{probe, Probe, DISABLE_URING_ENV};
pub use sys::affinity::pin_current_thread;
pub use recv::UringRecv;
pub use transport::{connect, from_tcp, UringAcceptor, UringTransport};

/// Baselines for benchmarks: what the engine is measured against.
pub mod baseline {
    pub use crate::sys::send_zc_loop::SendZcLoop;
}
