//! File regions on every backend over a real socket pair, byte-exact: io_uring `SPLICE`
//! (file → pipe → socket) on the io_uring backend, `sendfile` on `MSG_ZEROCOPY` and copy;
//! counted as the file path, nothing read into user space; memory frames around them keep
//! their order and paths; a file truncated under a region fails the send with a clear error.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use rpc_core::{FileRegion, Payload, Segment, Transmit};
use transport_uring::{Backend, UringConfig, ZcMode};

const BACKENDS: [Backend; 3] = [Backend::Uring, Backend::MsgZc, Backend::Copy];

fn cfg(backend: Backend) -> UringConfig {
    UringConfig { backend, mode: ZcMode::Adaptive, ..UringConfig::default() }
}

fn write_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_go_by_splice_or_sendfile_byte_exact_on_every_backend() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // Several pipes' worth, and more than the socket buffers: the splice loop and the wait for
    // room both run.
    let data = pattern(5 << 20, 9);
    let path = write_file(dir.path(), "data.bin", &data);
    for backend in BACKENDS {
        if !require(backend) {
            continue;
        }
        tokio::time::timeout(LIMIT, async {
            let (t, peer) = pair(cfg(backend)).await;
            assert_eq!(t.backend(), backend);
            let stats = t.stats();
            let reader = tokio::spawn(read_all(peer));
            let (_r, mut s) = t.split();
            let whole = FileRegion::open(&path).unwrap();
            let small = transmit(b"small-before", vec![Bytes::from(pattern(100, 1))]);
            let mixed = Transmit {
                head: Bytes::from_static(b"mixed-head"),
                segments: vec![
                    Segment::Bytes(Bytes::from(pattern(70_000, 2))),
                    Segment::File(whole.clone()),
                    Segment::Bytes(Bytes::from_static(b"between")),
                    Segment::File(whole.slice(4097, 1_234_567).unwrap()),
                ],
            };
            let file_only = Transmit { head: Bytes::from_static(b"f"), segments: vec![whole.slice(0, 3).unwrap().into()] };
            let after = transmit(b"small-after", vec![Bytes::from(pattern(10, 3))]);
            let mut expect = Vec::new();
            for t in [&small, &mixed, &file_only, &after] {
                expect.extend(t.to_vec());
            }
            let (mixed_len, file_only_len) = (mixed.len() as u64, file_only.len() as u64);
            let copy_bytes = (small.len() + after.len()) as u64;
            s.send(&mut vec![small, mixed, file_only, after]).await.unwrap();
            s.shutdown().await.unwrap();
            let got = reader.await.unwrap();
            assert_eq!(got.len(), expect.len(), "{backend}");
            assert!(got == expect, "{backend}: bytes differ");
            let st = stats.snapshot();
            assert_eq!(st.sends_file, 2, "{backend}: {st}");
            assert_eq!(st.bytes_file, mixed_len + file_only_len, "{backend}: {st}");
            assert_eq!(st.file_read_bytes, 0, "{backend}: no file byte read into memory: {st}");
            assert_eq!(st.sends_copy, 2, "{backend}: {st}");
            assert_eq!(st.bytes_copy, copy_bytes, "{backend}: {st}");
            assert_eq!(st.sent_bytes, expect.len() as u64, "{backend}: {st}");
        })
        .await
        .expect("bounded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_under_a_region_fails_the_send_with_a_clear_error() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    for backend in BACKENDS {
        if !require(backend) {
            continue;
        }
        tokio::time::timeout(LIMIT, async {
            let path = write_file(dir.path(), &format!("shrinks-{backend}.bin"), &pattern(4 << 20, 4));
            let region = FileRegion::open(&path).unwrap();
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
            let (t, peer) = pair(cfg(backend)).await;
            let reader = tokio::spawn(read_all(peer));
            let (r, mut s) = t.split();
            let frame = Transmit { head: Bytes::from_static(b"head"), segments: vec![region.into()] };
            let e = s.send(&mut vec![frame]).await.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{backend}: {e}");
            assert!(e.to_string().contains("file shrank while being sent"), "{backend}: {e}");
            // The connection is unusable now (it holds part of a frame): later sends refuse.
            let again = s.send(&mut vec![transmit(b"x", vec![])]).await.unwrap_err();
            assert!(again.to_string().contains("earlier send failed"), "{backend}: {again}");
            drop((r, s));
            let got = reader.await.unwrap();
            assert_eq!(got.len(), 4 + (1 << 20), "{backend}: the peer got what the file had, then the end");
        })
        .await
        .expect("bounded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sends_a_file_region_through_the_rpc_layer() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(3 << 20, 7);
    let path = write_file(dir.path(), "up.bin", &data);
    for backend in BACKENDS {
        if !require(backend) {
            continue;
        }
        tokio::time::timeout(LIMIT, async {
            let (handle, client) = echo_over(cfg(backend)).await;
            let mut p = Payload::new();
            p.push(Bytes::from_static(b"<"));
            p.push_file(FileRegion::open(&path).unwrap());
            p.push(Bytes::from_static(b">"));
            let reply = client.call(ECHO, rpc_core::Body::new(Bytes::new(), vec![p]), Default::default()).await.unwrap();
            let back = reply.attachments[0].to_bytes();
            assert!(back == [&b"<"[..], &data, b">"].concat(), "{backend}: echo differs");
            let st = client.stats();
            // A request of 3 MiB goes in three pieces of 1 MiB (`docs/wire.md`, "Pieces"),
            // each sent from the page cache.
            assert_eq!(st.sends_file, 3, "{backend}: {st}");
            assert!(st.bytes_file > data.len() as u64, "{backend}: {st}");
            assert_eq!(st.file_read_bytes, 0, "{backend}: {st}");
            client.close().await;
            handle.shutdown().await;
        })
        .await
        .expect("bounded");
    }
}
