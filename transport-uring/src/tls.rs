//! TLS 1.3 on the zero-copy transport, with one pass over the data on each side.
//!
//! rustls runs the handshake (certificates, mutual TLS, ALPN `zcrpc/1`, the errors of
//! `rpc_core::transport::tls`, from the same [`TlsServerConfig`] and [`TlsClientConfig`]); then
//! each half protects its own direction's records ([`rpc_core::transport::tls_session`]):
//!
//! - **Sending**: a batch of frames (heads, messages, attachments) is copied into pool buffers
//!   of a [`BufferPool`] where each record goes, up to 16 KiB of plaintext a record across frame
//!   boundaries, and sealed there in place; the buffers go out through the engine's copy or
//!   zero-copy path as any other pool buffer ([`UringSend`]). The ciphertext is the only copy.
//! - **Receiving**: each record is read straight into the frame's receive buffer (the buffer the
//!   driver gives `RecvHalf::recv`: a large frame's own 64-byte-aligned buffer) so that its
//!   plaintext lands where plaintext TCP would have put it, and is authenticated and decrypted
//!   there. The 5-byte header goes over the last 5 bytes already received, which are put back
//!   after decryption. Attachments are single aligned slices as on plain uring. A record that
//!   cannot land there (into an empty buffer, past the buffer's end) is decrypted aside and
//!   copied in: counted in `tls_bytes_copied`.
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
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rpc_core::transport::tls::rustls::AlertDescription;
use rpc_core::transport::tls::{log_handshake_error, rustls, HandshakeError, TlsClientConfig, TlsServerConfig, ALPN, MAX_HANDSHAKES};
use rpc_core::transport::tls_session::{
    self, body_len, Opened, RecordOpener, RecordSealer, Session, HEADER_LEN, KEY_UPDATE_RECORD_LEN, MAX_CIPHERTEXT, MAX_PLAINTEXT,
    RECORD_OVERHEAD,
};
use rpc_core::transport::{Acceptor, RecvHalf, SendHalf, Transport};
use rpc_core::{Client, ClientConfig, ConnectError, Peer, Segment, Transmit, TransportStats};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinSet;

use crate::buf::{BufferPool, ZcBuf};
use crate::config::{RecvMode, SnapshotPolicy, UringConfig};
use crate::engine::close::CloseHandle;
use crate::engine::UringSend;
use crate::transport::{from_tcp_as, UringTransport};

/// Default pool for ciphertext: 8 MiB in buffers of 256 KiB, shared by the connections of one
/// acceptor (or one client's dials).
pub const DEFAULT_POOL_BYTES: usize = 8 << 20;
/// Bytes per ciphertext buffer of the default pool.
pub const DEFAULT_POOL_BUF: usize = 256 << 10;

/// The smallest record started at the end of a buffer (less goes to the next buffer).
const MIN_RECORD: usize = 1024;

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
        let (send, stream, stats, close) = self.inner.split_send();
        let Session { sealer, opener, leftover, .. } = self.session;
        let owed = Arc::new(AtomicU16::new(0));
        let recv = UringTlsRecv {
            owed: owed.clone(),
            stream,
            opener,
            stats: stats.clone(),
            _close: close,
            leftover,
            header: BytesMut::with_capacity(HEADER_LEN),
            scratch: BytesMut::with_capacity(2 * HEADER_LEN + MAX_CIPHERTEXT),
            pending: 0..0,
            eof: false,
            busy: false,
            key_updates: 0,
        };
        let send = UringTlsSend { inner: send, sealer, pool: self.pool, stats, cur: None, open: 0, interrupted: false, owed };
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

/// The sending half: seals frames into pool buffers, which the engine sends.
pub struct UringTlsSend {
    inner: UringSend,
    sealer: RecordSealer,
    pool: BufferPool,
    stats: Arc<TransportStats>,
    /// The buffer being filled: its `len` bytes are sealed records; the record being filled has
    /// `open` bytes of plaintext after a header's room.
    cur: Option<ZcBuf>,
    open: usize,
    /// A send was cancelled with records sealed and not sent: the stream is broken.
    interrupted: bool,
    /// The alert the receiving half found the peer owed (its description + 1; 0: none).
    owed: Arc<AtomicU16>,
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

    /// Sends the current buffer's sealed records (after sealing the open one).
    async fn flush(&mut self) -> io::Result<()> {
        self.seal()?;
        let Some(buf) = self.cur.take() else { return Ok(()) };
        if buf.is_empty() {
            self.cur = Some(buf);
            return Ok(());
        }
        let t = Transmit { head: Bytes::new(), segments: vec![buf.into_segment()] };
        self.inner.send(&mut vec![t]).await
    }

    /// Copies `data` into records of the current buffer, sealing each full record and sending
    /// each full buffer.
    async fn put(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let buf = match self.cur.as_mut() {
                Some(b) => b,
                None => {
                    let b = match self.pool.take() {
                        Some(b) => b,
                        None => self.pool.take_wait().await,
                    };
                    self.cur.insert(b)
                }
            };
            let (used, cap) = (buf.len(), buf.capacity());
            if self.open == 0 && self.sealer.key_update_due() {
                // Between records: the key_update goes first, then records under the next key.
                if cap - used < KEY_UPDATE_RECORD_LEN + RECORD_OVERHEAD + MIN_RECORD {
                    self.flush().await?;
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
                self.flush().await?;
                continue;
            }
            let n = room.min(data.len());
            let at = used + HEADER_LEN + self.open;
            buf.as_full_mut()[at..at + n].copy_from_slice(&data[..n]);
            self.open += n;
            data = &data[n..];
            if self.open == MAX_PLAINTEXT {
                self.seal()?;
            }
        }
        Ok(())
    }

    async fn send_inner(&mut self, batch: &mut Vec<Transmit>) -> io::Result<()> {
        for t in std::mem::take(batch) {
            self.put(&t.head).await?;
            for s in &t.segments {
                match s {
                    Segment::File(f) => {
                        // Records are sealed in memory: a file region is read first.
                        let b = f.read_to_bytes()?;
                        TransportStats::add(&self.stats.file_read_bytes, b.len() as u64);
                        self.put(&b).await?;
                    }
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
    /// Ciphertext read with the handshake: read before the socket.
    leftover: BytesMut,
    /// The next record's header (or its start), read with the previous record.
    header: BytesMut,
    /// Records decrypted aside; `pending` is the plaintext not yet handed over.
    scratch: BytesMut,
    pending: std::ops::Range<usize>,
    eof: bool,
    /// A receive is under way: one dropped mid-record leaves the stream inside a record.
    busy: bool,
    /// The peer's key updates counted in the stats so far.
    key_updates: u64,
}

impl fmt::Debug for UringTlsRecv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTlsRecv").field("records", &self.opener.records()).finish_non_exhaustive()
    }
}

/// What a read of ciphertext found.
enum Got {
    Some,
    Eof,
}

impl UringTlsRecv {
    /// Reads into `dst` until it holds `min` bytes, taking at most `max` in all (so that the
    /// start of the next record stays in the kernel, or comes as the next header). Bytes read
    /// with the handshake come first.
    async fn read_to(&mut self, dst: &mut BytesMut, min: usize, max: usize) -> io::Result<Got> {
        debug_assert!(min <= max && max <= dst.capacity());
        while dst.len() < min {
            let want = max - dst.len();
            if !self.leftover.is_empty() {
                let n = want.min(self.leftover.len());
                dst.extend_from_slice(&self.leftover.split_to(n));
                TransportStats::add(&self.stats.tls_bytes_copied, n as u64);
                continue;
            }
            let n = loop {
                match self.stream.try_read_buf(&mut (&mut *dst).limit(want)) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stream.readable().await?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(Got::Eof);
            }
            TransportStats::add(&self.stats.recv_bytes, n as u64);
        }
        Ok(Got::Some)
    }

    /// The next record's header; `None` at a clean end of stream (between records).
    async fn next_header(&mut self) -> io::Result<Option<[u8; HEADER_LEN]>> {
        let mut h = std::mem::take(&mut self.header);
        let got = self.read_to(&mut h, HEADER_LEN, HEADER_LEN).await;
        let header: [u8; HEADER_LEN] = match got? {
            Got::Some => h[..HEADER_LEN].try_into().expect("five bytes"),
            Got::Eof if h.is_empty() => return Ok(None),
            Got::Eof => return Err(cut_short(h.len(), HEADER_LEN)),
        };
        h.clear();
        self.header = h;
        Ok(Some(header))
    }

    /// Keeps what was read past a record (the start of the next one's header).
    fn keep_next_header(&mut self, extra: &[u8]) {
        self.header.clear();
        self.header.extend_from_slice(extra);
    }

    /// One record read into `buf`'s spare room, its header over the last 5 bytes received
    /// (saved and put back), and opened there.
    async fn in_place(&mut self, buf: &mut BytesMut, header: [u8; HEADER_LEN], len: usize) -> io::Result<Opened> {
        let base = buf.len() - HEADER_LEN;
        let mut tail = buf.split_off(base);
        let saved: [u8; HEADER_LEN] = tail[..HEADER_LEN].try_into().expect("five bytes");
        tail[..HEADER_LEN].copy_from_slice(&header);
        let record = HEADER_LEN + len;
        let max = (record + HEADER_LEN).min(tail.capacity());
        let got = self.read_to(&mut tail, record, max).await;
        let opened = match got {
            Ok(Got::Some) => {
                // (`truncate`, not `split_off`: the buffer keeps its capacity.)
                self.keep_next_header(&tail[record..]);
                tail.truncate(record);
                self.opener.open_in_place(&mut tail[..])
            }
            Ok(Got::Eof) => Err(cut_short(tail.len(), record)),
            Err(e) => Err(e),
        };
        // Put the buffer back as it was, plus the plaintext.
        tail[..HEADER_LEN].copy_from_slice(&saved);
        let keep = match opened {
            Ok(Opened::Data(n)) => n,
            _ => 0,
        };
        tail.truncate(HEADER_LEN + keep);
        buf.unsplit(tail);
        opened
    }

    /// One record read into the scratch buffer and opened there; its plaintext is `pending`.
    async fn aside(&mut self, header: [u8; HEADER_LEN], len: usize) -> io::Result<Opened> {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        s.extend_from_slice(&header);
        let record = HEADER_LEN + len;
        let got = self.read_to(&mut s, record, record + HEADER_LEN).await;
        let r = match got {
            Ok(Got::Some) => {
                self.keep_next_header(&s[record..]);
                s.truncate(record);
                let r = self.opener.open_in_place(&mut s[..]);
                if let Ok(Opened::Data(n)) = r {
                    self.pending = HEADER_LEN..HEADER_LEN + n;
                }
                r
            }
            Ok(Got::Eof) => Err(cut_short(s.len(), record)),
            Err(e) => Err(e),
        };
        self.scratch = s;
        r
    }

    async fn recv_inner(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            let room = buf.capacity() - buf.len();
            if !self.pending.is_empty() {
                let n = room.min(self.pending.len());
                let from = self.pending.start;
                buf.extend_from_slice(&self.scratch[from..from + n]);
                self.pending.start += n;
                TransportStats::add(&self.stats.tls_bytes_copied, n as u64);
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            let Some(header) = self.next_header().await? else {
                // The peer closed TCP between records, without close_notify (a process that
                // exited): an end of stream as on plain TCP; a frame it cut is reported by the
                // frame decoder, and no byte of a record cut short was handed up.
                self.eof = true;
                return Ok(0);
            };
            let len = body_len(&header)?;
            let opened = if buf.len() >= HEADER_LEN && room >= len {
                match self.in_place(buf, header, len).await? {
                    Opened::Data(n) => return Ok(n),
                    other => other,
                }
            } else {
                self.aside(header, len).await?
            };
            match opened {
                Opened::Data(_) => {}
                // An empty record, a session ticket, or the peer's key update (now followed).
                Opened::Nothing => {
                    let followed = self.opener.key_updates();
                    TransportStats::add(&self.stats.tls_key_updates, followed - self.key_updates);
                    self.key_updates = followed;
                }
                Opened::Closed => self.eof = true,
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

type OnError = Arc<dyn Fn(&HandshakeError) + Send + Sync>;

/// A listener whose connections are TLS over the zero-copy engine: the [`Acceptor`] for
/// `Server::serve`. Handshakes run beside each other, at most [`MAX_HANDSHAKES`] at once, each
/// bounded by the server's handshake timeout; a failed one goes to
/// [`UringTlsAcceptor::on_handshake_error`] and the server goes on, as with
/// `rpc_core::transport::tls::TlsAcceptor`.
pub struct UringTlsAcceptor {
    listener: TcpListener,
    config: UringConfig,
    rustls: Arc<rustls::ServerConfig>,
    pool: Option<BufferPool>,
    handshake_timeout: Duration,
    max_handshakes: usize,
    handshakes: JoinSet<Option<UringTlsTransport>>,
    on_error: OnError,
    rekey_after: Option<u64>,
}

impl fmt::Debug for UringTlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringTlsAcceptor")
            .field("listener", &self.listener)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("handshakes", &self.handshakes.len())
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
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: MAX_HANDSHAKES,
            handshakes: JoinSet::new(),
            on_error: Arc::new(log_handshake_error),
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
        self.max_handshakes = n.max(1);
        self
    }

    /// The handshake timeout, for an acceptor not given to `Server::serve` (which sets its own).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Called for every failed handshake in place of the default log line.
    pub fn on_handshake_error(mut self, f: impl Fn(&HandshakeError) + Send + Sync + 'static) -> Self {
        self.on_error = Arc::new(f);
        self
    }

    /// Each connection updates its sending key every `records` records (see
    /// [`RecordSealer::rekey_after`]) instead of just before the cipher's limit.
    pub fn rekey_after(mut self, records: u64) -> Self {
        self.rekey_after = Some(records);
        self
    }
}

/// The server's side of one handshake, bounded by `limit`, then the engine set up.
async fn accept_one(
    stream: TcpStream,
    addr: SocketAddr,
    rustls: Arc<rustls::ServerConfig>,
    config: UringConfig,
    pool: BufferPool,
    limit: Duration,
) -> io::Result<UringTlsTransport> {
    let session = match tokio::time::timeout(limit, tls_session::accept(&stream, rustls)).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("the TLS handshake did not finish within {limit:?}"))),
    };
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
            let room = self.handshakes.len() < self.max_handshakes;
            tokio::select! {
                r = self.listener.accept(), if room => {
                    let (stream, addr) = r?;
                    let pool = match &self.pool {
                        Some(p) => p.clone(),
                        None => self.pool.insert(default_pool()?).clone(),
                    };
                    let (rustls, config, limit, on_error) = (self.rustls.clone(), self.config.clone(), self.handshake_timeout, self.on_error.clone());
                    let rekey_after = self.rekey_after;
                    self.handshakes.spawn(async move {
                        match accept_one(stream, addr, rustls, config, pool, limit).await {
                            Ok(t) => Some(t.with_rekey_after(rekey_after)),
                            Err(error) => {
                                on_error(&HandshakeError { peer: addr, error });
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(t)) = done {
                        return Ok(t);
                    }
                }
            }
        }
    }

    fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
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
