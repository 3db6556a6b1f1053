//! What the TLS tests of every transport share: the `Vault` service, a CA made at run time
//! (rcgen), the authorization policy, client and server configurations, and a faulty
//! man-in-the-middle proxy. Included by `rpc-core/tests/tls.rs` (tcp) and
//! `transport-uring/tests/tls.rs` (uring) with `#[path]`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rpc_core::transport::tls::{TlsClientConfig, TlsServerConfig};
use rpc_core::{CallContext, ClientConfig, ConnectError, Payload, Status};

#[rpc_core::service]
pub trait Vault {
    async fn echo(&self, data: Payload) -> Payload;
    /// What the handler sees of its caller: subject, common name, DNS names.
    async fn whoami(&self, ctx: CallContext) -> (String, Option<String>, Vec<String>);
    /// Allowed to client "a" only (see `policy`).
    async fn open(&self) -> String;
}

#[derive(Clone, Default)]
pub struct Impl {
    pub calls: Arc<AtomicUsize>,
    /// The identities `whoami` saw.
    pub seen: Arc<std::sync::Mutex<Vec<Arc<rpc_core::TlsIdentity>>>>,
}

impl Vault for Impl {
    async fn echo(&self, data: Payload) -> Payload {
        self.calls.fetch_add(1, Ordering::SeqCst);
        data
    }
    async fn whoami(&self, ctx: CallContext) -> (String, Option<String>, Vec<String>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let id = ctx.peer.tls.expect("a TLS connection has an identity");
        self.seen.lock().unwrap().push(id.clone());
        (id.subject.clone(), id.common_name.clone(), id.dns_names.clone())
    }
    async fn open(&self) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        "opened".into()
    }
}

/// A CA made for one test.
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, PEM, and its serial number (for revocation lists).
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub serial: u64,
}

/// Serial numbers of the certificates tests issue: each its own.
static SERIAL: AtomicU64 = AtomicU64::new(1000);

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A server (`client` false) or client certificate named `cn`, with `sans`; `expired`
    /// makes one whose validity ended in 2020.
    pub fn issue(&self, cn: &str, sans: &[&str], client: bool, expired: bool) -> Leaf {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "zcrpc tests");
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem(), serial }
    }

    /// A certificate revocation list (PEM) of this CA revoking `revoked`.
    pub fn crl(&self, revoked: &[&Leaf]) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(leaf.serial),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    pub fn server(&self) -> Leaf {
        self.issue("localhost", &["localhost", "127.0.0.1"], false, false)
    }
}

/// Only client "a" may call `open`; every call needs a client certificate.
pub fn policy(call: &rpc_core::CallInfo<'_>) -> Result<(), Status> {
    let id = call.peer.tls.as_ref().filter(|id| id.is_authenticated());
    let Some(id) = id else {
        return Err(Status::unauthenticated("this server needs a client certificate"));
    };
    if call.path == Some(VaultClient::OPEN_PATH) && !id.has_name("a.clients.test") {
        return Err(Status::permission_denied(format!("{} may not call {}", id.subject, VaultClient::OPEN_PATH)));
    }
    Ok(())
}

/// [`policy`] for servers that require client certificates; servers without client CA (no
/// certificate to check) let every call through.
pub fn policy_unless_anonymous(call: &rpc_core::CallInfo<'_>) -> Result<(), Status> {
    match &call.peer.tls {
        Some(id) if !id.is_authenticated() => Ok(()),
        _ => policy(call),
    }
}

/// Server TLS without client certificates.
pub fn plain(ca: &Ca) -> TlsServerConfig {
    let server = ca.server();
    TlsServerConfig::from_pem(server.cert.as_bytes(), server.key.as_bytes()).unwrap()
}

pub fn config() -> ClientConfig {
    ClientConfig { connect_timeout: Duration::from_secs(5), ..ClientConfig::default() }
}

pub fn trust(ca: &Ca) -> TlsClientConfig {
    TlsClientConfig::from_pem(ca.pem.as_bytes()).unwrap()
}

pub fn mutual(ca: &Ca, server: &Leaf) -> TlsServerConfig {
    TlsServerConfig::from_pem(server.cert.as_bytes(), server.key.as_bytes())
        .unwrap()
        .with_client_ca_pem(ca.pem.as_bytes())
        .unwrap()
}

/// Connection errors with their address: the text a user sees.
pub fn text(e: &ConnectError) -> String {
    let t = e.to_string();
    eprintln!("client: {t}");
    assert!(!matches!(e.reason(), ConnectError::Timeout(_)), "an error naming its cause, not a timeout: {t}");
    t
}

/// What the proxy does to the client's bytes at an offset.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Flip one bit of the byte there.
    Flip(u64),
    /// Pass the bytes before it, then close both ways (the middle of a record).
    Cut(u64),
}

/// A proxy for one connection that applies `fault` to the client's bytes.
pub async fn faulty_proxy(target: SocketAddr, fault: Fault) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = async move {
            let mut seen = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut n = n;
                let mut cut = false;
                match fault {
                    Fault::Flip(at) if (seen..seen + n as u64).contains(&at) => buf[(at - seen) as usize] ^= 0x10,
                    Fault::Cut(at) if (seen..seen + n as u64).contains(&at) => {
                        n = (at - seen) as usize;
                        cut = true;
                    }
                    _ => {}
                }
                seen += n as u64;
                if sw.write_all(&buf[..n]).await.is_err() || cut {
                    break;
                }
            }
            let _ = sw.shutdown().await;
        };
        let down = async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
        };
        tokio::join!(up, down);
    });
    addr
}
