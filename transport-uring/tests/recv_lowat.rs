//! The receiver told how many bytes are certain to come (`RecvHalf::expect_bytes`, the rest of
//! a large frame) sleeps until that many are queued (`SO_RCVLOWAT`, at most 256 KiB on a new
//! connection, up to 1 MiB once waits show a fast link): what
//! arrives still arrives whole and in order, in every read mode, and a peer that stops short
//! of what was announced (closing, or sending less and waiting) is not waited for forever.

mod common;

use bytes::BytesMut;
use rpc_core::transport::{RecvHalf, Transport};
use tokio::io::AsyncWriteExt;
use transport_uring::{Backend, RecvMode, UringConfig};

use common::{pair, pattern, require, LIMIT};

fn config(recv: RecvMode) -> UringConfig {
    UringConfig { recv, ..UringConfig::default() }
}

/// Receives until `want` bytes or the end of the stream, saying before each receive that the
/// rest of `announced` bytes is certain to come.
async fn receive<R: RecvHalf>(recv: &mut R, announced: usize, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        recv.expect_bytes(announced.saturating_sub(got.len()));
        let (r, buf) = recv.recv(BytesMut::with_capacity(want - got.len())).await;
        match r.unwrap() {
            0 => break,
            _ => got.extend_from_slice(&buf),
        }
    }
    got
}

#[tokio::test]
async fn a_large_announced_frame_arrives_whole_in_pieces_in_every_read_mode() {
    if !require(Backend::Uring) {
        return;
    }
    for mode in [RecvMode::Read, RecvMode::BufferRing, RecvMode::Uring] {
        let (t, mut peer) = pair(config(mode)).await;
        let (mut recv, _send) = t.split();
        let data = pattern(3 << 20, 7);
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                // Pieces smaller and larger than the mark, with pauses between them.
                for piece in data.chunks(100_000) {
                    peer.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                peer
            })
        };
        let got = tokio::time::timeout(LIMIT, receive(&mut recv, data.len(), data.len())).await.expect("not stuck");
        assert!(got == data, "{mode}: the bytes arrive whole and in order");
        drop(writer.await.unwrap());
    }
}

#[tokio::test]
async fn a_peer_that_closes_before_the_announced_bytes_ends_the_receive() {
    if !require(Backend::Uring) {
        return;
    }
    for mode in [RecvMode::Read, RecvMode::BufferRing] {
        let (t, peer) = pair(config(mode)).await;
        let (mut recv, _send) = t.split();
        closes_short_of_the_announced_mib(&mut recv, peer, mode).await;
    }
}

/// 1 MiB announced, 100 kB sent, then the peer closes: woken by the end of the stream, not by
/// the mark, the receiver gets what came and then the end.
async fn closes_short_of_the_announced_mib<R: RecvHalf>(recv: &mut R, mut peer: tokio::net::TcpStream, mode: RecvMode) {
    let data = pattern(100_000, 3);
    peer.write_all(&data).await.unwrap();
    drop(peer);
    let got = tokio::time::timeout(LIMIT, receive(recv, 1 << 20, 1 << 20)).await.expect("the end of the stream wakes the receiver");
    assert!(got == data, "{mode}: what was sent before the close arrives");
}

/// The peer writes `first`, then `rest` once the receiver has read part of `first` (the
/// returned sender says so); the task gives the peer back.
fn write_then_wait(mut peer: tokio::net::TcpStream, first: &[u8], rest: &[u8]) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<tokio::net::TcpStream>) {
    let (read_some, go_on) = tokio::sync::oneshot::channel::<()>();
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let writer = tokio::spawn(async move {
        peer.write_all(&first).await.unwrap();
        go_on.await.unwrap();
        peer.write_all(&rest).await.unwrap();
        peer
    });
    (read_some, writer)
}

#[tokio::test]
async fn a_peer_that_pauses_inside_the_announced_bytes_is_read_before_it_sends_the_rest() {
    if !require(Backend::Uring) {
        return;
    }
    for mode in [RecvMode::Read, RecvMode::BufferRing] {
        let (t, peer) = pair(config(mode)).await;
        let (mut recv, _send) = t.split();
        let data = pattern(400_000, 5);
        let (first, rest) = data.split_at(300_000);
        // The rest only once the receiver has read part of the first piece: a receiver waiting
        // for all 400 kB would never get it.
        let (read_some, writer) = write_then_wait(peer, first, rest);
        recv.expect_bytes(data.len());
        let (r, buf) = tokio::time::timeout(LIMIT, recv.recv(BytesMut::with_capacity(data.len()))).await.expect("woken before the whole");
        let n = r.unwrap();
        assert!(n > 0 && buf[..] == data[..n], "{mode}");
        read_some.send(()).unwrap();
        let more = tokio::time::timeout(LIMIT, receive(&mut recv, data.len() - n, data.len() - n)).await.expect("not stuck");
        assert!(more[..] == data[n..], "{mode}: the rest arrives in order");
        // A receive that announced nothing is woken by any byte, whatever the mark was before.
        let mut peer = writer.await.unwrap();
        peer.write_all(b"x").await.unwrap();
        let (r, buf) = tokio::time::timeout(LIMIT, recv.recv(BytesMut::with_capacity(64 << 10))).await.expect("one byte wakes it");
        assert_eq!(r.unwrap(), 1, "{mode}");
        assert_eq!(&buf[..], b"x");
    }
}

#[tokio::test]
async fn after_fast_frames_a_peer_that_closes_short_of_the_announced_bytes_still_ends_the_receive() {
    if !require(Backend::Uring) {
        return;
    }
    for mode in [RecvMode::Read, RecvMode::BufferRing] {
        let (t, mut peer) = pair(config(mode)).await;
        let (mut recv, _send) = t.split();
        // Frames of 1 MiB that arrive fast: the waits for them end within milliseconds, so
        // the mark grows towards the whole of the next frame.
        let frame = pattern(1 << 20, 9);
        for round in 0..6 {
            let writer = {
                let frame = frame.clone();
                tokio::spawn(async move {
                    peer.write_all(&frame).await.unwrap();
                    peer
                })
            };
            let got = tokio::time::timeout(LIMIT, receive(&mut recv, frame.len(), frame.len())).await.expect("not stuck");
            assert!(got == frame, "{mode}: frame {round} arrives whole");
            peer = writer.await.unwrap();
        }
        // Then the end of the stream wakes the receiver whatever the mark has grown to.
        closes_short_of_the_announced_mib(&mut recv, peer, mode).await;
    }
}

#[tokio::test]
async fn a_peer_that_waits_short_of_the_mark_is_read_within_the_patience() {
    if !require(Backend::Uring) {
        return;
    }
    for mode in [RecvMode::Read, RecvMode::BufferRing] {
        let (t, peer) = pair(config(mode)).await;
        let (mut recv, _send) = t.split();
        // 1 MiB announced, 100 kB sent, and the peer waits for the receiver before it sends
        // the rest (as a link that stalls would): the mark (256 KiB on a new connection) is
        // never reached, so only the receiver's patience (1 s) gets the 100 kB read. Keepalive
        // counts on it: bytes that came are seen.
        let data = pattern(1 << 20, 6);
        let (first, rest) = data.split_at(100_000);
        let (read_some, writer) = write_then_wait(peer, first, rest);
        recv.expect_bytes(data.len());
        let (r, buf) = tokio::time::timeout(std::time::Duration::from_secs(5), recv.recv(BytesMut::with_capacity(data.len())))
            .await
            .expect("read within the patience, not when the mark is reached");
        let n = r.unwrap();
        assert!(n > 0 && buf[..] == data[..n], "{mode}");
        read_some.send(()).unwrap();
        let more = tokio::time::timeout(LIMIT, receive(&mut recv, data.len() - n, data.len() - n)).await.expect("not stuck");
        assert!(more[..] == data[n..], "{mode}: the rest arrives in order");
        drop(writer.await.unwrap());
    }
}
