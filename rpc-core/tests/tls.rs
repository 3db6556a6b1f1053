//! TLS 1.3 and mutual TLS on the tcp transport: calls and a 32 MiB payload, the client's
//! identity in the handler, per-method authorization, and bad input — plaintext against TLS
//! both ways, another CA's certificate, an expired one, a wrong server name, no client
//! certificate where one is required, a client offering no or another ALPN, a client that says
//! nothing, a tampered record — each with an error naming the cause on the side that can see
//! it, within the handshake timeout, the server serving others afterwards. Certificates are
//! made at run time (rcgen); nothing secret is in the repository.
#![cfg(feature = "tls")]

#[path = "tls_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::tls::{self, TlsAcceptor, TlsClientConfig, TlsServerConfig};
use rpc_core::transport::Acceptor;
use rpc_core::{CallError, Client, Code, ConnectError, Payload, Server, ServerHandle};
use support::*;
use tokio::sync::mpsc;

struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    /// Every failed handshake, as the server logs it.
    failures: mpsc::UnboundedReceiver<String>,
    calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Arc<rpc_core::TlsIdentity>>>>,
}

impl Running {
    /// The next failed handshake the server saw.
    async fn failure(&mut self) -> String {
        let why = tokio::time::timeout(Duration::from_secs(10), self.failures.recv())
            .await
            .expect("the server reports the failed handshake")
            .expect("the acceptor is alive");
        eprintln!("server: {why}");
        why
    }
}

async fn serve(tls: TlsServerConfig) -> Running {
    let (tx, failures) = mpsc::unbounded_channel();
    let acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls)
        .unwrap()
        .on_handshake_error(move |e| {
            let _ = tx.send(e.to_string());
        });
    let addr = acceptor.local_addr().unwrap();
    let service = Impl::default();
    let (calls, seen) = (service.calls.clone(), service.seen.clone());
    let handle = Server::builder()
        .handshake_timeout(Duration::from_secs(5))
        .authorize(policy_unless_anonymous)
        .build(VaultServer::new(service))
        .serve(acceptor);
    Running { addr, handle, failures, calls, seen }
}

async fn connect(addr: SocketAddr, tls: TlsClientConfig) -> Result<VaultClient, ConnectError> {
    Ok(VaultClient::new(Client::connect_tls(addr, "localhost", tls, config()).await?))
}

/// The server still serves a good client (with client certificate "a" when `ca` is given).
async fn serves_others(addr: SocketAddr, ca: &Ca, client_ca: Option<&Ca>) {
    let tls = match client_ca {
        Some(cca) => {
            let a = cca.issue("a", &["a.clients.test"], true, false);
            trust(ca).with_identity_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap()
        }
        None => trust(ca),
    };
    let client = connect(addr, tls).await.expect("the server serves a good client");
    let back = client.echo(Payload::from(vec![7u8; 1000])).await.unwrap();
    assert_eq!(back.len(), 1000);
}

#[tokio::test]
async fn a_call_and_a_32_mib_payload_over_tls() {
    let ca = Ca::new("test CA");
    let server = ca.server();
    let running = serve(TlsServerConfig::from_pem(server.cert.as_bytes(), server.key.as_bytes()).unwrap()).await;
    let client = connect(running.addr, trust(&ca)).await.unwrap();
    assert_eq!(&client.echo(Payload::from(b"hello".to_vec())).await.unwrap().to_bytes()[..], b"hello");

    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let back = client.echo(Payload::from(big.clone())).await.unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back.to_bytes() == big, "32 MiB came back intact");

    // Without a client CA the connection is encrypted and the client anonymous.
    let (subject, cn, names) = client.whoami().await.unwrap();
    assert_eq!((subject.as_str(), cn, names.len()), ("", None, 0));
    let stats = client.client().stats();
    assert_eq!(stats.transport, "tls");
    // rustls's buffered connection copies every received byte twice (out of its buffer, into
    // the frame's); the uring transport's TLS does not (`transport-uring/tests/tls.rs`).
    assert!(stats.tls_bytes_copied >= 2 * (32 << 20), "{stats}");
    assert!(stats.to_string().contains("tls: rustls user-space records"), "{stats}");
    running.handle.shutdown().await;
}

#[tokio::test]
async fn config_from_pem_files_and_errors_naming_the_file() {
    let ca = Ca::new("test CA");
    let server = ca.server();
    let dir = std::env::temp_dir().join(format!("zcrpc-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, ca_file) = (dir.join("server.pem"), dir.join("server.key"), dir.join("ca.pem"));
    std::fs::write(&cert, &server.cert).unwrap();
    std::fs::write(&key, &server.key).unwrap();
    std::fs::write(&ca_file, &ca.pem).unwrap();

    let running = serve(TlsServerConfig::from_pem_files(&cert, &key).unwrap()).await;
    let client = connect(running.addr, TlsClientConfig::from_pem_file(&ca_file).unwrap()).await.unwrap();
    assert_eq!(client.echo(Payload::from(vec![1u8; 10])).await.unwrap().len(), 10);

    let missing = TlsServerConfig::from_pem_files(dir.join("nope.pem"), &key).unwrap_err().to_string();
    assert!(missing.contains("nope.pem"), "{missing}");
    let swapped = TlsServerConfig::from_pem_files(&key, &cert).unwrap_err().to_string();
    assert!(swapped.contains("server.key") && swapped.contains("no certificate"), "{swapped}");
    let other = Ca::new("other CA").server();
    let mismatch = TlsServerConfig::from_pem(server.cert.as_bytes(), other.key.as_bytes()).unwrap_err().to_string();
    assert!(mismatch.contains("private key does not belong to the certificate"), "{mismatch}");
    std::fs::remove_dir_all(&dir).unwrap();
    running.handle.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_shows_the_handler_who_called_and_authorizes_per_method() {
    let ca = Ca::new("test CA");
    let running = serve(mutual(&ca, &ca.server())).await;
    let a = ca.issue("a", &["a.clients.test"], true, false);
    let b = ca.issue("b", &["b.clients.test"], true, false);
    let client_a = connect(running.addr, trust(&ca).with_identity_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap())
        .await
        .unwrap();
    let client_b = connect(running.addr, trust(&ca).with_identity_pem(b.cert.as_bytes(), b.key.as_bytes()).unwrap())
        .await
        .unwrap();

    let (subject, cn, names) = client_a.whoami().await.unwrap();
    assert!(subject.contains("CN=a") && subject.contains("O=zcrpc tests"), "{subject}");
    assert_eq!(cn.as_deref(), Some("a"));
    assert_eq!(names, vec!["a.clients.test".to_string()]);
    assert_eq!(client_b.whoami().await.unwrap().1.as_deref(), Some("b"));
    client_a.whoami().await.unwrap();
    {
        let seen = running.seen.lock().unwrap();
        assert!(Arc::ptr_eq(&seen[0], &seen[2]), "the calls of one connection share its identity (no copy per call)");
        assert!(!Arc::ptr_eq(&seen[0], &seen[1]));
        assert!(seen[0].certificate.is_some() && seen[0].alpn == "zcrpc/1");
    }

    assert_eq!(client_a.open().await.unwrap(), "opened");
    let before = running.calls.load(Ordering::SeqCst);
    let refused = client_b.open().await.unwrap_err();
    assert_eq!(refused.code(), Code::PERMISSION_DENIED, "{refused}");
    assert!(refused.to_string().contains("CN=b") && refused.to_string().contains("Vault/open"), "{refused}");
    assert_eq!(running.calls.load(Ordering::SeqCst), before, "the refused call's handler never ran");
    // b may still call what it is allowed.
    assert_eq!(client_b.echo(Payload::from(vec![1u8; 3])).await.unwrap().len(), 3);
    running.handle.shutdown().await;
}

#[tokio::test]
async fn an_optional_client_certificate_leaves_anonymous_callers_to_the_authorization_hook() {
    let ca = Ca::new("test CA");
    let server = ca.server();
    let tls = mutual(&ca, &server).client_certificate_optional();
    let (tx, _failures) = mpsc::unbounded_channel::<String>();
    let acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls)
        .unwrap()
        .on_handshake_error(move |e| {
            let _ = tx.send(e.to_string());
        });
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().authorize(policy).build(VaultServer::new(Impl::default())).serve(acceptor);
    let anonymous = connect(addr, trust(&ca)).await.unwrap();
    let e = anonymous.echo(Payload::from(vec![1u8])).await.unwrap_err();
    assert_eq!(e.code(), Code::UNAUTHENTICATED, "{e}");
    assert!(e.to_string().contains("needs a client certificate"), "{e}");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_to_a_tls_server_is_told_and_the_server_names_it() {
    let ca = Ca::new("test CA");
    let mut running = serve(plain(&ca)).await;
    let e = Client::connect_tcp(running.addr, config()).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("looks like TLS"), "the client learns the port speaks TLS: {client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("plaintext zcrpc"), "{server_side}");
    assert!(server_side.contains("127.0.0.1"), "names the peer: {server_side}");
    serves_others(running.addr, &ca, None).await;
    running.handle.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_to_a_plaintext_server_is_told_and_the_server_names_it() {
    let ca = Ca::new("test CA");
    let tcp = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = Server::builder().stderr_warnings(false).build(VaultServer::new(Impl::default()));
    let served = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut tcp = tcp;
            let t = tcp.accept().await.unwrap();
            server.serve_connection(t).await
        })
    };
    let e = connect(addr, trust(&ca)).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("TLS handshake failed") && client_side.contains("not speaking TLS"), "{client_side}");
    let server_side = served.await.unwrap().to_string();
    eprintln!("server: {server_side}");
    assert!(server_side.contains("looks like TLS"), "{server_side}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("test CA");
    let mut running = serve(plain(&ca)).await;
    let stranger = Ca::new("another CA");
    let e = connect(running.addr, trust(&stranger)).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("not signed by a CA this side trusts"), "{client_side}");
    assert!(client_side.contains(&running.addr.to_string()), "names the address: {client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("refused our certificate"), "{server_side}");
    serves_others(running.addr, &ca, None).await;
    running.handle.shutdown().await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("test CA");
    let mut running = serve(mutual(&ca, &ca.server())).await;
    let stranger = Ca::new("another CA").issue("mallory", &["mallory.test"], true, false);
    let tls = trust(&ca).with_identity_pem(stranger.cert.as_bytes(), stranger.key.as_bytes()).unwrap();
    let e = connect(running.addr, tls).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("refused our certificate"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("not signed by a CA this side trusts"), "{server_side}");
    serves_others(running.addr, &ca, Some(&ca)).await;
    running.handle.shutdown().await;
}

#[tokio::test]
async fn expired_certificates_are_refused_on_either_side() {
    let ca = Ca::new("test CA");
    let old = ca.issue("localhost", &["localhost"], false, true);
    let mut running = serve(TlsServerConfig::from_pem(old.cert.as_bytes(), old.key.as_bytes()).unwrap()).await;
    let e = connect(running.addr, trust(&ca)).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("has expired"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("refused our certificate"), "{server_side}");
    running.handle.shutdown().await;

    let mut running = serve(mutual(&ca, &ca.server())).await;
    let old_client = ca.issue("a", &["a.clients.test"], true, true);
    let tls = trust(&ca).with_identity_pem(old_client.cert.as_bytes(), old_client.key.as_bytes()).unwrap();
    let e = connect(running.addr, tls).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("expired"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("has expired"), "{server_side}");
    serves_others(running.addr, &ca, Some(&ca)).await;
    running.handle.shutdown().await;
}

#[tokio::test]
async fn revoked_certificates_are_refused_on_either_side_and_others_are_served() {
    let ca = Ca::new("test CA");
    // A client certificate the server's revocation list names.
    let (revoked, good) = (ca.issue("a", &["a.clients.test"], true, false), ca.issue("b", &["b.clients.test"], true, false));
    let server = mutual(&ca, &ca.server()).with_client_crl_pem(ca.crl(&[&revoked]).as_bytes()).unwrap();
    let mut running = serve(server).await;
    let tls = trust(&ca).with_identity_pem(revoked.cert.as_bytes(), revoked.key.as_bytes()).unwrap();
    let e = connect(running.addr, tls).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("refused our certificate as revoked"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("certificate is revoked"), "{server_side}");
    let tls = trust(&ca).with_identity_pem(good.cert.as_bytes(), good.key.as_bytes()).unwrap();
    let client = connect(running.addr, tls).await.expect("a certificate the list does not name is let in");
    assert_eq!(client.whoami().await.unwrap().1.as_deref(), Some("b"));
    assert_eq!(running.calls.load(Ordering::SeqCst), 1, "the revoked client reached no handler");
    running.handle.shutdown().await;

    // A server certificate the client's list names.
    let server_leaf = ca.server();
    let mut running = serve(TlsServerConfig::from_pem(server_leaf.cert.as_bytes(), server_leaf.key.as_bytes()).unwrap()).await;
    let tls = trust(&ca).with_crl_pem(ca.crl(&[&server_leaf]).as_bytes()).unwrap();
    let e = connect(running.addr, tls).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("certificate is revoked"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("refused our certificate as revoked"), "{server_side}");
    // A list that names another certificate lets it through.
    let tls = trust(&ca).with_crl_pem(ca.crl(&[&revoked]).as_bytes()).unwrap();
    connect(running.addr, tls).await.expect("the server's certificate is not on this list");
    running.handle.shutdown().await;
}

#[test]
fn revocation_lists_that_cannot_be_used_are_refused_when_configured() {
    let ca = Ca::new("test CA");
    let e = plain(&ca).with_client_crl_pem(ca.crl(&[]).as_bytes()).unwrap_err();
    assert!(e.to_string().contains("without a client CA"), "{e}");
    let e = trust(&ca).with_crl_pem(b"not a pem").unwrap_err();
    assert!(e.to_string().contains("no certificate revocation lists in it"), "{e}");
    let e = mutual(&ca, &ca.server()).with_client_crl("/nonexistent/clients.crl").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/clients.crl"), "{e}");
}

#[tokio::test]
async fn a_wrong_server_name_is_refused() {
    let ca = Ca::new("test CA");
    let mut running = serve(plain(&ca)).await;
    let e = Client::connect_tls(running.addr, "db.internal.test", trust(&ca), config()).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("not valid for the name \"db.internal.test\""), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("refused our certificate"), "{server_side}");
    serves_others(running.addr, &ca, None).await;
    running.handle.shutdown().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_where_one_is_required() {
    let ca = Ca::new("test CA");
    let mut running = serve(mutual(&ca, &ca.server())).await;
    let e = connect(running.addr, trust(&ca)).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("requires a client certificate"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("presented no certificate"), "{server_side}");
    serves_others(running.addr, &ca, Some(&ca)).await;
    running.handle.shutdown().await;
}

/// A raw rustls client offering `alpn` (none when empty).
async fn raw_tls(addr: SocketAddr, ca: &Ca, alpn: &[&str]) -> std::io::Result<()> {
    let mut config = (*trust(ca).rustls().unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await?;
    // The server's verdict arrives as an alert or a close.
    let mut buf = [0u8; 16];
    let n = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await?;
    assert_eq!(n, 0, "the server sends nothing to a client it refused");
    Ok(())
}

#[tokio::test]
async fn a_client_offering_another_protocol_or_none_is_refused() {
    let ca = Ca::new("test CA");
    let mut running = serve(plain(&ca)).await;
    let e = raw_tls(running.addr, &ca, &["h2"]).await.unwrap_err();
    assert!(e.to_string().contains("no_application_protocol") || e.to_string().contains("NoApplicationProtocol"), "{e}");
    let server_side = running.failure().await;
    assert!(server_side.contains("does not speak zcrpc/1"), "{server_side}");

    let _ = raw_tls(running.addr, &ca, &[]).await;
    let server_side = running.failure().await;
    assert!(server_side.contains("offered no ALPN protocol"), "{server_side}");
    serves_others(running.addr, &ca, None).await;
    running.handle.shutdown().await;
}

#[tokio::test]
async fn a_client_that_says_nothing_is_dropped_after_the_handshake_timeout_and_delays_nobody() {
    let ca = Ca::new("test CA");
    let (tx, mut failures) = mpsc::unbounded_channel();
    let tls = plain(&ca);
    let acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls)
        .unwrap()
        .on_handshake_error(move |e| {
            let _ = tx.send(e.to_string());
        });
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder()
        .handshake_timeout(Duration::from_secs(8))
        .build(VaultServer::new(Impl::default()))
        .serve(acceptor);
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Served while the silent one holds its handshake slot.
    serves_others(addr, &ca, None).await;
    // An acceptor doing one handshake at a time would have served the good client only after
    // the silent one's timeout (8 s; the good client takes milliseconds), reporting it first.
    assert!(failures.try_recv().is_err(), "the good client was served while the silent one held its slot");
    let why = tokio::time::timeout(Duration::from_secs(30), failures.recv()).await.unwrap().unwrap();
    assert!(why.contains("did not finish within 8s"), "{why}");
    drop(silent);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_tampered_record_ends_the_connection_and_nothing_reaches_the_handler() {
    a_damaged_upload(Fault::Flip(16 << 20), "failed authentication").await;
}

#[tokio::test]
async fn a_record_cut_short_ends_the_connection_and_nothing_reaches_the_handler() {
    a_damaged_upload(Fault::Cut((16 << 20) + 1000), "closed in the middle of a frame").await;
}

/// A 32 MiB upload through a proxy applying `fault`: the client's call fails, the server's
/// connection ends with an error containing `cause`, no handler runs, and the server serves the
/// next connection.
async fn a_damaged_upload(fault: Fault, cause: &str) {
    let ca = Ca::new("test CA");
    let tls = plain(&ca);
    let mut acceptor = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), tls).unwrap();
    let addr = acceptor.local_addr().unwrap();
    let service = Impl::default();
    let calls = service.calls.clone();
    let server = Server::builder().stderr_warnings(false).build(VaultServer::new(service));
    let proxy = faulty_proxy(addr, fault).await;
    let served = {
        let server = server.clone();
        tokio::spawn(async move {
            let t = acceptor.accept().await.unwrap();
            let why = server.serve_connection(t).await;
            (why, acceptor)
        })
    };
    let client = connect(proxy, trust(&ca)).await.unwrap();
    let sent = client.echo(Payload::from(vec![0x5au8; 32 << 20])).await;
    assert!(matches!(sent, Err(CallError::Connection(_)) | Err(CallError::Unavailable(_))), "the client's call fails: {sent:?}");
    let (why, mut acceptor) = served.await.unwrap();
    let server_side = why.to_string();
    eprintln!("server: {server_side}\nclient: {sent:?}");
    assert!(server_side.contains(cause), "{server_side}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler saw any of the tampered frame");

    // The server goes on: a fresh connection straight to it works.
    let again = tokio::spawn(async move {
        let t = acceptor.accept().await.unwrap();
        server.serve_connection(t).await
    });
    let client = connect(addr, trust(&ca)).await.unwrap();
    assert_eq!(client.echo(Payload::from(vec![1u8; 100])).await.unwrap().len(), 100);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(client);
    let _ = again.await;
}
