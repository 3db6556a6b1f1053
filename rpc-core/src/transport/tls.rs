//! TLS 1.3 over TCP, with rustls (the `ring` provider): server certificates, optional client
//! certificates verified against a root store (mutual TLS), and ALPN naming the wire version
//! ([`ALPN`], `zcrpc/1`). Feature `tls` (on by default).
//!
//! - Server: [`TlsAcceptor`] wraps a [`TcpAcceptor`] with a [`TlsServerConfig`]; handshakes run
//!   beside each other (a slow or silent client delays nobody), each bounded by the server's
//!   [`crate::ServerBuilder::handshake_timeout`]. A failed handshake is logged with its peer
//!   and cause ([`TlsAcceptor::on_handshake_error`]) and the server serves on.
//! - Client: [`crate::Client::connect_tls`], with a [`TlsClientConfig`] (the CA to trust, and
//!   a certificate of its own for mutual TLS). It re-dials like [`crate::Client::connect_tcp`].
//! - Handlers see who the client proved to be in [`crate::Peer::tls`] ([`TlsIdentity`]), and
//!   [`crate::ServerBuilder::authorize`] can refuse a call by method before its handler runs.
//!
//! The configurations ([`TlsServerConfig::rustls`], [`TlsClientConfig::rustls`]) and the
//! identity ([`identity_of`]) do not depend on TCP: another transport (io_uring) can drive the
//! same rustls connection over its own buffers.
//!
//! The bytes: each batch of frames is encrypted by rustls into its record buffer and written
//! (one copy, the cipher's); received records are decrypted in rustls's buffer, copied out by
//! rustls, and copied into the frame's receive buffer (two copies more than plaintext TCP,
//! counted in `tls_bytes_copied`; the io_uring transport's TLS has neither). A record that fails
//! authentication ends the connection with an error; a frame reaches a handler only when all
//! its bytes arrived, so nothing of a tampered frame is revealed.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let dir = std::env::temp_dir().join(format!("zcrpc-tls-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
//! # let mut ca = ca; ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
//! # let ca_key = rcgen::KeyPair::generate().unwrap();
//! # let ca_cert = ca.self_signed(&ca_key).unwrap();
//! # let issuer = rcgen::Issuer::new(ca, ca_key);
//! # let key = rcgen::KeyPair::generate().unwrap();
//! # let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
//! # std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
//! # std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
//! # std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
//! # let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
//! use rpc_core::transport::tcp::TcpAcceptor;
//! use rpc_core::transport::tls::{TlsAcceptor, TlsClientConfig, TlsServerConfig};
//! use rpc_core::{Body, BoxFuture, CallOptions, Client, ClientConfig, Server, ServerRequest, Service, Status};
//!
//! struct Echo;
//! impl Service for Echo {
//!     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
//!         Box::pin(async move { Ok(req.body) })
//!     }
//! }
//!
//! let tls = TlsServerConfig::from_pem_files(&cert_pem, &key_pem).unwrap();
//! let acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls).unwrap();
//! let addr = acceptor.local_addr().unwrap();
//! let handle = Server::builder().build(Echo).serve(acceptor);
//!
//! let trust = TlsClientConfig::from_pem_file(&ca_pem).unwrap();
//! let client = Client::connect_tls(addr, "localhost", trust, ClientConfig::default()).await.unwrap();
//! let reply = client.call(1, Body::message("hi".into()), CallOptions::default()).await.unwrap();
//! assert_eq!(&reply.message[..], b"hi");
//! handle.shutdown().await;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, RootCertStore};
use tokio::io::{AsyncRead, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::handshakes::Handshakes;
use super::stream::{StreamRecv, StreamSend};
use super::tcp::TcpAcceptor;
use super::{Acceptor, Transport, TransportStats};
use crate::identity::TlsIdentity;
use crate::service::Peer;

/// The ALPN protocol name both sides offer: the zcrpc wire version. A peer that does not
/// negotiate it is refused.
pub const ALPN: &str = "zcrpc/1";

pub use super::handshakes::{log_handshake_error, HandshakeError, MAX_HANDSHAKES};

/// The rustls this module is built with, for [`TlsAcceptor::from_rustls`] and
/// [`TlsServerConfig::with_client_roots`].
pub use rustls;

/// The crypto provider: `ring` (builds with a C compiler alone).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS configuration could not be built: a file missing or unreadable, a PEM without the
/// expected block, a key that does not match its certificate. The message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsConfigError(String);

impl From<TlsConfigError> for io::Error {
    fn from(e: TlsConfigError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.0)
    }
}

/// A configuration that rustls refused, in words.
fn refused(what: &str, e: rustls::Error) -> TlsConfigError {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsConfigError(format!("building the TLS {what} configuration: the private key does not belong to the certificate ({e})"))
        }
        e => TlsConfigError(format!("building the TLS {what} configuration: {e}")),
    }
}

/// Where PEM text comes from, for errors.
enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8], &'static str),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Bytes(_, what) => f.write_str(what),
        }
    }
}

/// Every PEM block of one kind in `src` (at least one): `what` and `block` name them in errors.
fn pem_all<T: PemObject>(src: &Source<'_>, what: &str, block: &str) -> Result<Vec<T>, TlsConfigError> {
    let bad = |e: rustls::pki_types::pem::Error| TlsConfigError(format!("reading {what} from {src}: {e}"));
    let all: Vec<T> = match src {
        Source::File(p) => T::pem_file_iter(p).map_err(bad)?.collect::<Result<_, _>>().map_err(bad)?,
        Source::Bytes(b, _) => T::pem_slice_iter(b).collect::<Result<_, _>>().map_err(bad)?,
    };
    if all.is_empty() {
        return Err(TlsConfigError(format!("{src}: no {what} in it (expected a PEM \"BEGIN {block}\" block)")));
    }
    Ok(all)
}

fn certs(src: Source<'_>) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    pem_all(&src, "certificates", "CERTIFICATE")
}

fn crls(src: Source<'_>) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsConfigError> {
    pem_all(&src, "certificate revocation lists", "X509 CRL")
}

fn key(src: Source<'_>) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let r = match &src {
        Source::File(p) => PrivateKeyDer::from_pem_file(p),
        Source::Bytes(b, _) => PrivateKeyDer::from_pem_slice(b),
    };
    r.map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsConfigError(format!("{src}: no private key in it (expected a PEM \"BEGIN PRIVATE KEY\" block)"))
        }
        e => TlsConfigError(format!("reading the private key from {src}: {e}")),
    })
}

fn roots(src: Source<'_>) -> Result<RootCertStore, TlsConfigError> {
    let shown = src.to_string();
    let mut store = RootCertStore::empty();
    for c in certs(src)? {
        store.add(c).map_err(|e| TlsConfigError(format!("{shown}: not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// The server's side: its certificate chain and key, and (for mutual TLS) the CAs whose client
/// certificates it accepts.
#[derive(Clone)]
pub struct TlsServerConfig {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_roots: Option<Arc<RootCertStore>>,
    client_optional: bool,
    client_crls: Vec<CertificateRevocationListDer<'static>>,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("chain", &self.chain.len())
            .field("client_roots", &self.client_roots.as_ref().map(|r| r.len()))
            .field("client_optional", &self.client_optional)
            .field("client_crls", &self.client_crls.len())
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// The certificate chain (PEM, the server's certificate first) and its private key (PEM:
    /// PKCS#8, PKCS#1 or SEC1) from files. Errors name the file.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        Self::new(certs(Source::File(cert.as_ref()))?, self::key(Source::File(key.as_ref()))?)
    }

    /// [`TlsServerConfig::from_pem_files`] from PEM text.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsConfigError> {
        Self::new(certs(Source::Bytes(cert, "the certificate PEM"))?, self::key(Source::Bytes(key, "the key PEM"))?)
    }

    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, TlsConfigError> {
        let config = TlsServerConfig { chain, key: Arc::new(key), client_roots: None, client_optional: false, client_crls: Vec::new() };
        config.rustls()?; // the key matches the certificate
        Ok(config)
    }

    /// Mutual TLS: every client must present a certificate signed by a CA of this PEM file
    /// (one or more certificates); a client without one, or with another CA's, fails its
    /// handshake. Handlers see the certificate's names in [`crate::Peer::tls`].
    pub fn with_client_ca(self, ca: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        Ok(self.with_client_roots(roots(Source::File(ca.as_ref()))?))
    }

    /// [`TlsServerConfig::with_client_ca`] from PEM text.
    pub fn with_client_ca_pem(self, ca: &[u8]) -> Result<Self, TlsConfigError> {
        Ok(self.with_client_roots(roots(Source::Bytes(ca, "the client CA PEM"))?))
    }

    /// [`TlsServerConfig::with_client_ca`] with a root store already built.
    pub fn with_client_roots(mut self, roots: RootCertStore) -> Self {
        self.client_roots = Some(Arc::new(roots));
        self
    }

    /// Mutual TLS with revocation: refuse client certificates that these certificate revocation
    /// lists (a PEM file of one or more `X509 CRL` blocks, signed by the client CAs) revoke;
    /// such a client's handshake fails with "certificate revoked" on both sides. Every
    /// certificate of a client's chain below the trust anchor is checked: a chain with a
    /// certificate whose issuer has no list here is refused too (its status is unknown).
    /// Needs [`TlsServerConfig::with_client_ca`]. Lists are read once: to take a new list,
    /// build a new configuration and acceptor.
    pub fn with_client_crl(mut self, crl: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        self.client_crls.extend(crls(Source::File(crl.as_ref()))?);
        self.rustls()?;
        Ok(self)
    }

    /// [`TlsServerConfig::with_client_crl`] from PEM text.
    pub fn with_client_crl_pem(mut self, crl: &[u8]) -> Result<Self, TlsConfigError> {
        self.client_crls.extend(crls(Source::Bytes(crl, "the client CRL PEM"))?);
        self.rustls()?;
        Ok(self)
    }

    /// With a client CA set: also accept clients that present no certificate (their
    /// [`TlsIdentity`] is anonymous, [`TlsIdentity::is_authenticated`] false); a certificate a
    /// client does present must still verify. For servers where some methods are public and
    /// [`crate::ServerBuilder::authorize`] guards the others.
    pub fn client_certificate_optional(mut self) -> Self {
        self.client_optional = true;
        self
    }

    /// The rustls configuration this builds: TLS 1.3 only, ALPN [`ALPN`], the `ring` provider.
    pub fn rustls(&self) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
        let fail = |e| refused("server", e);
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(fail)?;
        let builder = match &self.client_roots {
            None if !self.client_crls.is_empty() => {
                return Err(TlsConfigError(
                    "client certificate revocation lists without a client CA: set one with with_client_ca".to_owned(),
                ))
            }
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).with_crls(self.client_crls.iter().cloned());
                let verifier = if self.client_optional { verifier.allow_unauthenticated() } else { verifier };
                let verifier = verifier.build().map_err(|e| TlsConfigError(format!("the client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(self.chain.clone(), self.key.clone_key()).map_err(fail)?;
        config.alpn_protocols = vec![ALPN.as_bytes().to_vec()];
        Ok(Arc::new(config))
    }
}

/// The client's side: the CAs it trusts for the server's certificate, and (for mutual TLS) a
/// certificate and key of its own.
#[derive(Clone)]
pub struct TlsClientConfig {
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.is_some())
            .field("crls", &self.crls.len())
            .finish()
    }
}

impl TlsClientConfig {
    /// Trust the CA certificates of this PEM file (one or more) for the server's certificate.
    pub fn from_pem_file(ca: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        Ok(Self::from_roots(roots(Source::File(ca.as_ref()))?))
    }

    /// [`TlsClientConfig::from_pem_file`] from PEM text.
    pub fn from_pem(ca: &[u8]) -> Result<Self, TlsConfigError> {
        Ok(Self::from_roots(roots(Source::Bytes(ca, "the CA PEM"))?))
    }

    /// Trust the CAs of a root store already built.
    pub fn from_roots(roots: RootCertStore) -> Self {
        TlsClientConfig { roots: Arc::new(roots), identity: None, crls: Vec::new() }
    }

    /// Mutual TLS: present this certificate chain and key (PEM files) to the server.
    pub fn with_identity(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        self.identity_of(certs(Source::File(cert.as_ref()))?, self::key(Source::File(key.as_ref()))?)
    }

    /// [`TlsClientConfig::with_identity`] from PEM text.
    pub fn with_identity_pem(self, cert: &[u8], key: &[u8]) -> Result<Self, TlsConfigError> {
        self.identity_of(certs(Source::Bytes(cert, "the certificate PEM"))?, self::key(Source::Bytes(key, "the key PEM"))?)
    }

    /// Refuse server certificates that these certificate revocation lists (a PEM file of one
    /// or more `X509 CRL` blocks, signed by the trusted CAs) revoke: the handshake fails with
    /// "certificate revoked". As on the server ([`TlsServerConfig::with_client_crl`]), every
    /// certificate of the chain below the trust anchor needs its issuer's list.
    pub fn with_crl(mut self, crl: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        self.crls.extend(crls(Source::File(crl.as_ref()))?);
        self.rustls()?;
        Ok(self)
    }

    /// [`TlsClientConfig::with_crl`] from PEM text.
    pub fn with_crl_pem(mut self, crl: &[u8]) -> Result<Self, TlsConfigError> {
        self.crls.extend(crls(Source::Bytes(crl, "the CRL PEM"))?);
        self.rustls()?;
        Ok(self)
    }

    fn identity_of(mut self, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, TlsConfigError> {
        self.identity = Some((chain, Arc::new(key)));
        self.rustls()?; // the key matches the certificate
        Ok(self)
    }

    /// The rustls configuration this builds: TLS 1.3 only, ALPN [`ALPN`], the `ring` provider.
    pub fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
        let fail = |e| refused("client", e);
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(fail)?;
        let builder = if self.crls.is_empty() {
            builder.with_root_certificates(self.roots.clone())
        } else {
            let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
                .with_crls(self.crls.iter().cloned())
                .build()
                .map_err(|e| TlsConfigError(format!("the CA or its revocation lists: {e}")))?;
            builder.with_webpki_verifier(verifier)
        };
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key()).map_err(fail)?,
        };
        config.alpn_protocols = vec![ALPN.as_bytes().to_vec()];
        Ok(Arc::new(config))
    }
}

/// A TLS connection over TCP as a transport (either side).
pub struct TlsTransport {
    reader: TlsRead,
    writer: WriteHalf<tokio_rustls::TlsStream<TcpStream>>,
    stats: Arc<TransportStats>,
    peer: Peer,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl TlsTransport {
    fn new(stream: tokio_rustls::TlsStream<TcpStream>, peer: Peer) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let stats = Arc::new(TransportStats::new("tls"));
        TlsTransport { reader: TlsRead(reader, stats.clone()), writer, stats, peer }
    }
}

impl Transport for TlsTransport {
    type Send = StreamSend<WriteHalf<tokio_rustls::TlsStream<TcpStream>>>;
    type Recv = StreamRecv<TlsRead>;

    fn split(self) -> (Self::Recv, Self::Send) {
        (StreamRecv::new(self.reader, self.stats.clone()), StreamSend::new(self.writer, self.stats))
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.addr
    }

    fn peer(&self) -> Peer {
        self.peer.clone()
    }
}

/// The reading half of a TLS connection: its errors say what TLS found ([`describe`]).
pub struct TlsRead(ReadHalf<tokio_rustls::TlsStream<TcpStream>>, Arc<TransportStats>);

impl fmt::Debug for TlsRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsRead")
    }
}

impl AsyncRead for TlsRead {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            // rustls decrypts a record in its buffer, copies the plaintext out into a buffer of
            // its own, and this read copies it into the frame's: two copies beyond the cipher.
            TransportStats::add(&self.1.tls_bytes_copied, 2 * (buf.filled().len() - before) as u64);
        }
        match r {
            // A TCP close without TLS close_notify (a peer that died, or exited without closing
            // its client): zcrpc frames are self-delimiting, so this is an end of stream like
            // plain TCP's. Mid-frame, the frame decoder reports the truncation; the bytes of a
            // record cut short were never delivered.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(explained(e, None))),
            other => other,
        }
    }
}

/// A TLS failure in words: what happened and, where it is clear, what to check.
/// `server_name` is the name the client asked for (client side).
pub fn describe(error: &rustls::Error, server_name: Option<&str>) -> String {
    use rustls::Error as E;
    let cert = |c: &CertificateError| -> String {
        match c {
            CertificateError::UnknownIssuer => {
                "the peer's certificate is not signed by a CA this side trusts (unknown issuer)".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the peer's certificate has expired ({error})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the peer's certificate is not valid yet ({error})")
            }
            CertificateError::Revoked => format!("the peer's certificate is revoked: a revocation list this side holds names it ({error})"),
            CertificateError::UnknownRevocationStatus => format!(
                "the revocation status of the peer's certificate is unknown: no revocation list this side holds is from its issuer ({error})"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => match server_name {
                Some(name) => format!("the server's certificate is not valid for the name {name:?} ({error})"),
                None => format!("the certificate is not valid for the name asked for ({error})"),
            },
            _ => format!("the peer's certificate was refused: {error}"),
        }
    };
    match error {
        E::InvalidCertificate(c) => cert(c),
        E::NoCertificatesPresented => {
            "the client presented no certificate, and this server requires one (mutual TLS)".to_owned()
        }
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "the server requires a client certificate (mutual TLS), and this client has none: \
             give it one with TlsClientConfig::with_identity"
                .to_owned()
        }
        E::AlertReceived(AlertDescription::UnknownCA) => {
            format!("the peer refused our certificate ({error}): it is not signed by a CA the peer trusts")
        }
        E::AlertReceived(AlertDescription::BadCertificate) => format!(
            "the peer refused our certificate ({error}): it did not verify there (the name the peer asked for, \
             its usage, its signature)"
        ),
        E::AlertReceived(AlertDescription::CertificateExpired) => {
            format!("the peer refused our certificate as expired ({error})")
        }
        E::AlertReceived(AlertDescription::CertificateRevoked) => {
            format!("the peer refused our certificate as revoked ({error}): a revocation list it holds names it")
        }
        E::AlertReceived(AlertDescription::NoApplicationProtocol) | E::NoApplicationProtocol => {
            format!("the peer does not speak {ALPN} (no common ALPN protocol)")
        }
        E::AlertReceived(AlertDescription::BadRecordMac) => {
            format!("the peer could not authenticate a record we sent ({error}): the data was altered in transit")
        }
        E::AlertReceived(AlertDescription::ProtocolVersion) => {
            format!("the peer does not speak TLS 1.3 ({error})")
        }
        E::DecryptError => format!(
            "a TLS record failed authentication ({error}): the data was altered in transit; \
             nothing of it was delivered"
        ),
        E::InvalidMessage(_) => format!("the peer is not speaking TLS, or its data was altered ({error})"),
        other => format!("TLS: {other}"),
    }
}

/// `e` with its rustls cause put in words ([`describe`]), when it has one.
fn explained(e: io::Error, server_name: Option<&str>) -> io::Error {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e;
    };
    tls_error(tls, server_name)
}

/// A rustls error as an `io::Error` whose message is [`describe`]'s and whose kind is
/// `PermissionDenied` for certificate refusals, `InvalidData` otherwise.
pub(crate) fn tls_error(tls: &rustls::Error, server_name: Option<&str>) -> io::Error {
    let kind = match tls {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked,
        ) => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, describe(tls, server_name))
}

/// What the peer's verified certificate says: subject, common name, subject alternative names.
/// `certificate` is the end-entity certificate (DER) rustls verified; `None` gives the
/// anonymous identity.
pub fn identity_of(certificate: Option<&CertificateDer<'_>>) -> TlsIdentity {
    let mut id = TlsIdentity { alpn: ALPN, ..TlsIdentity::default() };
    let Some(der) = certificate else {
        return id;
    };
    id.certificate = Some(Bytes::copy_from_slice(der.as_ref()));
    // rustls verified the certificate with webpki, which parsed it: a failure here is a
    // certificate x509-parser reads differently; the identity then has no names.
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return id;
    };
    id.subject = cert.subject().to_string();
    id.common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        use x509_parser::extensions::GeneralName;
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => id.dns_names.push((*n).to_owned()),
                GeneralName::URI(u) => id.uris.push((*u).to_owned()),
                GeneralName::RFC822Name(m) => id.emails.push((*m).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => id.ip_addresses.push(<[u8; 4]>::try_from(*b).expect("4 bytes").into()),
                    16 => id.ip_addresses.push(<[u8; 16]>::try_from(*b).expect("16 bytes").into()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    id
}

/// Refuses a handshake that did not negotiate [`ALPN`] (a peer that offered none or another).
pub(crate) fn check_alpn(alpn: Option<&[u8]>, who: &str) -> io::Result<()> {
    match alpn {
        Some(p) if p == ALPN.as_bytes() => Ok(()),
        Some(p) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {who} negotiated the protocol {:?}, not {ALPN}", String::from_utf8_lossy(p)),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {who} offered no ALPN protocol; zcrpc over TLS needs {ALPN}"),
        )),
    }
}

/// Connects to `addr` over TCP and completes a TLS handshake with the server named
/// `server_name` (checked against its certificate). Errors say what TLS found.
pub async fn connect(addr: impl ToSocketAddrs, server_name: &str, config: Arc<rustls::ClientConfig>) -> io::Result<TlsTransport> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{server_name:?} is not a valid server name: {e}"))
    })?;
    let stream = TcpStream::connect(addr).await?;
    super::tcp::configure(&stream, Some(super::tcp::USER_TIMEOUT))?;
    let peer_addr = stream.peer_addr().ok();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| handshake_failed(explained(e, Some(server_name))))?;
    let (_, conn) = tls.get_ref();
    check_alpn(conn.alpn_protocol(), "server").map_err(handshake_failed)?;
    let server = identity_of(conn.peer_certificates().and_then(|c| c.first()));
    Ok(TlsTransport::new(tls.into(), Peer::at(peer_addr).with_tls(Arc::new(server))))
}

pub(crate) fn handshake_failed(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
}

/// A TCP listener whose connections are TLS: the [`Acceptor`] for [`crate::Server::serve`].
///
/// Handshakes run as tasks beside each other, at most [`MAX_HANDSHAKES`] at once, each
/// bounded by the handshake timeout (the server's [`crate::ServerBuilder::handshake_timeout`],
/// 10 s by default), so a client that connects and says nothing holds one slot for that long
/// and delays nobody. A failed handshake goes to [`TlsAcceptor::on_handshake_error`] (by
/// default: a `warn` event, or stderr when no `tracing` subscriber is installed) and is not an
/// accept error: the server goes on.
pub struct TlsAcceptor {
    tcp: TcpAcceptor,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: Handshakes<TlsTransport>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("tcp", &self.tcp)
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Serves TLS with `config` on the connections of `tcp`.
    pub fn new(tcp: TcpAcceptor, config: TlsServerConfig) -> Result<Self, TlsConfigError> {
        Ok(Self::from_rustls(tcp, config.rustls()?))
    }

    /// Serves TLS with a rustls configuration of your own; its ALPN protocols are set to
    /// [`ALPN`] whatever they were.
    pub fn from_rustls(tcp: TcpAcceptor, config: Arc<rustls::ServerConfig>) -> Self {
        let config = if config.alpn_protocols == [ALPN.as_bytes()] {
            config
        } else {
            let mut c = (*config).clone();
            c.alpn_protocols = vec![ALPN.as_bytes().to_vec()];
            Arc::new(c)
        };
        TlsAcceptor {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            handshakes: Handshakes::default(),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Most handshakes in progress at once (default [`MAX_HANDSHAKES`]; at least 1).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.handshakes.set_max(n);
        self
    }

    /// The handshake timeout, for an acceptor not given to [`crate::Server::serve`] (which
    /// sets its own).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshakes.set_timeout(timeout);
        self
    }

    /// Called for every failed handshake, with the client's address and the cause, in place
    /// of the default log line (`|_| {}` silences them). It runs on the handshake's task: keep
    /// it quick.
    pub fn on_handshake_error(mut self, f: impl Fn(&HandshakeError) + Send + Sync + 'static) -> Self {
        self.handshakes.set_on_error(f);
        self
    }
}

/// Answers a plaintext client with a TLS alert record (fatal, `unexpected_message`): its
/// zcrpc decoder reports "bad magic 15 03 03 00 ... it looks like TLS (an alert record)". What
/// it sent (its hello) is read first, so that closing does not reset the connection before the
/// alert is read.
async fn refuse_plaintext(stream: &TcpStream) {
    let mut sink = [0u8; 512];
    while let Ok(n) = stream.try_read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a];
    // Seven bytes on a fresh socket: one write takes them all.
    if stream.writable().await.is_ok() {
        let _ = stream.try_write(&alert);
    }
}

/// Before a server's handshake: a plaintext zcrpc client starts with the zcrpc magic; it is
/// answered with a TLS alert and refused with an error that says so, rather than with what
/// rustls makes of the magic.
pub(crate) async fn refuse_if_plaintext(stream: &TcpStream) -> io::Result<()> {
    let mut first = [0u8; 4];
    let n = stream.peek(&mut first).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed the connection before its TLS hello"));
    }
    if first[..n] == crate::frame::MAGIC[..n] {
        refuse_plaintext(stream).await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the client is speaking plaintext zcrpc (it sent the zcrpc magic) to this TLS port: \
             connect with a TLS client (Client::connect_tls, transport_uring::tls::connect_tls)",
        ));
    }
    Ok(())
}

/// The server's side of one handshake.
async fn handshake(acceptor: tokio_rustls::TlsAcceptor, stream: TcpStream, addr: SocketAddr) -> io::Result<TlsTransport> {
    refuse_if_plaintext(&stream).await?;
    let tls = acceptor.accept(stream).await.map_err(|e| explained(e, None))?;
    let (_, conn) = tls.get_ref();
    check_alpn(conn.alpn_protocol(), "client")?;
    let identity = identity_of(conn.peer_certificates().and_then(|c| c.first()));
    Ok(TlsTransport::new(tls.into(), Peer::at(Some(addr)).with_tls(Arc::new(identity))))
}

impl Acceptor for TlsAcceptor {
    type Transport = TlsTransport;

    /// Cancel-safe: a connection accepted or a handshake finished is never lost when the
    /// future is dropped.
    async fn accept(&mut self) -> io::Result<TlsTransport> {
        loop {
            tokio::select! {
                r = self.tcp.accept_stream(), if self.handshakes.has_room() => {
                    let (stream, addr) = r?;
                    self.handshakes.start(addr, handshake(self.acceptor.clone(), stream, addr));
                }
                t = self.handshakes.next() => return Ok(t),
            }
        }
    }

    fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshakes.set_timeout(timeout);
    }
}
