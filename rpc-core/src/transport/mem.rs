//! An in-memory transport pair, for tests and docs: no sockets, same code paths above.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use rpc_core::transport::{mem, Transport};
//! let (a, b) = mem::pair();
//! assert_eq!(a.stats().name(), "mem");
//! # drop(b);
//! # });
//! ```

use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

use super::StreamTransport;

/// One end of an in-memory pair.
pub type MemTransport = StreamTransport<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

/// Bytes buffered in each direction before a writer waits, like a socket buffer.
pub const PIPE_CAPACITY: usize = 1 << 20;

/// Two connected ends.
pub fn pair() -> (MemTransport, MemTransport) {
    pair_with_capacity(PIPE_CAPACITY)
}

/// Two connected ends with `capacity` bytes buffered per direction (small values model a slow
/// reader).
pub fn pair_with_capacity(capacity: usize) -> (MemTransport, MemTransport) {
    let (a, b) = tokio::io::duplex(capacity);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (StreamTransport::new(ar, aw, "mem"), StreamTransport::new(br, bw, "mem"))
}
