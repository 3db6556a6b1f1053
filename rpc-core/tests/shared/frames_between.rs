//! Small calls overtaking a large transfer on the same connection, shared by the transports'
//! tests (`rpc-core/tests/pieces.rs` over tcp, `transport-uring/tests/pieces.rs` on the
//! engine). 64 MiB requests and a 64 MiB answer go in pieces (`docs/wire.md`, "Pieces"); a
//! small call made while they are under way goes between the pieces of the one being written,
//! both ways, instead of waiting for the last piece of every large frame queued before it: it
//! is answered while the first large frame is still crossing.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rpc_core::{Body, BoxFuture, Bytes, CallOptions, Client, Payload, ServerRequest, Service, Status};

/// Bytes of the large request and of the large answer.
pub const LARGE: usize = 64 << 20;

/// Takes a large request; answers with its length.
pub const UPLOAD: u32 = 1;
/// Answers with [`LARGE`] bytes.
pub const DOWNLOAD: u32 = 2;
/// Any other method echoes its request.
pub const SMALL: u32 = 3;

/// The service behind the tests.
#[derive(Clone)]
pub struct Overtaken {
    blob: Bytes,
}

impl Default for Overtaken {
    fn default() -> Self {
        Overtaken { blob: Bytes::from(vec![7u8; LARGE]) }
    }
}

impl Service for Overtaken {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let answer = match req.method {
            UPLOAD => Body::message(Bytes::from(req.body.len().to_string())),
            DOWNLOAD => Body::new(Bytes::new(), vec![Payload::from(self.blob.clone())]),
            _ => req.body,
        };
        Box::pin(std::future::ready(Ok(answer)))
    }
}

/// Waits until `moved` is true, polling every 100 µs, for 20 s at most.
async fn until(what: &str, mut moved: impl FnMut() -> bool) {
    let wait = async {
        while !moved() {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.unwrap_or_else(|_| panic!("{what}: not within 20 s"));
}

/// What [`overtake`] saw.
struct Overtaking {
    /// Bytes of the large frame that had crossed when the small call was answered.
    crossed: u64,
    /// The large call had finished by then.
    large_done: bool,
    small_took: Duration,
    large_took: Duration,
}

/// Polls `large` while a small call runs, made once 4 MiB of the large frame have crossed
/// (`crossed` counts them on the receiving side).
async fn overtake(client: &Client, what: &str, large: impl std::future::Future<Output = Body>, crossed: impl Fn() -> u64) -> Overtaking {
    let started = Instant::now();
    let large_done = AtomicBool::new(false);
    let large = async {
        let b = large.await;
        large_done.store(true, Ordering::Release);
        (b, started.elapsed())
    };
    let small = async {
        until(what, || crossed() >= 4 << 20).await;
        let t = Instant::now();
        let answer = client.call(SMALL, Body::message(Bytes::from_static(b"small")), CallOptions::default()).await.expect("the small call");
        assert_eq!(&answer.message[..], b"small", "{what}");
        (crossed(), large_done.load(Ordering::Acquire), t.elapsed())
    };
    let ((_, large_took), (crossed, large_done, small_took)) = tokio::join!(large, small);
    Overtaking { crossed, large_done, small_took, large_took }
}

/// Two 64 MiB uploads at once with a small call made once 4 MiB of them reached the server
/// (`server_received` reads the bytes its transport received so far), then a 64 MiB download
/// with a small call made once 4 MiB of it reached the client: each small call is answered
/// before the first large frame has crossed whole (it goes between the first upload's pieces,
/// not behind the second upload, which has not begun).
pub async fn small_calls_overtake_large_transfers(client: &Client, server_received: impl Fn() -> u64, what: &str) {
    let at = server_received();
    let blob = Bytes::from(vec![1u8; LARGE]);
    let upload = || async {
        let body = Body::new(Bytes::new(), vec![Payload::from(blob.clone())]);
        let answer = client.call(UPLOAD, body, CallOptions::default()).await.expect("the upload");
        assert_eq!(answer.message, LARGE.to_string().as_bytes(), "{what}");
        answer
    };
    let uploads = async {
        let (first, _) = tokio::join!(upload(), upload());
        first
    };
    let seen = overtake(client, what, uploads, || server_received() - at).await;
    eprintln!(
        "{what}: a small call took {:?} during two 64 MiB uploads that took {:?} ({} bytes of them had reached the server)",
        seen.small_took, seen.large_took, seen.crossed
    );
    assert!(seen.crossed < LARGE as u64 && !seen.large_done, "{what}: the small request waited for the first upload's last piece");

    let at = client.stats().recv_bytes;
    let download = async {
        let b = client.call(DOWNLOAD, Body::message(Bytes::from_static(b"get")), CallOptions::default()).await.expect("the download");
        let got = b.attachments[0].to_bytes();
        assert!(got.len() == LARGE && got.iter().step_by(4093).all(|&b| b == 7), "{what}: the download's bytes");
        b
    };
    let seen = overtake(client, what, download, || client.stats().recv_bytes - at).await;
    eprintln!(
        "{what}: a small call took {:?} during a 64 MiB download that took {:?} ({} bytes of it had reached the client)",
        seen.small_took, seen.large_took, seen.crossed
    );
    assert!(seen.crossed < LARGE as u64 && !seen.large_done, "{what}: the small answer waited for the download's last piece");
}

/// One 64 MiB upload after another on `client`'s connection, and beside them 20 small calls
/// one at a time, as an application whose client shares one thread with its connection (a
/// current-thread runtime) would make them: each is answered before a whole upload's bytes
/// have reached the server after it was made (`server_received`). The small requests go
/// between the pieces; their answers must not wait for the writer to finish the upload.
pub async fn small_calls_beside_uploads_on_one_thread(client: &Client, server_received: impl Fn() -> u64, what: &str) {
    let blob = Bytes::from(vec![1u8; LARGE]);
    let uploads = async {
        loop {
            let body = Body::new(Bytes::new(), vec![Payload::from(blob.clone())]);
            client.call(UPLOAD, body, CallOptions::default()).await.expect("an upload");
        }
    };
    let small = async {
        let mut crossed = Vec::new();
        until(what, || server_received() >= 4 << 20).await;
        for _ in 0..20 {
            let at = server_received();
            let answer = client.call(SMALL, Body::message(Bytes::from_static(b"small")), CallOptions::default()).await.expect("a small call");
            assert_eq!(&answer.message[..], b"small", "{what}");
            crossed.push((server_received() - at) >> 20);
        }
        crossed
    };
    let crossed = tokio::select! {
        crossed = small => crossed,
        () = uploads => unreachable!("the uploads loop until the small calls are done"),
    };
    eprintln!("{what}: MiB of uploads that reached the server during each small call: {crossed:?}");
    let worst = crossed.iter().max().copied().unwrap_or(0);
    assert!(worst < (LARGE >> 20) as u64 / 2, "{what}: a small call waited for {worst} MiB of uploads: {crossed:?}");
}
