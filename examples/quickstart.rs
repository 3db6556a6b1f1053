//! Quickstart: a service, its server and a client in one process on 127.0.0.1 — a few small
//! calls, a few large ones (up to 16 MiB), a download and an upload as streams of 1 MiB chunks,
//! a file sent from the page cache, then the table of which send path each byte took.
//!
//! ```text
//! cargo run --release --example quickstart [-- --transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--tls] [--addr unix:PATH]
//! ```
//!
//! `--addr unix:/tmp/quickstart.sock` runs the same over a Unix socket (same host only);
//! `--tls` over TLS 1.3 (tcp or uring), with a CA and a certificate for `localhost` made at start.
//!
//! The whole program is this file: copy it into `src/main.rs` of a crate depending on
//! `rpc-core`, `transport-uring` (Linux), `tokio` (features `rt-multi-thread`, `macros`),
//! `clap` (feature `derive`) and, for `--tls`, `rcgen` (default features off; features
//! `crypto`, `pem`, `ring`).

use std::net::SocketAddr;
use std::time::Instant;

use clap::Parser;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::tls::{TlsAcceptor, TlsClientConfig, TlsServerConfig};
use rpc_core::{service, Client, ClientConfig, FileRegion, Payload, Server, Sink, Source};

/// The service: a trait of `async fn`s. `#[service]` generates `BlobsClient` (typed calls)
/// and `BlobsServer` (the dispatcher). `Payload` arguments travel as attachments, without a
/// copy; `Sink`/`Source` arguments make a method a stream.
#[service]
pub trait Blobs {
    async fn add(&self, a: u64, b: u64) -> u64;
    async fn echo(&self, data: Payload) -> Payload;
    /// `count` chunks of `size` bytes, each with its index.
    async fn download(&self, count: u32, size: u32, out: Sink<u32>);
    /// The bytes of the chunks received.
    async fn upload(&self, chunks: Source<u32>) -> u64;
    /// The server's file, sent from the page cache (`sendfile`, io_uring `SPLICE`): never read
    /// into the server's memory.
    async fn file(&self) -> Payload;
}

struct Impl {
    /// The whole of a file the server opened at start.
    file: FileRegion,
}

impl Blobs for Impl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a + b
    }

    async fn echo(&self, data: Payload) -> Payload {
        data // the received slice goes straight back out: no copy
    }

    async fn download(&self, count: u32, size: u32, mut out: Sink<u32>) {
        for i in 0..count {
            let chunk = Payload::from(pattern(size as usize, i));
            // `send_with` waits while the client has no room (flow control); it fails only
            // when the client went away.
            if out.send_with(i, vec![chunk]).await.is_err() {
                return;
            }
        }
    }

    async fn upload(&self, mut chunks: Source<u32>) -> u64 {
        let mut total = 0;
        while let Some(Ok((_, attachments))) = chunks.recv_with().await {
            total += attachments.iter().map(|a| a.len() as u64).sum::<u64>();
        }
        total
    }

    async fn file(&self) -> Payload {
        Payload::from(self.file.clone()) // a region of the file: no byte of it is read here
    }
}

/// `f`'s output and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, std::time::Duration) {
    let t = Instant::now();
    (f.await, t.elapsed())
}

/// The file the server sends: 8 MiB written at start to a temporary path, removed at the end.
const FILE_LEN: usize = 8 << 20;

/// A server and a client of the Blobs service on 127.0.0.1, moving about 53 MiB each way.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  \
    cargo run --release --example quickstart\n  \
    cargo run --release --example quickstart -- --transport tcp\n  \
    cargo run --release --example quickstart -- --transport uring --zc always-zc --recv ring\n  \
    cargo run --release --example quickstart -- --tls   # TLS 1.3 on the uring engine\n  \
    cargo run --release --example quickstart -- --addr unix:/tmp/quickstart.sock")]
struct Args {
    /// `tcp` (tokio, any OS), `uring` (io_uring zero-copy engine) or `msgzc` (`MSG_ZEROCOPY`).
    #[arg(long, default_value = if cfg!(target_os = "linux") { "uring" } else { "tcp" }, value_parser = ["tcp", "uring", "msgzc"])]
    transport: String,
    /// Zero-copy mode of uring and msgzc: `adaptive` moves to the copy path while the kernel
    /// copies anyway (as on loopback).
    #[arg(long, default_value = "adaptive", value_parser = ["adaptive", "always-zc", "never-zc"])]
    zc: String,
    /// How uring and msgzc receive: `read`, `uring` (io_uring RECV) or `ring` (multishot
    /// receive into a provided-buffer ring).
    #[arg(long, default_value = "read", value_parser = ["read", "uring", "ring"])]
    recv: String,
    /// TLS 1.3 (on every transport): a throwaway CA and a certificate for `localhost` are made
    /// at start; `examples/tls.rs` shows your own certificates and mutual TLS.
    #[arg(long)]
    tls: bool,
    /// `unix:PATH` serves and calls over a Unix socket at PATH instead of TCP on 127.0.0.1
    /// (the transport options then do not apply).
    #[arg(long, value_name = "unix:PATH", value_parser = unix_path)]
    addr: Option<String>,
}

/// The path of `--addr unix:PATH`.
fn unix_path(addr: &str) -> Result<String, String> {
    match addr.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(path.to_owned()),
        _ => Err("expected unix:PATH (TCP always uses 127.0.0.1 and a free port)".into()),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // An error is printed as its message (`main` returning it would print its `Debug`).
    match quickstart(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn quickstart(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let path = std::env::temp_dir().join(format!("zcrpc-quickstart-{}.bin", std::process::id()));
    std::fs::write(&path, pattern(FILE_LEN, 7))?;
    let file = FileRegion::open(&path)?;
    std::fs::remove_file(&path)?; // the open file stays readable; nothing is left behind
    // Serve: any number of connections, each on its own task, until shut down.
    let server = Server::builder().build(BlobsServer::new(Impl { file }));
    if let Some(path) = args.addr.clone() {
        // A Unix socket: the socket file is removed when the server shuts down.
        let server = server.serve(rpc_core::transport::unix::UnixAcceptor::bind(&path).await?);
        println!("zcrpc quickstart: server on unix:{path}");
        let client = Client::connect_unix(&path, ClientConfig::default()).await?;
        return run(BlobsClient::new(client), server, "unix").await;
    }
    if args.tls {
        let (server_tls, client_tls) = throwaway_certificates()?;
        let (server, addr, client) = if args.transport == "tcp" {
            let acceptor = TlsAcceptor::new(TcpAcceptor::bind(addr).await?, server_tls)?;
            let addr = acceptor.local_addr()?;
            let server = server.serve(acceptor);
            // The client checks the server's certificate against the CA, for the name it dials.
            let client = Client::connect_tls(addr, "localhost", client_tls, ClientConfig::default()).await?;
            (server, addr, client)
        } else {
            uring_tls(server, addr, &args, server_tls, client_tls).await?
        };
        println!("zcrpc quickstart: server on {addr} ({} transport, TLS 1.3)", args.transport);
        return run(BlobsClient::new(client), server, "tls").await;
    }
    let (server, addr, client) = if args.transport == "tcp" {
        let acceptor = TcpAcceptor::bind(addr).await?;
        let addr = acceptor.local_addr()?;
        let server = server.serve(acceptor);
        // Connect: a client made from an address re-dials when its connection is lost.
        let client = Client::connect_tcp(addr, ClientConfig::default()).await?;
        (server, addr, client)
    } else {
        uring(server, addr, &args).await?
    };
    println!("zcrpc quickstart: server on {addr} ({} transport)", args.transport);
    run(BlobsClient::new(client), server, &args.transport).await
}

/// The calls, then the counters.
async fn run(blobs: BlobsClient, server: rpc_core::ServerHandle, transport: &str) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut bytes = 0u64;

    // Small calls: typed arguments, encoded with postcard, no attachment.
    for i in 0..10 {
        assert_eq!(blobs.add(i, 1000).await?, i + 1000);
    }

    // Large calls: the payload is an attachment, sent as it is and echoed back.
    for (i, size) in [64 << 10, 1 << 20, 4 << 20, 16 << 20].into_iter().enumerate() {
        let data = pattern(size, i as u32);
        let back = blobs.echo(Payload::from(data.clone())).await?;
        assert!(back.to_bytes() == data, "echo of {size} bytes came back different");
        bytes += 2 * size as u64;
    }

    // A small call made while a large one is crossing: the 32 MiB request and its echo go in
    // pieces of 1 MiB, and the small call goes between them, so it does not wait for the echo.
    let data = pattern(32 << 20, 9);
    let ((back, echo_took), (sum, small_took)) = tokio::join!(timed(blobs.echo(Payload::from(data.clone()))), timed(blobs.add(1, 2)));
    assert!(back?.to_bytes() == data, "the 32 MiB echo came back different");
    assert_eq!(sum?, 3);
    bytes += 2 * (32 << 20);
    println!("a small call made with a 32 MiB echo was answered in {small_took:.1?}, the echo in {echo_took:.1?}");

    // A download: 32 chunks of 1 MiB streamed by the server, each sent when the client has room.
    let mut chunks = blobs.download(32, 1 << 20).await?;
    while let Some(chunk) = chunks.recv_with().await {
        let (i, attachments) = chunk?;
        assert!(attachments[0].to_bytes() == pattern(1 << 20, i), "chunk {i} came back different");
        bytes += 1 << 20;
    }

    // An upload: 32 chunks the other way, answered once the stream is finished.
    let (mut upload, total) = blobs.upload().await?;
    for i in 0..32 {
        upload.send_with(i, vec![Payload::from(pattern(1 << 20, i))]).await?;
        bytes += 1 << 20;
    }
    upload.finish();
    assert_eq!(total.await?, 32 << 20);

    // A file region: the server's kernel sends the file's pages; here they arrive as bytes.
    let file = blobs.file().await?;
    assert!(file.to_bytes() == pattern(FILE_LEN, 7), "the file came back different");
    bytes += FILE_LEN as u64;
    let secs = start.elapsed().as_secs_f64();
    println!("17 calls and 2 streams, {:.1} MiB of payload in {secs:.3} s, every byte checked", bytes as f64 / (1 << 20) as f64);

    // Closing waits until the kernel is done with every zero-copy send: the counters then
    // include every notification. `stats()` is readable at any time.
    blobs.client().close().await;
    server.server().shutdown();
    let stats = blobs.client().stats();
    println!("\nclient {stats}\nserver {}", server.server().stats());
    if transport == "tls" {
        println!("tls: each frame was encrypted once, into the records sent (the file region too: read, then encrypted); the kernel copied the ciphertext.");
    } else if transport == "tcp" || transport == "unix" {
        println!("{transport}: every frame went out as one vectored write of the caller's segments (the file by sendfile); the kernel copied them.");
    } else if stats.notifications_copied > 0 {
        let switched = if stats.path_switches > 0 { ": the adaptive engine noticed and moved to the copy path" } else { "" };
        println!("On loopback the kernel copies zero-copy sends after all (ZC_COPIED){switched}; real gains need a NIC.");
    }
    server.shutdown().await;
    Ok(())
}

/// Serves and connects over the Linux zero-copy engine (`transport_uring`).
#[cfg(target_os = "linux")]
async fn uring(
    server: Server,
    addr: SocketAddr,
    args: &Args,
) -> Result<(rpc_core::ServerHandle, SocketAddr, Client), Box<dyn std::error::Error>> {
    use transport_uring::{Backend, UringAcceptor, UringConfig};
    let config = UringConfig {
        backend: if args.transport == "msgzc" { Backend::MsgZc } else { Backend::Uring },
        mode: args.zc.parse()?,
        recv: args.recv.parse()?,
        ..UringConfig::default()
    };
    let acceptor = UringAcceptor::bind(addr, config.clone()).await?;
    let addr = acceptor.local_addr()?;
    let server = server.serve(acceptor);
    println!("backend probe: {}", transport_uring::probe().reason);
    // Like `connect_tcp`: made from a dial function, the client re-dials when the connection is lost.
    let client = Client::connect_with(move || transport_uring::connect(addr, config.clone()), ClientConfig::default()).await?;
    Ok((server, addr, client))
}

/// Serves and connects over TLS on the Linux zero-copy engine: records sealed in its pool
/// buffers, opened in the frame's receive buffer (`transport_uring::tls`).
#[cfg(target_os = "linux")]
async fn uring_tls(
    server: Server,
    addr: SocketAddr,
    args: &Args,
    server_tls: TlsServerConfig,
    client_tls: TlsClientConfig,
) -> Result<(rpc_core::ServerHandle, SocketAddr, Client), Box<dyn std::error::Error>> {
    use transport_uring::{Backend, UringConfig};
    let config = UringConfig {
        backend: if args.transport == "msgzc" { Backend::MsgZc } else { Backend::Uring },
        mode: args.zc.parse()?,
        ..UringConfig::default()
    };
    let acceptor = transport_uring::tls::UringTlsAcceptor::bind(addr, server_tls, config.clone()).await?;
    let addr = acceptor.local_addr()?;
    let server = server.serve(acceptor);
    let client = transport_uring::tls::client(addr, "localhost", client_tls, config, ClientConfig::default()).await?;
    Ok((server, addr, client))
}

#[cfg(not(target_os = "linux"))]
async fn uring_tls(
    _: Server,
    _: SocketAddr,
    args: &Args,
    _: TlsServerConfig,
    _: TlsClientConfig,
) -> Result<(rpc_core::ServerHandle, SocketAddr, Client), Box<dyn std::error::Error>> {
    Err(format!("--transport {} needs Linux", args.transport).into())
}

#[cfg(not(target_os = "linux"))]
async fn uring(
    _: Server,
    _: SocketAddr,
    args: &Args,
) -> Result<(rpc_core::ServerHandle, SocketAddr, Client), Box<dyn std::error::Error>> {
    Err(format!("--transport {} needs Linux", args.transport).into())
}

/// A CA and a server certificate for `localhost` it signed, made now (a deployment loads its
/// own PEM files: `TlsServerConfig::from_pem_files`, `TlsClientConfig::from_pem_file`).
fn throwaway_certificates() -> Result<(TlsServerConfig, TlsClientConfig), Box<dyn std::error::Error>> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&key, &issuer)?;
    let server = TlsServerConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
    let client = TlsClientConfig::from_pem(ca_cert.pem().as_bytes())?;
    Ok((server, client))
}

/// Deterministic bytes (seeded), so a misplaced byte shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
