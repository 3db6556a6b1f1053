//! File regions in payloads, end to end over tcp, unix and mem with real files: mixed memory
//! and file segments arrive byte-exact in both directions; tcp and unix send the regions by
//! `sendfile` (the `sends_file` path, no file byte read into user space), mem reads them
//! (counted as a copy and in `file_read_bytes`); a file truncated under a region ends the
//! connection with a clear error instead of a hang or a short payload.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rpc_core::transport::mem;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::unix::UnixAcceptor;
use rpc_core::{Bytes, Client, ClientConfig, FileReceiver, FileRegion, Payload, ReceiveError, Server, Sink, StatsSnapshot};

#[rpc_core::service]
pub trait Files {
    /// A memory prefix, `len` bytes of `path` from `offset`, a memory middle, the whole file,
    /// a memory suffix.
    async fn mixed(&self, path: String, offset: u64, len: u64) -> Payload;
    /// A region of the whole file, after which the file is cut to half its size.
    async fn shrinking(&self, path: String) -> Payload;
    /// The payload back, as it arrived (memory).
    async fn echo(&self, data: Payload) -> Payload;
    /// `count` chunks of `size` bytes of the pattern seeded `seed`, chunk `i` carrying `i`.
    async fn chunks(&self, count: u32, size: u32, seed: u8, out: Sink<u32>);
}

#[derive(Clone)]
struct Impl;

const PREFIX: &[u8] = b"prefix:";
const MIDDLE: &[u8] = b"-middle-";
const SUFFIX: &[u8] = b":suffix";

impl Files for Impl {
    async fn mixed(&self, path: String, offset: u64, len: u64) -> Payload {
        let whole = FileRegion::open(&path).expect("test file");
        let mut p = Payload::new();
        p.push(Bytes::from_static(PREFIX));
        p.push(FileRegion::new(whole.file().clone(), offset, len as usize).expect("region inside the file"));
        p.push(Bytes::from_static(MIDDLE));
        p.push_file(whole);
        p.push(Bytes::from_static(SUFFIX));
        p
    }
    async fn shrinking(&self, path: String) -> Payload {
        let region = FileRegion::open(&path).expect("test file");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(region.len() as u64 / 2).unwrap();
        Payload::from(region)
    }
    async fn echo(&self, data: Payload) -> Payload {
        data
    }
    async fn chunks(&self, count: u32, size: u32, seed: u8, mut out: Sink<u32>) {
        let data = Bytes::from(pattern(count as usize * size as usize, seed));
        for i in 0..count {
            let at = i as usize * size as usize;
            if out.send_with(i, vec![Payload::from(data.slice(at..at + size as usize))]).await.is_err() {
                return;
            }
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(9) as u8 ^ seed).collect()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
    path
}

const TRANSPORTS: [&str; 3] = ["tcp", "unix", "mem"];

/// A client of a fresh server over `transport`, and a way to read the server's counters.
async fn connect(transport: &str, dir: &Path) -> (FilesClient, Server) {
    let server = Server::builder().build(FilesServer::new(Impl));
    let client = match transport {
        "tcp" => {
            let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            std::mem::forget(server.serve(acceptor));
            Client::connect_tcp(addr, ClientConfig::default()).await.unwrap()
        }
        "unix" => {
            let path = dir.join("s.sock");
            std::mem::forget(server.serve(UnixAcceptor::bind(&path).await.unwrap()));
            Client::connect_unix(&path, ClientConfig::default()).await.unwrap()
        }
        _ => {
            let (a, b) = mem::pair();
            tokio::spawn(server.clone().serve_connection(b));
            Client::connect(a, ClientConfig::default()).await.unwrap()
        }
    };
    (FilesClient::new(client), server)
}

fn expected_mixed(file: &[u8], offset: usize, len: usize) -> Vec<u8> {
    [PREFIX, &file[offset..offset + len], MIDDLE, file, SUFFIX].concat()
}

/// Checks that `stats` sent `file_bytes` of file regions by the transport's own path: the
/// file path where it splices, read and copied where it cannot.
fn assert_file_path(transport: &str, stats: &StatsSnapshot, file_bytes: u64) {
    if transport == "mem" {
        assert_eq!(stats.sends_file, 0, "{transport}: {stats}");
        assert_eq!(stats.file_read_bytes, file_bytes, "{transport}: {stats}");
        assert!(stats.bytes_copy >= file_bytes, "{transport}: {stats}");
    } else {
        assert!(stats.sends_file >= 1, "{transport}: {stats}");
        assert!(stats.bytes_file >= file_bytes, "{transport}: {stats}");
        assert_eq!(stats.file_read_bytes, 0, "{transport}: nothing read into memory: {stats}");
        assert!(stats.bytes_copy < file_bytes, "{transport}: the file's bytes did not go by copy: {stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_memory_and_file_payloads_arrive_byte_exact_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    // Larger than the socket buffers (and mem's pipe): sendfile meets a full socket and waits.
    let data = pattern(6 << 20, 3);
    let path = write_file(dir.path(), "data.bin", &data);
    for transport in TRANSPORTS {
        let (client, server) = connect(transport, dir.path()).await;
        let (offset, len) = (12_345usize, 1_000_003usize);
        let got = client.mixed(path.display().to_string(), offset as u64, len as u64).await.unwrap();
        assert_eq!(got.len(), PREFIX.len() + len + MIDDLE.len() + data.len() + SUFFIX.len(), "{transport}");
        assert!(got.to_bytes() == expected_mixed(&data, offset, len), "{transport}: mixed payload differs");
        assert_file_path(transport, &server.stats(), (len + data.len()) as u64);

        // The other way: the client sends a file region (between memory), the server echoes.
        let region = FileRegion::open(&path).unwrap().slice(100, 3 << 20).unwrap();
        let mut p = Payload::new();
        p.push(Bytes::from_static(PREFIX));
        p.push_file(region);
        p.push(Bytes::from_static(SUFFIX));
        let back = client.echo(p).await.unwrap();
        assert!(back.to_bytes() == [PREFIX, &data[100..100 + (3 << 20)], SUFFIX].concat(), "{transport}: echo differs");
        assert_file_path(transport, &client.client().stats(), 3 << 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_single_byte_regions_and_a_region_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "one.bin", b"x");
    let e = FileRegion::new(FileRegion::open(&path).unwrap().file().clone(), 1, 1).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    for transport in TRANSPORTS {
        let (client, _server) = connect(transport, dir.path()).await;
        let got = client.mixed(path.display().to_string(), 0, 0).await.unwrap();
        assert_eq!(got.to_bytes(), expected_mixed(b"x", 0, 0), "{transport}");
        let got = client.mixed(path.display().to_string(), 0, 1).await.unwrap();
        assert_eq!(got.to_bytes(), expected_mixed(b"x", 0, 1), "{transport}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_under_a_region_fails_the_call_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    for transport in TRANSPORTS {
        let path = write_file(dir.path(), &format!("shrinks-{transport}.bin"), &pattern(4 << 20, 1));
        let (client, _server) = connect(transport, dir.path()).await;
        let r = tokio::time::timeout(Duration::from_secs(30), client.shrinking(path.display().to_string()))
            .await
            .expect("the call ends instead of hanging");
        // The frame cannot be completed: the server ends the connection (the stream holds a
        // partial frame) and the client's call fails; it never sees a short payload.
        let e = r.expect_err("a short payload must not look complete");
        let text = e.to_string();
        eprintln!("{transport}: {text}");
        assert!(text.contains("middle of a frame"), "{transport}: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_attachments_goes_straight_into_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for transport in TRANSPORTS {
        let (client, _server) = connect(transport, dir.path()).await;
        let path = dir.path().join(format!("received-{transport}.bin"));
        // Resumed: the first 10 bytes are there already, the stream goes after them.
        std::fs::write(&path, b"0123456789").unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut into = FileReceiver::new(file, 10);
        let mut source = client.chunks(24, 1 << 20, 5).await.unwrap();
        let mut seen = 0;
        while let Some(item) = into.recv_from(&mut source).await {
            assert_eq!(item.unwrap(), seen, "{transport}");
            seen += 1;
        }
        assert_eq!(seen, 24, "{transport}");
        assert_eq!(into.position(), 10 + (24 << 20), "{transport}");
        into.sync_all().await.unwrap();
        let got = std::fs::read(&path).unwrap();
        assert!(got == [&b"0123456789"[..], &pattern(24 << 20, 5)].concat(), "{transport}: the file differs");
    }

    // A file that cannot be written ends the stream with the write's error, not a panic.
    let (client, _server) = connect("mem", dir.path()).await;
    let read_only = std::fs::File::open(dir.path().join("received-mem.bin")).unwrap();
    let mut into = FileReceiver::new(read_only, 0);
    let mut source = client.chunks(2, 1000, 1).await.unwrap();
    match into.recv_from(&mut source).await {
        Some(Err(ReceiveError::Write(e))) => assert!(e.to_string().contains("Bad file descriptor"), "{e}"),
        other => panic!("expected a write error, got {other:?}"),
    }
}
