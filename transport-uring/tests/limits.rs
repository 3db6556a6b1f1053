//! Bounds the kernel enforces for us: `TCP_USER_TIMEOUT` on every socket, and the
//! `sent_bytes` counter the driver's write-stall timeout watches.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{Acceptor, SendHalf, Transport};
use transport_uring::{Backend, UringAcceptor, UringConfig, ZcMode, DEFAULT_TCP_USER_TIMEOUT};

#[tokio::test]
async fn tcp_user_timeout_set_on_connect_and_accept() {
    tokio::time::timeout(LIMIT, async {
        for (asked, expect) in [
            (UringConfig::default().tcp_user_timeout, Some(DEFAULT_TCP_USER_TIMEOUT)),
            (Some(Duration::from_millis(1500)), Some(Duration::from_millis(1500))),
            // The kernel default: no user timeout (0).
            (None, None),
        ] {
            let cfg = UringConfig { tcp_user_timeout: asked, ..Default::default() };
            let mut acceptor = UringAcceptor::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            let (client, server) = tokio::join!(transport_uring::connect(addr, cfg), acceptor.accept());
            assert_eq!(client.unwrap().tcp_user_timeout().unwrap(), expect, "connect, asked {asked:?}");
            assert_eq!(server.unwrap().tcp_user_timeout().unwrap(), expect, "accept, asked {asked:?}");
        }
    })
    .await
    .unwrap();
}

/// Every byte the kernel took is counted once, whichever path carried it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_bytes_counts_what_the_kernel_took() {
    tokio::time::timeout(LIMIT, async {
        for backend in [Backend::Uring, Backend::MsgZc, Backend::Copy] {
            if !require(backend) {
                continue;
            }
            let cfg = UringConfig { backend, mode: ZcMode::AlwaysZc, ..Default::default() };
            let (t, peer) = pair(cfg).await;
            let stats = t.stats();
            let (_r, mut s) = t.split();
            let reader = tokio::spawn(read_all(peer));
            // A small message (copy path), a large one in several segments (zero-copy, short
            // sends on loopback), and a batch of both.
            let big = pattern(3 << 20, 3);
            let mut expected = 0u64;
            for batch in [
                vec![transmit(b"small", vec![Bytes::from_static(b"x")])],
                vec![transmit(b"H", vec![Bytes::from(big[..1 << 20].to_vec()), Bytes::from(big[1 << 20..].to_vec())])],
                vec![transmit(b"a", vec![Bytes::from(pattern(100, 1))]), transmit(b"b", vec![Bytes::from(pattern(64 << 10, 2))])],
            ] {
                expected += batch.iter().map(|t| t.len() as u64).sum::<u64>();
                s.send(&mut batch.clone()).await.unwrap();
                assert_eq!(stats.snapshot().sent_bytes, expected, "{backend}");
            }
            s.flush_notifications().await;
            drop(s);
            drop(_r);
            assert_eq!(reader.await.unwrap().len() as u64, expected, "{backend}");
        }
    })
    .await
    .unwrap();
}
