//! Services generated from `schemas/blob.proto` over TCP on loopback: the four kinds of method,
//! statuses as errors, attachment fields sent from the field's own memory and received as
//! aligned slices, bodies that do not match their message refused, and interoperation with a
//! `#[service]` trait of the same paths.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rpc_core::codec::Protobuf;
use rpc_core::transport::tcp::{TcpAcceptor, TcpTransport};
use rpc_core::transport::{SendHalf, Transmit, Transport, TransportStats};
use rpc_core::{Body, CallError, CallOptions, Client, ClientConfig, Code, Server, Sink, Source, Status};
use zcrpc_proto::blob::*;

/// A blob store keeping what it receives (the `Bytes` of the request: no copy).
#[derive(Default, Clone)]
struct Store {
    blobs: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl BlobStore for Store {
    async fn put(&self, request: PutRequest) -> Result<PutReply, Status> {
        if request.key.is_empty() {
            return Err(Status::invalid_argument("a blob needs a key"));
        }
        let stored = request.data.len() as u64;
        self.blobs.lock().unwrap().insert(request.key, request.data);
        Ok(PutReply { stored })
    }

    async fn get(&self, request: GetRequest) -> Result<Blob, Status> {
        let data = self.blobs.lock().unwrap().get(&request.key).cloned();
        let data = data.ok_or_else(|| Status::invalid_argument(format!("no blob under {:?}", request.key)))?;
        Ok(Blob { key: request.key, data })
    }

    async fn list(&self, _: ()) -> Result<ListReply, Status> {
        let blobs = self.blobs.lock().unwrap();
        let entries =
            blobs.iter().map(|(key, data)| list_reply::Entry { key: key.clone(), size: data.len() as u64 }).collect();
        Ok(ListReply { entries })
    }

    async fn get_stream(&self, request: GetStreamRequest, mut responses: Sink<Chunk, Protobuf>) -> Result<(), Status> {
        let data = self.get(GetRequest { key: request.key.clone() }).await?.data;
        let size = (request.chunk_size.max(1)) as usize;
        for offset in (0..data.len()).step_by(size) {
            let chunk = Chunk { key: request.key.clone(), offset: offset as u64, data: data.slice(offset..data.len().min(offset + size)) };
            responses.send(chunk).await.map_err(|e| Status::new(Code::INTERNAL, e.to_string()))?;
        }
        Ok(())
    }

    async fn put_stream(&self, mut requests: Source<Chunk, Protobuf>) -> Result<PutReply, Status> {
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
            responses.send(blob).await.map_err(|e| Status::new(Code::INTERNAL, e.to_string()))?;
        }
        Ok(())
    }
}

/// A server of `service` on a loopback port, and a client connected to it.
async fn serve<S: rpc_core::Service>(service: S) -> (Client, rpc_core::ServerHandle) {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(service).serve(acceptor);
    (Client::connect_tcp(addr, ClientConfig::default()).await.unwrap(), handle)
}

fn blob(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_server_client_and_bidi_streaming_methods_over_tcp() {
    let store = Store::default();
    let (client, handle) = serve(BlobStoreServer::new(store.clone())).await;
    let client = BlobStoreClient::new(client);

    let data = blob(3 << 20, 1);
    let reply = client.put(PutRequest { key: "big".into(), data: data.clone() }).await.unwrap();
    assert_eq!(reply.stored, 3 << 20);
    let got = client.get(GetRequest { key: "big".into() }).await.unwrap();
    assert_eq!((got.key.as_str(), &got.data), ("big", &data));

    // Server streaming: chunks of 1 MiB, which as `bytes` fields of 64 KiB and more go out of band.
    let mut chunks = client.get_stream(GetStreamRequest { key: "big".into(), chunk_size: 1 << 20 }).await.unwrap();
    let mut back = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.offset as usize, back.len());
        assert_eq!(chunk.data.as_ptr() as usize % 64, 0, "an attached field is 64-byte aligned");
        back.extend_from_slice(&chunk.data);
    }
    assert_eq!(back, data);

    // Client streaming: small chunks (inline) and a large one (attached).
    let (mut sink, answer) = client.put_stream().await.unwrap();
    let parts = [blob(10, 2), blob(200_000, 3), blob(5, 4)];
    for (i, part) in parts.iter().enumerate() {
        sink.send(Chunk { key: "parts".into(), offset: i as u64, data: part.clone() }).await.unwrap();
    }
    sink.finish();
    assert_eq!(answer.await.unwrap().stored, 200_015);
    assert_eq!(store.blobs.lock().unwrap()["parts"], parts.concat());

    // Bidirectional.
    let (mut sink, mut source) = client.mirror().await.unwrap();
    for i in 0..3u8 {
        let sent = Blob { key: format!("m{i}"), data: blob(100_000 * i as usize, i) };
        sink.send(sent.clone()).await.unwrap();
        assert_eq!(source.recv().await.unwrap().unwrap(), sent);
    }
    sink.finish();
    assert!(source.recv().await.is_none());

    let list = client.list(()).await.unwrap();
    let keys: Vec<_> = list.entries.iter().map(|e| (e.key.as_str(), e.size)).collect();
    assert_eq!(keys, [("big", 3 << 20), ("parts", 200_015)]);
    drop(client);
    handle.shutdown().await;
}

#[tokio::test]
async fn an_error_status_reaches_the_client_as_itself() {
    let (client, handle) = serve(BlobStoreServer::new(Store::default())).await;
    let client = BlobStoreClient::new(client);
    let err = client.get(GetRequest { key: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::INVALID_ARGUMENT);
    assert!(err.to_string().contains("no blob under \"nope\""), "{err}");
    let mut chunks = client.get_stream(GetStreamRequest { key: "nope".into(), chunk_size: 1 }).await.unwrap();
    let err = chunks.recv().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::INVALID_ARGUMENT);
    drop(client);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_fields_arrive_byte_exact_as_aligned_slices() {
    let store = Store::default();
    let (client, handle) = serve(BlobStoreServer::new(store.clone())).await;
    let client = BlobStoreClient::new(client);
    for (i, len) in [1usize, 63, 64, 65, 4096, 1 << 20, (1 << 20) + 7].into_iter().enumerate() {
        let key = format!("k{i}");
        let data = blob(len, i as u8);
        client.put(PutRequest { key: key.clone(), data: data.clone() }).await.unwrap();
        let stored = store.blobs.lock().unwrap()[&key].clone();
        assert_eq!(stored, data, "{len} bytes");
        assert_eq!(stored.as_ptr() as usize % 64, 0, "the server's field is 64-byte aligned ({len} bytes)");
        let got = client.get(GetRequest { key }).await.unwrap();
        assert_eq!(got.data, data);
        assert_eq!(got.data.as_ptr() as usize % 64, 0, "the client's field is 64-byte aligned ({len} bytes)");
    }
    drop(client);
    handle.shutdown().await;
}

/// A transport that notes where every segment of every transmit it sends lies in memory.
struct Recording {
    inner: TcpTransport,
    segments: Arc<Mutex<Vec<(usize, usize)>>>,
}

struct RecordingSend<S> {
    inner: S,
    segments: Arc<Mutex<Vec<(usize, usize)>>>,
}

impl Transport for Recording {
    type Send = RecordingSend<<TcpTransport as Transport>::Send>;
    type Recv = <TcpTransport as Transport>::Recv;

    fn split(self) -> (Self::Recv, Self::Send) {
        let (recv, send) = self.inner.split();
        (recv, RecordingSend { inner: send, segments: self.segments })
    }

    fn stats(&self) -> Arc<TransportStats> {
        self.inner.stats()
    }
}

impl<S: SendHalf> SendHalf for RecordingSend<S> {
    async fn send(&mut self, batch: &mut Vec<Transmit>) -> std::io::Result<()> {
        {
            let mut seen = self.segments.lock().unwrap();
            for t in batch.iter() {
                seen.extend(t.segments.iter().filter_map(|s| Some((s.memory()?.as_ptr() as usize, s.len()))));
            }
        }
        self.inner.send(batch).await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.inner.shutdown().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_field_is_sent_from_its_own_memory() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(BlobStoreServer::new(Store::default())).serve(acceptor);
    let segments = Arc::new(Mutex::new(Vec::new()));
    let tcp = rpc_core::transport::tcp::connect(addr).await.unwrap();
    let transport = Recording { inner: tcp, segments: Arc::clone(&segments) };
    let client = BlobStoreClient::new(Client::connect(transport, ClientConfig::default()).await.unwrap());

    let data = blob(1 << 20, 9);
    client.put(PutRequest { key: "k".into(), data: data.clone() }).await.unwrap();
    let (mut sink, answer) = client.put_stream().await.unwrap();
    let chunk = blob(100_000, 8);
    sink.send(Chunk { key: "c".into(), offset: 0, data: chunk.clone() }).await.unwrap();
    sink.finish();
    answer.await.unwrap();

    let seen = segments.lock().unwrap().clone();
    // The request's field went to the transport as a segment that is the field's own memory:
    // no copy into an encode buffer, nor anywhere else in user space.
    assert!(seen.contains(&(data.as_ptr() as usize, data.len())), "{seen:x?}");
    assert!(seen.contains(&(chunk.as_ptr() as usize, chunk.len())), "a stream item's field too: {seen:x?}");
    drop(client);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_body_that_does_not_match_its_attachment_fields_is_invalid_argument() {
    use prost::Message;
    let (client, handle) = serve(BlobStoreServer::new(Store::default())).await;
    let data = blob(1000, 5);
    let inline = PutRequest { key: "k".into(), data: data.clone() }.encode_to_vec();
    // No attachment table at all: every field in the message, as a sender whose fields all
    // stayed under their threshold sends it; accepted.
    client.call(BlobStoreClient::PUT, Body::message(inline.clone().into()), CallOptions::default()).await.unwrap();
    let cases = [
        ("inline and attached", Body::new(inline.into(), vec![data.clone().into()])),
        ("one too many", Body::new(PutRequest { key: "k".into(), data: Bytes::new() }.encode_to_vec().into(), vec![data.clone().into(), data.into()])),
        ("garbage", Body::message(Bytes::from_static(&[0x12, 0xff, 0xff, 0xff, 0x0f]))),
    ];
    for (what, body) in cases {
        let err = client.call(BlobStoreClient::PUT, body, CallOptions::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::INVALID_ARGUMENT, "{what}: {err}");
        assert!(err.to_string().contains("zcrpc.blob.BlobStore/Put"), "{what}: {err}");
    }
    // The connection is still good.
    let client = BlobStoreClient::new(client);
    client.put(PutRequest { key: "k".into(), data: blob(10, 1) }).await.unwrap();
    drop(client);
    handle.shutdown().await;
}

/// The blob store's `Put` and `Get` as a `#[service]` trait: the same paths, so the same ids.
#[allow(non_snake_case)]
mod by_hand {
    use super::*;

    #[rpc_core::service(codec = rpc_core::codec::Protobuf, package = "zcrpc.blob")]
    pub trait BlobStore {
        async fn Put(&self, request: PutRequest) -> PutReply;
        async fn Get(&self, request: GetRequest) -> Blob;
    }
}

struct ByHand(Store);

impl by_hand::BlobStore for ByHand {
    async fn Put(&self, request: PutRequest) -> PutReply {
        BlobStore::put(&self.0, request).await.unwrap()
    }
    async fn Get(&self, request: GetRequest) -> Blob {
        BlobStore::get(&self.0, request).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_trait_and_a_proto_service_with_the_same_paths_interoperate() {
    assert_eq!(by_hand::BlobStoreClient::PUT_PATH, BlobStoreClient::PUT_PATH);
    assert_eq!(by_hand::BlobStoreClient::GET, BlobStoreClient::GET);
    let data = blob(1 << 20, 7);

    // A `#[service]` client calling the `.proto` server.
    let store = Store::default();
    let (client, handle) = serve(BlobStoreServer::new(store.clone())).await;
    let client = by_hand::BlobStoreClient::new(client);
    client.Put(PutRequest { key: "a".into(), data: data.clone() }).await.unwrap();
    assert_eq!(store.blobs.lock().unwrap()["a"], data);
    assert_eq!(client.Get(GetRequest { key: "a".into() }).await.unwrap().data, data);
    drop(client);
    handle.shutdown().await;

    // The `.proto` client calling a `#[service]` server.
    let store = Store::default();
    let (client, handle) = serve(by_hand::BlobStoreServer::new(ByHand(store.clone()))).await;
    let client = BlobStoreClient::new(client);
    client.put(PutRequest { key: "b".into(), data: data.clone() }).await.unwrap();
    let stored = store.blobs.lock().unwrap()["b"].clone();
    assert_eq!((&stored, stored.as_ptr() as usize % 64), (&data, 0));
    assert_eq!(client.get(GetRequest { key: "b".into() }).await.unwrap().data, data);
    // The method the `#[service]` trait lacks is unimplemented there.
    let err = client.list(()).await.unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED, "{err}");
    assert!(matches!(err, CallError::Status(_)));
    drop(client);
    handle.shutdown().await;
}

/// The generated `may_detach` says what `detach` would do, at every size around the thresholds
/// (`Blob.data` named: any non-empty size; `Chunk.data`: from 64 KiB), so a message it calls
/// inline is sent without an attachment table and one it does not is detached as before.
#[test]
fn generated_may_detach_agrees_with_detach() {
    use rpc_core::codec::ProtoMessage;
    for len in [0, 1, 100, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, 1 << 20] {
        let chunk = Chunk { key: "k".into(), offset: 0, data: blob(len, 2) };
        let named = Blob { key: "k".into(), data: blob(len, 1) };
        assert_eq!(named.may_detach(), named.clone().detach().iter().any(|p| !p.is_empty()), "Blob of {len} bytes");
        assert_eq!(chunk.may_detach(), chunk.clone().detach().iter().any(|p| !p.is_empty()), "Chunk of {len} bytes");
    }
    assert!(Blob { key: "k".into(), data: blob(1, 1) }.may_detach(), "a named attachment field goes out of band from 1 byte");
    assert!(!Chunk { key: "k".into(), offset: 0, data: blob(100, 2) }.may_detach());
}

/// Streams of `.proto` messages at every size threshold, mixed in one stream: `Chunk.data`
/// inline below 64 KiB and out of band from it, `Blob.data` out of band from 1 byte, messages
/// around the shared encode buffer's 4 KiB, with and without extra attachments (the server's
/// decode needs the right attachment table for each). Every byte checked, every item in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_messages_at_every_threshold_decode_with_the_right_attachment_table() {
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let store = Store::default();
        let (client, handle) = serve(BlobStoreServer::new(store.clone())).await;
        let client = BlobStoreClient::new(client);

        // Server streaming, through the server's Sink: chunk sizes around 4 KiB and 64 KiB.
        let data = blob(600_000, 5);
        client.put(PutRequest { key: "d".into(), data: data.clone() }).await.unwrap();
        for size in [1u32, 500, 4080, 4085, 4090, 4096, 4097, 65535, 65536, 65537] {
            let mut chunks = client.get_stream(GetStreamRequest { key: "d".into(), chunk_size: size }).await.unwrap();
            let (mut at, mut kept) = (0usize, Vec::new());
            while let Some(chunk) = chunks.recv().await {
                let chunk = chunk.unwrap();
                assert_eq!(chunk.offset as usize, at, "chunk size {size}");
                assert_eq!(chunk.data, data.slice(at..(at + size as usize).min(data.len())), "chunk size {size}, at {at}");
                at += chunk.data.len();
                if kept.len() < 50 {
                    kept.push(chunk);
                }
            }
            assert_eq!(at, data.len(), "chunk size {size}");
            for chunk in kept {
                let at = chunk.offset as usize;
                assert_eq!(chunk.data, data.slice(at..at + chunk.data.len()), "kept chunk at {at}");
            }
        }

        // Bidi, through the client's Sink: named attachment fields of 0 and 1.. bytes, messages
        // around 4 KiB, extra attachments on some (the server drops them, mirroring the blob).
        let sizes: Vec<usize> = (0..600).map(|i| [0, 1, 2, 100, 4070, 4090, 4100, 70_000][i % 8]).collect();
        let keys: Vec<String> = (0..600).map(|i| "k".repeat([1, 4000, 4085, 4095, 5000][i % 5])).collect();
        let (mut sink, mut source) = client.mirror().await.unwrap();
        let (sizes2, keys2) = (sizes.clone(), keys.clone());
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(got) = source.recv().await {
                let got = got.unwrap_or_else(|e| panic!("item {n}: {e}"));
                assert_eq!(got.key, keys2[n], "item {n}");
                assert_eq!(got.data, blob(sizes2[n], n as u8), "item {n}");
                n += 1;
            }
            n
        });
        for i in 0..600 {
            let extra = match i % 3 {
                0 => Vec::new(),
                1 => vec![rpc_core::Payload::from(blob(10, 9))],
                _ => vec![rpc_core::Payload::new(), rpc_core::Payload::from(blob(70_000, 9))],
            };
            sink.send_with(Blob { key: keys[i].clone(), data: blob(sizes[i], i as u8) }, extra).await.unwrap();
        }
        drop(sink);
        assert_eq!(reader.await.unwrap(), 600);
        drop(client);
        handle.shutdown().await;
    })
    .await
    .expect("the test took over 60 s");
}
