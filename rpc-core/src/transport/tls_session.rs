//! TLS 1.3 whose records a transport seals and opens in memory of its own choosing, so that the
//! cipher is the only pass over the bytes: what `transport-uring`'s TLS is built on, and what a
//! kernel-TLS path would start from (feature `tls`).
//!
//! rustls runs the handshake, through its unbuffered API over a tokio `TcpStream`
//! ([`connect`], [`accept`]): certificates, mutual TLS, ALPN and the errors are those of
//! [`super::tls`], from the same [`super::tls::TlsServerConfig`] and
//! [`super::tls::TlsClientConfig`]. Then rustls hands over the traffic keys and sequence numbers
//! (`dangerous_into_kernel_connection`, the step kTLS takes too), and each direction protects its
//! records itself with `ring`'s AEAD, for the suite rustls negotiated:
//!
//! - [`RecordSealer::seal_in_place`] seals plaintext the transport already put where the record
//!   goes (its send buffer): the copy of the plaintext into the send buffer is the only copy,
//!   and it becomes the ciphertext.
//! - [`RecordOpener::open_in_place`] authenticates and decrypts a record where it was received
//!   (the frame's receive buffer). A record that fails authentication is an error and none of
//!   its bytes are handed out (verify before reveal).
//!
//! Why not rustls's own record layer: in rustls 0.23 the unbuffered `WriteTraffic::encrypt`
//! seals into a buffer of its own and copies the record into the caller's, and
//! `ReadTraffic::next_record` hands out a copy of the plaintext (`received_plaintext`, a `Vec`
//! per record): one more pass over every byte in each direction. The halves of a connection also
//! run on two tasks, and a rustls connection is one state machine; with the keys split, each
//! half owns its direction and nothing is locked.
//!
//! Key updates (RFC 8446 §4.6.3): a key may protect only so many records (2^24 for AES-GCM,
//! RFC 8446 §5.5: about 275 GB of full records, under two minutes at 2.5 GB/s). So the sealer
//! updates its key before that ([`RecordSealer::key_update_due`], [`RecordSealer::seal_key_update`]),
//! and the opener follows the peer's updates, answering one that asks for ours; rustls's
//! `KernelConnection`, kept from the handshake, derives each next traffic secret. rustls peers
//! (the tcp transport's TLS) update their keys on their own near the limit, and follow ours.
//!
//! Limits: after the handshake, a session ticket from the peer is skipped (our servers send
//! none: [`for_sessions_server`] turns them off).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use ring::aead;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{AlertDescription, ConnectionTrafficSecrets, ExtractedSecrets};
use tokio::net::TcpStream;

use super::tls::{check_alpn, identity_of, tls_error};
use crate::identity::TlsIdentity;

/// Largest plaintext of one record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// A record header: content type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// The AEAD tag of every TLS 1.3 suite.
pub const TAG_LEN: usize = 16;
/// Bytes a record adds to its plaintext: header, inner content type, tag.
pub const RECORD_OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;
/// Largest protected record body allowed on the wire (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;

/// A sealed `key_update` record: its handshake message is 5 bytes (RFC 8446 §4.6.3).
pub const KEY_UPDATE_RECORD_LEN: usize = KEY_UPDATE_MESSAGE_LEN + RECORD_OVERHEAD;
const KEY_UPDATE_MESSAGE_LEN: usize = 5;
/// Handshake message types after the handshake.
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// The rustls client configuration [`connect`] needs: the same, with secret extraction on
/// (the keys go to the record layer here, as they would go to the kernel).
pub fn for_sessions_client(config: &rustls::ClientConfig) -> Arc<rustls::ClientConfig> {
    let mut c = config.clone();
    c.enable_secret_extraction = true;
    Arc::new(c)
}

/// The rustls server configuration [`accept`] needs: secret extraction on, no session tickets
/// (a ticket would be a record of its own after the handshake; the record layer here does not
/// resume sessions).
pub fn for_sessions_server(config: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut c = config.clone();
    c.enable_secret_extraction = true;
    c.send_tls13_tickets = 0;
    Arc::new(c)
}

/// A finished handshake: a sealer for what this side sends, an opener for what it receives,
/// ciphertext already read past the handshake (the peer's first records), and who the peer is.
#[derive(Debug)]
pub struct Session {
    /// Seals records this side sends.
    pub sealer: RecordSealer,
    /// Opens records this side receives.
    pub opener: RecordOpener,
    /// Records (or their beginning) read with the handshake's last flight: they come before
    /// anything read from the socket.
    pub leftover: BytesMut,
    /// The peer's verified certificate, in words.
    pub peer: TlsIdentity,
}

/// One direction's key, nonce base and sequence number.
struct Keys {
    key: aead::LessSafeKey,
    iv: [u8; 12],
    seq: u64,
    /// Records this key may protect (the suite's confidentiality limit).
    limit: u64,
}

/// rustls's hold on the connection after the handshake: what derives each direction's next
/// traffic secret at a key update (RFC 8446 §7.2).
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

/// What the two halves of a connection share to follow key updates.
struct KeySchedule {
    kernel: Mutex<Kernel>,
    /// The peer asked for our sending key to be updated (`update_requested`): the sealer owes
    /// a `key_update` before its next record.
    requested: AtomicBool,
}

impl std::fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySchedule").field("requested", &self.requested).finish_non_exhaustive()
    }
}

impl KeySchedule {
    /// The next key of one direction (`send`: ours; else the peer's).
    fn next(&self, send: bool) -> io::Result<Keys> {
        let mut kernel = self.kernel.lock().unwrap_or_else(|e| e.into_inner());
        let secrets = match (&mut *kernel, send) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
        };
        Keys::new(secrets.map_err(|e| tls_error(&e, None))?)
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("algorithm", self.key.algorithm())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Keys> {
        let (alg, key, iv, limit) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv, 1 << 24),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv, 1 << 24),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv, u64::MAX),
            _ => return Err(io::Error::new(io::ErrorKind::Unsupported, "TLS: the negotiated cipher suite has no record layer here")),
        };
        let key = aead::UnboundKey::new(alg, key.as_ref())
            .map_err(|_| io::Error::other("TLS: the traffic key does not fit its algorithm"))?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| io::Error::other("TLS: the traffic IV is not 12 bytes"))?;
        Ok(Keys { key: aead::LessSafeKey::new(key), iv, seq, limit })
    }

    /// The sequence number at which this key is updated at the latest: well before the suite's
    /// limit (15/16 of it), so that a record sealed meanwhile never meets it.
    fn latest_rekey(&self) -> u64 {
        self.limit - self.limit / 16
    }

    /// The next record's nonce (RFC 8446 §5.3), and the sequence number moved on.
    fn next_nonce(&mut self, what: &str) -> io::Result<aead::Nonce> {
        if self.seq >= self.limit {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("TLS: this connection's {what} key has protected as many records as its cipher allows; reconnect for fresh keys"),
            ));
        }
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq += 1;
        Ok(aead::Nonce::assume_unique_for_key(n))
    }
}

/// Seals application-data records in place, in the sending side's buffers.
#[derive(Debug)]
pub struct RecordSealer {
    keys: Keys,
    /// Where the next keys come from (none: a key that runs out ends the connection).
    schedule: Option<Arc<KeySchedule>>,
    /// The sequence number at which the key is updated.
    rekey_at: u64,
    updates: u64,
}

impl RecordSealer {
    fn new(keys: Keys, schedule: Option<Arc<KeySchedule>>) -> Self {
        RecordSealer { rekey_at: keys.latest_rekey(), keys, schedule, updates: 0 }
    }

    /// Updates the sending key every `records` records (at least 1) instead of just before the
    /// cipher's limit (15/16 of 2^24 records for AES-GCM): for tests, or a policy of shorter-lived keys.
    pub fn rekey_after(&mut self, records: u64) {
        self.rekey_at = records.clamp(1, self.keys.latest_rekey());
    }

    /// A `key_update` is owed before the next record: the key has sealed its share of records,
    /// or the peer asked for a new one. Seal it with [`RecordSealer::seal_key_update`].
    pub fn key_update_due(&self) -> bool {
        self.keys.seq >= self.rekey_at || self.schedule.as_ref().is_some_and(|s| s.requested.load(Ordering::Acquire))
    }

    /// Seals a `key_update` record (`update_not_requested`) at the start of `out` under the
    /// current key, then switches to the next key: the records sealed after it, sent after it,
    /// are the peer's to open with its next key. Returns the record's length,
    /// [`KEY_UPDATE_RECORD_LEN`]; `out` must hold that much.
    pub fn seal_key_update(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(schedule) = self.schedule.clone() else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "TLS: this record layer has no key schedule to update its key from"));
        };
        if out.len() < KEY_UPDATE_RECORD_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS: no room for a key_update record"));
        }
        // KeyUpdate: type, 24-bit length 1, request_update = update_not_requested (0).
        out[HEADER_LEN..HEADER_LEN + KEY_UPDATE_MESSAGE_LEN].copy_from_slice(&[KEY_UPDATE, 0, 0, 1, 0]);
        let n = self.seal(out, KEY_UPDATE_MESSAGE_LEN, HANDSHAKE)?;
        self.keys = schedule.next(true)?;
        schedule.requested.store(false, Ordering::Release);
        self.updates += 1;
        Ok(n)
    }

    /// Key updates this side has sent.
    pub fn key_updates(&self) -> u64 {
        self.updates
    }

    /// Seals `len` bytes of plaintext that lie at `out[HEADER_LEN..HEADER_LEN + len]` into one
    /// record in place: the header goes before them, the inner content type and the tag after.
    /// Returns the record's length, `len + RECORD_OVERHEAD`.
    ///
    /// `len` is at most [`MAX_PLAINTEXT`], and `out` holds the whole record (else an
    /// `InvalidInput` error, nothing written).
    pub fn seal_in_place(&mut self, out: &mut [u8], len: usize) -> io::Result<usize> {
        self.seal(out, len, APPLICATION_DATA)
    }

    /// An alert record for the peer: `close_notify` (a warning) at the end of a connection, or
    /// the fatal alert a failure owes it ([`RecordOpener::owed_alert`]), so that it can say why
    /// the connection ended.
    pub fn seal_alert(&mut self, description: AlertDescription) -> io::Result<Vec<u8>> {
        let level = if description == AlertDescription::CloseNotify { 1 } else { 2 };
        let mut out = vec![0u8; 2 + RECORD_OVERHEAD];
        out[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&[level, u8::from(description)]);
        let n = self.seal(&mut out, 2, ALERT)?;
        out.truncate(n);
        Ok(out)
    }

    fn seal(&mut self, out: &mut [u8], len: usize, content_type: u8) -> io::Result<usize> {
        let total = len + RECORD_OVERHEAD;
        if len > MAX_PLAINTEXT || out.len() < total {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS: a record's plaintext does not fit where it goes"));
        }
        let body = (len + 1 + TAG_LEN) as u16;
        let header = [APPLICATION_DATA, 3, 3, (body >> 8) as u8, body as u8];
        out[..HEADER_LEN].copy_from_slice(&header);
        out[HEADER_LEN + len] = content_type;
        let nonce = self.keys.next_nonce("sending")?;
        let (inner, tag_out) = out[HEADER_LEN..total].split_at_mut(len + 1);
        let tag = self
            .keys
            .key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(header), inner)
            .map_err(|_| io::Error::other("TLS: sealing a record failed"))?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(total)
    }

    /// Records sealed so far with this key (its sequence number).
    pub fn records(&self) -> u64 {
        self.keys.seq
    }
}

/// What a record held, once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// `n` bytes of application data: at `record[HEADER_LEN..HEADER_LEN + n]` after
    /// [`RecordOpener::open_in_place`], at the buffer's front after [`RecordOpener::open_within`].
    Data(usize),
    /// Nothing for the application (an empty record, a session ticket): go on reading.
    Nothing,
    /// The peer closed the connection (`close_notify`).
    Closed,
}

/// Opens records in place, in the receiving side's buffers.
#[derive(Debug)]
pub struct RecordOpener {
    keys: Keys,
    /// The alert the peer is owed after a failure here.
    owed: Option<AlertDescription>,
    /// Where the peer's next keys come from (none: a `key_update` ends the connection).
    schedule: Option<Arc<KeySchedule>>,
    updates: u64,
    /// Records in a row that held nothing for the application (see [`MAX_IDLE_RECORDS`]).
    idle: u32,
}

/// The most records in a row a peer may send with nothing for the application: key updates,
/// session tickets, empty records. Each costs this side a decryption (a key update also a key
/// derivation) for a few bytes of the peer's, and none moves the connection on; the next ends
/// it. Application data starts the count again, so long connections may update their keys as
/// often as their traffic needs (the same bound as BoringSSL's: 32 in a row).
pub const MAX_IDLE_RECORDS: u32 = 32;

/// The body length a record header announces, checked: a protected TLS 1.3 record
/// (application data, legacy version 3.3) no longer than the protocol allows. A peer that
/// sends anything else is not speaking TLS 1.3 or was altered in transit.
pub fn body_len(header: &[u8; HEADER_LEN]) -> io::Result<usize> {
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {why}"));
    match header[0] {
        APPLICATION_DATA => {}
        // An alert sent in the clear: a peer that failed before it had keys.
        ALERT if len == 2 => return Err(bad("the peer sent an unprotected alert record".into())),
        CHANGE_CIPHER_SPEC => return Err(bad("the peer sent change_cipher_spec after the handshake".into())),
        t => return Err(bad(format!("a record of content type {t} after the handshake: the peer is not speaking TLS 1.3, or its data was altered"))),
    }
    if header[1] != 3 {
        return Err(bad(format!("a record with version {}.{}: the data was altered in transit", header[1], header[2])));
    }
    if !(1 + TAG_LEN..=MAX_CIPHERTEXT).contains(&len) {
        return Err(bad(format!("a record of {len} bytes (a protected record holds 17 to {MAX_CIPHERTEXT})")));
    }
    Ok(len)
}

impl RecordOpener {
    /// Authenticates and decrypts one whole record (`record` = its header and body, the body
    /// as long as [`body_len`] says) in place. Application data lies at
    /// `record[HEADER_LEN..HEADER_LEN + n]` afterwards; a record that fails authentication is
    /// an error (`InvalidData`, "failed authentication"), and nothing in it is to be used.
    pub fn open_in_place(&mut self, record: &mut [u8]) -> io::Result<Opened> {
        self.open(record, 0, HEADER_LEN)
    }

    /// Authenticates and decrypts the whole record at `buf[at..]` (its header and body, up to
    /// the end of `buf`) and writes its content to the front of `buf`, in the one pass of the
    /// cipher: `Opened::Data(n)` says the content is `buf[..n]`. Records received back to back
    /// into one buffer open one after another into contiguous plaintext, each moved down over
    /// the headers and tags of those before it, with no copy. Otherwise as
    /// [`RecordOpener::open_in_place`]: nothing a failed record held is to be used (`buf` may
    /// hold anything from its front to its end then).
    ///
    /// ```
    /// # use rpc_core::transport::tls_session::{RecordOpener, Opened};
    /// # fn two(opener: &mut RecordOpener, wire: &mut [u8], first_len: usize) -> std::io::Result<usize> {
    /// // `wire` holds two records as received; their contents end up at its front, in order.
    /// let Opened::Data(a) = opener.open_within(&mut wire[..first_len], 0)? else { return Ok(0) };
    /// let Opened::Data(b) = opener.open_within(&mut wire[a..], first_len - a)? else { return Ok(a) };
    /// Ok(a + b) // wire[..a + b] is the plaintext of both
    /// # }
    /// ```
    pub fn open_within(&mut self, buf: &mut [u8], at: usize) -> io::Result<Opened> {
        self.open(buf, at, 0)
    }

    /// Opens the record at `buf[at..]` (exactly one record) into `buf[out..]`, `out` no further
    /// than the record's body (`at + HEADER_LEN`).
    fn open(&mut self, buf: &mut [u8], at: usize, out: usize) -> io::Result<Opened> {
        let header: [u8; HEADER_LEN] = buf
            .get(at..at + HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "TLS: a record shorter than its header"))?;
        let len = body_len(&header)?;
        if buf.len() != at + HEADER_LEN + len || out > at + HEADER_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "TLS: opening a record needs exactly one record, its content going no further than its body"));
        }
        let nonce = self.keys.next_nonce("receiving")?;
        let plain = match self.keys.key.open_within(nonce, aead::Aad::from(header), &mut buf[out..], at + HEADER_LEN - out..) {
            Ok(plain) => plain,
            Err(_) => {
                self.owed = Some(AlertDescription::BadRecordMac);
                return Err(tls_error(&rustls::Error::DecryptError, None));
            }
        };
        // The inner plaintext: content, content type, zero padding.
        let Some(end) = plain.iter().rposition(|&b| b != 0) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: a record without a content type (all padding)"));
        };
        let typ = plain[end];
        // A record with nothing for the application: counted, and one past the limit ends the
        // connection here, before a key update's derivation. Data starts the count again.
        if typ == HANDSHAKE || (typ == APPLICATION_DATA && end == 0) {
            if self.idle >= MAX_IDLE_RECORDS {
                self.owed = Some(AlertDescription::UnexpectedMessage);
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: the peer sent {} records in a row with nothing for the application (key updates, session tickets or empty records; at most {MAX_IDLE_RECORDS} are taken)", self.idle + 1)));
            }
            self.idle += 1;
        } else if typ == APPLICATION_DATA {
            self.idle = 0;
        }
        match typ {
            APPLICATION_DATA if end == 0 => Ok(Opened::Nothing),
            APPLICATION_DATA => Ok(Opened::Data(end)),
            ALERT => match &plain[..end] {
                [_, 0] => Ok(Opened::Closed),
                [_, d] => Err(tls_error(&rustls::Error::AlertReceived(AlertDescription::from(*d)), None)),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: a malformed alert")),
            },
            HANDSHAKE => self.post_handshake(&plain[..end]),
            t => Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: a protected record of content type {t}"))),
        }
    }

    /// Records opened so far with this key (its sequence number).
    pub fn records(&self) -> u64 {
        self.keys.seq
    }

    /// Key updates of the peer's that this side has followed.
    pub fn key_updates(&self) -> u64 {
        self.updates
    }

    /// Handshake messages after the handshake: session tickets are skipped; a key update moves
    /// to the peer's next key (and owes the peer ours, if it asked). A key update must end its
    /// record: the records after it are under the next key.
    fn post_handshake(&mut self, mut msgs: &[u8]) -> io::Result<Opened> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {why}"));
        while !msgs.is_empty() {
            let [typ, a, b, c, rest @ ..] = msgs else { return Err(bad("a truncated handshake message after the handshake")) };
            let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            let Some(body) = rest.get(..len) else { return Err(bad("a truncated handshake message after the handshake")) };
            match *typ {
                NEW_SESSION_TICKET => {}
                KEY_UPDATE => {
                    let request = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(bad("a malformed key_update")),
                    };
                    if rest.len() != len {
                        return Err(bad("a key_update that does not end its record"));
                    }
                    let Some(schedule) = self.schedule.clone() else {
                        return Err(io::Error::new(io::ErrorKind::Unsupported, "TLS: the peer updated its traffic keys (key_update), and this record layer has no key schedule to follow it"));
                    };
                    self.keys = schedule.next(false)?;
                    self.updates += 1;
                    if request {
                        schedule.requested.store(true, Ordering::Release);
                    }
                }
                t => return Err(bad(&format!("an unexpected handshake message (type {t}) after the handshake"))),
            }
            msgs = &rest[len..];
        }
        Ok(Opened::Nothing)
    }

    /// The alert the peer is owed after a failure here (`bad_record_mac` for a record that
    /// failed authentication), for the sending side to seal ([`RecordSealer::seal_alert`]).
    pub fn owed_alert(&self) -> Option<AlertDescription> {
        self.owed
    }
}

/// Writes all of `bytes` to `stream`.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what the socket has to `buf`; an end of stream is an error (mid-handshake).
async fn read_more(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    buf.reserve(4096);
    let n = super::tcp::read_ready(stream, buf).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection during the TLS handshake"));
    }
    Ok(())
}

/// The length of the complete record at the front of `bytes`, if it is all there.
fn complete_record(bytes: &[u8]) -> Option<usize> {
    let h = bytes.get(..HEADER_LEN)?;
    let n = HEADER_LEN + u16::from_be_bytes([h[3], h[4]]) as usize;
    (bytes.len() >= n).then_some(n)
}

/// What one turn of the handshake asks for.
enum Step {
    Encoded,
    Transmit,
    NeedMore,
    Done,
    Failed(rustls::Error),
    Unexpected(&'static str),
}

fn step<Data>(status: UnbufferedStatus<'_, '_, Data>, out: &mut Vec<u8>) -> (usize, Step) {
    let discard = status.discard;
    let step = match status.state {
        Err(e) => Step::Failed(e),
        Ok(ConnectionState::EncodeTlsData(mut enc)) => {
            let at = out.len();
            out.resize(at + 16 * 1024, 0);
            let r = match enc.encode(&mut out[at..]) {
                Err(EncodeError::InsufficientSize(s)) if s.required_size <= 1 << 20 => {
                    out.resize(at + s.required_size, 0);
                    enc.encode(&mut out[at..])
                }
                r => r,
            };
            match r {
                Ok(n) => {
                    out.truncate(at + n);
                    Step::Encoded
                }
                Err(_) => {
                    out.truncate(at);
                    Step::Unexpected("rustls could not encode a handshake message")
                }
            }
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            Step::Transmit
        }
        Ok(ConnectionState::BlockedHandshake) => Step::NeedMore,
        Ok(ConnectionState::WriteTraffic(_)) => Step::Done,
        Ok(ConnectionState::ReadTraffic(_) | ConnectionState::ReadEarlyData(_)) => Step::Unexpected("application data inside the handshake"),
        Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::Unexpected("the peer closed the connection during the TLS handshake"),
        Ok(_) => Step::Unexpected("a TLS handshake state this transport does not know"),
    };
    (discard, step)
}

/// Runs a handshake over `stream`, the records fed to rustls one at a time so that it stops at
/// the end of the handshake: what follows stays ciphertext, for the record layer.
macro_rules! drive {
    ($conn:expr, $stream:expr, $name:expr) => {{
        let conn = &mut $conn;
        let mut incoming = BytesMut::with_capacity(16 * 1024);
        // Complete records given to rustls ([..given]); `shown` may add a partial one (so that
        // rustls judges its header early: a peer that is not speaking TLS).
        let mut given = 0usize;
        let mut out = Vec::new();
        loop {
            let shown = given + if complete_record(&incoming[given..]).is_none() { incoming.len() - given } else { 0 };
            let (discard, s) = step(conn.process_tls_records(&mut incoming[..shown]), &mut out);
            incoming.advance(discard);
            given -= discard.min(given);
            match s {
                Step::Encoded => {}
                Step::Transmit => {
                    write_all($stream, &out).await?;
                    out.clear();
                }
                Step::NeedMore => {
                    if !out.is_empty() {
                        write_all($stream, &out).await?;
                        out.clear();
                    }
                    match complete_record(&incoming[given..]) {
                        Some(n) => given += n,
                        None => read_more($stream, &mut incoming).await?,
                    }
                }
                Step::Done => break,
                Step::Failed(e) => {
                    // An alert rustls queued for the peer (unknown CA, bad certificate, ...):
                    // send it, so the peer can say what happened.
                    let mut alert = Vec::new();
                    if let (_, Step::Encoded) = step(conn.process_tls_records(&mut []), &mut alert) {
                        let _ = write_all($stream, &alert).await;
                    }
                    return Err(tls_error(&e, $name));
                }
                Step::Unexpected(what) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {what}"))),
            }
        }
        if !out.is_empty() {
            write_all($stream, &out).await?;
        }
        // Bytes rustls saw but did not consume: none at the end of a handshake fed record by
        // record; the rest is the peer's first records.
        let _ = incoming.split_to(given);
        incoming
    }};
}

fn finish(secrets: ExtractedSecrets, kernel: Kernel, leftover: BytesMut, peer: TlsIdentity) -> io::Result<Session> {
    let schedule = Arc::new(KeySchedule { kernel: Mutex::new(kernel), requested: AtomicBool::new(false) });
    Ok(Session {
        sealer: RecordSealer::new(Keys::new(secrets.tx)?, Some(schedule.clone())),
        opener: RecordOpener { keys: Keys::new(secrets.rx)?, owed: None, schedule: Some(schedule), updates: 0, idle: 0 },
        leftover,
        peer,
    })
}

/// The client's side: a TLS 1.3 handshake with the server named `server_name` over a connected
/// `stream`, with a configuration from [`for_sessions_client`]. Errors say what TLS found
/// ([`super::tls::describe`]).
pub async fn connect(stream: &TcpStream, config: Arc<rustls::ClientConfig>, server_name: &str) -> io::Result<Session> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{server_name:?} is not a valid server name: {e}"))
    })?;
    let mut conn = UnbufferedClientConnection::new(config, name).map_err(|e| tls_error(&e, Some(server_name)))?;
    let leftover = drive!(conn, stream, Some(server_name));
    check_alpn(conn.alpn_protocol(), "server")?;
    let peer = identity_of(conn.peer_certificates().and_then(|c| c.first()));
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(|e| tls_error(&e, Some(server_name)))?;
    finish(secrets, Kernel::Client(kernel), leftover, peer)
}

/// The server's side of a handshake on an accepted `stream`, with a configuration from
/// [`for_sessions_server`]. A client speaking plaintext zcrpc is answered with a TLS alert and
/// refused with an error that says so. Bound it with a timeout: a silent client waits here.
pub async fn accept(stream: &TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<Session> {
    super::tls::refuse_if_plaintext(stream).await?;
    let mut conn = UnbufferedServerConnection::new(config).map_err(|e| tls_error(&e, None))?;
    let leftover = drive!(conn, stream, None);
    check_alpn(conn.alpn_protocol(), "client")?;
    let peer = identity_of(conn.peer_certificates().and_then(|c| c.first()));
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(|e| tls_error(&e, None))?;
    finish(secrets, Kernel::Server(kernel), leftover, peer)
}

/// Whether this kernel offers kernel TLS (`tls` in `net.ipv4.tcp_available_ulp`). zcrpc does
/// not use it yet (see `docs/security.md`); the stats and logs say which path is used.
pub fn ktls_available() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .map(|s| s.split_whitespace().any(|u| u == "tls"))
            .unwrap_or(false)
    })
}

/// The TLS path in words, for stats and logs: `rustls user-space records (kernel TLS absent)`.
pub fn path_description() -> &'static str {
    if ktls_available() {
        "rustls user-space records (kernel TLS available, not used)"
    } else {
        "rustls user-space records (kernel TLS absent)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sealer and an opener sharing one key (no key schedule: made without a handshake).
    fn pair_of(key: impl Fn() -> ConnectionTrafficSecrets) -> (RecordSealer, RecordOpener) {
        (
            RecordSealer::new(Keys::new((0, key())).unwrap(), None),
            RecordOpener { keys: Keys::new((0, key())).unwrap(), owed: None, schedule: None, updates: 0, idle: 0 },
        )
    }

    fn pair() -> (RecordSealer, RecordOpener) {
        pair_of(|| ConnectionTrafficSecrets::Chacha20Poly1305 {
            key: rustls::crypto::cipher::AeadKey::from([7u8; 32]),
            iv: [9u8; 12].into(),
        })
    }

    #[test]
    fn a_record_sealed_in_place_opens_in_place_and_a_flipped_bit_is_refused() {
        let (mut s, mut o) = pair();
        let mut buf = vec![0u8; 100 + RECORD_OVERHEAD];
        buf[HEADER_LEN..HEADER_LEN + 100].copy_from_slice(&[42u8; 100]);
        let n = s.seal_in_place(&mut buf, 100).unwrap();
        assert_eq!(n, buf.len());
        assert_ne!(&buf[HEADER_LEN..HEADER_LEN + 100], &[42u8; 100][..], "encrypted");
        let mut tampered = buf.clone();
        assert_eq!(o.open_in_place(&mut buf).unwrap(), Opened::Data(100));
        assert_eq!(&buf[HEADER_LEN..HEADER_LEN + 100], &[42u8; 100][..]);
        // The next record under the same key: a replayed (or altered) one fails.
        tampered[50] ^= 1;
        let e = o.open_in_place(&mut tampered).unwrap_err();
        assert!(e.to_string().contains("failed authentication"), "{e}");
        assert_eq!(o.owed_alert(), Some(AlertDescription::BadRecordMac));
    }

    /// `records` sealed back to back, as they arrive on the wire.
    fn wire(s: &mut RecordSealer, records: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        for r in records {
            let at = out.len();
            out.resize(at + r.len() + RECORD_OVERHEAD, 0);
            out[at + HEADER_LEN..at + HEADER_LEN + r.len()].copy_from_slice(r);
            s.seal_in_place(&mut out[at..], r.len()).unwrap();
            ends.push(out.len());
        }
        (out, ends)
    }

    /// A sealer and an opener sharing an AES-256-GCM key (the suite rustls's defaults pick).
    fn aes_pair() -> (RecordSealer, RecordOpener) {
        pair_of(|| ConnectionTrafficSecrets::Aes256Gcm {
            key: rustls::crypto::cipher::AeadKey::from([7u8; 32]),
            iv: [9u8; 12].into(),
        })
    }

    #[test]
    fn records_received_back_to_back_open_within_into_contiguous_plaintext() {
        for (mut s, mut o) in [pair(), aes_pair()] {
            back_to_back(&mut s, &mut o);
        }
    }

    fn back_to_back(s: &mut RecordSealer, o: &mut RecordOpener) {
        let (a, b, c) = (vec![1u8; 1000], vec![2u8; MAX_PLAINTEXT], vec![3u8; 7]);
        let (mut buf, ends) = wire(s, &[&a, &b, &[], &c]);
        // Each record opens from where it was received to where the plaintext so far ends.
        let (mut p, mut at) = (0, 0);
        for end in ends {
            match o.open_within(&mut buf[p..end], at - p).unwrap() {
                Opened::Data(n) => p += n,
                Opened::Nothing => {}
                Opened::Closed => unreachable!(),
            }
            at = end;
        }
        assert_eq!(p, a.len() + b.len() + c.len());
        assert!(buf[..p] == [a, b, c].concat()[..], "the contents, in order, at the front");
    }

    #[test]
    fn a_flipped_bit_in_a_later_record_is_refused_and_leaves_the_earlier_plaintext_alone() {
        let (mut s, mut o) = pair();
        let (mut buf, ends) = wire(&mut s, &[&[5u8; 300], &[6u8; 300]]);
        buf[ends[0] + 100] ^= 0x10;
        let Opened::Data(n) = o.open_within(&mut buf[..ends[0]], 0).unwrap() else { panic!("data") };
        let e = o.open_within(&mut buf[n..ends[1]], ends[0] - n).unwrap_err();
        assert!(e.to_string().contains("failed authentication"), "{e}");
        assert_eq!(&buf[..n], &[5u8; 300][..]);
        // Anything but exactly one whole record is refused before the cipher runs.
        let (mut s, mut o) = pair();
        let (mut buf, ends) = wire(&mut s, &[&[5u8; 300], &[6u8; 300]]);
        assert_eq!(o.open_within(&mut buf[..ends[1]], 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(o.open_within(&mut buf[..ends[0] - 1], 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(o.records(), 0, "no sequence number was used");
        assert_eq!(o.open_within(&mut buf[..ends[0]], 0).unwrap(), Opened::Data(300));
    }

    #[test]
    fn alerts_are_sealed_and_opened_as_what_they_say() {
        let (mut s, mut o) = pair();
        let mut close = s.seal_alert(AlertDescription::CloseNotify).unwrap();
        assert_eq!(o.open_in_place(&mut close).unwrap(), Opened::Closed);
        let mut bad = s.seal_alert(AlertDescription::BadRecordMac).unwrap();
        let e = o.open_in_place(&mut bad).unwrap_err();
        assert!(e.to_string().contains("the peer could not authenticate a record we sent"), "{e}");
    }

    /// `msg` sealed as a handshake record.
    fn handshake_record(s: &mut RecordSealer, msg: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; msg.len() + RECORD_OVERHEAD];
        out[HEADER_LEN..HEADER_LEN + msg.len()].copy_from_slice(msg);
        s.seal(&mut out, msg.len(), HANDSHAKE).unwrap();
        out
    }

    #[test]
    fn malformed_misplaced_or_unfollowable_key_updates_are_refused() {
        let (mut s, mut o) = pair();
        let mut ticket = handshake_record(&mut s, &[NEW_SESSION_TICKET, 0, 0, 2, 7, 7]);
        assert_eq!(o.open_in_place(&mut ticket).unwrap(), Opened::Nothing, "a session ticket is skipped");
        for (msg, why) in [
            (&[KEY_UPDATE, 0, 0, 1, 2][..], "malformed key_update"),
            (&[KEY_UPDATE, 0, 0, 2, 0, 0][..], "malformed key_update"),
            (&[KEY_UPDATE, 0, 0, 1, 0, NEW_SESSION_TICKET, 0, 0, 0][..], "does not end its record"),
            (&[NEW_SESSION_TICKET, 0, 0, 9, 1][..], "truncated"),
            (&[KEY_UPDATE, 0, 0][..], "truncated"),
            (&[20, 0, 0, 0][..], "unexpected handshake message (type 20)"),
            // Well formed, but this opener has no key schedule (made without a handshake).
            (&[KEY_UPDATE, 0, 0, 1, 1][..], "no key schedule"),
        ] {
            let (mut s, mut o) = pair();
            let mut record = handshake_record(&mut s, msg);
            let e = o.open_in_place(&mut record).unwrap_err();
            assert!(e.to_string().contains(why), "{msg:?}: {e}");
        }
    }

    #[test]
    fn a_run_of_records_with_nothing_for_the_application_ends_past_the_limit_and_data_starts_it_again() {
        let (mut s, mut o) = pair();
        let empty = |s: &mut RecordSealer| wire(s, &[&[]]).0;
        let ticket = |s: &mut RecordSealer| handshake_record(s, &[NEW_SESSION_TICKET, 0, 0, 2, 7, 7]);
        // Up to the limit in a row, then data, then the limit again: all taken.
        for round in 0..2 {
            for i in 0..MAX_IDLE_RECORDS {
                let mut r = if i % 2 == 0 { empty(&mut s) } else { ticket(&mut s) };
                assert_eq!(o.open_in_place(&mut r).unwrap(), Opened::Nothing, "round {round}, record {i}");
            }
            let mut data = wire(&mut s, &[&[1u8; 10]]).0;
            assert_eq!(o.open_in_place(&mut data).unwrap(), Opened::Data(10));
        }
        for _ in 0..MAX_IDLE_RECORDS {
            o.open_in_place(&mut empty(&mut s)).unwrap();
        }
        // One more in a row ends it, naming what happened.
        let e = o.open_in_place(&mut ticket(&mut s)).unwrap_err();
        assert!(e.to_string().contains("33 records in a row with nothing for the application"), "{e}");
        assert_eq!(o.owed_alert(), Some(AlertDescription::UnexpectedMessage));
    }

    #[test]
    fn the_sealer_owes_an_update_after_its_share_of_records_and_never_past_the_limit() {
        let aes = (0, ConnectionTrafficSecrets::Aes256Gcm { key: rustls::crypto::cipher::AeadKey::from([1u8; 32]), iv: [2u8; 12].into() });
        let mut s = RecordSealer::new(Keys::new(aes).unwrap(), None);
        assert_eq!(s.rekey_at, (1 << 24) - (1 << 20), "by default well before AES-GCM's 2^24 records");
        s.rekey_after(u64::MAX);
        assert_eq!(s.rekey_at, (1 << 24) - (1 << 20), "never past it");
        s.rekey_after(2);
        let mut buf = vec![0u8; 10 + RECORD_OVERHEAD];
        s.seal_in_place(&mut buf, 10).unwrap();
        assert!(!s.key_update_due());
        s.seal_in_place(&mut buf, 10).unwrap();
        assert!(s.key_update_due(), "after 2 records");
        // Without a key schedule it cannot: a clear error, nothing sealed.
        let mut out = vec![0u8; KEY_UPDATE_RECORD_LEN];
        assert!(s.seal_key_update(&mut out).unwrap_err().to_string().contains("no key schedule"));
        assert_eq!(s.records(), 2);
    }

    #[test]
    fn headers_that_are_not_protected_tls13_records_are_refused() {
        assert_eq!(body_len(&[23, 3, 3, 0, 17]).unwrap(), 17);
        assert!(body_len(&[23, 3, 3, 0x48, 0x01]).is_err(), "longer than 2^14 + 256");
        assert!(body_len(&[23, 3, 3, 0, 16]).is_err(), "shorter than a tag");
        assert!(body_len(&[b'Z', b'C', 1, 0, 0]).unwrap_err().to_string().contains("not speaking TLS"));
    }
}
