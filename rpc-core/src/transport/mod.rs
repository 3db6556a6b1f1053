//! The `Transport` trait and the portable transports.
//!
//! A transport moves [`Transmit`]s out and bytes in. It owns no protocol logic: the
//! connection state machine above it decides what to send. Ownership travels with each
//! operation (the receive buffer goes in and comes back, the transmits are taken), so a
//! completion-based transport such as io_uring can let the kernel use the memory for as long as
//! it needs, even when the caller's future is dropped.
//!
//! - [`tcp`]: tokio TCP, vectored writes, works on every OS; file regions by `sendfile` (Linux).
//! - `tls` (feature `tls`, on by default): TLS 1.3 and mutual TLS over TCP, with rustls.
//!   `tls_session`: the handshake by rustls and records sealed and opened in a transport's own
//!   buffers (what `transport-uring`'s TLS uses). `handshakes`: the handshakes a TLS acceptor
//!   has in progress, bounded in number and time (both TLS acceptors use it).
//! - [`unix`]: Unix-domain stream sockets, for peers on the same host (Unix systems).
//! - [`socket`]: a tokio socket shared by a transport's halves and the driver's direct path
//!   (what `tcp` and `unix` are made of).
//! - [`mem`]: an in-memory pair, for tests and docs.
//! - `transport-uring`: the Linux zero-copy engine (its own crate).

pub mod mem;
mod sendfile;
pub mod socket;
mod stream;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod handshakes;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tls")]
pub mod tls_session;
#[cfg(unix)]
pub mod unix;

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

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

    /// The peer's address, where the transport has one (handlers see it in
    /// [`crate::ServerRequest::peer`]).
    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }

    /// Who is at the other end, as handlers see it ([`crate::ServerRequest::peer`]); by default
    /// the [`Transport::peer_addr`].
    fn peer(&self) -> crate::Peer {
        crate::Peer::at(self.peer_addr())
    }
}

/// Sends frames.
pub trait SendHalf: Send + 'static {
    /// Sends every transmit in `batch`, in order, draining it. Returns once the bytes are handed
    /// to the kernel; memory the kernel still reads (zero-copy) stays owned by the transport
    /// until the kernel says it is done.
    fn send(&mut self, batch: &mut Vec<Transmit>) -> impl Future<Output = io::Result<()>> + Send;

    /// Waits until the kernel is done with every segment, then shuts down the write direction.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// A way to write small frames without waiting, from whichever task queued them, while this
    /// half is idle ([`DirectWrite`]); `None` (the default) when the transport cannot (TLS keeps
    /// cipher state in its writer, a pipe has no non-blocking write).
    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        None
    }
}

/// A non-blocking write to a transport's socket, for the driver's direct path: one call in
/// flight, its small request or response written by the task that queued it instead of waking
/// the connection's writer task for it (a task hop and a pass of the writer loop saved per frame,
/// on each side of a round trip); and, for a burst, its first small calls or answers written
/// together by the task that queued them (the early flush).
///
/// The driver calls it only while the [`SendHalf`] it came from is idle, with nothing of its own
/// left to write, and never while it sends, so the bytes stay in order. Frames it does not
/// finish are handed to the writer.
pub trait DirectWrite: std::fmt::Debug + Send + Sync + 'static {
    /// Writes what the socket takes now of `slices` (in order, at most 1,024 of them) and
    /// returns the count; `WouldBlock` when it takes nothing. Counts nothing in the stats: the
    /// driver does.
    fn try_write(&self, slices: &[std::io::IoSlice<'_>]) -> io::Result<usize>;

    /// The size from which a frame is the writer's: a direct write carries only frames smaller
    /// than this (a transport that sends large frames zero-copy says where that starts), though
    /// an early flush carries many of them, so one write may carry more bytes in all. The
    /// driver caps it lower still.
    fn limit(&self) -> usize {
        usize::MAX
    }
}

/// Receives bytes.
///
/// Two ways in: [`RecvHalf::recv`] fills a buffer the caller chose (the driver sizes it so that
/// a large frame lands in one allocation); [`RecvHalf::recv_chunk`], for transports with
/// receive memory of their own (an io_uring provided-buffer ring), hands over a buffer the
/// kernel chose and filled, and frames wholly inside it are decoded in place, as slices of it.
pub trait RecvHalf: Send + 'static {
    /// Appends bytes from the peer into the spare capacity of `buf` (never growing it) and hands
    /// the buffer back with the count; 0 means the peer closed its side. Bytes the transport
    /// already holds in chunks come first (copied into `buf`), so the stream stays in order
    /// whichever way the caller asks.
    fn recv(&mut self, buf: BytesMut) -> impl Future<Output = (io::Result<usize>, BytesMut)> + Send;

    /// The largest chunk [`RecvHalf::recv_chunk`] hands out; 0 (the default) for transports
    /// without receive memory of their own, whose `recv_chunk` is never called. The driver asks
    /// for chunks only while the frame being received fits in one.
    fn chunk_size(&self) -> usize {
        0
    }

    /// Receives into memory of the transport's choosing and hands it over. The memory goes
    /// back to the transport when the last slice of the chunk is dropped. Cancel-safe: bytes
    /// that arrive after the future is dropped wait for the next call.
    fn recv_chunk(&mut self) -> impl Future<Output = io::Result<Chunk>> + Send {
        std::future::ready(Ok(Chunk::Unavailable))
    }

    /// Says, before a [`RecvHalf::recv`], how many more bytes the peer is certain to send: the
    /// rest of the frame being received (0 when a frame's header is awaited or the buffer
    /// already holds the frame). A transport may sleep until that many are queued instead of
    /// waking for every segment (`SO_RCVLOWAT`); it must still return what it has when the
    /// peer closes or fails. The default ignores it.
    fn expect_bytes(&mut self, bytes: usize) {
        let _ = bytes;
    }
}

/// What [`RecvHalf::recv_chunk`] produced.
#[derive(Debug)]
pub enum Chunk {
    /// At least one byte, in the transport's memory.
    Data(Bytes),
    /// The peer closed its side.
    Eof,
    /// No buffer is free (every one is held by slices still alive): receive with
    /// [`RecvHalf::recv`] this time.
    Unavailable,
}

/// Accepts incoming transports (a listener).
pub trait Acceptor: Send + 'static {
    /// The transports it yields.
    type Transport: Transport;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Transport>> + Send;

    /// How long a connection may take to complete a handshake of the transport's own (TLS)
    /// before it is dropped: [`crate::Server::serve`] passes its
    /// [`crate::ServerBuilder::handshake_timeout`] here before the first `accept`. Transports
    /// without such a handshake ignore it (the default).
    fn set_handshake_timeout(&mut self, timeout: std::time::Duration) {
        let _ = timeout;
    }
}
