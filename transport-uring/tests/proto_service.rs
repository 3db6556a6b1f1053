//! A service generated from a `.proto` file (`zcrpc_proto::blob`) over the io_uring engine with
//! zero-copy forced: the attachment fields of a put and of a get leave from the blob's own
//! memory through `SEND_ZC`, gathered by no one in user space, and arrive byte-exact.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{require, LIMIT};
use rpc_core::codec::Protobuf;
use rpc_core::{Client, ClientConfig, Server, Sink, Source, Status};
use transport_uring::{Backend, UringAcceptor, UringConfig, ZcMode};
use zcrpc_proto::blob::*;

#[derive(Default, Clone)]
struct Store(Arc<Mutex<BTreeMap<String, Bytes>>>);

impl BlobStore for Store {
    async fn put(&self, request: PutRequest) -> Result<PutReply, Status> {
        let stored = request.data.len() as u64;
        self.0.lock().unwrap().insert(request.key, request.data);
        Ok(PutReply { stored })
    }
    async fn get(&self, request: GetRequest) -> Result<Blob, Status> {
        let data = self.0.lock().unwrap().get(&request.key).cloned().unwrap_or_default();
        Ok(Blob { key: request.key, data })
    }
    async fn list(&self, _: ()) -> Result<ListReply, Status> {
        Ok(ListReply::default())
    }
    async fn get_stream(&self, _: GetStreamRequest, _: Sink<Chunk, Protobuf>) -> Result<(), Status> {
        Ok(())
    }
    async fn put_stream(&self, _: Source<Chunk, Protobuf>) -> Result<PutReply, Status> {
        Ok(PutReply::default())
    }
    async fn mirror(&self, _: Source<Blob, Protobuf>, _: Sink<Blob, Protobuf>) -> Result<(), Status> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_fields_go_through_send_zc_without_a_user_space_copy() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let config = UringConfig { backend: Backend::Uring, mode: ZcMode::AlwaysZc, ..UringConfig::default() };
        let store = Store::default();
        let acceptor = UringAcceptor::bind("127.0.0.1:0", config.clone()).await.unwrap();
        let addr = acceptor.local_addr().unwrap();
        let server = Server::builder().build(BlobStoreServer::new(store.clone()));
        let handle = server.serve(acceptor);
        let transport = transport_uring::connect(addr, config).await.unwrap();
        let client = BlobStoreClient::new(Client::connect(transport, ClientConfig::default()).await.unwrap());

        let len = 4 << 20;
        let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        client.put(PutRequest { key: "k".into(), data: data.clone() }).await.unwrap();
        let stored = store.0.lock().unwrap()["k"].clone();
        assert_eq!((&stored, stored.as_ptr() as usize % 64), (&data, 0));
        let got = client.get(GetRequest { key: "k".into() }).await.unwrap();
        assert_eq!(got.data, data);

        let (sent, served) = (client.client().stats(), server.stats());
        assert!(sent.bytes_zc >= len as u64, "the put's field went zero-copy: {sent:?}");
        assert!(served.bytes_zc >= len as u64, "the get's field went zero-copy: {served:?}");
        assert_eq!((sent.bytes_coalesced, served.bytes_coalesced), (0, 0), "nothing gathered in user space");
        drop(client);
        handle.shutdown().await;
    })
    .await
    .unwrap();
}
