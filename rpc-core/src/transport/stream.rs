//! `StreamTransport`: the copy transport over any tokio byte stream. Writes are vectored:
//! the frame heads and the payload segments go to the kernel as they are, in one `writev` per
//! batch, never gathered in user space. File regions go by `sendfile` where the writer is a
//! socket (TCP, Unix), and are read and written otherwise.

use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::sendfile::{self, FileSocket};
use super::socket::{Socket, SocketDirect, SocketWrite};
use super::{DirectWrite, RecvHalf, SendHalf, Transmit, Transport, TransportStats};
use crate::Segment;

/// Linux's `UIO_MAXIOV`: the most slices one `writev` takes.
const MAX_IOV: usize = 1024;

/// A transport over a reader and a writer (the halves of a TCP stream, a duplex pipe, ...).
#[derive(Debug)]
pub struct StreamTransport<R, W> {
    reader: R,
    writer: W,
    stats: Arc<TransportStats>,
}

impl<R, W> StreamTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps two halves; `name` appears in the stats (`tcp`, `mem`, ...).
    pub fn new(reader: R, writer: W, name: &'static str) -> Self {
        StreamTransport { reader, writer, stats: Arc::new(TransportStats::new(name)) }
    }
}

impl<R, W> Transport for StreamTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Send = StreamSend<W>;
    type Recv = StreamRecv<R>;

    fn split(self) -> (StreamRecv<R>, StreamSend<W>) {
        (
            StreamRecv::new(self.reader, self.stats.clone()),
            StreamSend::new(self.writer, self.stats),
        )
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }
}

/// The socket under a writer, for `sendfile`.
pub(crate) type FileSocketOf<W> = for<'a> fn(&'a W) -> FileSocket<'a>;

/// Sending half of a [`StreamTransport`] (and of the TCP and Unix-socket transports).
#[derive(Debug)]
pub struct StreamSend<W> {
    writer: W,
    stats: Arc<TransportStats>,
    /// Where file regions can go by `sendfile`; `None` reads them.
    file_socket: Option<FileSocketOf<W>>,
    /// The writer's socket for the driver's direct path, where it has one.
    direct: Option<Arc<dyn DirectWrite>>,
}

impl<W> StreamSend<W> {
    pub(crate) fn new(writer: W, stats: Arc<TransportStats>) -> Self {
        StreamSend { writer, stats, file_socket: None, direct: None }
    }
}

impl<S: Socket> StreamSend<SocketWrite<S>> {
    /// A sender writing to `socket`, which takes `sendfile` (where the platform has it, as
    /// `file_socket` names it) and non-blocking writes from any task (the driver's direct path).
    pub(crate) fn on_socket(socket: Arc<S>, stats: Arc<TransportStats>, file_socket: FileSocketOf<SocketWrite<S>>) -> Self {
        let direct: Arc<dyn DirectWrite> = Arc::new(SocketDirect(socket.clone()));
        StreamSend {
            writer: SocketWrite(socket),
            stats,
            file_socket: sendfile::HAS_SENDFILE.then_some(file_socket),
            direct: Some(direct),
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> StreamSend<W> {
    /// Sends a batch in which some frames carry file regions: memory runs by `writev`, each
    /// region by `sendfile` (or read and written, where the writer is no socket), in order.
    async fn send_with_files(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        let spliced = self.file_socket.is_some();
        for t in batch.iter() {
            let (frames, bytes) = match (spliced, t.has_files()) {
                (true, true) => (&self.stats.sends_file, &self.stats.bytes_file),
                _ => (&self.stats.sends_copy, &self.stats.bytes_copy),
            };
            TransportStats::add(frames, 1);
            TransportStats::add(bytes, t.len() as u64);
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::new();
        for t in batch.iter() {
            slices.push(IoSlice::new(&t.head));
            for s in &t.segments {
                match s {
                    Segment::File(region) => {
                        write_all_vectored(&mut self.writer, &self.stats, &mut slices).await?;
                        slices.clear();
                        match self.file_socket {
                            Some(socket) => socket(&self.writer).send_region(region, &self.stats).await?,
                            None => sendfile::copy_region(&mut self.writer, region, &self.stats).await?,
                        }
                    }
                    s => slices.push(IoSlice::new(s.memory().unwrap_or_default())),
                }
            }
        }
        write_all_vectored(&mut self.writer, &self.stats, &mut slices).await?;
        drop(slices);
        batch.clear();
        self.writer.flush().await
    }
}

/// Writes every slice, at most [`MAX_IOV`] per `writev`, counting what each call took in
/// `sent_bytes`.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    stats: &TransportStats,
    slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    let mut rest = slices;
    while !rest.is_empty() {
        let take = rest.len().min(MAX_IOV);
        let n = writer.write_vectored(&rest[..take]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "transport accepted no bytes"));
        }
        TransportStats::add(&stats.sent_bytes, n as u64);
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

impl<W: AsyncWrite + Unpin + Send + 'static> SendHalf for StreamSend<W> {
    async fn send(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        if batch.iter().any(Transmit::has_files) {
            return self.send_with_files(batch).await;
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.iter().map(|t| 1 + t.segments.len()).sum());
        let mut bytes = 0u64;
        for t in batch.iter() {
            slices.push(IoSlice::new(&t.head));
            slices.extend(t.segments.iter().map(|s| IoSlice::new(s.memory().unwrap_or_default())));
            bytes += t.len() as u64;
        }
        TransportStats::add(&self.stats.sends_copy, batch.len() as u64);
        TransportStats::add(&self.stats.bytes_copy, bytes);
        write_all_vectored(&mut self.writer, &self.stats, &mut slices).await?;
        drop(slices);
        batch.clear();
        // A writer that buffers (TLS keeps the records it could not write yet) sends them now;
        // for a socket this does nothing.
        self.writer.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.writer.flush().await?;
        self.writer.shutdown().await
    }

    fn direct(&self) -> Option<Arc<dyn DirectWrite>> {
        self.direct.clone()
    }
}

/// Receiving half of a [`StreamTransport`] (and of the Unix-socket transport).
#[derive(Debug)]
pub struct StreamRecv<R> {
    reader: R,
    stats: Arc<TransportStats>,
}

impl<R> StreamRecv<R> {
    pub(crate) fn new(reader: R, stats: Arc<TransportStats>) -> Self {
        StreamRecv { reader, stats }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> RecvHalf for StreamRecv<R> {
    async fn recv(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        debug_assert!(buf.capacity() > buf.len(), "recv needs spare capacity");
        let r = self.reader.read_buf(&mut buf).await;
        if let Ok(n) = r {
            TransportStats::add(&self.stats.recv_bytes, n as u64);
        }
        (r, buf)
    }
}
