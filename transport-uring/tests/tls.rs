//! TLS 1.3 on the uring transport (`transport_uring::tls`), the cases of
//! `rpc-core/tests/tls.rs` that concern the transport, over real sockets with a CA made at run
//! time (the shared `tls_support`): a call and a 32 MiB payload (and what TLS copied), mutual
//! TLS with the identity and per-method authorization, plaintext against TLS both ways, another
//! CA's certificate (server's or client's), expired certificates, a wrong server name, a silent client, a tampered and a cut record through a faulty proxy;
//! every attachment 64-byte aligned; and both directions against the tcp TLS transport
//! (tokio-rustls), which checks the record layer against rustls's own. With a raw client
//! writing records itself: records that arrived together are received at once and opened in
//! the buffer (nothing copied), those before a tampered one are handed over and then the
//! failure, and a buffer the size of a large frame copies only the record past its end.

mod common;

#[path = "../../rpc-core/tests/tls_support/mod.rs"]
mod support;

#[path = "../../rpc-core/tests/shared/aligned.rs"]
mod aligned;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::tls::{TlsAcceptor, TlsClientConfig, TlsServerConfig};
use rpc_core::transport::Acceptor;
use rpc_core::{CallError, Client, Code, ConnectError, Payload, Server, ServerHandle};
use support::*;
use tokio::sync::mpsc;
use bytes::BytesMut;
use rpc_core::transport::{tls_session, RecvHalf, SendHalf, Transport};
use tokio::io::AsyncWriteExt;
use transport_uring::tls::{self, UringTlsAcceptor, UringTlsConnector};
use transport_uring::{Backend, UringConfig};

fn uring() -> UringConfig {
    UringConfig::default()
}

struct Running {
    addr: SocketAddr,
    handle: ServerHandle,
    failures: mpsc::UnboundedReceiver<String>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Running {
    async fn failure(&mut self) -> String {
        let why = tokio::time::timeout(Duration::from_secs(10), self.failures.recv())
            .await
            .expect("the server reports the failed handshake")
            .expect("the acceptor is alive");
        eprintln!("server: {why}");
        why
    }
}

async fn acceptor(tls: TlsServerConfig) -> (UringTlsAcceptor, mpsc::UnboundedReceiver<String>) {
    let (tx, failures) = mpsc::unbounded_channel();
    let acceptor = UringTlsAcceptor::bind("127.0.0.1:0", tls, uring()).await.unwrap().on_handshake_error(move |e| {
        let _ = tx.send(e.to_string());
    });
    (acceptor, failures)
}

async fn serve(tls: TlsServerConfig) -> Running {
    let (acceptor, failures) = acceptor(tls).await;
    let addr = acceptor.local_addr().unwrap();
    let service = Impl::default();
    let calls = service.calls.clone();
    let handle = Server::builder()
        .handshake_timeout(Duration::from_secs(5))
        .authorize(policy_unless_anonymous)
        .build(VaultServer::new(service))
        .serve(acceptor);
    Running { addr, handle, failures, calls }
}

async fn connect(addr: SocketAddr, tls: TlsClientConfig) -> Result<VaultClient, ConnectError> {
    Ok(VaultClient::new(tls::client(addr, "localhost", tls, uring(), config()).await?))
}

async fn serves_others(addr: SocketAddr, ca: &Ca) {
    let client = connect(addr, trust(ca)).await.expect("the server serves a good client");
    assert_eq!(client.echo(Payload::from(vec![7u8; 1000])).await.unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_and_a_32_mib_payload_over_uring_tls_with_what_tls_copied() {
    if !require(Backend::Uring) {
        return;
    }
    let ca = Ca::new("test CA");
    let running = serve(plain(&ca)).await;
    let client = connect(running.addr, trust(&ca)).await.unwrap();
    assert_eq!(&client.echo(Payload::from(b"hello".to_vec())).await.unwrap().to_bytes()[..], b"hello");
    // A 1 MiB message (its records in five 256 KiB buffers) goes out in at most two writes
    // (one per frame: a message this large is a frame of its own), not one per buffer.
    let sends = |c: &VaultClient| {
        let s = c.client().stats();
        s.sends_copy + s.sends_zc
    };
    let at = sends(&client);
    let mib = pattern(1 << 20, 3);
    assert!(client.echo(Payload::from(mib.clone())).await.unwrap().to_bytes() == mib);
    let writes = sends(&client) - at;
    assert!(writes <= 2, "{writes} writes for a 1 MiB request");

    let before = client.client().stats();
    let sends_before = before.sends_copy + before.sends_zc;

    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let back = client.echo(Payload::from(big.clone())).await.unwrap();
    assert!(back.to_bytes() == big, "32 MiB came back intact");
    let (subject, cn, names) = client.whoami().await.unwrap();
    assert_eq!((subject.as_str(), cn, names.len()), ("", None, 0));

    let stats = client.client().stats();
    println!("{stats}");
    assert!(stats.transport.ends_with("+tls"), "{}", stats.transport);
    assert!(stats.to_string().contains("tls: rustls user-space records (kernel TLS "), "{stats}");
    let received = stats.recv_bytes - before.recv_bytes;
    let copied = stats.tls_bytes_copied - before.tls_bytes_copied;
    assert!(received > 32 << 20, "the reply's records: {received} bytes");
    // Records land in the reply's own buffer and are opened there; what is copied is a record
    // that could not: at the buffer's start (the first) and at its end (the last), at most
    // 16 KiB each, for the reply and the small frames around it; and, the reply coming in
    // pieces of 1 MiB (`docs/pieces.md`, "Answers"), the record that runs past each piece's
    // end (reads stop there, so that the piece's marker is read alone): one per MiB.
    let pieces = 32;
    assert!(copied <= (4 + pieces) * (16 * 1024 + 512), "{copied} bytes copied by TLS for a 32 MiB reply: {stats}");
    assert_eq!(stats.align_copy_bytes, 0, "{stats}");
    // The request's records go out in writes of up to four 256 KiB buffers, not one write per
    // buffer (129 of them for 32 MiB of records).
    let sends = stats.sends_copy + stats.sends_zc - sends_before;
    assert!(sends <= 40, "{sends} writes for a 32 MiB request: {stats}");
    running.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attachment_received_over_uring_tls_is_64_byte_aligned() {
    if !require(Backend::Uring) {
        return;
    }
    let ca = Ca::new("test CA");
    let (acceptor, _failures) = acceptor(plain(&ca)).await;
    let addr = acceptor.local_addr().unwrap();
    let service = aligned::AlignCheck::default();
    let handle = Server::builder().build(service.clone()).serve(acceptor);
    let client = tls::client(addr, "localhost", trust(&ca), uring(), config()).await.unwrap();
    let st = tokio::time::timeout(LIMIT, aligned::exercise(&client, &service, "uring+tls")).await.unwrap();
    aligned::exercise_stream(&client, "uring+tls stream").await;
    println!("{st}");
    drop(client);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_over_uring_shows_the_handler_who_called_and_authorizes_per_method() {
    let ca = Ca::new("test CA");
    let running = serve(mutual(&ca, &ca.server())).await;
    let a = ca.issue("a", &["a.clients.test"], true, false);
    let b = ca.issue("b", &["b.clients.test"], true, false);
    let client_a = connect(running.addr, trust(&ca).with_identity_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap()).await.unwrap();
    let client_b = connect(running.addr, trust(&ca).with_identity_pem(b.cert.as_bytes(), b.key.as_bytes()).unwrap()).await.unwrap();
    let (subject, cn, names) = client_a.whoami().await.unwrap();
    assert!(subject.contains("CN=a") && subject.contains("O=zcrpc tests"), "{subject}");
    assert_eq!(cn.as_deref(), Some("a"));
    assert_eq!(names, vec!["a.clients.test".to_string()]);
    assert_eq!(client_a.open().await.unwrap(), "opened");
    let before = running.calls.load(Ordering::SeqCst);
    let refused = client_b.open().await.unwrap_err();
    assert_eq!(refused.code(), Code::PERMISSION_DENIED, "{refused}");
    assert_eq!(running.calls.load(Ordering::SeqCst), before, "the refused call's handler never ran");

    // No certificate where one is required: the client is told, the server names it.
    let mut running = running;
    let e = connect(running.addr, trust(&ca)).await.map(|_| ()).unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("requires a client certificate") || client_side.contains("closed"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("presented no certificate"), "{server_side}");
    running.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_to_a_uring_tls_server_is_told_and_the_server_names_it() {
    let ca = Ca::new("test CA");
    let mut running = serve(plain(&ca)).await;
    let e = Client::connect_tcp(running.addr, config()).await.unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("looks like TLS"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("plaintext zcrpc") && server_side.contains("127.0.0.1"), "{server_side}");
    serves_others(running.addr, &ca).await;
    running.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uring_tls_client_to_a_plaintext_server_is_told() {
    let ca = Ca::new("test CA");
    let acceptor = transport_uring::UringAcceptor::bind("127.0.0.1:0", uring()).await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().stderr_warnings(false).build(VaultServer::new(Impl::default())).serve(acceptor);
    let e = connect(addr, trust(&ca)).await.map(|_| ()).unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("TLS handshake failed") && client_side.contains("not speaking TLS"), "{client_side}");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_over_uring() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let mut running = serve(plain(&other)).await;
    let e = connect(running.addr, trust(&ca)).await.map(|_| ()).unwrap_err();
    let client_side = text(&e);
    assert!(client_side.contains("not signed by a CA this side trusts"), "{client_side}");
    let server_side = running.failure().await;
    assert!(server_side.contains("refused our certificate"), "{server_side}");
    running.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_another_ca_client_and_a_wrong_name_are_refused_over_uring() {
    let ca = Ca::new("test CA");
    // An expired server certificate.
    let old = ca.issue("localhost", &["localhost"], false, true);
    let mut running = serve(TlsServerConfig::from_pem(old.cert.as_bytes(), old.key.as_bytes()).unwrap()).await;
    let e = connect(running.addr, trust(&ca)).await.map(|_| ()).unwrap_err();
    assert!(text(&e).contains("has expired"), "{e}");
    assert!(running.failure().await.contains("refused our certificate"));
    running.handle.shutdown().await;

    // A wrong server name.
    let mut running = serve(plain(&ca)).await;
    let e = tls::client(running.addr, "db.internal.test", trust(&ca), uring(), config()).await.map(|_| ()).unwrap_err();
    assert!(text(&e).contains("not valid for the name \"db.internal.test\""), "{e}");
    assert!(running.failure().await.contains("refused our certificate"));
    serves_others(running.addr, &ca).await;
    running.handle.shutdown().await;

    // A client certificate from another CA, and an expired one.
    let mut running = serve(mutual(&ca, &ca.server())).await;
    let stranger = Ca::new("another CA").issue("mallory", &["mallory.test"], true, false);
    let tls = trust(&ca).with_identity_pem(stranger.cert.as_bytes(), stranger.key.as_bytes()).unwrap();
    let e = connect(running.addr, tls).await.map(|_| ()).unwrap_err();
    assert!(text(&e).contains("refused our certificate"), "{e}");
    assert!(running.failure().await.contains("not signed by a CA this side trusts"));
    let old_client = ca.issue("a", &["a.clients.test"], true, true);
    let tls = trust(&ca).with_identity_pem(old_client.cert.as_bytes(), old_client.key.as_bytes()).unwrap();
    let e = connect(running.addr, tls).await.map(|_| ()).unwrap_err();
    assert!(text(&e).contains("expired"), "{e}");
    assert!(running.failure().await.contains("has expired"));
    running.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_handshake_timeout_and_delays_nobody_over_uring() {
    let ca = Ca::new("test CA");
    let (acceptor, mut failures) = acceptor(plain(&ca)).await;
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().handshake_timeout(Duration::from_secs(8)).build(VaultServer::new(Impl::default())).serve(acceptor);
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    serves_others(addr, &ca).await;
    assert!(failures.try_recv().is_err(), "the good client was served while the silent one held its slot");
    let why = tokio::time::timeout(Duration::from_secs(30), failures.recv()).await.unwrap().unwrap();
    assert!(why.contains("did not finish within 8s"), "{why}");
    drop(silent);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_record_ends_the_uring_connection_and_nothing_reaches_the_handler() {
    a_damaged_upload(Fault::Flip(16 << 20), "failed authentication").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_cut_short_ends_the_uring_connection_and_nothing_reaches_the_handler() {
    a_damaged_upload(Fault::Cut((16 << 20) + 1000), "cut short").await;
}

/// A 32 MiB upload through a proxy applying `fault`: the client's call fails, the server's
/// connection ends with an error containing `cause`, no handler runs, and the server serves the
/// next connection.
async fn a_damaged_upload(fault: Fault, cause: &str) {
    let ca = Ca::new("test CA");
    let (mut acceptor, _failures) = acceptor(plain(&ca)).await;
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
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler saw any of the damaged frame");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uring_tls_and_tcp_tls_talk_to_each_other_both_ways() {
    let ca = Ca::new("test CA");
    let big = vec![0xa5u8; (3 << 20) + 7];

    // A uring TLS client against the tcp TLS server (tokio-rustls).
    let tcp = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), plain(&ca)).unwrap();
    let addr = tcp.local_addr().unwrap();
    let handle = Server::builder().build(VaultServer::new(Impl::default())).serve(tcp);
    let client = connect(addr, trust(&ca)).await.unwrap();
    assert!(client.echo(Payload::from(big.clone())).await.unwrap().to_bytes() == big);
    drop(client);
    handle.shutdown().await;

    // The tcp TLS client against a uring TLS server.
    let running = serve(plain(&ca)).await;
    let client = VaultClient::new(Client::connect_tls(running.addr, "localhost", trust(&ca), config()).await.unwrap());
    assert!(client.echo(Payload::from(big.clone())).await.unwrap().to_bytes() == big);
    running.handle.shutdown().await;
}

/// A client over `connector` that re-dials `addr`.
async fn over(connector: UringTlsConnector, addr: SocketAddr) -> VaultClient {
    let client = Client::connect_with(
        move || {
            let connector = connector.clone();
            async move { connector.connect(addr, "localhost").await }
        },
        config(),
    )
    .await
    .unwrap();
    VaultClient::new(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_updated_in_both_directions_between_uring_peers_and_with_rustls() {
    if !require(Backend::Uring) {
        return;
    }
    let ca = Ca::new("test CA");
    let big: Vec<u8> = (0..(16u32 << 20) + 13).map(|i| (i % 241) as u8).collect();

    // uring to uring: the client updates its key every 50 records, the server every 64: about
    // 20 and 16 updates for 16 MiB each way, each followed by the other side.
    let (server, _failures) = acceptor(plain(&ca)).await;
    let server = server.rekey_after(64);
    let addr = server.local_addr().unwrap();
    let handle = Server::builder().build(VaultServer::new(Impl::default())).serve(server);
    let client = over(UringTlsConnector::new(&trust(&ca), uring()).unwrap().rekey_after(50), addr).await;
    let before = client.client().stats().tls_key_updates;
    let back = tokio::time::timeout(LIMIT, client.echo(Payload::from(big.clone()))).await.unwrap().unwrap();
    assert!(back.to_bytes() == big, "16 MiB came back intact across the key updates");
    let stats = client.client().stats();
    println!("{stats}");
    let updates = stats.tls_key_updates - before;
    assert!(updates >= 30, "sent about 20 and followed about 16 key updates, counted {updates}: {stats}");
    drop(client);
    handle.shutdown().await;

    // Against rustls's record layer (the tcp TLS transport): it follows ours...
    let tcp = TlsAcceptor::new(TcpAcceptor::bind("127.0.0.1:0").await.unwrap(), plain(&ca)).unwrap();
    let addr = tcp.local_addr().unwrap();
    let handle = Server::builder().build(VaultServer::new(Impl::default())).serve(tcp);
    let client = over(UringTlsConnector::new(&trust(&ca), uring()).unwrap().rekey_after(50), addr).await;
    let back = tokio::time::timeout(LIMIT, client.echo(Payload::from(big.clone()))).await.unwrap().unwrap();
    assert!(back.to_bytes() == big, "rustls followed our key updates");
    assert!(client.client().stats().tls_key_updates >= 20);
    drop(client);
    handle.shutdown().await;

    // ...and a rustls client follows a uring server's.
    let (server, _failures) = acceptor(plain(&ca)).await;
    let server = server.rekey_after(50);
    let addr = server.local_addr().unwrap();
    let handle = Server::builder().build(VaultServer::new(Impl::default())).serve(server);
    let client = VaultClient::new(Client::connect_tls(addr, "localhost", trust(&ca), config()).await.unwrap());
    let back = tokio::time::timeout(LIMIT, client.echo(Payload::from(big.clone()))).await.unwrap().unwrap();
    assert!(back.to_bytes() == big, "a rustls client followed the server's key updates");
    drop(client);
    handle.shutdown().await;
}

/// A uring TLS server's transport (accepted, handshake done) and a raw client on a tokio
/// stream with the session's keys: the client writes sealed records itself, so that a test
/// decides how they reach the server's socket (several in one write: one loopback segment).
async fn raw_client_and_uring_server() -> (tokio::net::TcpStream, tls_session::RecordSealer, transport_uring::tls::UringTlsTransport) {
    let ca = Ca::new("test CA");
    let (mut acceptor, _failures) = acceptor(plain(&ca)).await;
    let addr = acceptor.local_addr().unwrap();
    let rustls = tls_session::for_sessions_client(&trust(&ca).rustls().unwrap());
    let client = async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let session = tls_session::connect(&stream, rustls, "localhost").await.unwrap();
        assert!(session.leftover.is_empty(), "the server sends nothing after the handshake");
        (stream, session.sealer)
    };
    // The server's handshake is over (the client's last flight read) before the client writes.
    let ((stream, sealer), server) = tokio::join!(client, acceptor.accept());
    (stream, sealer, server.unwrap())
}

/// `contents` sealed as one record each, back to back as on the wire.
fn sealed(sealer: &mut tls_session::RecordSealer, contents: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
    let (mut wire, mut ends) = (Vec::new(), Vec::new());
    for c in contents {
        let at = wire.len();
        wire.resize(at + c.len() + tls_session::RECORD_OVERHEAD, 0);
        wire[at + tls_session::HEADER_LEN..][..c.len()].copy_from_slice(c);
        sealer.seal_in_place(&mut wire[at..], c.len()).unwrap();
        ends.push(wire.len());
    }
    (wire, ends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_arrived_together_are_received_at_once_and_opened_where_they_landed() {
    if !require(Backend::Uring) {
        return;
    }
    let (mut stream, mut sealer, server) = raw_client_and_uring_server().await;
    // The suite rustls's defaults negotiate (ring's first): the one `aes_gcm_1core`, the
    // benchmark's ceiling, measures.
    assert!(format!("{sealer:?}").contains("AES_256_GCM"), "{sealer:?}");
    let stats = server.stats();
    let (mut recv, _send) = server.split();
    let parts: Vec<Vec<u8>> = (0..4).map(|i| pattern(8000, i)).collect();
    let (wire, _) = sealed(&mut sealer, &parts.iter().map(|p| &p[..]).collect::<Vec<_>>());
    // One write of 32 KiB: one segment on loopback, in the server's socket all at once.
    stream.write_all(&wire).await.unwrap();

    // Into an empty buffer with room for all: one receive, every record opened in the buffer
    // (the first one too, with no bytes before it), nothing copied.
    let (r, buf) = recv.recv(BytesMut::with_capacity(64 << 10)).await;
    assert_eq!(r.unwrap(), 32_000, "the four records in one receive");
    assert!(buf[..] == parts.concat()[..]);
    let st = stats.snapshot();
    assert_eq!(st.tls_bytes_copied, 0, "{st}");
    assert_eq!(st.recv_bytes, wire.len() as u64, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_before_a_tampered_one_are_handed_over_then_the_failure_and_nothing_of_it() {
    if !require(Backend::Uring) {
        return;
    }
    let (mut stream, mut sealer, server) = raw_client_and_uring_server().await;
    let (mut recv, _send) = server.split();
    let parts: Vec<Vec<u8>> = (0..3).map(|i| pattern(8000, i)).collect();
    let (mut wire, ends) = sealed(&mut sealer, &parts.iter().map(|p| &p[..]).collect::<Vec<_>>());
    wire[ends[0] + 1000] ^= 0x10;
    stream.write_all(&wire).await.unwrap();

    let (r, buf) = recv.recv(BytesMut::with_capacity(64 << 10)).await;
    assert_eq!(r.unwrap(), 8000, "the record before the tampered one");
    assert_eq!(&buf[..], &parts[0][..]);
    let (r, buf) = recv.recv(buf).await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("failed authentication"), "{e}");
    assert_eq!(&buf[..], &parts[0][..], "nothing of the tampered record or after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_the_size_of_a_large_frame_copies_only_the_record_that_overhangs_its_end() {
    if !require(Backend::Uring) {
        return;
    }
    let (mut stream, mut sealer, server) = raw_client_and_uring_server().await;
    let stats = server.stats();
    let (mut recv, _send) = server.split();
    // 1 MiB in 64 full records, and the next 100 bytes (the next frame) in a 65th.
    let data = pattern((1 << 20) + 100, 9);
    let (wire, _) = sealed(&mut sealer, &data.chunks(tls_session::MAX_PLAINTEXT).collect::<Vec<_>>());
    let writer = tokio::spawn(async move {
        stream.write_all(&wire).await.unwrap();
        stream
    });
    // As the driver does for a large frame: a buffer of exactly its size, filled by receives.
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut receives = 0;
    while buf.len() < 1 << 20 {
        let (r, b) = recv.recv(buf).await;
        assert!(r.unwrap() > 0);
        assert_eq!(b.capacity(), 1 << 20, "the buffer keeps its room");
        buf = b;
        receives += 1;
    }
    assert!(buf[..] == data[..1 << 20]);
    let (r, next) = recv.recv(BytesMut::with_capacity(4096)).await;
    assert_eq!(r.unwrap(), 100);
    assert_eq!(&next[..], &data[1 << 20..]);
    let st = stats.snapshot();
    println!("{receives} receives for 64 records; {st}");
    // Copied: the 64th record, which ends 22 bytes past the buffer (its header read ahead and
    // put back, then its plaintext handed over from where it was opened).
    let h = tls_session::HEADER_LEN as u64;
    assert!(st.tls_bytes_copied <= tls_session::MAX_PLAINTEXT as u64 + 2 * h, "{st}");
    drop(writer.await.unwrap());
}

/// A uring TLS server's transport sealing into `pool`, and a raw client (handshake done) that
/// reads only what the test makes it.
async fn raw_client_and_uring_server_with(
    acceptor: &mut UringTlsAcceptor,
    ca: &Ca,
) -> (tokio::net::TcpStream, tls_session::Session, transport_uring::tls::UringTlsTransport) {
    let addr = acceptor.local_addr().unwrap();
    let rustls = tls_session::for_sessions_client(&trust(ca).rustls().unwrap());
    let client = async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let session = tls_session::connect(&stream, rustls, "localhost").await.unwrap();
        assert!(session.leftover.is_empty(), "the server sends nothing after the handshake");
        (stream, session)
    };
    let ((stream, session), server) = tokio::time::timeout(LIMIT, async { tokio::join!(client, acceptor.accept()) }).await.expect("handshake");
    (stream, session, server.unwrap())
}

/// Everything a raw client reads until the end of the stream, opened with `opener`: the
/// plaintext, up to `close_notify`.
async fn read_and_open(mut stream: tokio::net::TcpStream, mut opener: tls_session::RecordOpener) -> Vec<u8> {
    let mut wire = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut wire).await.unwrap();
    let mut plain = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let body = tls_session::body_len(wire[at..at + tls_session::HEADER_LEN].try_into().unwrap()).unwrap();
        let end = at + tls_session::HEADER_LEN + body;
        match opener.open_in_place(&mut wire[at..end]).unwrap() {
            tls_session::Opened::Data(n) => plain.extend_from_slice(&wire[at + tls_session::HEADER_LEN..][..n]),
            tls_session::Opened::Nothing => {}
            tls_session::Opened::Closed => break,
        }
        at = end;
    }
    plain
}

/// A peer that stops reading holds the ciphertext buffers of its connection's send, no more:
/// the other connections of the acceptor, which share its pool, go on. Before the fix, a send
/// that found the pool empty waited for a buffer to come back, and a stalled peer's send
/// returns none: with the 1 MiB pool `UringTlsAcceptor` makes where locked memory is short
/// (4 buffers, one send's worth), one stalled client stopped every other TLS connection's
/// sends until the write-stall timeout ended its own (and its own, too, looked stalled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_does_not_starve_other_connections_of_the_ciphertext_pool() {
    if !require(Backend::Uring) {
        return;
    }
    let ca = Ca::new("test CA");
    let pool = transport_uring::BufferPool::new(4 * tls::DEFAULT_POOL_BUF, tls::DEFAULT_POOL_BUF).unwrap();
    let mut acceptor = UringTlsAcceptor::bind("127.0.0.1:0", plain(&ca), uring()).await.unwrap().with_pool(pool.clone()).rekey_after(7);
    let (_stalled_client, _, stalled) = raw_client_and_uring_server_with(&mut acceptor, &ca).await;
    let (reading_client, reading_session, other) = raw_client_and_uring_server_with(&mut acceptor, &ca).await;

    // The stalled client's server sends far more than the sockets hold, and blocks.
    let (_r1, mut s1) = stalled.split();
    let big = rpc_core::Transmit { head: bytes::Bytes::from_static(b"head"), segments: vec![rpc_core::Segment::Bytes(pattern(64 << 20, 1).into())] };
    let stuck = tokio::spawn(async move { s1.send(&mut vec![big]).await });
    tokio::time::timeout(LIMIT, async {
        while pool.available() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stalled send holds the pool's buffers");
    assert!(!stuck.is_finished(), "the stalled send is blocked");

    // The other connection's client reads and opens everything; its server's send must finish.
    let reader = tokio::spawn(read_and_open(reading_client, reading_session.opener));
    let other_stats = other.stats();
    assert_eq!(other_stats.snapshot().tls_heap_buffers, 0);
    let (_r2, mut s2) = other.split();
    let data = pattern(600 << 10, 2);
    let mut expect = [&b"head"[..], &data[..]].concat();
    let t = rpc_core::Transmit { head: bytes::Bytes::from_static(b"head"), segments: vec![rpc_core::Segment::Bytes(data.into())] };
    tokio::time::timeout(Duration::from_secs(10), s2.send(&mut vec![t]))
        .await
        .expect("a send of another connection waited for the stalled peer's buffers")
        .unwrap();
    // Small sends too (each in a buffer of its own size), with a key update among them.
    for i in 0..50u8 {
        let t = rpc_core::Transmit { head: bytes::Bytes::from(vec![i; 64]), segments: vec![] };
        expect.extend_from_slice(&[i; 64]);
        tokio::time::timeout(Duration::from_secs(10), s2.send(&mut vec![t])).await.expect("a small send waited").unwrap();
    }
    s2.shutdown().await.unwrap();
    let got = tokio::time::timeout(LIMIT, reader).await.unwrap().unwrap();
    assert!(got == expect, "the reading client opened {} bytes, {} sent", got.len(), expect.len());
    assert_eq!(pool.available(), 0, "the stalled send still holds its buffers");
    // Its records were sealed in ordinary memory, and counted: the 600 KiB send in at least
    // three buffers of at most a pool buffer's size, each small send in one of its own.
    let heap = other_stats.snapshot().tls_heap_buffers;
    assert!(heap >= 3 + 50, "{heap} buffers counted as sealed in ordinary memory");
    stuck.abort();
}

/// What a uring TLS receiver delivers when the peer seals `contents` (one record each) and its
/// stream ends after `cut` bytes of them, read with buffers of `room` bytes: the plaintext
/// handed over, and how the last receive ended.
async fn deliver_cut(contents: &[&[u8]], cut: usize, room: usize) -> (Vec<u8>, std::io::Result<usize>) {
    let (mut stream, mut sealer, server) = raw_client_and_uring_server().await;
    let (mut recv, _send) = server.split();
    let (wire, _) = sealed(&mut sealer, contents);
    stream.write_all(&wire[..cut]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    loop {
        let (r, buf) = tokio::time::timeout(Duration::from_secs(10), recv.recv(BytesMut::with_capacity(room)))
            .await
            .expect("a receive of a cut stream did not end");
        match r {
            Ok(0) => return (got, Ok(0)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// A stream cut at every byte of a record, received in place (a buffer with room for it) and
/// aside (a buffer smaller than the record): the records before the cut are delivered whole,
/// nothing of the cut one, and the receive ends with an error saying the record was cut short
/// (a cut between records is an end of stream, as on plain TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_at_every_byte_of_a_record_delivers_only_whole_records() {
    if !require(Backend::Uring) {
        return;
    }
    let first = pattern(30, 1);
    let second = pattern(10, 2);
    let len1 = first.len() + tls_session::RECORD_OVERHEAD;
    let len2 = second.len() + tls_session::RECORD_OVERHEAD;
    for room in [64 << 10, 32] {
        for cut in 0..=len1 + len2 {
            let (got, end) = deliver_cut(&[&first, &second], cut, room).await;
            let whole = if cut >= len1 + len2 { [&first[..], &second[..]].concat() } else if cut >= len1 { first.clone() } else { Vec::new() };
            assert!(got == whole, "cut at {cut}, room {room}: delivered {} bytes, {} expected", got.len(), whole.len());
            match end {
                Ok(0) => assert!(cut == 0 || cut == len1 || cut == len1 + len2, "cut at {cut}, room {room}: a cut record ended the stream quietly"),
                Ok(n) => unreachable!("{n}"),
                Err(e) => {
                    assert!(cut != 0 && cut != len1 && cut != len1 + len2, "cut at {cut}, room {room}: between records: {e}");
                    assert!(e.to_string().contains("cut short"), "cut at {cut}, room {room}: {e}");
                }
            }
        }
    }
}

/// A peer that sends a flood of tiny records, empty records and key updates: every byte is
/// delivered in order, every update followed, in the caller's buffers (none grows), and the
/// receiver keeps up to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_records_empty_records_and_key_updates_is_received_in_bounded_memory() {
    if !require(Backend::Uring) {
        return;
    }
    const N: usize = 20_000;
    let (mut stream, mut sealer, server) = raw_client_and_uring_server().await;
    let stats = server.stats();
    let (mut recv, _send) = server.split();
    let mut wire = Vec::new();
    for i in 0..N {
        seal_key_updates(&mut sealer, &mut wire, 1);
        let (tiny, _) = sealed(&mut sealer, &[&[i as u8][..], &[][..]]);
        wire.extend_from_slice(&tiny);
    }
    let writer = tokio::spawn(async move {
        stream.write_all(&wire).await.unwrap();
        stream
    });
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        let (r, buf) = tokio::time::timeout(LIMIT, recv.recv(BytesMut::with_capacity(4096))).await.expect("receive");
        let n = r.unwrap();
        assert!(n > 0, "early end after {} bytes", got.len());
        assert_eq!(buf.capacity(), 4096, "the caller's buffer grew");
        got.extend_from_slice(&buf);
    }
    assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8), "bytes out of order");
    assert_eq!(stats.snapshot().tls_key_updates, N as u64);
    drop(writer.await.unwrap());
}

/// Appends `n` key_update records sealed by `sealer` to `wire`.
fn seal_key_updates(sealer: &mut tls_session::RecordSealer, wire: &mut Vec<u8>, n: usize) {
    for _ in 0..n {
        let at = wire.len();
        wire.resize(at + tls_session::KEY_UPDATE_RECORD_LEN, 0);
        sealer.seal_key_update(&mut wire[at..]).unwrap();
    }
}

/// Key updates count as records with nothing for the application: 32 in a row between data
/// are followed (as many rounds as come), the 33rd in a row ends the connection with an error
/// naming it. Each costs the receiver a key derivation and a decryption for 22 bytes sent.
#[tokio::test]
async fn a_flood_of_key_updates_ends_the_connection_and_runs_up_to_the_limit_between_data_are_followed() {
    if !require(Backend::Uring) {
        return;
    }
    let (mut stream, mut sealer, server) = raw_client_and_uring_server().await;
    let stats = server.stats();
    let (mut recv, _send) = server.split();
    let mut wire = Vec::new();
    for _ in 0..20 {
        seal_key_updates(&mut sealer, &mut wire, 32);
        wire.extend_from_slice(&sealed(&mut sealer, &[&b"x"[..]]).0);
    }
    seal_key_updates(&mut sealer, &mut wire, 33);
    wire.extend_from_slice(&sealed(&mut sealer, &[&b"!"[..]]).0);
    stream.write_all(&wire).await.unwrap();
    let mut got = 0;
    let e = loop {
        let (r, _) = tokio::time::timeout(LIMIT, recv.recv(BytesMut::with_capacity(4096))).await.expect("receive");
        match r {
            Ok(n) => {
                assert!(n > 0, "early end after {got} bytes");
                got += n;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(got, 20, "every round's byte, and not the one after the flood");
    assert!(e.to_string().contains("33 records in a row with nothing for the application"), "{e}");
    assert_eq!(stats.snapshot().tls_key_updates, 20 * 32 + 32, "followed up to the limit, and not the one past it");
    drop(stream);
}

/// A file region sent over uring TLS is read a piece at a time, as it is sealed: what the
/// sender has read and the socket has not taken stays within a few pool buffers, however large
/// the region (here 64 MiB, to a peer that reads nothing). Before the fix it was read whole
/// into memory first (`FileRegion::read_to_bytes`, on the runtime's thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_region_over_uring_tls_is_read_a_piece_at_a_time() {
    if !require(Backend::Uring) {
        return;
    }
    const LEN: usize = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(LEN as u64).unwrap();
    drop(f);
    let region = rpc_core::FileRegion::open(&path).unwrap();
    let (stream, _sealer, server) = raw_client_and_uring_server().await;
    let stats = server.stats();
    let (_recv, mut send) = server.split();
    let t = rpc_core::Transmit { head: bytes::Bytes::from_static(b"head"), segments: vec![rpc_core::Segment::File(region)] };
    let sending = tokio::spawn(async move { send.send(&mut vec![t]).await });
    // The peer reads nothing: the send stops once the sockets are full; then look.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = stats.snapshot();
        if st.sent_bytes == last || sending.is_finished() {
            break;
        }
        last = st.sent_bytes;
    }
    let st = stats.snapshot();
    assert!(!sending.is_finished(), "64 MiB fit in the sockets? {st}");
    let held = st.file_read_bytes.saturating_sub(st.sent_bytes);
    println!("read {} of the file, the socket took {}: {held} held", st.file_read_bytes, st.sent_bytes);
    assert!(held <= 4 << 20, "the sender holds {held} bytes read from the file and not sent: {st}");
    sending.abort();
    drop(stream);
}

/// Answers with the file region it holds, between a memory segment before and after.
struct FileReply(rpc_core::FileRegion);

impl rpc_core::Service for FileReply {
    fn call(&self, _req: rpc_core::ServerRequest) -> rpc_core::BoxFuture<'static, Result<rpc_core::Body, rpc_core::Status>> {
        let region = self.0.clone();
        Box::pin(async move {
            let mut p = Payload::from(vec![1u8; 333]);
            p.push_file(region);
            p.push(bytes::Bytes::from_static(b"after"));
            Ok(rpc_core::Body::new(bytes::Bytes::new(), vec![p]))
        })
    }
}

/// A file region in a reply over uring TLS, read in pieces (several, and a short last one),
/// arrives byte-exact between the memory around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_region_over_uring_tls_arrives_byte_exact() {
    if !require(Backend::Uring) {
        return;
    }
    let data = pattern((700 << 10) + 13, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, &data).unwrap();
    let region = rpc_core::FileRegion::open(&path).unwrap();
    let ca = Ca::new("test CA");
    let (acceptor, _failures) = acceptor(plain(&ca)).await;
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(FileReply(region)).serve(acceptor);
    let client = tls::client(addr, "localhost", trust(&ca), uring(), config()).await.unwrap();
    let reply = tokio::time::timeout(LIMIT, client.call(1, rpc_core::Body::message(bytes::Bytes::new()), rpc_core::CallOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let got = reply.attachments[0].to_bytes();
    let expect = [&[1u8; 333][..], &data[..], b"after"].concat();
    assert!(got[..] == expect[..], "{} bytes, {} expected", got.len(), expect.len());
    drop(client);
    handle.shutdown().await;
}

/// A peer whose records carry nothing (empty records, here 40,000 of them queued at once) is
/// cut off at the 33rd in a row (`tls_session::MAX_IDLE_RECORDS`): each costs a decryption for
/// a few bytes of the peer's. The receive fails with an error naming it, at once, without
/// going through the rest. Before the limit, the receive went through all 40,000 (taking from
/// tokio's cooperative budget as it went, so that other tasks of its thread ran). Up to the
/// limit between records of data, they are taken, as many rounds as come.
#[test]
fn a_flood_of_empty_records_ends_the_connection_and_runs_up_to_the_limit_between_data_are_taken() {
    if !require(Backend::Uring) {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ca = Ca::new("test CA");
        // Room for the whole flood in the server's socket before the receive starts.
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.set_recv_buffer_size(4 << 20).unwrap();
        l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        l.listen(4).unwrap();
        l.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(l.into()).unwrap();
        let mut acceptor = UringTlsAcceptor::new(listener, plain(&ca), uring()).unwrap();
        let (mut stream, mut session, server) = raw_client_and_uring_server_with(&mut acceptor, &ca).await;
        let sealer = &mut session.sealer;
        let (mut recv, _send) = server.split();
        // 200 rounds of 32 empty records and one byte of data: every byte arrives.
        let round: Vec<&[u8]> = std::iter::repeat_n(&[][..], 32).chain([&b"x"[..]]).collect();
        let rounds = round.repeat(200);
        let (wire, _) = sealed(sealer, &rounds);
        stream.write_all(&wire).await.unwrap();
        let mut got = 0;
        while got < 200 {
            let (r, _) = tokio::time::timeout(LIMIT, recv.recv(BytesMut::with_capacity(4096))).await.unwrap();
            got += r.expect("32 empty records between data are taken");
        }
        assert_eq!(got, 200);
        // Then a flood: the 33rd empty record in a row ends it.
        let mut contents: Vec<&[u8]> = vec![&[][..]; 40_000];
        contents.push(b"!");
        let (wire, _) = sealed(sealer, &contents);
        stream.write_all(&wire).await.unwrap();
        let (r, _) = tokio::time::timeout(LIMIT, recv.recv(BytesMut::with_capacity(4096))).await.unwrap();
        let e = r.expect_err("a flood of empty records is refused");
        assert!(e.to_string().contains("33 records in a row with nothing for the application"), "{e}");
        drop(stream);
    });
}

#[tokio::test(flavor = "current_thread")]
async fn records_of_a_peer_that_stalls_short_of_the_mark_are_read_within_the_patience() {
    if !require(Backend::Uring) {
        return;
    }
    // 1 MiB announced; the client sends two records (32 kB of ciphertext, under the 64 KiB
    // the receiver would wait for) and stalls. The receiver's patience (1 s) lowers the mark,
    // and the records are read: keepalive counts on it. On a current-thread runtime tokio
    // sees the readiness the lower mark gives only once the receive waits again, so the mark
    // must not go back up meanwhile (as it did once, and nothing was read until the peer sent
    // 64 KiB or closed).
    let (mut stream, mut sealer, server) = raw_client_and_uring_server().await;
    let (mut recv, _send) = server.split();
    let parts: Vec<Vec<u8>> = (0..2).map(|i| pattern(16_000, i)).collect();
    let (wire, _) = sealed(&mut sealer, &parts.iter().map(|p| &p[..]).collect::<Vec<_>>());
    let writer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stream.write_all(&wire).await.unwrap();
        stream
    });
    recv.expect_bytes(1 << 20);
    let (r, buf) = tokio::time::timeout(std::time::Duration::from_secs(6), recv.recv(BytesMut::with_capacity(1 << 20)))
        .await
        .expect("the stalled peer's records read within the patience");
    assert_eq!(r.unwrap(), 32_000);
    assert!(buf[..] == parts.concat()[..]);
    drop(writer.await.unwrap());
}
