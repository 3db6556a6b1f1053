//! A `#[service]` with the prost codec: protobuf messages in and out, `()` as the empty
//! message, application errors as messages, attachments beside them.

use std::sync::{Arc, Mutex};

use rpc_core::transport::mem;
use rpc_core::{Bytes, Client, ClientConfig, Payload, Server};

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutReply {
    #[prost(uint64, tag = "1")]
    pub stored: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreError {
    #[prost(string, tag = "1")]
    pub reason: String,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for StoreError {}

#[rpc_core::service(codec = rpc_core::codec::Prost)]
pub trait Blobs {
    async fn put(&self, request: PutRequest) -> Result<PutReply, StoreError>;
    async fn ping(&self);
    async fn append(&self, request: PutRequest, tail: Payload) -> Payload;
}

#[derive(Default, Clone)]
struct Impl {
    seen: Arc<Mutex<Vec<PutRequest>>>,
}

impl Blobs for Impl {
    async fn put(&self, request: PutRequest) -> Result<PutReply, StoreError> {
        if request.key.is_empty() {
            return Err(StoreError { reason: "empty key".into() });
        }
        let stored = request.data.len() as u64;
        self.seen.lock().unwrap().push(request);
        Ok(PutReply { stored })
    }

    async fn ping(&self) {}

    async fn append(&self, request: PutRequest, tail: Payload) -> Payload {
        let mut v = request.data.to_vec();
        v.extend_from_slice(&tail.to_bytes());
        Payload::from(v)
    }
}

#[tokio::test]
async fn protobuf_messages_travel_with_the_prost_codec() {
    let (a, b) = mem::pair();
    let service = Impl::default();
    tokio::spawn(Server::builder().build(BlobsServer::new(service.clone())).serve_connection(b));
    let client = BlobsClient::new(Client::connect(a, ClientConfig::default()).await.unwrap());

    let data = Bytes::from(vec![5u8; 100_000]);
    let reply = client.put(PutRequest { key: "k".into(), data: data.clone() }).await.unwrap().unwrap();
    assert_eq!(reply, PutReply { stored: 100_000 });
    assert_eq!(service.seen.lock().unwrap()[0].data, data);

    let err = client.put(PutRequest { key: String::new(), data: Bytes::new() }).await.unwrap().unwrap_err();
    assert_eq!(err.reason, "empty key");

    client.ping().await.unwrap();

    let out = client
        .append(PutRequest { key: "k".into(), data: Bytes::from_static(b"head-") }, Payload::from(&b"tail"[..]))
        .await
        .unwrap();
    assert_eq!(&out.to_bytes()[..], b"head-tail");
}

#[test]
fn the_request_message_is_the_protobuf_encoding_of_the_one_argument() {
    use rpc_core::codec::{Encode, Prost};
    let req = PutRequest { key: "k".into(), data: Bytes::from_static(b"xyz") };
    let wire = <Prost as Encode<PutRequest>>::encode(&req).unwrap();
    assert_eq!(&wire[..], &prost::Message::encode_to_vec(&req)[..]);
}
