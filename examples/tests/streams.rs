//! Streaming methods over every transport a user can pick — tcp, io_uring and MSG_ZEROCOPY —
//! with the attachments checked byte for byte.

mod common;

use std::net::SocketAddr;

use common::within;
use rpc_core::Payload;
use zcrpc_examples::{connect, pattern, serve, EngineOptions, TransportChoice};

async fn every_kind_of_stream(t: TransportChoice) {
    let (server, addr) = serve(SocketAddr::from(([127, 0, 0, 1], 0)), t, EngineOptions::default()).await.unwrap();
    let client = connect(addr, t, EngineOptions::default()).await.unwrap();

    // Server streaming: 48 chunks of 256 KiB + 3 (more than a stream window in all).
    let size = (256 << 10) + 3;
    let mut chunks = client.download(48, size).await.unwrap();
    let mut n = 0u32;
    while let Some(chunk) = within("a chunk", chunks.recv_with()).await {
        let (i, attachments) = chunk.unwrap();
        assert_eq!(i, n, "{t:?}: in order");
        assert_eq!(attachments[0].to_bytes(), pattern(size as usize, u64::from(i)), "{t:?}: chunk {i} intact");
        n += 1;
    }
    assert_eq!(n, 48, "{t:?}");

    // Client streaming: the answer comes once the stream is finished.
    let (mut tx, total) = client.upload().await.unwrap();
    for i in 0..20u32 {
        tx.send_with(i, vec![Payload::from(pattern(100_000, u64::from(i)))]).await.unwrap();
    }
    tx.finish();
    assert_eq!(within("the answer", total).await.unwrap(), 2_000_000, "{t:?}");

    // Bidirectional: each chunk comes back intact.
    let (mut tx, mut rx) = client.chat().await.unwrap();
    for i in 0..16u32 {
        let data = pattern(1 << 20, u64::from(i) + 100);
        tx.send_with(i, vec![Payload::from(data.clone())]).await.unwrap();
        let (back, attachments) = within("an echo", rx.recv_with()).await.unwrap().unwrap();
        assert_eq!(back, i);
        assert_eq!(attachments[0].to_bytes(), data, "{t:?}: message {i}");
    }
    drop(tx);
    assert!(within("the end", rx.recv()).await.is_none(), "{t:?}: ends cleanly");

    // Unary calls still work beside the streams.
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_tcp() {
    every_kind_of_stream(TransportChoice::Tcp).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_io_uring() {
    every_kind_of_stream(TransportChoice::Uring).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_msg_zerocopy() {
    every_kind_of_stream(TransportChoice::MsgZc).await;
}
