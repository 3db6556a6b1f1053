//! The generator's compile test, used: `schemas/kitchen_sink.proto` (nested messages, enums,
//! oneofs, maps, repeated bytes, well-known types, a package path) implemented and called
//! once per kind of method over the in-memory transport; its `bytes` fields arrive as slices of
//! the received message.

use bytes::Bytes;
use rpc_core::codec::Protobuf;
use rpc_core::transport::mem;
use rpc_core::{Client, ClientConfig, Server, Sink, Source, Status};
use zcrpc_proto::kitchen_sink::{order, KitchenSink, KitchenSinkClient, KitchenSinkServer, Order, Priority, WatchRequest};

/// Where the two `chunks` of the last order `describe` received lie in memory.
#[derive(Default, Clone)]
struct Kitchen {
    chunks: std::sync::Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
}

fn receipt(order: &Order) -> order::Receipt {
    order::Receipt { id: order.id.clone(), at: order.created, signature: Bytes::from(vec![1; 100_000]) }
}

impl KitchenSink for Kitchen {
    async fn describe(&self, request: Order) -> Result<order::Receipt, Status> {
        *self.chunks.lock().unwrap() = request.chunks.iter().map(|c| (c.as_ptr() as usize, c.len())).collect();
        Ok(receipt(&request))
    }

    async fn watch(&self, request: WatchRequest, mut responses: Sink<Order, Protobuf>) -> Result<(), Status> {
        for i in 0..3 {
            let order = Order { id: format!("{}{i}", request.prefix), ..Order::default() };
            responses.send(order).await.map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        Ok(())
    }

    async fn upload(&self, mut requests: Source<order::Line, Protobuf>) -> Result<(), Status> {
        while let Some(line) = requests.recv().await {
            line.map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        Ok(())
    }

    async fn exchange(
        &self,
        mut requests: Source<Order, Protobuf>,
        mut responses: Sink<order::Receipt, Protobuf>,
    ) -> Result<(), Status> {
        while let Some(order) = requests.recv().await {
            let order = order.map_err(|e| Status::invalid_argument(e.to_string()))?;
            responses.send(receipt(&order)).await.map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        Ok(())
    }
}

fn order() -> Order {
    Order {
        id: "o1".into(),
        state: order::State::Open as i32,
        priority: Priority::High as i32,
        lines: vec![order::Line { sku: "s".into(), count: 2, picture: Bytes::from(vec![3; 70_000]) }],
        labels: [("a".to_owned(), "b".to_owned())].into(),
        blobs: [("k".to_owned(), Bytes::from_static(b"v"))].into(),
        chunks: vec![Bytes::from_static(b"c1"), Bytes::from(vec![4; 100_000])],
        payment: Some(order::Payment::Token(Bytes::from_static(b"tok"))),
        created: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
        ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        note: Some(Bytes::from_static(b"note")),
        r#type: Bytes::from(vec![5; 80_000]),
    }
}

#[tokio::test]
async fn every_kind_of_method_of_the_kitchen_sink() {
    assert_eq!(KitchenSinkClient::DESCRIBE_PATH, "zcrpc.test.v1.KitchenSink/Describe");
    let (a, b) = mem::pair();
    let kitchen = Kitchen::default();
    tokio::spawn(Server::builder().build(KitchenSinkServer::new(kitchen.clone())).serve_connection(b));
    let client = KitchenSinkClient::new(Client::connect(a, ClientConfig::default()).await.unwrap());

    let sent = order();
    let got = client.describe(sent.clone()).await.unwrap();
    assert_eq!(got, receipt(&sent));
    // `bytes` fields decode as slices of the received message, not copies: the second chunk
    // starts right after the first one and its own tag and length.
    let chunks = kitchen.chunks.lock().unwrap().clone();
    let [(first, first_len), (second, second_len)] = chunks[..] else { panic!("{chunks:?}") };
    assert_eq!(second, first + first_len + 1 + prost::encoding::encoded_len_varint(second_len as u64));

    let ids: Vec<String> =
        client.watch(WatchRequest { prefix: "w".into() }).await.unwrap().collect().await.unwrap().into_iter().map(|o| o.id).collect();
    assert_eq!(ids, ["w0", "w1", "w2"]);

    let (mut lines, done) = client.upload().await.unwrap();
    lines.send(sent.lines[0].clone()).await.unwrap();
    lines.finish();
    done.await.unwrap();

    let (mut orders, mut receipts) = client.exchange().await.unwrap();
    orders.send(sent.clone()).await.unwrap();
    assert_eq!(receipts.recv().await.unwrap().unwrap(), receipt(&sent));
}
