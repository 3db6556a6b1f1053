//! The `Transport` trait and the portable transports.
//!
//! A transport moves [`Transmit`]s out and bytes in. It owns no protocol logic: the
//! connection state machine above it decides what to send. Ownership travels with each
//! operation (the receive buffer goes in and comes back, the transmits are taken), so a
//! completion-based transport such as io_uring can let the kernel use the memory for as long as
//! it needs, even when the caller's future is dropped.
//!
//! - [`tcp`]: tokio TCP, vectored writes, works on every OS.
//! - [`mem`]: an in-memory pair, for tests and docs.
//! - `transport-uring`: the Linux zero-copy engine (its own crate).

pub mod mem;
mod stream;
pub mod tcp;

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;

pub use crate::stats::{StatsSnapshot, TransportStats};
pub use crate::transmit::Transmit;
pub use stream::StreamTransport;

/// A connected, bidirectional byte transport.
pub trait Transport: Send + 'static {
    /// The sending half.
    type Send: SendHalf;
    /// The receiving half.
    type Recv: RecvHalf;

    /// Splits into halves, driven by separate tasks.
    fn split(self) -> (Self::Recv, Self::Send);

    /// The connection's live counters.
    fn stats(&self) -> Arc<TransportStats>;
}

/// Sends frames.
pub trait SendHalf: Send + 'static {
    /// Sends every transmit in `batch`, in order, draining it. Returns once the bytes are handed
    /// to the kernel; memory the kernel still reads (zero-copy) stays owned by the transport
    /// until the kernel says it is done.
    fn send(&mut self, batch: &mut Vec<Transmit>) -> impl Future<Output = io::Result<()>> + Send;

    /// Waits until the kernel is done with every segment, then shuts down the write direction.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Receives bytes.
pub trait RecvHalf: Send + 'static {
    /// Appends bytes from the peer into the spare capacity of `buf` (never growing it) and hands
    /// the buffer back with the count; 0 means the peer closed its side.
    fn recv(&mut self, buf: BytesMut) -> impl Future<Output = (io::Result<usize>, BytesMut)> + Send;
}

/// Accepts incoming transports (a listener).
pub trait Acceptor: Send + 'static {
    /// The transports it yields.
    type Transport: Transport;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Transport>> + Send;
}
