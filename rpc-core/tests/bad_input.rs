//! Hostile and broken peers: each gets a clear error and loses only its own connection.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use rpc_core::frame::{FrameDecoder, FrameHeader, FrameKind, Hello, Limits, HEADER_LEN, WIRE_VERSION};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Body, Bytes, CallOptions, Client, ClientConfig, Code, DecodeError, Server, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn hello() -> Vec<u8> {
    Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 20, max_calls_in_flight: 8, max_attachments: 4, max_metadata: 0, stream_window: 0 }
        .encode()
        .to_vec()
}

fn header(kind: u8, f: impl FnOnce(&mut FrameHeader)) -> Vec<u8> {
    let mut h = FrameHeader::new(FrameKind::Request);
    f(&mut h);
    let mut v = Vec::new();
    h.encode(&mut v);
    v[0] = kind;
    v
}

fn decoder_after_hello() -> (FrameDecoder, BytesMut) {
    let mut d = FrameDecoder::new(Limits { max_frame: 1 << 20, max_attachments: 4 });
    let mut buf = BytesMut::from(&hello()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    (d, buf)
}

#[test]
fn a_header_claiming_2_pow_40_bytes_fails_before_any_allocation() {
    let (mut d, mut buf) = decoder_after_hello();
    buf.extend_from_slice(&header(1, |h| {
        h.attachments = 1;
        h.payload_len = 1 << 40;
    }));
    let cap = buf.capacity();
    let err = d.decode(&mut buf).unwrap_err();
    assert_eq!(err, DecodeError::TooLarge { what: "payload", len: 1 << 40, limit: 1 << 20 });
    assert_eq!(buf.capacity(), cap, "nothing was reserved for the claim");
    assert_eq!(d.bytes_needed(), HEADER_LEN, "no body size was taken from the bad header");
}

#[test]
fn every_length_field_is_checked() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (header(1, |h| h.message_len = u32::MAX), "frame of"),
        (header(1, |h| h.attachments = 5), "5 attachments is over the limit of 4"),
        (header(1, |h| h.payload_len = 10), "payload of 10 bytes but no attachments"),
        (header(0x7f, |_| {}), "unknown frame kind 0x7f"),
    ];
    for (bytes, expect) in cases {
        let (mut d, mut buf) = decoder_after_hello();
        buf.extend_from_slice(&bytes);
        let err = d.decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains(expect), "{err} should mention {expect:?}");
    }
}

#[test]
fn attachment_table_that_does_not_add_up_is_malformed() {
    let (mut d, mut buf) = decoder_after_hello();
    buf.extend_from_slice(&header(1, |h| {
        h.attachments = 2;
        h.payload_len = 4;
    }));
    buf.extend_from_slice(&3u64.to_le_bytes());
    buf.extend_from_slice(&3u64.to_le_bytes());
    // Header and table are 56 bytes: 8 zeros start the payload at 64.
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(b"abcd");
    let err = d.decode(&mut buf).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { kind: "request", .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_without_padding_ends_the_connection_with_a_clear_goaway() {
    let (server, addr) = server().await;
    // Two attachments of 3 bytes sent back to back, as before padding: payload_len 6.
    let mut bytes = hello();
    bytes.extend_from_slice(&header(1, |h| {
        h.id = 1;
        h.attachments = 2;
        h.payload_len = 6;
    }));
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(b"abcdef");
    let (code, reason) = goaway_of(&raw_exchange(addr, &bytes).await);
    assert_eq!(code, Code::PROTOCOL.0, "{reason}");
    assert!(reason.contains("padding") && reason.contains("the header says 6"), "{reason}");
    // Padded to the right length, but not with zeros.
    let mut bytes = hello();
    bytes.extend_from_slice(&header(1, |h| {
        h.id = 1;
        h.attachments = 2;
        h.payload_len = 67;
    }));
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(&3u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(b"abc");
    bytes.extend_from_slice(&[0xff; 61]);
    bytes.extend_from_slice(b"def");
    let (code, reason) = goaway_of(&raw_exchange(addr, &bytes).await);
    assert_eq!(code, Code::PROTOCOL.0, "{reason}");
    assert!(reason.contains("padding after attachment 0 is not zero"), "{reason}");
    server.shutdown().await;
}

#[test]
fn truncated_input_waits_then_reports_truncation_at_eof() {
    let (mut d, mut buf) = decoder_after_hello();
    let full = header(2, |h| h.message_len = 10);
    buf.extend_from_slice(&full);
    buf.extend_from_slice(b"12345");
    assert!(d.decode(&mut buf).unwrap().is_none());
    assert_eq!(d.bytes_needed(), HEADER_LEN + 10);
    assert!(matches!(d.finish(&buf), Err(DecodeError::Truncated { have: 45, need: 50 })));
}

async fn server() -> (ServerHandle, std::net::SocketAddr) {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let server = Server::builder().max_frame(1 << 20).build(TestService::default());
    (server.serve(acceptor), addr)
}

/// Sends `bytes` as a raw peer and returns everything the server sends back before closing.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server must close the connection")
        .ok();
    out
}

/// Parses the server's hello and its goaway; returns (code, reason).
fn goaway_of(reply: &[u8]) -> (u32, String) {
    assert!(reply.len() >= 32 + HEADER_LEN, "expected hello + goaway, got {} bytes", reply.len());
    let h = FrameHeader::decode(&reply[32..32 + HEADER_LEN]).unwrap_or_else(|e| panic!("{e}: {:02x?}", &reply[..reply.len().min(120)]));
    assert_eq!(h.kind, FrameKind::GoAway);
    let text = &reply[32 + HEADER_LEN..32 + HEADER_LEN + h.message_len as usize];
    (h.code, String::from_utf8_lossy(text).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_lose_their_connection_and_nobody_else_notices() {
    let (handle, addr) = server().await;
    let good = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let payload = pattern(300_000, 9);

    let mut wrong_version = hello();
    wrong_version[4] = 9;
    let mut huge = hello();
    huge.extend(header(1, |h| {
        h.id = 1;
        h.attachments = 1;
        h.payload_len = 1 << 40;
    }));
    let mut unknown_kind = hello();
    unknown_kind.extend(header(0xee, |_| {}));
    let mut response_from_client = hello();
    response_from_client.extend(header(2, |h| h.id = 1));

    let mut stream_frame = hello();
    stream_frame.extend(header(5, |h| h.id = 1));

    // Metadata over the server's declared limit (16 KiB by default), and a key that is not ASCII.
    let with_metadata = |block: Vec<u8>| {
        let r = rpc_core::frame::Request {
            id: 1,
            method: ECHO,
            mode: Default::default(), await_commit: false,
            deadline: None,
            metadata: block.into(),
            message: Bytes::new(),
            attachments: vec![],
        };
        let mut b = hello();
        b.extend(r.encode().unwrap().to_vec());
        b
    };
    let big_metadata = with_metadata(rpc_core::Metadata::new().with("k", vec![0u8; 20_000]).encode().to_vec());
    let mut bad_key = vec![1, 0, 2, 0];
    bad_key.extend("é".as_bytes());
    bad_key.extend([0, 0, 0, 0]);
    let bad_key = with_metadata(bad_key);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("stream frame for no call", stream_frame, "stream data for call 1: no such call was ever started"),
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "bad magic"),
        ("metadata over the limit", big_metadata, "metadata of call 1 is 20009 bytes, over the limit of 16384 bytes"),
        ("metadata key not ASCII", bad_key, "metadata of call 1: metadata key"),
        ("wrong version", wrong_version, "peer speaks version 9, we speak version 1"),
        ("2^40 payload", huge, "payload of 1099511627776 bytes is over the limit of 1048576 bytes"),
        ("unknown kind", unknown_kind, "unknown frame kind 0xee"),
        ("response from a client", response_from_client, "response frame is not allowed from a client"),
    ];
    for (name, bytes, expect) in cases {
        let reply = raw_exchange(addr, &bytes).await;
        let (code, reason) = goaway_of(&reply);
        assert_eq!(code, Code::PROTOCOL.0, "{name}");
        assert!(reason.contains(expect), "{name}: reason {reason:?} should contain {expect:?}");
        // The well-behaved client on its own connection is unaffected.
        let r = good.call(ECHO, Body::new(Bytes::new(), vec![payload.clone().into()]), CallOptions::default()).await.unwrap();
        assert_eq!(r.attachments[0].to_bytes(), payload, "{name}");
    }

    // A peer that sends half a frame and vanishes.
    let mut half = hello();
    half.extend(header(1, |h| {
        h.id = 1;
        h.message_len = 1000;
    }));
    half.extend(vec![0u8; 10]);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&half).await.unwrap();
    drop(s);

    // Random bytes after a valid hello, several seeds.
    for seed in 0..20u64 {
        let mut b = hello();
        b.extend_from_slice(&pattern(200, seed as u8));
        let reply = raw_exchange(addr, &b).await;
        assert!(reply.len() >= 32, "seed {seed}: the server still says hello");
    }

    let r = good.call(ECHO, Body::message(Bytes::from_static(b"still here")), CallOptions::default()).await.unwrap();
    assert_eq!(&r.message[..], b"still here");
    common::eventually("the server holds one connection", || handle.server().connections() == 1).await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sees_the_servers_version_in_the_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut h = hello();
        h[4] = 2;
        s.write_all(&h).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let err = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap_err();
    assert!(err.to_string().contains("peer speaks version 2, we speak version 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let server = Server::builder().handshake_timeout(Duration::from_millis(200)).build(TestService::default());
    let handle = server.serve(acceptor);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut out)).await.expect("closed by the server").unwrap();
    let (code, reason) = goaway_of(&out);
    assert_eq!(code, Code::PROTOCOL.0);
    assert!(reason.contains("no hello from the peer within 200ms"), "{reason}");
    common::eventually("the server holds no connection", || handle.server().connections() == 0).await;
    handle.shutdown().await;
}
