//! Multishot receive into a provided-buffer ring (`RecvMode::BufferRing`): chunks are the ring's
//! own memory and go back to the kernel when their last slice drops; the byte stream stays in
//! order across every switch between chunks and the caller's buffers, and across dropped
//! futures; a ring held empty falls back to the caller's buffers; a peer reset is an error.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use rpc_core::transport::{Chunk, RecvHalf, Transport};
use rpc_core::{Body, CallOptions, Client, ClientConfig, Payload, Server};
use tokio::io::AsyncWriteExt;
use transport_uring::{Backend, RecvMode, UringAcceptor, UringConfig, UringRecv};

fn ring(buffers: u16, buf_size: usize) -> UringConfig {
    UringConfig {
        backend: Backend::Uring,
        recv: RecvMode::BufferRing,
        recv_ring_buffers: buffers,
        recv_ring_buf_size: buf_size,
        ..Default::default()
    }
}

/// An echo server on 127.0.0.1 with `cfg` (the builder's `max_frame` as given).
async fn echo_server(cfg: &UringConfig, max_frame: u32) -> (rpc_core::ServerHandle, std::net::SocketAddr) {
    let acceptor = UringAcceptor::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    (Server::builder().max_frame(max_frame).build(Echo).serve(acceptor), addr)
}

/// A client over the uring transport with `cfg`.
async fn client(addr: std::net::SocketAddr, cfg: UringConfig) -> Client {
    Client::connect(transport_uring::connect(addr, cfg).await.unwrap(), ClientConfig::default())
        .await
        .unwrap()
}

/// Takes chunks until `n` bytes are in, keeping every chunk.
async fn chunks(r: &mut UringRecv, n: usize) -> Vec<Bytes> {
    let mut got = Vec::new();
    let mut len = 0;
    while len < n {
        match r.recv_chunk().await.unwrap() {
            Chunk::Data(b) => {
                len += b.len();
                got.push(b);
            }
            other => panic!("expected data, got {other:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_ring_memory_and_go_back_when_their_last_slice_drops() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let (t, mut peer) = pair(ring(8, 4096)).await;
        let (mut r, _s) = t.split();
        assert_eq!(r.mode(), RecvMode::BufferRing);
        assert_eq!(r.chunk_size(), 4096);
        assert_eq!(r.ring_buffers_free(), Some(8));
        let data = pattern(10_000, 3);
        peer.write_all(&data).await.unwrap();
        let got = chunks(&mut r, data.len()).await;
        assert!(got.len() >= 3, "10 000 bytes need three 4 KiB buffers");
        for c in &got {
            assert!(r.ring_contains(c.as_ptr()), "a chunk is not ring memory: it was copied");
        }
        assert_eq!(got.concat(), data);
        assert_eq!(r.ring_buffers_free(), Some(8 - got.len()));
        // A slice keeps its buffer out of the kernel's reach; the buffer returns with it.
        let slice = got[0].slice(10..20);
        let n = got.len();
        drop(got);
        assert_eq!(r.ring_buffers_free(), Some(7), "{n} chunks dropped, one slice alive");
        assert_eq!(&slice[..], &data[10..20]);
        drop(slice);
        assert_eq!(r.ring_buffers_free(), Some(8));
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_stays_in_order_across_every_switch_and_dropped_future() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let (t, mut peer) = pair(ring(4, 1024)).await;
        let stats = t.stats();
        let (mut r, _s) = t.split();
        let data = pattern(4 << 20, 9);
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                let mut seed = 7u64;
                let mut pos = 0;
                while pos < data.len() {
                    let n = (1 + xorshift(&mut seed) as usize % 100_000).min(data.len() - pos);
                    peer.write_all(&data[pos..pos + n]).await.unwrap();
                    pos += n;
                    if seed % 8 == 0 {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
                peer
            })
        };
        let mut got = Vec::with_capacity(data.len());
        let mut held: VecDeque<Bytes> = VecDeque::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut dropped = 0;
        while got.len() < data.len() {
            let roll = xorshift(&mut seed);
            match roll % 5 {
                // A chunk, sometimes kept a while so that the ring runs dry.
                0 | 1 => match r.recv_chunk().await.unwrap() {
                    Chunk::Data(b) => {
                        got.extend_from_slice(&b);
                        if roll % 3 == 0 {
                            held.push_back(b);
                        }
                    }
                    Chunk::Unavailable => {}
                    Chunk::Eof => panic!("early EOF"),
                },
                // The caller's buffer, of any size.
                2 => {
                    let cap = 1 + (roll >> 8) as usize % 200_000;
                    let (n, buf) = r.recv(BytesMut::with_capacity(cap)).await;
                    assert!(n.unwrap() > 0);
                    got.extend_from_slice(&buf);
                }
                // Futures dropped before they finish: nothing may be lost.
                3 => {
                    if let Ok(Ok(Chunk::Data(b))) = tokio::time::timeout(Duration::from_micros(50), r.recv_chunk()).await {
                        got.extend_from_slice(&b);
                    } else {
                        dropped += 1;
                    }
                }
                _ => {
                    let f = tokio::time::timeout(Duration::from_micros(50), r.recv(BytesMut::with_capacity(3000)));
                    if let Ok((n, buf)) = f.await {
                        assert!(n.unwrap() > 0);
                        got.extend_from_slice(&buf);
                    } else {
                        dropped += 1;
                    }
                }
            }
            if held.len() > 3 || roll % 7 == 0 {
                held.pop_front();
            }
        }
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes out of order or lost");
        drop(held);
        assert_eq!(r.ring_buffers_free(), Some(4), "every buffer back in the ring");
        let st = stats.snapshot();
        println!("{dropped} futures dropped; {st:?}");
        assert!(st.recv_ring_chunks > 0);
        assert!(dropped > 0, "no future was dropped mid-receive");
        assert_eq!(st.recv_bytes, data.len() as u64);
        // The end of the stream, whichever way it is asked for.
        drop(writer.await.unwrap());
        match r.recv_chunk().await.unwrap() {
            Chunk::Eof => {}
            Chunk::Unavailable => assert_eq!(r.recv(BytesMut::with_capacity(10)).await.0.unwrap(), 0),
            Chunk::Data(b) => panic!("{} bytes after the end", b.len()),
        }
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_held_empty_falls_back_to_the_callers_buffer() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let (t, mut peer) = pair(ring(2, 1024)).await;
        let stats = t.stats();
        let (mut r, _s) = t.split();
        let data = pattern(8192, 5);
        peer.write_all(&data).await.unwrap();
        // Both buffers held by the caller.
        let held = chunks(&mut r, 2048).await;
        assert_eq!(held.len(), 2);
        assert_eq!(r.ring_buffers_free(), Some(0));
        let mut got = held.concat();
        // No buffer to take: the ring says so, and the caller's buffer gets the rest.
        assert!(matches!(r.recv_chunk().await.unwrap(), Chunk::Unavailable));
        while got.len() < data.len() {
            let (n, buf) = r.recv(BytesMut::with_capacity(4096)).await;
            assert!(n.unwrap() > 0);
            got.extend_from_slice(&buf);
        }
        assert_eq!(got, data);
        assert!(stats.snapshot().recv_ring_empty >= 1);
        // Buffers back: chunks again.
        drop(held);
        assert_eq!(r.ring_buffers_free(), Some(2));
        peer.write_all(b"again").await.unwrap();
        let again = chunks(&mut r, 5).await;
        assert_eq!(again.concat(), b"again");
        assert!(r.ring_contains(again[0].as_ptr()));
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reset_is_an_error() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let (t, peer) = pair(ring(4, 1024)).await;
        let (mut r, _s) = t.split();
        // Armed and waiting when the reset comes.
        let waiting = tokio::spawn(async move {
            let out = r.recv_chunk().await;
            (out, r)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
        drop(peer);
        let (out, r) = waiting.await.unwrap();
        let e = out.expect_err("a reset must be an error");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        assert_eq!(r.ring_buffers_free(), Some(4));
    })
    .await
    .expect("timed out");
}

/// Through the client and server: replies the caller keeps hold every ring buffer, and the
/// connection goes on through its own buffers; small frames are otherwise taken in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_kept_by_the_caller_do_not_stall_the_connection() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let cfg = ring(4, 4096);
        let (handle, addr) = echo_server(&cfg, 1 << 20).await;
        let client = Arc::new(client(addr, cfg).await);
        let mut kept = Vec::new();
        for i in 0..200usize {
            let data = Bytes::from(pattern(500 + i, i as u8));
            let reply = client
                .call(ECHO, Body::new(Bytes::from_static(b"k"), vec![Payload::from(data.clone())]), CallOptions::default())
                .await
                .unwrap();
            assert!(reply.attachments[0].to_bytes() == data, "call {i}");
            kept.push(reply);
        }
        let st = client.stats();
        println!("{st:?}");
        assert!(st.recv_ring_chunks > 0);
        assert!(st.recv_ring_empty > 0, "200 kept replies must have emptied a 4-buffer ring");
        drop(kept);
        // And on again with the buffers back.
        let reply = client
            .call(ECHO, Body::new(Bytes::from_static(b"z"), vec![Payload::from(Bytes::from_static(b"end"))]), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(&reply.attachments[0].to_bytes()[..], b"end");
        drop(client);
        handle.shutdown().await;
    })
    .await
    .expect("timed out");
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Broken and hostile peers against a server that receives through the ring: each loses its
/// own connection with a goaway saying why, the ring-mode client next to them notices nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_against_a_ring_mode_server_lose_only_their_connection() {
    use rpc_core::frame::{FrameHeader, FrameKind, Hello, HEADER_LEN, WIRE_VERSION};
    use tokio::io::AsyncReadExt;
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let cfg = ring(8, 1024);
        let (handle, addr) = echo_server(&cfg, 1 << 20).await;
        let good = client(addr, cfg).await;
        let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 20, max_calls_in_flight: 8, max_attachments: 4, max_metadata: 0, stream_window: 0 }
            .encode()
            .to_vec();
        let mut huge = hello.clone();
        let mut h = FrameHeader::new(FrameKind::Request);
        h.id = 1;
        h.attachments = 1;
        h.payload_len = 1 << 40;
        h.encode(&mut huge);
        let mut noise = hello.clone();
        noise.extend(pattern(5000, 77));
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Some("bad magic")),
            (huge, Some("over the limit")),
            (noise, None),
        ];
        for (bytes, expect) in cases {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            let mut reply = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
                .await
                .expect("the server must close the connection")
                .ok();
            assert!(reply.len() >= 32 + HEADER_LEN, "hello and goaway expected, got {} bytes", reply.len());
            let goaway = FrameHeader::decode(&reply[32..32 + HEADER_LEN]).unwrap();
            assert_eq!(goaway.kind, FrameKind::GoAway);
            if let Some(expect) = expect {
                let reason = String::from_utf8_lossy(&reply[32 + HEADER_LEN..]);
                assert!(reason.contains(expect), "{reason:?} should say {expect:?}");
            }
            let data = Bytes::from(pattern(3000, 1));
            let r = good
                .call(ECHO, Body::new(Bytes::from_static(b"ok"), vec![Payload::from(data.clone())]), CallOptions::default())
                .await
                .unwrap();
            assert!(r.attachments[0].to_bytes() == data);
        }
        for _ in 0..500 {
            if handle.server().connections() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(handle.server().connections(), 1, "only the good client is left");
        drop(good);
        handle.shutdown().await;
    })
    .await
    .expect("timed out");
}

/// Many connections at once, each with its own ring (one buffer group per connection ring):
/// every call byte-exact, every connection's ring in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_ring_mode_connections_at_once() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let cfg = ring(16, 2048);
        let (handle, addr) = echo_server(&cfg, 1 << 20).await;
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..50usize {
            let cfg = cfg.clone();
            tasks.spawn(async move {
                let client = client(addr, cfg).await;
                for i in 0..40usize {
                    let data = Bytes::from(pattern(1 + (c * 131 + i * 977) % 6000, (c + i) as u8));
                    let r = client
                        .call(ECHO, Body::new(Bytes::from(vec![c as u8; 3]), vec![Payload::from(data.clone())]), CallOptions::default())
                        .await
                        .unwrap();
                    assert!(r.attachments[0].to_bytes() == data, "connection {c}, call {i}");
                }
                client.stats()
            });
        }
        while let Some(st) = tasks.join_next().await {
            assert!(st.unwrap().recv_ring_chunks > 0, "a connection did not receive through its ring");
        }
        let server = handle.server().stats();
        assert!(server.recv_ring_chunks >= 50, "{server:?}");
        handle.shutdown().await;
    })
    .await
    .expect("timed out");
}
