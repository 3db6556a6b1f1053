//! Segment lifetime: `Bytes` are released at the notification CQE, not at the send's first
//! completion; short sends are resubmitted byte-exact.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use tokio::io::AsyncReadExt;
use transport_uring::{Backend, UringConfig, ZcMode};

struct Flagged {
    data: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

impl AsRef<[u8]> for Flagged {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Flagged {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_released_only_after_notification() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        // The peer's receive buffer is small and it does not read, so most of the message stays
        // in our send queue: the send completes, the notification cannot come yet.
        let listener =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener.set_recv_buffer_size(64 << 10).unwrap();
        listener.set_reuse_address(true).unwrap();
        listener
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        listener.listen(1).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener.into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = UringConfig {
            backend: Backend::Uring,
            mode: ZcMode::AlwaysZc,
            sndbuf: Some(8 << 20),
            ..Default::default()
        };
        let (t, peer) = tokio::join!(transport_uring::connect(addr, cfg), listener.accept());
        let (t, mut peer) = (t.unwrap(), peer.unwrap().0);
        let stats = t.stats();
        let (_r, mut s) = t.split();

        let dropped = Arc::new(AtomicBool::new(false));
        let data = pattern(2 << 20, 9);
        let seg = Bytes::from_owner(Flagged {
            data: data.clone(),
            dropped: dropped.clone(),
        });
        s.send(&mut vec![transmit(b"H", vec![seg])]).await.unwrap();
        // The send has completed (bytes handed to the kernel)...
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = stats.snapshot();
        assert_eq!(st.sends_zc, 1);
        assert_eq!(
            st.notifications, 0,
            "notification cannot have arrived: data still queued"
        );
        assert!(
            !dropped.load(Ordering::SeqCst),
            "segment released before its notification"
        );
        assert_eq!(s.in_flight(), 1);

        // Read everything: the queue drains, the notification arrives, the segment goes.
        let mut got = vec![0u8; 1 + data.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[1..], &data[..]);
        s.flush_notifications().await;
        assert!(dropped.load(Ordering::SeqCst));
        let st = stats.snapshot();
        assert!(st.notifications >= 1);
        assert_eq!(s.in_flight(), 0);
    })
    .await
    .expect("timed out");
}

async fn short_sends(backend: Backend) {
    let cfg = UringConfig {
        backend,
        mode: ZcMode::AlwaysZc,
        sndbuf: Some(16 << 10),
        ..Default::default()
    };
    let (t, mut peer) = pair(cfg).await;
    assert_eq!(t.backend(), backend);
    let stats = t.stats();
    let (_r, mut s) = t.split();
    let reader = tokio::spawn(async move {
        let mut v = Vec::new();
        let mut chunk = vec![0u8; 32 << 10];
        loop {
            let n = peer.read(&mut chunk).await.unwrap();
            if n == 0 {
                break v;
            }
            v.extend_from_slice(&chunk[..n]);
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });
    let segs: Vec<Bytes> = (0..4)
        .map(|i| Bytes::from(pattern(1 << 20, 40 + i)))
        .collect();
    let t = transmit(b"short-send-head", segs);
    let expect = t.to_vec();
    s.send(&mut vec![t]).await.unwrap();
    s.shutdown().await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "bytes differ");
    let st = stats.snapshot();
    println!("{st:?}");
    assert!(
        st.short_sends > 0,
        "expected short sends with a 16 KiB SO_SNDBUF"
    );
    // One notification per submission (MSG_ZEROCOPY ranges are counted per send).
    assert_eq!(st.notifications, 1 + st.short_sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_sends_with_small_sndbuf_and_slow_reader() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, short_sends(Backend::Uring))
        .await
        .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgzc_short_sends_with_small_sndbuf_and_slow_reader() {
    if !require(Backend::MsgZc) {
        return;
    }
    tokio::time::timeout(LIMIT, short_sends(Backend::MsgZc))
        .await
        .expect("timed out");
}
