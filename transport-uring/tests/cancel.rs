//! Cancellation safety: a dropped send future leaves its buffers parked until the kernel's
//! final completion; a dropped receive loses no bytes.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use rpc_core::transport::{RecvHalf, SendHalf, Transport};
use rpc_core::Transmit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport_uring::{Backend, BufferPool, RecvMode, UringConfig, ZcMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_send_keeps_buffers_until_notification() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pool = BufferPool::new(8 << 20, 1 << 20).unwrap();
        let cfg = UringConfig {
            backend: Backend::Uring,
            mode: ZcMode::AlwaysZc,
            sndbuf: Some(64 << 10),
            ..Default::default()
        };
        let (t, mut peer) = pair(cfg).await;
        let stats = t.stats();
        let (_r, mut s) = t.split();
        let mut segs = Vec::new();
        let mut expect = Vec::new();
        for i in 0..8u8 {
            let mut b = pool.take().unwrap();
            let d = pattern(1 << 20, i);
            b.fill_from(&d);
            expect.extend(d);
            segs.push(b.into_segment());
        }
        let t = Transmit {
            head: bytes::Bytes::new(),
            segments: segs,
        };
        // The peer does not read: the send cannot finish; drop it after 200 ms.
        let r = tokio::time::timeout(Duration::from_millis(200), s.send(&mut vec![t])).await;
        assert!(r.is_err(), "send should still be pending");
        assert_eq!(
            pool.available(),
            0,
            "buffers freed while the kernel may still read them"
        );
        // The stream now holds a partial frame: further sends refuse.
        let err = s
            .send(&mut vec![Transmit {
                head: bytes::Bytes::from_static(b"x"),
                segments: vec![],
            }])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        // Drain what was sent; every buffer comes back once the notifications are in.
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            match tokio::time::timeout(Duration::from_millis(500), peer.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        assert!(!got.is_empty() && got.len() < expect.len());
        assert!(got[..] == expect[..got.len()], "prefix differs");
        drop(s);
        drop(peer);
        for _ in 0..500 {
            if pool.available() == pool.capacity() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.available(), pool.capacity());
        println!("{:?}", stats.snapshot());
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_recv_loses_no_bytes() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let cfg = UringConfig {
            backend: Backend::Uring,
            recv: RecvMode::Uring,
            ..Default::default()
        };
        let (t, mut peer) = pair(cfg).await;
        let stats = t.stats();
        let (mut r, _s) = t.split();
        // A receive that times out (its io_uring RECV stays in the kernel) ...
        let pending = tokio::time::timeout(
            Duration::from_millis(50),
            r.recv(BytesMut::with_capacity(4096)),
        )
        .await;
        assert!(pending.is_err());
        // ... then the peer writes: the bytes land in the abandoned buffer and must reach the
        // next call, here through a smaller buffer (the rest on the call after).
        let data = pattern(3000, 5);
        peer.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        while got.len() < data.len() {
            let (n, buf) = r.recv(BytesMut::with_capacity(1000)).await;
            let n = n.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..]);
        }
        assert_eq!(got, data);
        // Ordinary receives afterwards.
        peer.write_all(b"tail").await.unwrap();
        let (n, buf) = r.recv(BytesMut::with_capacity(100)).await;
        assert_eq!(n.unwrap(), 4);
        assert_eq!(&buf[..], b"tail");
        drop(peer);
        let (n, _) = r.recv(BytesMut::with_capacity(100)).await;
        assert_eq!(n.unwrap(), 0, "EOF");
        let st = stats.snapshot();
        assert_eq!(st.recv_bytes, 3004);
        assert!(st.recv_copied_bytes > 0);
    })
    .await
    .expect("timed out");
}
