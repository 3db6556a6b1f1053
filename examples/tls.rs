//! Mutual TLS and per-method authorization: a server and two clients in one process on
//! 127.0.0.1. The program makes its own CA, a server certificate and two client certificates
//! (`a` and `b`) at run time, writes them as PEM files to a temporary directory and loads them
//! from there as a deployment would. Both clients may call `echo`; only client `a` may call
//! `open`; the handler sees who called.
//!
//! ```text
//! cargo run --example tls
//! ```
//!
//! With certificates of your own, the server and client parts are the lines after
//! "From here on" below, with your PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::tls::{TlsAcceptor, TlsClientConfig, TlsServerConfig};
use rpc_core::{service, CallContext, CallInfo, Client, ClientConfig, Code, Server, Status};

#[service(package = "vault.v1")]
pub trait Vault {
    /// Anyone with a certificate of our CA.
    async fn echo(&self, text: String) -> String;
    /// Client `a` only (see `policy`).
    async fn open(&self, ctx: CallContext) -> String;
}

struct Impl;

impl Vault for Impl {
    async fn echo(&self, text: String) -> String {
        text
    }
    async fn open(&self, ctx: CallContext) -> String {
        // The authorization hook already checked; the handler sees the same identity.
        let who = ctx.peer.tls.as_ref().map(|id| id.subject.clone()).unwrap_or_default();
        format!("opened for {who}")
    }
}

/// Who may call what: every call needs a client certificate (the server requires one anyway);
/// `open` needs the name `a.clients.example`.
fn policy(call: &CallInfo<'_>) -> Result<(), Status> {
    let Some(id) = call.peer.tls.as_ref().filter(|id| id.is_authenticated()) else {
        return Err(Status::unauthenticated("a client certificate is required"));
    };
    if call.path == Some(VaultClient::OPEN_PATH) && !id.has_name("a.clients.example") {
        return Err(Status::permission_denied(format!("{} may not call {}", id.subject, VaultClient::OPEN_PATH)));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zcrpc-tls-example-{}", std::process::id()));
    let pem = make_certificates(&dir)?;

    // From here on: what a deployment does with its own PEM files.
    let tls = TlsServerConfig::from_pem_files(&pem.server_cert, &pem.server_key)?.with_client_ca(&pem.ca)?;
    let acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await?, tls)?;
    let addr = acceptor.local_addr()?;
    let server = Server::builder().authorize(policy).build(VaultServer::new(Impl)).serve(acceptor);
    println!("server: TLS 1.3, client certificates required, on {addr}");

    for name in ["a", "b"] {
        let (cert, key) = (pem.dir.join(format!("client-{name}.pem")), pem.dir.join(format!("client-{name}.key")));
        let tls = TlsClientConfig::from_pem_file(&pem.ca)?.with_identity(&cert, &key)?;
        let vault = VaultClient::new(Client::connect_tls(addr, "localhost", tls, ClientConfig::default()).await?);
        println!("client {name}: echo -> {:?}", vault.echo("hello".into()).await?);
        match vault.open().await {
            Ok(text) => println!("client {name}: open -> {text:?}"),
            Err(e) if e.code() == Code::PERMISSION_DENIED => println!("client {name}: open -> refused: {e}"),
            Err(e) => return Err(e.into()),
        }
    }

    // A client without a certificate does not get past the handshake.
    let anonymous = TlsClientConfig::from_pem_file(&pem.ca)?;
    match Client::connect_tls(addr, "localhost", anonymous, ClientConfig::default()).await {
        Ok(_) => return Err("a client without a certificate was let in".into()),
        Err(e) => println!("client without a certificate: {e}"),
    }

    server.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Where [`make_certificates`] put the PEM files.
struct Pem {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// A CA, a server certificate for `localhost` and client certificates `a` and `b`, as PEM files
/// in `dir` (what `openssl` or your PKI would give you).
fn make_certificates(dir: &Path) -> Result<Pem, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "example CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |file: &str, cn: &str, san: &str, usage: ExtendedKeyUsagePurpose| -> Result<(), Box<dyn std::error::Error>> {
        let mut params = CertificateParams::new(vec![san.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        std::fs::write(dir.join(format!("{file}.pem")), params.signed_by(&key, &issuer)?.pem())?;
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem())?;
        Ok(())
    };
    leaf("server", "localhost", "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
    leaf("client-a", "a", "a.clients.example", ExtendedKeyUsagePurpose::ClientAuth)?;
    leaf("client-b", "b", "b.clients.example", ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(Pem { dir: dir.to_owned(), ca: dir.join("ca.pem"), server_cert: dir.join("server.pem"), server_key: dir.join("server.key") })
}
