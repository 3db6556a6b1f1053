//! A large answer given up on, shared by the transports' tests (`rpc-core/tests/pieces.rs` over
//! tcp, `transport-uring/tests/pieces.rs` on the engine): a client starts a 60 MiB download,
//! gives it up once its first MiB has arrived, and the server stops sending it part-way. Its
//! answer goes in pieces (`docs/wire.md`, "Pieces"), so the client's cancel ends it at an abort
//! marker: after the server has read the cancel, at most the pieces its writer holds still
//! cross, where before the whole answer did. Then the connection carries on.
#![allow(dead_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{Body, BoxFuture, Bytes, CallOptions, Client, Payload, ServerRequest, Service, Status, TransportStats};

/// Bytes of the answer to [`DOWNLOAD`].
pub const DOWNLOAD_LEN: usize = 60 << 20;

/// The method answering with [`DOWNLOAD_LEN`] bytes; any other echoes its request.
pub const DOWNLOAD: u32 = 1;

/// Most bytes the server may send after its transport received the cancel: the two pieces its
/// writer holds (1 MiB and an 8-byte marker each), one more for each piece the writer may take
/// in the moment between the transport's read of the cancel and the connection's handling of
/// it (counted as two), the abort marker, and a small frame's slack (a pong). Bytes in the
/// socket buffers were counted as sent before the cancel: they are not in this.
pub const AFTER_SERVER_READ_MAX: u64 = 4 * ((1 << 20) + 8) + 8 + 4096;

/// Answers [`DOWNLOAD`] with the same 60 MiB (one `Bytes`, shared, no copy per call).
#[derive(Clone)]
pub struct Download {
    blob: Bytes,
}

impl Default for Download {
    fn default() -> Self {
        Download { blob: Bytes::from((0..DOWNLOAD_LEN).map(|i| (i % 251) as u8).collect::<Vec<u8>>()) }
    }
}

impl Service for Download {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let answer = if req.method == DOWNLOAD { Body::new(Bytes::new(), vec![Payload::from(self.blob.clone())]) } else { req.body };
        Box::pin(std::future::ready(Ok(answer)))
    }
}

/// Waits until `moved` is true, polling every `step` (a yield when zero), for 20 s at most.
async fn until(what: &str, step: Duration, mut moved: impl FnMut() -> bool) {
    let wait = async {
        while !moved() {
            if step.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(step).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.unwrap_or_else(|_| panic!("{what}: not within 20 s"));
}

/// The server's `sent_bytes` once its writer is quiet (unchanged over 20 ms), for 5 s at most.
async fn sent_when_quiet(server: &TransportStats) -> u64 {
    let mut last = server.sent_bytes.load(Ordering::Acquire);
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = server.sent_bytes.load(Ordering::Acquire);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Three downloads through `client`, each given up on after its first MiB arrived; `server`
/// is the server's transport's stats. Each time: what the server sends after reading the cancel
/// stays under [`AFTER_SERVER_READ_MAX`], and the answer never crosses whole. Then a small call
/// and a whole download on the same connection succeed.
pub async fn large_download_given_up_on(client: &Client, server: &Arc<TransportStats>, what: &str) {
    for round in 0..3 {
        let (client_recv, server_sent) = (client.stats().recv_bytes, server.sent_bytes.load(Ordering::Acquire));
        let mut call = Box::pin(client.call(DOWNLOAD, Body::message(Bytes::from_static(b"get")), CallOptions::default()));
        let first_bytes = until(what, Duration::from_micros(200), || client.stats().recv_bytes - client_recv >= 1 << 20);
        tokio::select! {
            r = &mut call => panic!("{what}: a 60 MiB download finished before its first MiB was seen: {:?}", r.map(|b| b.len())),
            _ = first_bytes => {}
        }
        // Given up on: the client's cancel goes now.
        let (server_recv, at_cancel) = (server.recv_bytes.load(Ordering::Acquire), server.sent_bytes.load(Ordering::Acquire));
        let client_at_cancel = client.stats().recv_bytes;
        drop(call);
        until(what, Duration::ZERO, || server.recv_bytes.load(Ordering::Acquire) > server_recv).await;
        let at_server_read = server.sent_bytes.load(Ordering::Acquire);
        let quiet = sent_when_quiet(server).await;
        let client_after = client.stats().recv_bytes - client_at_cancel;
        let (after_read, after_cancel, total) = (quiet - at_server_read, quiet - at_cancel, quiet - server_sent);
        eprintln!(
            "{what}, round {round}: the server sent {after_read} bytes after reading the cancel, {after_cancel} after the client gave up \
             ({total} of the 60 MiB answer in all); the client received {client_after} after giving up"
        );
        assert!(after_read <= AFTER_SERVER_READ_MAX, "{what}: {after_read} bytes of a 60 MiB answer crossed after the server read its cancel");
        assert!(total < DOWNLOAD_LEN as u64, "{what}: the whole answer crossed ({total} bytes) though the client gave up on it");
    }
    let limit = Duration::from_secs(60);
    let small = client.call(DOWNLOAD + 1, Body::message(Bytes::from_static(b"after")), CallOptions::default());
    assert_eq!(&tokio::time::timeout(limit, small).await.expect("bounded").unwrap().message[..], b"after", "{what}");
    let whole = client.call(DOWNLOAD, Body::message(Bytes::from_static(b"get")), CallOptions::default());
    let whole = tokio::time::timeout(limit, whole).await.expect("bounded").unwrap();
    let got = whole.attachments[0].to_bytes();
    assert_eq!(got.len(), DOWNLOAD_LEN, "{what}");
    assert!(got.iter().enumerate().step_by(4093).all(|(i, &b)| b == (i % 251) as u8), "{what}: the download's bytes");
    assert_eq!(got.as_ptr() as usize % 64, 0, "{what}: the pieced answer's attachment aligned");
}
