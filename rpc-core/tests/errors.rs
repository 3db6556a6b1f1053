//! Errors a user can act on: a connect error names the address; a peer speaking another
//! protocol is named (HTTP, HTTP/2, TLS) instead of shown as numbers; a frame over `max_frame`
//! says what counts; a connection the server drops for bad input is reported on stderr when the
//! program has no `tracing` subscriber, and the server goes on serving.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{
    Body, BoxFuture, CallError, CallOptions, Client, ClientConfig, ConnectError, DecodeError, Payload, Server, ServerRequest,
    Service, Status,
};

struct Echo;
impl Service for Echo {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move { Ok(req.body) })
    }
}

/// Sends `bytes` on a plain TCP connection and reads everything the server answers until it
/// closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    // A reset after the goaway is fine: what came before it is what we check.
    let _ = s.read_to_end(&mut got);
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_is_told_what_it_sent_and_the_server_keeps_serving() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().stderr_warnings(false).build(Echo).serve(acceptor);
    let got = tokio::task::spawn_blocking(move || raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(r#"bad magic "GET ": the peer is not speaking zcrpc; it looks like an HTTP/1 request"#), "{text}");
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let reply = client.call(1, Body::message("still here".into()), CallOptions::default()).await.unwrap();
    assert_eq!(&reply.message[..], b"still here");
    handle.shutdown().await;
}

#[tokio::test]
async fn the_reason_a_foreign_connection_ended_names_the_protocol() {
    let cases: [(&[u8], &str); 5] = [
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", r#"bad magic "PRI ": the peer is not speaking zcrpc; it looks like HTTP/2"#),
        (&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], "bad magic 16 03 01 02: the peer is not speaking zcrpc; it looks like TLS"),
        (&[0xde, 0xad, 0xbe, 0xef], r#"bad magic de ad be ef: the peer is not speaking zcrpc (expected "ZCRP")"#),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", r#"bad magic "HTTP": the peer is not speaking zcrpc; it looks like an HTTP/1 server's response"#),
        // A gRPC server's first bytes: its SETTINGS frame (18 bytes of settings).
        (&[0, 0, 18, 4, 0, 0, 0, 0, 0], "bad magic 00 00 12 04: the peer is not speaking zcrpc; it looks like HTTP/2 (a SETTINGS frame)"),
    ];
    for (bytes, expected) in cases {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (br, bw) = tokio::io::split(b);
        let ended = tokio::spawn(
            Server::builder()
                .stderr_warnings(false)
                .build(Echo)
                .serve_connection(rpc_core::transport::StreamTransport::new(br, bw, "mem")),
        );
        let (mut ar, mut aw) = tokio::io::split(a);
        tokio::io::AsyncWriteExt::write_all(&mut aw, bytes).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut ar, &mut sink).await;
        let err = tokio::time::timeout(Duration::from_secs(10), ended).await.unwrap().unwrap();
        assert!(err.to_string().contains(expected), "{err}\nexpected: {expected}");
    }
}

/// A server that answers whatever it is sent with `answer`, then closes.
async fn foreign_server(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            let _ = tokio::io::AsyncWriteExt::write_all(&mut s, answer).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_client_pointed_at_an_http_or_tls_server_says_so_and_names_the_address() {
    let addr = foreign_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let err = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&format!("connecting to {addr}: handshake failed: ")), "{text}");
    assert!(text.contains(r#"bad magic "HTTP""#) && text.contains("HTTP/1 server"), "{text}");

    let addr = foreign_server(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]).await;
    let text = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap_err().to_string();
    assert!(text.contains("bad magic 15 03 03 00") && text.contains("TLS"), "{text}");

    // A server that reads the hello and hangs up without a word (`openssl s_server` does).
    let addr = foreign_server(b"").await;
    let err = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap_err();
    assert!(matches!(err.reason(), ConnectError::ClosedBeforeHello), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("connecting to {addr}: connected, but the peer closed the connection without a zcrpc hello")), "{text}");
}

#[tokio::test]
async fn a_refused_connection_names_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!("connecting to {addr}: could not connect: ")), "{err}");
    assert_eq!(err.target(), Some(addr.to_string().as_str()));
    assert!(matches!(err.reason(), ConnectError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{err:?}");

    // A client made from a dial function names the address when told it; once.
    let err = Client::connect_with(move || rpc_core::transport::tcp::connect(addr), ClientConfig::default())
        .await
        .unwrap_err()
        .with_target(addr.to_string())
        .with_target("elsewhere");
    assert!(err.to_string().starts_with(&format!("connecting to {addr}: could not connect: ")), "{err}");
}

#[tokio::test]
async fn a_request_over_max_frame_says_attachments_count() {
    let (a, b) = rpc_core::transport::mem::pair();
    tokio::spawn(Server::builder().max_frame(1 << 20).build(Echo).serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    // An attachment of exactly max_frame, plus a message of 2 bytes.
    let body = Body::new(bytes::Bytes::from_static(b"hi"), vec![Payload::from(vec![0u8; 1 << 20])]);
    let err = client.call(1, body, CallOptions::default()).await.unwrap_err();
    assert!(matches!(err, CallError::TooLarge { len, limit } if len == (1 << 20) + 2 && limit == 1 << 20), "{err:?}");
    assert!(err.to_string().contains("message, metadata and attachments together"), "{err}");
    let decode = DecodeError::TooLarge { what: "frame", len: 10, limit: 8 };
    assert!(decode.to_string().contains("counts the message and every attachment together"), "{decode}");
}

/// Child mode of the stderr test: a server with no `tracing` subscriber serves one foreign
/// connection and one real call, then exits. Run by the test below in its own process (no
/// subscriber can be uninstalled in this one).
#[test]
fn child_server_without_a_subscriber() {
    let Ok(mode) = std::env::var("ZCRPC_ERRORS_CHILD") else { return };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
        let addr = acceptor.local_addr().unwrap();
        let handle = Server::builder().stderr_warnings(mode == "on").build(Echo).serve(acceptor);
        tokio::task::spawn_blocking(move || raw_exchange(addr, b"GET / HTTP/1.1\r\n\r\n")).await.unwrap();
        let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
        client.call(1, Body::default(), CallOptions::default()).await.unwrap();
        drop(client);
        handle.shutdown().await;
        eprintln!("child done");
    });
}

fn run_child(mode: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_server_without_a_subscriber", "--nocapture", "--test-threads", "1"])
        .env("ZCRPC_ERRORS_CHILD", mode)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_dropped_connection_is_reported_on_stderr_without_a_subscriber_unless_turned_off() {
    let stderr = run_child("on");
    assert!(stderr.contains("child done"), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("WARN zcrpc server: dropped the connection from 127.0.0.1:"));
    let line = line.unwrap_or_else(|| panic!("no warning on stderr:\n{stderr}"));
    assert!(line.contains(r#"bad magic "GET ""#) && line.contains("HTTP/1 request"), "{line}");

    let stderr = run_child("off");
    assert!(stderr.contains("child done"), "{stderr}");
    assert!(!stderr.contains("WARN zcrpc"), "{stderr}");
}
