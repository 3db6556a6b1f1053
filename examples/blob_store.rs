//! A blob store defined in a `.proto` file: put, get, list, and a streamed get of a large blob,
//! the blobs' bytes moving as zero-copy attachments.
//!
//! ```text
//! cargo run --release --example blob_store -- --size-mib 256
//! ```
//!
//! The service is `proto/schemas/blob.proto`'s `BlobStore`, generated in `proto/build.rs` by
//! zcrpc's `.proto` generator with `PutRequest.data` and `Blob.data` as attachment fields (and
//! every other `bytes` field from 64 KiB on, so the streamed chunks too):
//!
//! ```text
//! zcrpc_codegen::proto::Builder::new()
//!     .attachment("zcrpc.blob.PutRequest.data")
//!     .attachment("zcrpc.blob.Blob.data")
//!     .attachments_from(64 * 1024)
//!     .compile(&["schemas/blob.proto", ...], &["schemas"])?;
//! ```
//!
//! A blob is sent from the client's own buffer (scatter-gather, no copy into an encode
//! buffer), arrives as a 64-byte aligned slice of the server's receive buffer, and is stored as
//! it arrived: the store keeps that `Bytes`, it copies nothing. `get` and the chunks of the
//! streamed get are sent from the stored memory the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rpc_core::codec::Protobuf;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig, Server, Sink, Source, Status};
use zcrpc_proto::blob::{
    list_reply, Blob, BlobStore, BlobStoreClient, BlobStoreServer, Chunk, GetRequest, GetStreamRequest, ListReply,
    PutReply, PutRequest,
};

/// The blobs, each the `Bytes` that arrived: a slice of the receive buffer it came in.
#[derive(Default, Clone)]
struct Store {
    blobs: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl Store {
    fn blob(&self, key: &str) -> Result<Bytes, Status> {
        let blobs = self.blobs.lock().unwrap();
        blobs.get(key).cloned().ok_or_else(|| Status::invalid_argument(format!("no blob under {key:?}")))
    }
}

/// A `Status` for a stream that could not go on.
fn broken(e: rpc_core::CallError) -> Status {
    Status::internal(e.to_string())
}

impl BlobStore for Store {
    async fn put(&self, request: PutRequest) -> Result<PutReply, Status> {
        if request.key.is_empty() {
            return Err(Status::invalid_argument("a blob needs a key"));
        }
        let aligned = request.data.as_ptr() as usize % 64 == 0;
        println!(
            "server: stored {:?} as received ({} bytes, a 64-byte aligned slice of the receive buffer: {aligned})",
            request.key,
            request.data.len()
        );
        let stored = request.data.len() as u64;
        self.blobs.lock().unwrap().insert(request.key, request.data);
        Ok(PutReply { stored })
    }

    async fn get(&self, request: GetRequest) -> Result<Blob, Status> {
        let data = self.blob(&request.key)?;
        Ok(Blob { key: request.key, data })
    }

    async fn list(&self, _: ()) -> Result<ListReply, Status> {
        let blobs = self.blobs.lock().unwrap();
        let entries = blobs.iter().map(|(key, data)| list_reply::Entry { key: key.clone(), size: data.len() as u64 });
        Ok(ListReply { entries: entries.collect() })
    }

    async fn get_stream(&self, request: GetStreamRequest, mut responses: Sink<Chunk, Protobuf>) -> Result<(), Status> {
        let data = self.blob(&request.key)?;
        let size = request.chunk_size.max(1) as usize;
        for offset in (0..data.len()).step_by(size) {
            // A slice of the stored blob: the chunk is sent from the store's memory.
            let part = data.slice(offset..data.len().min(offset + size));
            let chunk = Chunk { key: request.key.clone(), offset: offset as u64, data: part };
            responses.send(chunk).await.map_err(broken)?;
        }
        Ok(())
    }

    async fn put_stream(&self, mut requests: Source<Chunk, Protobuf>) -> Result<PutReply, Status> {
        // Chunks arrive as separate slices: the blob is assembled once, here.
        let (mut key, mut data) = (String::new(), Vec::new());
        while let Some(chunk) = requests.recv().await {
            let chunk = chunk.map_err(|e| Status::invalid_argument(e.to_string()))?;
            if key.is_empty() {
                key = chunk.key;
            }
            data.extend_from_slice(&chunk.data);
        }
        self.put(PutRequest { key, data: data.into() }).await
    }

    async fn mirror(&self, mut requests: Source<Blob, Protobuf>, mut responses: Sink<Blob, Protobuf>) -> Result<(), Status> {
        while let Some(blob) = requests.recv().await {
            let blob = blob.map_err(|e| Status::invalid_argument(e.to_string()))?;
            responses.send(blob).await.map_err(broken)?;
        }
        Ok(())
    }
}

/// A blob store from a `.proto` file, one process on loopback: the client puts a blob, gets it
/// back, lists the store and streams the blob back in chunks, checking every byte; the blobs
/// travel as zero-copy attachments.
#[derive(Debug, clap::Parser)]
#[command(after_help = "Examples:\n  cargo run --release --example blob_store\n  cargo run --release --example blob_store -- --size-mib 1024 --chunk-kib 4096")]
struct Args {
    /// Size of the blob, in MiB.
    #[arg(long, default_value_t = 64)]
    size_mib: usize,
    /// Size of the chunks of the streamed get, in KiB.
    #[arg(long, default_value_t = 1024)]
    chunk_kib: u32,
    /// Where the server listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

/// `n` bytes of a pattern that catches misplaced bytes.
fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 12) as u8)).collect::<Vec<u8>>().into()
}

/// MiB/s of `bytes` moved in the time since `start`.
fn rate(bytes: usize, start: Instant) -> String {
    format!("{:.0} MiB/s", bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = clap::Parser::parse();
    let acceptor = TcpAcceptor::bind(args.addr).await?;
    let addr = acceptor.local_addr()?;
    let server = Server::builder().build(BlobStoreServer::new(Store::default())).serve(acceptor);
    let client = BlobStoreClient::new(Client::connect_tcp(addr, ClientConfig::default()).await?);

    let size = args.size_mib << 20;
    let data = pattern(size);
    let start = Instant::now();
    let reply = client.put(PutRequest { key: "big".into(), data: data.clone() }).await?;
    println!("client: put big ({} MiB) -> stored {} bytes, {}", args.size_mib, reply.stored, rate(size, start));
    client.put(PutRequest { key: "small".into(), data: Bytes::from_static(b"a small blob") }).await?;

    let start = Instant::now();
    let blob = client.get(GetRequest { key: "big".into() }).await?;
    let exact = blob.data == data;
    println!("client: get big -> {} bytes, byte-exact: {exact}, {}", blob.data.len(), rate(size, start));

    let list = client.list(()).await?;
    for entry in &list.entries {
        println!("client: list -> {}: {} bytes", entry.key, entry.size);
    }

    let start = Instant::now();
    let request = GetStreamRequest { key: "big".into(), chunk_size: args.chunk_kib << 10 };
    let mut chunks = client.get_stream(request).await?;
    let (mut received, mut count, mut in_order) = (0usize, 0usize, true);
    let mut streamed_exact = true;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        in_order &= chunk.offset as usize == received;
        streamed_exact &= data.get(received..received + chunk.data.len()) == Some(&chunk.data[..]);
        received += chunk.data.len();
        count += 1;
    }
    println!(
        "client: streamed get big in {count} chunks of {} KiB -> {received} bytes, in order: {in_order}, byte-exact: {}, {}",
        args.chunk_kib,
        streamed_exact && received == size,
        rate(size, start)
    );

    match client.get(GetRequest { key: "nothing".into() }).await {
        Err(e) => println!("client: get nothing -> {e}"),
        Ok(_) => return Err("a blob that was never put was found".into()),
    }
    drop(client);
    server.shutdown().await;
    Ok(())
}
