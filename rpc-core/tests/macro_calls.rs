//! `#[service]` end to end over the in-memory transport: the generated client and server
//! talk through a real connection, and every kind of argument and result comes back as sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rpc_core::{
    Body, CallError, CallOptions, Client, ClientConfig, Code, Payload, Server, ServerRequest,
    Service,
};
use serde::{Deserialize, Serialize};

/// The application's own error; it must come back typed, not as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreError {
    NotFound(String),
    TooLarge { len: u64, limit: u64 },
}

#[rpc_core::service]
pub trait Store {
    /// Stores `data` under `key`; returns the key's new version.
    async fn put(&self, key: String, data: Payload) -> Result<u64, StoreError>;
    async fn get(&self, key: String) -> Result<Payload, StoreError>;
    async fn remove(&self, key: String) -> Result<(), StoreError>;
    async fn echo(&self, data: Payload) -> Payload;
    async fn add(&self, a: u64, b: u64) -> u64;
    async fn ping(&self);
    #[method(id = 7)]
    async fn fixed(&self) -> u32;
    /// Two attachments around a serialized argument: order must survive.
    async fn join(&self, head: Payload, sep: String, tail: Payload) -> Payload;
}

const LIMIT: u64 = 8 << 20;

#[derive(Default)]
struct MemStore {
    blobs: Mutex<HashMap<String, (u64, Bytes)>>,
    pings: AtomicUsize,
}

impl Store for MemStore {
    async fn put(&self, key: String, data: Payload) -> Result<u64, StoreError> {
        if data.len() as u64 > LIMIT {
            return Err(StoreError::TooLarge {
                len: data.len() as u64,
                limit: LIMIT,
            });
        }
        let mut blobs = self.blobs.lock().unwrap();
        let entry = blobs.entry(key).or_insert((0, Bytes::new()));
        entry.0 += 1;
        entry.1 = data.to_bytes();
        Ok(entry.0)
    }

    async fn get(&self, key: String) -> Result<Payload, StoreError> {
        let blobs = self.blobs.lock().unwrap();
        blobs
            .get(&key)
            .map(|(_, b)| Payload::from(b.clone()))
            .ok_or(StoreError::NotFound(key))
    }

    async fn remove(&self, key: String) -> Result<(), StoreError> {
        match self.blobs.lock().unwrap().remove(&key) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(key)),
        }
    }

    async fn echo(&self, data: Payload) -> Payload {
        data
    }

    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    async fn ping(&self) {
        self.pings.fetch_add(1, Ordering::SeqCst);
    }

    async fn fixed(&self) -> u32 {
        42
    }

    async fn join(&self, head: Payload, sep: String, tail: Payload) -> Payload {
        let mut out = head.to_bytes().to_vec();
        out.extend_from_slice(sep.as_bytes());
        out.extend_from_slice(&tail.to_bytes());
        Payload::from(out)
    }
}

/// FNV-1a, 32 bits, written here independently of the macro so the test checks the rule
/// that docs/wire.md states, not the macro against itself.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// A connected client and the implementation behind the server.
async fn connect() -> (StoreClient, Arc<MemStore>) {
    let store = Arc::new(MemStore::default());
    let (a, b) = rpc_core::transport::mem::pair();
    let server = Server::builder().build(StoreServer::from_arc(Arc::clone(&store)));
    tokio::spawn(server.serve_connection(b));
    let client = Client::connect(a, ClientConfig::default())
        .await
        .expect("handshake over mem");
    (StoreClient::new(client), store)
}

/// `len` bytes that differ from one position to the next, so a shifted or dropped byte shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn method_ids_follow_the_documented_rule() {
    // The rule cited by docs/wire.md, with one value pinned so a change to it is noticed.
    assert_eq!(fnv1a("Store/put"), 0x0e28_fcb0);
    assert_eq!(StoreClient::PUT, fnv1a("Store/put"));
    assert_eq!(StoreClient::GET, fnv1a("Store/get"));
    assert_eq!(StoreClient::REMOVE, fnv1a("Store/remove"));
    assert_eq!(StoreClient::ECHO, fnv1a("Store/echo"));
    assert_eq!(StoreClient::ADD, fnv1a("Store/add"));
    assert_eq!(StoreClient::PING, fnv1a("Store/ping"));
    assert_eq!(StoreClient::JOIN, fnv1a("Store/join"));
    assert_eq!(StoreClient::FIXED, 7, "#[method(id = 7)] pins the id");

    let expected: Vec<(&str, u32)> = vec![
        ("put", fnv1a("Store/put")),
        ("get", fnv1a("Store/get")),
        ("remove", fnv1a("Store/remove")),
        ("echo", fnv1a("Store/echo")),
        ("add", fnv1a("Store/add")),
        ("ping", fnv1a("Store/ping")),
        ("fixed", 7),
        ("join", fnv1a("Store/join")),
    ];
    assert_eq!(StoreClient::METHODS, expected.as_slice());
}

#[test]
fn server_reports_the_trait_name() {
    assert_eq!(StoreServer::new(MemStore::default()).name(), "Store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_arguments_and_results_are_byte_exact() {
    let (client, store) = connect().await;

    // A 4 MiB payload made of several segments of odd sizes.
    let data = pattern(4 << 20, 7);
    let mut sent = Payload::new();
    for chunk in [
        &data[..1],
        &data[1..65_537],
        &data[65_537..3_000_001],
        &data[3_000_001..],
    ] {
        sent.push(Bytes::copy_from_slice(chunk));
    }
    assert_eq!(sent.segments().len(), 4);

    assert_eq!(client.put("big".into(), sent.clone()).await.unwrap(), Ok(1));
    assert_eq!(
        &store.blobs.lock().unwrap()["big"].1[..],
        &data[..],
        "server got other bytes"
    );
    assert_eq!(
        client.put("big".into(), sent).await.unwrap(),
        Ok(2),
        "version counts puts"
    );

    let back = client.get("big".into()).await.unwrap().unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back.to_bytes() == data, "4 MiB payload came back different");

    let small = Payload::from(pattern(1000, 1));
    assert_eq!(client.echo(small.clone()).await.unwrap(), small);
    let big = Payload::from(pattern(4 << 20, 9));
    assert_eq!(client.echo(big.clone()).await.unwrap(), big);
}

#[tokio::test]
async fn several_attachments_keep_their_order() {
    let (client, _store) = connect().await;
    let joined = client
        .join(
            Payload::from(b"head".to_vec()),
            " | ".into(),
            Payload::from(b"tail".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(&joined.to_bytes()[..], b"head | tail");
}

#[tokio::test]
async fn empty_payload_round_trips() {
    let (client, _store) = connect().await;
    let back = client
        .echo(Payload::new())
        .await
        .expect("an empty attachment is still an attachment");
    assert!(back.is_empty());
}

#[tokio::test]
async fn application_errors_come_back_typed() {
    let (client, _store) = connect().await;

    let missing = client
        .get("nope".into())
        .await
        .expect("the call itself succeeds");
    assert_eq!(missing, Err(StoreError::NotFound("nope".into())));

    let too_big = Payload::from(vec![0u8; LIMIT as usize + 1]);
    assert_eq!(
        client.put("k".into(), too_big).await.unwrap(),
        Err(StoreError::TooLarge {
            len: LIMIT + 1,
            limit: LIMIT
        })
    );

    // Result<(), E>: both sides.
    assert_eq!(
        client.remove("k".into()).await.unwrap(),
        Err(StoreError::NotFound("k".into()))
    );
    client
        .put("k".into(), Payload::from(b"v".to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.remove("k".into()).await.unwrap(), Ok(()));
    assert_eq!(
        client.get("k".into()).await.unwrap(),
        Err(StoreError::NotFound("k".into()))
    );
}

#[tokio::test]
async fn plain_and_unit_methods() {
    let (client, store) = connect().await;
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    assert_eq!(client.add(u64::MAX, 2).await.unwrap(), 1);
    assert_eq!(client.fixed().await.unwrap(), 42);

    assert_eq!(store.pings.load(Ordering::SeqCst), 0);
    client.ping().await.unwrap();
    client.ping().await.unwrap();
    assert_eq!(
        store.pings.load(Ordering::SeqCst),
        2,
        "each ping ran once on the server"
    );

    // A client with other options shares the connection.
    let timed = client.with_options(CallOptions::timeout(std::time::Duration::from_secs(5)));
    assert_eq!(timed.add(40, 2).await.unwrap(), 42);
    assert!(client.client().is_open());
}

#[tokio::test]
async fn unknown_method_is_unimplemented_and_the_connection_survives() {
    let (client, _store) = connect().await;
    let err = client
        .client()
        .call(0xdead_beef, Body::default(), CallOptions::default())
        .await
        .expect_err("no such method");
    match &err {
        CallError::Status(s) => assert_eq!(s.code, Code::UNIMPLEMENTED, "{s}"),
        other => panic!("expected an UNIMPLEMENTED status, got {other:?}"),
    }
    assert_eq!(err.code(), Code::UNIMPLEMENTED);

    assert_eq!(
        client.add(1, 1).await.unwrap(),
        2,
        "connection still usable"
    );
}

#[tokio::test]
async fn malformed_requests_are_invalid_arguments_naming_the_method() {
    let (client, _store) = connect().await;
    let raw = client.client();

    // `put` needs one attachment.
    let no_attachment = Body::message(rpc_core::codec::encode(&("k",)).unwrap());
    let err = raw
        .call(StoreClient::PUT, no_attachment, CallOptions::default())
        .await
        .unwrap_err();
    let status = err.status().expect("a status from the server").clone();
    assert_eq!(status.code, Code::INVALID_ARGUMENT);
    assert!(
        status.message.contains("Store/put"),
        "message names the method: {status}"
    );

    // `add` needs two u64s; one is not enough, garbage is not a u64.
    for message in [
        rpc_core::codec::encode(&(1u64,)).unwrap(),
        Bytes::from_static(&[0xff; 3]),
    ] {
        let err = raw
            .call(
                StoreClient::ADD,
                Body::message(message),
                CallOptions::default(),
            )
            .await
            .unwrap_err();
        let status = err.status().expect("a status from the server");
        assert_eq!(status.code, Code::INVALID_ARGUMENT);
        assert!(
            status.message.contains("Store/add"),
            "message names the method: {status}"
        );
    }

    assert_eq!(client.fixed().await.unwrap(), 42, "connection still usable");
}

/// The dispatcher on its own, without a connection: what the generated `Service::call`
/// answers for each kind of request.
#[tokio::test]
async fn dispatch_without_a_transport() {
    let server = StoreServer::new(MemStore::default());
    let request = ServerRequest::new;

    let args = rpc_core::codec::encode(&(20u64, 22u64)).unwrap();
    let reply = server
        .call(request(StoreClient::ADD, Body::message(args)))
        .await
        .unwrap();
    assert_eq!(rpc_core::codec::decode::<u64>(&reply.message).unwrap(), 42);
    assert!(reply.attachments.is_empty());

    let reply = server
        .call(request(StoreClient::PING, Body::default()))
        .await
        .unwrap();
    assert_eq!(reply, Body::default(), "unit reply is an empty body");

    let args = rpc_core::codec::encode(&("nope",)).unwrap();
    let status = server
        .call(request(StoreClient::GET, Body::message(args)))
        .await
        .unwrap_err();
    assert_eq!(status.code, Code::APPLICATION);
    assert_eq!(
        rpc_core::codec::decode::<StoreError>(&status.details).unwrap(),
        StoreError::NotFound("nope".into())
    );

    let echo = Body::new(Bytes::new(), vec![Payload::from(b"xyz".to_vec())]);
    let reply = server.call(request(StoreClient::ECHO, echo)).await.unwrap();
    assert!(reply.message.is_empty());
    assert_eq!(reply.attachments, vec![Payload::from(b"xyz".to_vec())]);

    let two = Body::new(
        Bytes::new(),
        vec![Payload::from(b"a".to_vec()), Payload::from(b"b".to_vec())],
    );
    let status = server
        .call(request(StoreClient::ECHO, two))
        .await
        .unwrap_err();
    assert_eq!(status.code, Code::INVALID_ARGUMENT);
    assert!(status.message.contains("Store/echo"), "{status}");

    let status = server
        .call(request(0xdead_beef, Body::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code, Code::UNIMPLEMENTED);
}

#[rpc_core::service]
pub trait Elsewhere {
    async fn missing(&self, n: u64) -> u64;
}

#[tokio::test]
async fn an_unknown_method_error_names_the_path_the_client_asked_for() {
    let (client, _store) = connect().await;
    let other = ElsewhereClient::new(client.client().clone());
    let err = other.missing(1).await.unwrap_err();
    assert_eq!(err.code(), Code::UNIMPLEMENTED);
    assert!(err.to_string().contains("Elsewhere/missing: unknown method id"), "{err}");
}
