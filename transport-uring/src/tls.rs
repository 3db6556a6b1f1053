//! TLS 1.3 on the zero-copy transport, with one pass over the data on each side.
//!
//! rustls runs the handshake (certificates, mutual TLS, ALPN `zcrpc/1`, the errors of
//! `rpc_core::transport::tls`, from the same [`TlsServerConfig`] and [`TlsClientConfig`]); then
//! each half protects its own direction's records ([`rpc_core::transport::tls_session`]):
//!
//! - **Sending**: a batch of frames (heads, messages, attachments) is copied into pool buffers
//!   of a [`BufferPool`] where each record goes, up to 16 KiB of plaintext a record across frame
//!   boundaries, and sealed there in place; the buffers go out through the engine's copy or
//!   zero-copy path as any other pool buffer ([`UringSend`]), up to four in one write (1 MiB
//!   with the default pool). The ciphertext is the only copy. While the pool is empty (its
//!   buffers held by the other connections' sends, a stalled peer's among them) records are
//!   sealed in ordinary memory instead: no connection waits for another's peer.
//! - **Receiving**: records are read straight into the frame's receive buffer (the buffer the
//!   driver gives `RecvHalf::recv`: a large frame's own 64-byte-aligned buffer), as many as the
//!   socket holds in one read (up to 256 KiB), and each is authenticated and decrypted where it
//!   landed, its plaintext written in the cipher's pass over the headers and tags of the
//!   records before it (`RecordOpener::open_within`): the plaintext lies where plaintext TCP
//!   would have put it. Attachments are single aligned slices as on plain uring. A record
//!   begun is waited for where it lies (a TLS peer writes whole records; its rest is on its
//!   way). Near the buffer's end reads stop at the next record's header, and a record that
//!   cannot land there (past the buffer's end) is decrypted aside and copied in: counted in
//!   `tls_bytes_copied`, as is its header read ahead and any ciphertext read with the handshake.
//!   Before it waits, the half asks the kernel to wake it only once the ciphertext certain to
//!   come is queued (the rest of the record begun, and of the frame the driver is receiving:
//!   [`UringConfig::recv_lowat`], at most 1 MiB), not for every segment.
//! - **Verify before reveal**: a record's bytes are handed up only once it authenticated; one
//!   that fails ends the connection with an error that says so (and a `bad_record_mac` alert
//!   to the peer, sealed by the sending half as the last record), and the driver delivers only
//!   whole frames, so nothing of a frame with a tampered record reaches a handler.
//!
//! The receiving half reads on readiness (`RecvMode::Read`); the stats are named `uring+tls`
//! (or `msgzc+tls`, `tcp+tls` after a fallback) and say which TLS path is used (rustls user
//! space; kernel TLS is probed, not used: see `docs/security.md`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rpc_core::transport::tls::{TlsClientConfig, TlsServerConfig};
//! use rpc_core::{Body, BoxFuture, CallOptions, ClientConfig, Server, ServerRequest, Service, Status};
//! use transport_uring::tls::UringTlsAcceptor;
//! use transport_uring::UringConfig;
//!
//! struct Echo;
//! impl Service for Echo {
//!     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
//!         Box::pin(async move { Ok(req.body) })
//!     }
//! }
//!
//! let tls = TlsServerConfig::from_pem_files("server.pem", "server.key")?;
//! let acceptor = UringTlsAcceptor::bind("127.0.0.1:0", tls, UringConfig::default()).await?;
//! let addr = acceptor.local_addr()?;
//! let handle = Server::builder().build(Echo).serve(acceptor);
//!
//! let trust = TlsClientConfig::from_pem_file("ca.pem")?;
//! let client = transport_uring::tls::client(addr, "localhost", trust, UringConfig::default(), ClientConfig::default()).await?;
//! let reply = client.call(1, Body::message("hi".into()), CallOptions::default()).await?;
//! assert_eq!(&reply.message[..], b"hi");
//! println!("{}", client.stats());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rpc_core::transport::tls::rustls::AlertDescription;
use rpc_core::transport::handshakes::{HandshakeError, Handshakes};
use rpc_core::transport::tls::{rustls, TlsClientConfig, TlsServerConfig, ALPN};
use rpc_core::transport::tls_session::{
    self, body_len, Opened, RecordOpener, RecordSealer, Session, HEADER_LEN, KEY_UPDATE_RECORD_LEN, MAX_CIPHERTEXT, MAX_PLAINTEXT,
    RECORD_OVERHEAD, TAG_LEN,
};
use rpc_core::transport::{Acceptor, RecvHalf, SendHalf, Transport};
use rpc_core::{Client, ClientConfig, ConnectError, FileRegion, Peer, Segment, Transmit, TransportStats};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::buf::{BufferPool, ZcBuf};
use crate::config::{RecvMode, SnapshotPolicy, UringConfig};
use crate::engine::close::CloseHandle;
use crate::engine::UringSend;
use crate::lowat::RecvLowat;
use crate::transport::{from_tcp_as, UringTransport};

/// Default pool for ciphertext: 8 MiB in buffers of 256 KiB, shared by the connections of one
/// acceptor (or one client's dials).
pub const DEFAULT_POOL_BYTES: usize = 8 << 20;
/// Bytes per ciphertext buffer of the default pool.
pub const DEFAULT_POOL_BUF: usize = 256 << 10;

/// The smallest record started at the end of a buffer (less goes to the next buffer).
const MIN_RECORD: usize = 1024;

/// Bytes of a file region read per step (into memory, to be sealed).
const FILE_PIECE: usize = 256 << 10;

/// Sealed buffers sent in one write: a frame larger than a buffer goes out in writes of this
/// many (1 MiB with the default pool), not one write per buffer, and the rest of a send that
/// fits in one more buffer goes with them (a 1 MiB frame is one write). Each write's last
/// TCP segment is cut short (`TCP_NODELAY` pushes it), and each is a system call and a
/// completion: per 256 KiB on `upload_1m` that was 4.5 loopback segments of 48 KB on average
/// and 1.6 pure ACKs, against 16.3 of 62 KB in writes of 1 MiB.
const BATCH_BUFFERS: usize = 4;

/// The configuration a TLS connection's engine runs with: receive on readiness (records go to
/// the driver's buffer), and no write protection of ciphertext buffers in flight (nothing
/// writes them once sealed: they never leave this module).
fn engine_config(mut config: UringConfig) -> UringConfig {
    config.recv = RecvMode::Read;
    if config.snapshot == SnapshotPolicy::WriteProtect {
        config.snapshot = SnapshotPolicy::Ownership;
    }
    config
}

/// Says once per process which TLS path connections take (and whether the kernel offers TLS).
fn log_path_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::info!("uring TLS: {}", tls_session::path_description()));
}

/// The default ciphertext pool; where locked memory is short (`RLIMIT_MEMLOCK`), a pool of 4
/// buffers (1 MiB), logged; failing that, an error that names the limit.
fn default_pool() -> io::Result<BufferPool> {
    BufferPool::new(DEFAULT_POOL_BYTES, DEFAULT_POOL_BUF).or_else(|e| {
        tracing::warn!("the TLS ciphertext pool of {DEFAULT_POOL_BYTES} bytes was refused ({e}); using 1 MiB");
        BufferPool::new(4 * DEFAULT_POOL_BUF, DEFAULT_POOL_BUF)
            .map_err(|e| io::Error::other(format!("the TLS ciphertext pool: {e}")))
    })
}

/// A TLS connection over the zero-copy engine. Split it into [`UringTlsRecv`] and
/// [`UringTlsSend`].
pub struct UringTlsTransport {
    inner: UringTransport,
    session: Session,
    peer: Peer,
    pool: BufferPool,
}

impl fmt::Debug for UringTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTlsTransport").field("backend", &self.inner.backend()).field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl UringTlsTransport {
    /// The backend the engine uses.
    pub fn backend(&self) -> crate::Backend {
        self.inner.backend()
    }

    fn with_rekey_after(mut self, records: Option<u64>) -> Self {
        if let Some(n) = records {
            self.session.sealer.rekey_after(n);
        }
        self
    }
}

impl Transport for UringTlsTransport {
    type Send = UringTlsSend;
    type Recv = UringTlsRecv;

    fn split(self) -> (UringTlsRecv, UringTlsSend) {
        let (send, stream, stats, close, lowat) = self.inner.split_send();
        let Session { sealer, opener, leftover, .. } = self.session;
        let owed = Arc::new(AtomicU16::new(0));
        let lowat = RecvLowat::new(stream.as_raw_fd(), lowat);
        let recv = UringTlsRecv {
            owed: owed.clone(),
            lowat,
            expected: 0,
            stream,
            opener,
            stats: stats.clone(),
            _close: close,
            carry: leftover,
            scratch: BytesMut::with_capacity(MAX_RECORD),
            pending: 0..0,
            failed: None,
            eof: false,
            busy: false,
            key_updates: 0,
        };
        let send = UringTlsSend {
            inner: send,
            sealer,
            pool: self.pool,
            stats,
            cur: None,
            open: 0,
            sealed: Vec::with_capacity(BATCH_BUFFERS + 1),
            remaining: 0,
            interrupted: false,
            owed,
        };
        (recv, send)
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.inner.stats()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.addr
    }

    fn peer(&self) -> Peer {
        self.peer.clone()
    }
}

/// The sending half: seals frames into pool buffers, which the engine sends, up to four
/// (1 MiB of records) in one write.
pub struct UringTlsSend {
    inner: UringSend,
    sealer: RecordSealer,
    pool: BufferPool,
    stats: Arc<TransportStats>,
    /// The buffer being filled: its `len` bytes are sealed records; the record being filled has
    /// `open` bytes of plaintext after a header's room.
    cur: Option<SealBuf>,
    open: usize,
    /// Full buffers of sealed records not sent yet, in order (they go before `cur`).
    sealed: Vec<Segment>,
    /// Plaintext of the send under way not yet put into records.
    remaining: usize,
    /// A send was cancelled with records sealed and not sent: the stream is broken.
    interrupted: bool,
    /// The alert the receiving half found the peer owed (its description + 1; 0: none).
    owed: Arc<AtomicU16>,
}

/// A buffer records are sealed in: one of the pool's (sent as any pool buffer, zero-copy where
/// the engine picks it), or, while the pool is empty, one of ordinary memory of the same size.
enum SealBuf {
    Pool(ZcBuf),
    Heap { bytes: Vec<u8>, len: usize },
}

impl SealBuf {
    fn heap(size: usize) -> SealBuf {
        SealBuf::Heap { bytes: vec![0; size], len: 0 }
    }

    fn len(&self) -> usize {
        match self {
            SealBuf::Pool(b) => b.len(),
            SealBuf::Heap { len, .. } => *len,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn capacity(&self) -> usize {
        match self {
            SealBuf::Pool(b) => b.capacity(),
            SealBuf::Heap { bytes, .. } => bytes.len(),
        }
    }

    fn set_len(&mut self, n: usize) {
        match self {
            SealBuf::Pool(b) => b.set_len(n),
            SealBuf::Heap { bytes, len } => {
                assert!(n <= bytes.len());
                *len = n;
            }
        }
    }

    fn as_full_mut(&mut self) -> &mut [u8] {
        match self {
            SealBuf::Pool(b) => b.as_full_mut(),
            SealBuf::Heap { bytes, .. } => bytes,
        }
    }

    fn into_segment(self) -> Segment {
        match self {
            SealBuf::Pool(b) => b.into_segment(),
            SealBuf::Heap { mut bytes, len } => {
                bytes.truncate(len);
                Segment::Bytes(Bytes::from(bytes))
            }
        }
    }
}

impl fmt::Debug for UringTlsSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTlsSend").field("records", &self.sealer.records()).finish_non_exhaustive()
    }
}

impl UringTlsSend {
    /// Records sealed so far.
    pub fn records(&self) -> u64 {
        self.sealer.records()
    }

    /// Seals the open record, if it has bytes.
    fn seal(&mut self) -> io::Result<()> {
        let Some(buf) = self.cur.as_mut() else { return Ok(()) };
        if self.open == 0 {
            return Ok(());
        }
        let at = buf.len();
        let n = self.sealer.seal_in_place(&mut buf.as_full_mut()[at..], self.open)?;
        buf.set_len(at + n);
        self.open = 0;
        Ok(())
    }

    /// Sends every sealed record (after sealing the open one): the full buffers and the
    /// current one, in one write.
    async fn flush(&mut self) -> io::Result<()> {
        self.seal()?;
        if let Some(buf) = self.cur.take() {
            if buf.is_empty() {
                self.cur = Some(buf);
            } else {
                self.sealed.push(buf.into_segment());
            }
        }
        self.send_sealed().await
    }

    /// Sends the full buffers set aside, in one write.
    async fn send_sealed(&mut self) -> io::Result<()> {
        if self.sealed.is_empty() {
            return Ok(());
        }
        let segments = std::mem::replace(&mut self.sealed, Vec::with_capacity(BATCH_BUFFERS + 1));
        self.inner.send(&mut vec![Transmit { head: Bytes::new(), segments }]).await
    }

    /// The current buffer is full: it is set aside (sealed), to go out with the next ones;
    /// once [`BATCH_BUFFERS`] wait, they are sent, unless the rest of this send fits in one
    /// more buffer (then it goes with them, at the send's end).
    async fn next_buffer(&mut self) -> io::Result<()> {
        self.seal()?;
        if let Some(buf) = self.cur.take() {
            if !buf.is_empty() {
                self.sealed.push(buf.into_segment());
            }
        }
        let last = self.sealed.len() == BATCH_BUFFERS && self.fits_one_buffer(self.remaining);
        if self.sealed.len() >= BATCH_BUFFERS && !last {
            self.send_sealed().await?;
        }
        Ok(())
    }

    /// The size of an ordinary buffer for the rest of this send (the pool being empty): its
    /// records and a key update, no larger than a pool buffer (a 64-byte call does not pay
    /// for 256 KiB), and never too small for a key update and a record to follow it.
    fn heap_size(&self) -> usize {
        let records = self.remaining.div_ceil(MAX_PLAINTEXT) + 1;
        let need = self.remaining + records * RECORD_OVERHEAD + KEY_UPDATE_RECORD_LEN;
        need.min(self.pool.buf_size()).max(KEY_UPDATE_RECORD_LEN + 2 * RECORD_OVERHEAD + MIN_RECORD)
    }

    /// Whether `plaintext` bytes, in full records, fit in one buffer of the pool.
    fn fits_one_buffer(&self, plaintext: usize) -> bool {
        let records = plaintext.div_ceil(MAX_PLAINTEXT) + 1;
        plaintext + records * RECORD_OVERHEAD <= self.pool.buf_size()
    }

    /// Copies `data` into records of the current buffer, sealing each full record and sending
    /// each full buffer.
    async fn put(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let buf = match self.cur.as_mut() {
                Some(b) => b,
                None => {
                    let b = match self.pool.take() {
                        Some(b) => SealBuf::Pool(b),
                        None => {
                            // The pool is drained: what this half holds goes first, so that
                            // its buffers come back for the next ones.
                            self.send_sealed().await?;
                            match self.pool.take() {
                                Some(b) => SealBuf::Pool(b),
                                // Still none: the other connections hold them, and one whose
                                // peer stopped reading returns none until its write-stall
                                // timeout. Never wait for them: seal in ordinary memory.
                                None => {
                                    tracing::debug!("TLS ciphertext pool empty; sealing records in ordinary memory");
                                    TransportStats::add(&self.stats.tls_heap_buffers, 1);
                                    SealBuf::heap(self.heap_size())
                                }
                            }
                        }
                    };
                    self.cur.insert(b)
                }
            };
            let (used, cap) = (buf.len(), buf.capacity());
            if self.open == 0 && self.sealer.key_update_due() {
                // Between records: the key_update goes first, then records under the next key.
                if cap - used < KEY_UPDATE_RECORD_LEN + RECORD_OVERHEAD + MIN_RECORD {
                    self.next_buffer().await?;
                    continue;
                }
                let n = self.sealer.seal_key_update(&mut buf.as_full_mut()[used..])?;
                buf.set_len(used + n);
                TransportStats::add(&self.stats.tls_key_updates, 1);
                continue;
            }
            let mut room = (MAX_PLAINTEXT - self.open).min(cap.saturating_sub(used + RECORD_OVERHEAD + self.open));
            if self.open == 0 && room < data.len().min(MIN_RECORD) {
                // Not worth a record of its own at the end of the buffer.
                room = 0;
            }
            if room == 0 {
                if self.open > 0 && self.open < MAX_PLAINTEXT {
                    // The buffer's end: seal what the record has, and go on in the next buffer.
                    self.seal()?;
                }
                if self.open == MAX_PLAINTEXT {
                    self.seal()?;
                    continue;
                }
                self.next_buffer().await?;
                continue;
            }
            let n = room.min(data.len());
            let at = used + HEADER_LEN + self.open;
            buf.as_full_mut()[at..at + n].copy_from_slice(&data[..n]);
            self.open += n;
            self.remaining = self.remaining.saturating_sub(n);
            data = &data[n..];
            if self.open == MAX_PLAINTEXT {
                self.seal()?;
            }
        }
        Ok(())
    }

    /// Copies a file region into records as [`UringTlsSend::put`] does, read a piece at a
    /// time on tokio's blocking pool (a read may wait for the disk): what is held is one piece,
    /// never the region, however large.
    async fn put_file(&mut self, region: &FileRegion) -> io::Result<()> {
        let mut piece = vec![0u8; FILE_PIECE.min(region.len())];
        let mut at = 0;
        while at < region.len() {
            let (n, back) = region.read_at_blocking(at, piece).await?;
            piece = back;
            TransportStats::add(&self.stats.file_read_bytes, n as u64);
            self.put(&piece[..n]).await?;
            at += n;
        }
        Ok(())
    }

    async fn send_inner(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        self.remaining = batch.iter().map(Transmit::len).sum();
        for t in std::mem::take(batch) {
            self.put(&t.head).await?;
            for s in &t.segments {
                match s {
                    // Records are sealed in memory: a file region is read first.
                    Segment::File(f) => self.put_file(f).await?,
                    s => self.put(s.memory().unwrap_or_default()).await?,
                }
            }
        }
        self.flush().await
    }
}

impl SendHalf for UringTlsSend {
    async fn send(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        if self.interrupted {
            batch.clear();
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "an earlier TLS send was cancelled mid-way; the stream is broken"));
        }
        self.interrupted = true;
        let r = self.send_inner(batch).await;
        // After an error the engine refuses later sends itself.
        self.interrupted = r.is_err();
        r
    }

    /// Ends the stream with an alert: the one a failed record owes the peer (`bad_record_mac`,
    /// so that its error says its data was altered), else `close_notify`; then TCP's FIN.
    async fn shutdown(&mut self) -> io::Result<()> {
        let alert = match self.owed.load(Ordering::Acquire) {
            0 => AlertDescription::CloseNotify,
            d => AlertDescription::from((d - 1) as u8),
        };
        if !self.interrupted {
            if let Ok(record) = self.sealer.seal_alert(alert) {
                let t = Transmit { head: Bytes::from(record), segments: Vec::new() };
                // A connection whose sending already failed cannot carry it: the FIN goes alone.
                let _ = self.inner.send(&mut vec![t]).await;
            }
        }
        self.inner.shutdown().await
    }
}

/// The receiving half: reads records into the frame's buffer and opens them there.
pub struct UringTlsRecv {
    /// Where a failure leaves the alert the peer is owed, for the sending half.
    owed: Arc<AtomicU16>,
    stream: Arc<TcpStream>,
    opener: RecordOpener,
    stats: Arc<TransportStats>,
    _close: CloseHandle,
    /// The front of the stream, read and not opened yet: what the handshake read past its end,
    /// or the start of a record that could not land in the caller's buffer. It comes before
    /// anything in the socket.
    carry: BytesMut,
    /// A record opened aside; `pending` is its plaintext not yet handed over.
    scratch: BytesMut,
    pending: std::ops::Range<usize>,
    /// What ended the stream after records whose plaintext was handed over first.
    failed: Option<io::Error>,
    eof: bool,
    /// A receive is under way: one dropped mid-record leaves the stream inside a record.
    busy: bool,
    /// The peer's key updates counted in the stats so far.
    key_updates: u64,
    /// The socket's low-water mark: before a wait, the ciphertext certain to come.
    lowat: RecvLowat,
    /// Plaintext the caller is certain to get, for this receive ([`RecvHalf::expect_bytes`]).
    expected: usize,
}

impl fmt::Debug for UringTlsRecv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTlsRecv").field("records", &self.opener.records()).finish_non_exhaustive()
    }
}

/// How a pass of receiving into the caller's buffer ended.
enum Landed {
    /// This much plaintext was added to the buffer.
    Data(usize),
    /// Records were consumed and none had data (or the peer closed with `close_notify`).
    Nothing,
    /// The stream ended between records, before any plaintext.
    Eof,
    /// The record at the front of the stream is larger than the buffer's room: it goes aside
    /// (its start is in `carry`).
    DoesNotFit,
}

/// The length of the whole record (header and body) at the front of `bytes`, once its header
/// is there.
fn record_len(bytes: &[u8]) -> io::Result<Option<usize>> {
    match bytes.get(..HEADER_LEN) {
        Some(h) => Ok(Some(HEADER_LEN + body_len(h.try_into().expect("five bytes"))?)),
        None => Ok(None),
    }
}

/// The largest record on the wire, header included.
const MAX_RECORD: usize = HEADER_LEN + MAX_CIPHERTEXT;

/// The smallest record with data (one byte of it, its content type, the tag): less room than
/// this, and records are received aside.
const SMALLEST_DATA_RECORD: usize = HEADER_LEN + 1 + 1 + TAG_LEN;

/// The most ciphertext one read takes: records are opened while they are still in the cache
/// the read left them in.
const MAX_READ: usize = 256 << 10;

impl UringTlsRecv {
    /// One read from the socket into `dst`'s spare room, at most `max` bytes (`max` no more
    /// than that room, so `dst` never grows elsewhere), waiting for readiness (woken once
    /// `certain` bytes, those certain to come, are queued: see [`crate::lowat`]); 0 at the end
    /// of the stream.
    async fn read_some(&mut self, dst: &mut BytesMut, max: usize, certain: usize) -> io::Result<usize> {
        debug_assert!(max > 0 && max <= dst.capacity() - dst.len());
        // One unit of tokio's cooperative budget per read, as a tokio stream's read takes (the
        // tcp transport's TLS reads through one): a peer whose records carry nothing (empty
        // records, key updates) would otherwise keep a receive reading, never returning
        // `Pending`, for as long as it keeps the socket from running dry.
        tokio::task::coop::consume_budget().await;
        let mut certain = certain;
        let n = loop {
            match self.stream.try_read_buf(&mut (&mut *dst).limit(max)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.lowat.wait_readable(&self.stream, &mut certain).await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        TransportStats::add(&self.stats.recv_bytes, n as u64);
        self.lowat.after_read();
        Ok(n)
    }

    /// Moves the first `n` carried bytes to the end of `dst`: a user-space copy, counted.
    fn take_carry(&mut self, dst: &mut BytesMut, n: usize) {
        dst.extend_from_slice(&self.carry[..n]);
        self.carry.advance(n);
        TransportStats::add(&self.stats.tls_bytes_copied, n as u64);
    }

    /// Puts the start of a record that cannot be opened where it is back at the front of the
    /// stream: a user-space copy, counted (at most a header in the usual case: reads near a
    /// buffer's end stop at the next record's header).
    fn put_back(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        TransportStats::add(&self.stats.tls_bytes_copied, bytes.len() as u64);
        let mut front = BytesMut::with_capacity(bytes.len() + self.carry.len());
        front.extend_from_slice(bytes);
        front.extend_from_slice(&self.carry);
        self.carry = front;
    }

    /// Receives records into `buf`'s spare room and opens each where it landed, its plaintext
    /// moved down over the headers and tags before it (in the cipher's pass): as many records
    /// as the socket has, in as few reads as the room allows. Plaintext of records opened
    /// before a failure is handed over first; the failure comes with the next receive.
    async fn in_place(&mut self, buf: &mut BytesMut) -> io::Result<Landed> {
        let mut win = buf.split_off(buf.len());
        let (plain, r) = self.fill(&mut win).await;
        win.truncate(plain);
        // Contiguous with `buf`'s end: joined back without a copy.
        buf.unsplit(win);
        match r {
            Err(e) if plain > 0 => {
                self.failed = Some(e);
                Ok(Landed::Data(plain))
            }
            r => r,
        }
    }

    /// The pass of [`UringTlsRecv::in_place`] over the window `win` (empty, its capacity the
    /// caller's room): returns how much plaintext lies at its front, and how the pass ended.
    async fn fill(&mut self, win: &mut BytesMut) -> (usize, io::Result<Landed>) {
        let cap = win.capacity();
        // Plaintext so far is win[..plain]; records before win[at..] are opened.
        let (mut plain, mut at) = (0usize, 0usize);
        if !self.carry.is_empty() {
            self.take_carry(win, self.carry.len().min(cap));
        }
        loop {
            // Open every whole record received.
            let next = loop {
                let len = match record_len(&win[at..]) {
                    Ok(Some(len)) => len,
                    Ok(None) => break None,
                    Err(e) => return (plain, Err(e)),
                };
                let end = at + len;
                if end > win.len() {
                    break Some(end);
                }
                match self.opener.open_within(&mut win[plain..end], at - plain) {
                    Ok(Opened::Data(n)) => plain += n,
                    Ok(Opened::Nothing) => {}
                    Ok(Opened::Closed) => {
                        self.eof = true;
                        self.carry.clear();
                        return (plain, Ok(if plain > 0 { Landed::Data(plain) } else { Landed::Nothing }));
                    }
                    Err(e) => return (plain, Err(e)),
                }
                at = end;
            };
            if at == win.len() && plain > 0 {
                // Between records, with plaintext: as much as the socket had.
                return (plain, Ok(Landed::Data(plain)));
            }
            // The next record, or its start, is wanted. Far from the window's end, any record
            // fits: read as much as the room takes up to the last place a record may start.
            // Near the end, read this record and the next one's header only, so that a record
            // that will not fit stays (but for its header) in the socket, not read to be moved.
            let far = (cap - MAX_RECORD.min(cap)).saturating_sub(win.len()).min(MAX_READ);
            let want = match next {
                Some(end) if end > cap => 0,
                _ if far > 0 => far,
                Some(end) => (end + HEADER_LEN).min(cap) - win.len(),
                None => (at + HEADER_LEN).min(cap) - win.len(),
            };
            if want == 0 || !self.carry.is_empty() {
                // The record at `at` cannot land in this window (or more of the stream is
                // carried than the window held: it goes on in the next one).
                // (Copied, not split off: the caller's buffer keeps its capacity.)
                self.put_back(&win[at..]);
                let landed = if plain > 0 {
                    Landed::Data(plain)
                } else if at > 0 {
                    Landed::Nothing
                } else {
                    Landed::DoesNotFit
                };
                return (plain, Ok(landed));
            }
            // A record begun is waited for where it lies, even with plaintext in hand: a TLS
            // peer writes whole records, so its rest is on its way. Certain to come: the rest
            // of that record, and the plaintext the caller expects beyond what the window
            // holds (each byte in it is at most one byte of plaintext), as ciphertext.
            let record_rest = next.map_or(0, |end| end.saturating_sub(win.len()));
            let certain = self.expected.saturating_sub(win.len()).max(record_rest);
            match self.read_some(win, want, certain).await {
                Ok(0) if at == win.len() => {
                    let landed = if plain > 0 {
                        self.eof = true;
                        Landed::Data(plain)
                    } else {
                        Landed::Eof
                    };
                    return (plain, Ok(landed));
                }
                Ok(0) => return (plain, Err(cut_short(win.len() - at, next.map_or(HEADER_LEN, |end| end - at)))),
                Ok(_) => {}
                Err(e) => return (plain, Err(e)),
            }
        }
    }

    /// The record at the front of the stream, assembled and opened in the scratch buffer (it
    /// does not fit in the caller's): its plaintext becomes `pending`, handed over by copy.
    /// `None` at a clean end of stream (before any byte of a record).
    async fn aside(&mut self) -> io::Result<Option<Opened>> {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        let r = self.assemble(&mut s).await;
        let r = match r {
            Ok(Some(len)) => {
                let r = self.opener.open_in_place(&mut s[..len]);
                if let Ok(Opened::Data(n)) = r {
                    self.pending = HEADER_LEN..HEADER_LEN + n;
                }
                r.map(Some)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        self.scratch = s;
        r
    }

    /// Gathers the whole record at the front of the stream into `s` (carried bytes first, then
    /// the socket, read no further than the record); returns its length.
    async fn assemble(&mut self, s: &mut BytesMut) -> io::Result<Option<usize>> {
        let mut want = HEADER_LEN;
        loop {
            if s.len() == want {
                if want > HEADER_LEN {
                    return Ok(Some(want));
                }
                want = record_len(s)?.expect("a whole header");
                continue;
            }
            if !self.carry.is_empty() {
                self.take_carry(s, (want - s.len()).min(self.carry.len()));
                continue;
            }
            s.reserve(want - s.len());
            match self.read_some(s, want - s.len(), want - s.len()).await? {
                0 if s.is_empty() => return Ok(None),
                0 => return Err(cut_short(s.len(), want)),
                _ => {}
            }
        }
    }

    async fn recv_inner(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        self.expected = self.lowat.take_expected();
        loop {
            if !self.pending.is_empty() {
                let room = buf.capacity() - buf.len();
                let n = room.min(self.pending.len());
                let from = self.pending.start;
                buf.extend_from_slice(&self.scratch[from..from + n]);
                self.pending.start += n;
                TransportStats::add(&self.stats.tls_bytes_copied, n as u64);
                return Ok(n);
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            if self.eof {
                return Ok(0);
            }
            let room = buf.capacity() - buf.len();
            let fits = match record_len(&self.carry)? {
                Some(len) => len <= room,
                None => room >= SMALLEST_DATA_RECORD,
            };
            if fits {
                match self.in_place(buf).await? {
                    Landed::Data(n) => return Ok(n),
                    Landed::Nothing => continue,
                    Landed::Eof => {
                        // The peer closed TCP between records, without close_notify (a process
                        // that exited): an end of stream as on plain TCP; a frame it cut is
                        // reported by the frame decoder, and no byte of a record cut short was
                        // handed up.
                        self.eof = true;
                        return Ok(0);
                    }
                    Landed::DoesNotFit => {}
                }
            }
            match self.aside().await? {
                None => self.eof = true,
                Some(Opened::Data(_) | Opened::Nothing) => {}
                Some(Opened::Closed) => self.eof = true,
            }
        }
    }
}

fn cut_short(have: usize, want: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("TLS: the connection ended inside a record ({have} of its {want} bytes): it was cut short; nothing of it was delivered"),
    )
}

impl RecvHalf for UringTlsRecv {
    fn expect_bytes(&mut self, bytes: usize) {
        self.lowat.expect(bytes);
    }

    async fn recv(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() == buf.len() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "recv needs spare capacity");
            return (Err(e), buf);
        }
        if self.busy {
            let e = io::Error::new(io::ErrorKind::BrokenPipe, "an earlier TLS receive was cancelled inside a record");
            return (Err(e), buf);
        }
        self.busy = true;
        let r = self.recv_inner(&mut buf).await;
        self.busy = false;
        // The peer's key updates this receive followed (the opener follows them as it opens).
        let followed = self.opener.key_updates();
        TransportStats::add(&self.stats.tls_key_updates, followed - self.key_updates);
        self.key_updates = followed;
        if r.is_err() {
            if let Some(alert) = self.opener.owed_alert() {
                self.owed.store(u16::from(u8::from(alert)) + 1, Ordering::Release);
            }
        }
        (r, buf)
    }
}

fn alpn_server(config: Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut c = (*config).clone();
    c.alpn_protocols = vec![ALPN.as_bytes().to_vec()];
    tls_session::for_sessions_server(&c)
}


/// A listener whose connections are TLS over the zero-copy engine: the [`Acceptor`] for
/// `Server::serve`. Handshakes run beside each other, at most [`MAX_HANDSHAKES`](rpc_core::transport::handshakes::MAX_HANDSHAKES) at once, each
/// bounded by the server's handshake timeout; a failed one goes to
/// [`UringTlsAcceptor::on_handshake_error`] and the server goes on, as with
/// `rpc_core::transport::tls::TlsAcceptor`.
pub struct UringTlsAcceptor {
    listener: TcpListener,
    config: UringConfig,
    rustls: Arc<rustls::ServerConfig>,
    pool: Option<BufferPool>,
    handshakes: Handshakes<UringTlsTransport>,
    rekey_after: Option<u64>,
}

impl fmt::Debug for UringTlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTlsAcceptor")
            .field("listener", &self.listener)
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl UringTlsAcceptor {
    /// Binds `addr` and serves TLS with `tls` on its connections.
    pub async fn bind(addr: impl ToSocketAddrs, tls: TlsServerConfig, config: UringConfig) -> io::Result<Self> {
        config.validate()?;
        Self::new(TcpListener::bind(addr).await?, tls, config)
    }

    /// Serves TLS with `tls` on the connections of a bound listener.
    pub fn new(listener: TcpListener, tls: TlsServerConfig, config: UringConfig) -> io::Result<Self> {
        let pool = default_pool()?;
        Ok(Self::from_rustls(listener, tls.rustls().map_err(io::Error::from)?, config).with_pool(pool))
    }

    /// Serves TLS with a rustls configuration of your own (its ALPN set to [`ALPN`]).
    pub fn from_rustls(listener: TcpListener, rustls: Arc<rustls::ServerConfig>, config: UringConfig) -> Self {
        UringTlsAcceptor {
            listener,
            config: engine_config(config),
            rustls: alpn_server(rustls),
            pool: None,
            handshakes: Handshakes::default(),
            rekey_after: None,
        }
    }

    /// The pool ciphertext is sealed into, shared by every connection (default:
    /// [`DEFAULT_POOL_BYTES`] in buffers of [`DEFAULT_POOL_BUF`], made by [`UringTlsAcceptor::new`],
    /// or at the first connection after [`UringTlsAcceptor::from_rustls`]).
    pub fn with_pool(mut self, pool: BufferPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Most handshakes in progress at once (at least 1).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.handshakes.set_max(n);
        self
    }

    /// The handshake timeout, for an acceptor not given to `Server::serve` (which sets its own).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshakes.set_timeout(timeout);
        self
    }

    /// Called for every failed handshake in place of the default log line.
    pub fn on_handshake_error(mut self, f: impl Fn(&HandshakeError) + Send + Sync + 'static) -> Self {
        self.handshakes.set_on_error(f);
        self
    }

    /// Each connection updates its sending key every `records` records (see
    /// [`RecordSealer::rekey_after`]) instead of just before the cipher's limit.
    pub fn rekey_after(mut self, records: u64) -> Self {
        self.rekey_after = Some(records);
        self
    }
}

/// The server's side of one handshake, then the engine set up.
async fn accept_one(
    stream: TcpStream,
    addr: SocketAddr,
    rustls: Arc<rustls::ServerConfig>,
    config: UringConfig,
    pool: BufferPool,
) -> io::Result<UringTlsTransport> {
    let session = tls_session::accept(&stream, rustls).await?;
    log_path_once();
    let peer = Peer::at(Some(addr)).with_tls(Arc::new(session.peer.clone()));
    let inner = from_tcp_as(stream, config, true)?;
    Ok(UringTlsTransport { inner, session, peer, pool })
}

impl Acceptor for UringTlsAcceptor {
    type Transport = UringTlsTransport;

    /// Cancel-safe: a connection accepted or a handshake finished is never lost.
    async fn accept(&mut self) -> io::Result<UringTlsTransport> {
        loop {
            tokio::select! {
                r = self.listener.accept(), if self.handshakes.has_room() => {
                    let (stream, addr) = r?;
                    let pool = match &self.pool {
                        Some(p) => p.clone(),
                        None => self.pool.insert(default_pool()?).clone(),
                    };
                    let handshake = accept_one(stream, addr, self.rustls.clone(), self.config.clone(), pool);
                    self.handshakes.start(addr, handshake);
                }
                t = self.handshakes.next() => return Ok(t.with_rekey_after(self.rekey_after)),
            }
        }
    }

    fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshakes.set_timeout(timeout);
    }
}

/// Dials TLS connections over the engine, all sealing into one pool: what
/// [`client`] re-dials with.
#[derive(Clone)]
pub struct UringTlsConnector {
    rustls: Arc<rustls::ClientConfig>,
    config: UringConfig,
    pool: BufferPool,
    rekey_after: Option<u64>,
}

impl fmt::Debug for UringTlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTlsConnector").field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl UringTlsConnector {
    /// A connector trusting what `tls` trusts (and presenting its certificate, for mutual TLS),
    /// with a default pool ([`DEFAULT_POOL_BYTES`]).
    pub fn new(tls: &TlsClientConfig, config: UringConfig) -> io::Result<Self> {
        config.validate()?;
        let rustls = tls.rustls().map_err(io::Error::from)?;
        Ok(UringTlsConnector {
            rustls: tls_session::for_sessions_client(&rustls),
            config: engine_config(config),
            pool: default_pool()?,
            rekey_after: None,
        })
    }

    /// The same, sealing into `pool`.
    pub fn with_pool(mut self, pool: BufferPool) -> Self {
        self.pool = pool;
        self
    }

    /// Each connection updates its sending key every `records` records (see
    /// [`RecordSealer::rekey_after`]) instead of just before the cipher's limit.
    pub fn rekey_after(mut self, records: u64) -> Self {
        self.rekey_after = Some(records);
        self
    }

    /// Connects to `addr` and completes a TLS handshake with the server named `server_name`.
    /// Errors say what TLS found ("TLS handshake failed: the peer's certificate is not signed
    /// by a CA this side trusts ...").
    pub async fn connect(&self, addr: impl ToSocketAddrs, server_name: &str) -> io::Result<UringTlsTransport> {
        let stream = TcpStream::connect(addr).await?;
        let addr = stream.peer_addr().ok();
        let session = tls_session::connect(&stream, self.rustls.clone(), server_name)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
        log_path_once();
        let peer = Peer::at(addr).with_tls(Arc::new(session.peer.clone()));
        let inner = from_tcp_as(stream, self.config.clone(), true)?;
        Ok(UringTlsTransport { inner, session, peer, pool: self.pool.clone() }.with_rekey_after(self.rekey_after))
    }
}

/// Connects to `addr` over TLS on the engine, checking the server's certificate against
/// `server_name` and the CAs of `tls` (see [`UringTlsConnector::connect`]).
pub async fn connect_tls(addr: impl ToSocketAddrs, server_name: &str, tls: &TlsClientConfig, config: UringConfig) -> io::Result<UringTlsTransport> {
    UringTlsConnector::new(tls, config)?.connect(addr, server_name).await
}

/// A client over TLS on the engine that re-dials `addr` whenever the connection is lost, as
/// `Client::connect_tls` does over tcp; `config.connect_timeout` covers connect, handshake and
/// hello. Errors name the address (`connecting to 127.0.0.1:7411 (uring+tls, localhost): ...`).
pub async fn client(
    addr: impl ToSocketAddrs,
    server_name: &str,
    tls: TlsClientConfig,
    uring: UringConfig,
    config: ClientConfig,
) -> Result<Client, ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await?.collect();
    let target = match addrs.as_slice() {
        [one] => format!("{one} (uring+tls, {server_name})"),
        many => format!("{many:?} (uring+tls, {server_name})"),
    };
    let connector = UringTlsConnector::new(&tls, uring)?;
    let addrs: Arc<[SocketAddr]> = addrs.into();
    let name: Arc<str> = server_name.into();
    Client::connect_with(
        move || {
            let (connector, addrs, name) = (connector.clone(), addrs.clone(), name.clone());
            async move { connector.connect(&addrs[..], &name).await }
        },
        config,
    )
    .await
    .map_err(|e| e.with_target(target))
}
