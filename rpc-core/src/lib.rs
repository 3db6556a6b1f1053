//! # rpc-core: the zcrpc framework, portable part
//!
//! zcrpc is an RPC framework whose large payloads travel without a copy in user space. This
//! crate holds everything that is not Linux-specific:
//!
//! - [`frame`]: the wire protocol (`docs/wire.md`), one file per frame kind, pure
//!   `encode`/`decode`;
//! - [`conn`]: the connection state machine, sans IO — bytes and time in, transmits and
//!   events out;
//! - [`Client`] and [`Server`]: the async faces, over any [`transport::Transport`];
//! - [`Payload`]: attachments sent by scatter-gather as they are, received as slices of the
//!   receive buffer;
//! - [`codec`]: serde (postcard) and prost for the typed part of calls;
//! - [`transport::tcp`], [`transport::unix`] (Unix-domain sockets, same host; [`Client::connect_unix`])
//!   and [`transport::mem`]; the io_uring zero-copy transport lives in the `transport-uring` crate;
//! - `transport::tls` (feature `tls`, on by default): TLS 1.3 and mutual TLS over tcp
//!   (`Client::connect_tls`), the client's verified identity in [`Peer::tls`], and
//!   [`ServerBuilder::authorize`] to refuse calls per method.
//! - `tower` (feature `tower`): the client as a `tower::Service`, a client balanced over
//!   several servers, tower layers on the server (`ServerBuilder::layer`).
//!
//! ```
//! use rpc_core::{service, Client, ClientConfig, Payload, Server};
//!
//! #[service]
//! pub trait Blobs {
//!     async fn reverse(&self, data: Payload) -> Payload;
//!     async fn add(&self, a: u64, b: u64) -> u64;
//! }
//!
//! struct Impl;
//! impl Blobs for Impl {
//!     async fn reverse(&self, data: Payload) -> Payload {
//!         let mut v = data.to_bytes().to_vec();
//!         v.reverse();
//!         Payload::from(v)
//!     }
//!     async fn add(&self, a: u64, b: u64) -> u64 { a + b }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (a, b) = rpc_core::transport::mem::pair();
//! tokio::spawn(Server::builder().build(BlobsServer::new(Impl)).serve_connection(b));
//! let client = BlobsClient::new(Client::connect(a, ClientConfig::default()).await.unwrap());
//! assert_eq!(client.add(2, 3).await.unwrap(), 5);
//! let back = client.reverse(Payload::from(vec![1u8, 2, 3])).await.unwrap();
//! assert_eq!(&back.to_bytes()[..], &[3, 2, 1]);
//! # });
//! ```
//!
//! # What `#[service]` generates
//!
//! For a trait `Store`, [`#[service]`](macro@service) generates (its page has every detail and rule):
//!
//! - `StoreClient`: `StoreClient::new(client)` over a connected [`Client`], one `async fn` per
//!   method, `with_options(CallOptions)` for a client whose calls carry a deadline or headers,
//!   and `client()` for the [`Client`] underneath (its [`stats`](Client::stats),
//!   [`close`](Client::close), raw calls with [`open`](Client::open));
//! - the method ids and paths as constants: `StoreClient::PUT` (the [`method_id`] of the
//!   path), `StoreClient::PUT_PATH` (`"Store/put"`), `METHODS` and `PATHS` (all of them), and
//!   `path_of(id)`;
//! - for a streaming method (one taking a [`Sink`] or a [`Source`]: the next example), a
//!   client method that returns the call's ends: a `Source<T>` of the answers (server
//!   streaming), a `Sink<T>` and a future of the one answer (client streaming), or a `Sink`
//!   and a `Source` (bidirectional);
//! - `StoreServer<S>`: `StoreServer::new(imp)` (or `from_arc`), the [`Service`] that a
//!   [`Server`] runs: [`ServerBuilder::build`];
//! - the trait itself, implemented with plain `async fn`s.
//!
//! A call returns `Result<R, CallError>`; for a method returning `Result<T, E>` that is
//! `Result<Result<T, E>, CallError>`: the outer error says the call failed (connection lost,
//! deadline passed, a status from the server), the inner one is your application's answer.
//! `??` unpacks both into a `Box<dyn std::error::Error>` when `E` implements
//! [`std::error::Error`] (here with `thiserror`); `E` travels with the codec, so it is also
//! `Serialize + Deserialize` for postcard.
//!
//! ```
//! use std::time::Duration;
//! use rpc_core::{service, CallOptions, Client, ClientConfig, Payload, Server};
//!
//! #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
//! pub enum StoreError {
//!     #[error("no such key: {0}")]
//!     NotFound(String),
//! }
//!
//! #[service]
//! pub trait Store {
//!     async fn put(&self, key: String, data: Payload) -> Result<u64, StoreError>;
//!     async fn get(&self, key: String) -> Result<Payload, StoreError>;
//! }
//!
//! #[derive(Default)]
//! struct MemStore(std::sync::Mutex<std::collections::HashMap<String, Payload>>);
//!
//! impl Store for MemStore {
//!     async fn put(&self, key: String, data: Payload) -> Result<u64, StoreError> {
//!         let len = data.len() as u64;
//!         self.0.lock().unwrap().insert(key, data);
//!         Ok(len)
//!     }
//!     async fn get(&self, key: String) -> Result<Payload, StoreError> {
//!         self.0.lock().unwrap().get(&key).cloned().ok_or(StoreError::NotFound(key))
//!     }
//! }
//!
//! async fn run(store: StoreClient) -> Result<(), Box<dyn std::error::Error>> {
//!     // `??`: the first `?` is the call (CallError), the second your answer (StoreError).
//!     let stored = store.put("weights".into(), Payload::from(vec![7u8; 1 << 16])).await??;
//!     assert_eq!(stored, 1 << 16);
//!
//!     // The two levels apart: the call went through, the answer is an error.
//!     match store.get("missing".into()).await {
//!         Ok(Ok(blob)) => println!("{} bytes", blob.len()),
//!         Ok(Err(StoreError::NotFound(key))) => println!("not found: {key}"),
//!         Err(e) => return Err(e.into()), // CallError: the call itself failed
//!     }
//!
//!     // Other options for some calls: a deadline here.
//!     let quick = store.with_options(CallOptions::timeout(Duration::from_secs(1)));
//!     let blob = quick.get("weights".into()).await??;
//!     assert_eq!(blob.len(), 1 << 16);
//!
//!     // The ids and paths the macro computed, and the connection underneath.
//!     assert_eq!(StoreClient::PUT_PATH, "Store/put");
//!     assert_eq!(StoreClient::PUT, rpc_core::method_id("Store/put"));
//!     assert_eq!(StoreClient::path_of(StoreClient::GET), Some("Store/get"));
//!     println!("{}", store.client().stats());
//!     Ok(())
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (a, b) = rpc_core::transport::mem::pair();
//! let server = Server::builder().build(StoreServer::new(MemStore::default()));
//! tokio::spawn(server.serve_connection(b));
//! let client = Client::connect(a, ClientConfig::default()).await.unwrap();
//! run(StoreClient::new(client)).await.unwrap();
//! # });
//! ```
//!
//! One server serves several services when each is added with
//! [`ServerBuilder::add_service`]: `Server::builder().add_service(a).add_service(b).try_build()?`
//! routes each call by its method id ([`Service::methods`]) and refuses, with a
//! [`RouteError`], two services claiming one method.
//!
//! A method taking a [`Sink`] streams its answers; one taking a [`Source`] reads a stream of
//! requests (both: bidirectional). Each method also has a path, which names it in errors and
//! hashes into its id ([`method_id`]):
//!
//! ```
//! use rpc_core::{service, Client, ClientConfig, Payload, Server, Sink, Source};
//!
//! #[service(package = "demo.v1")]
//! pub trait Counter {
//!     /// Server streaming: the numbers below `n`, each with its bytes attached.
//!     async fn count(&self, n: u32, out: Sink<u32>);
//!     /// Client streaming: the sum of the numbers sent.
//!     async fn sum(&self, numbers: Source<u32>) -> u64;
//! }
//!
//! struct Impl;
//! impl Counter for Impl {
//!     async fn count(&self, n: u32, mut out: Sink<u32>) {
//!         for i in 0..n {
//!             let bytes = Payload::from(i.to_le_bytes().to_vec());
//!             if out.send_with(i, vec![bytes]).await.is_err() {
//!                 return; // the client went away
//!             }
//!         }
//!     }
//!     async fn sum(&self, mut numbers: Source<u32>) -> u64 {
//!         let mut total = 0;
//!         while let Some(Ok(n)) = numbers.recv().await {
//!             total += u64::from(n);
//!         }
//!         total
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (a, b) = rpc_core::transport::mem::pair();
//! tokio::spawn(Server::builder().build(CounterServer::new(Impl)).serve_connection(b));
//! let client = CounterClient::new(Client::connect(a, ClientConfig::default()).await.unwrap());
//!
//! let mut numbers = client.count(3).await.unwrap();
//! while let Some(item) = numbers.recv_with().await {
//!     let (n, attachments) = item.unwrap();
//!     assert_eq!(&attachments[0].to_bytes()[..], &n.to_le_bytes());
//! }
//!
//! let (mut numbers, total) = client.sum().await.unwrap();
//! for n in [1, 2, 3] {
//!     numbers.send(n).await.unwrap();
//! }
//! numbers.finish();
//! assert_eq!(total.await.unwrap(), 6);
//!
//! assert_eq!(CounterClient::SUM_PATH, "demo.v1.Counter/sum");
//! assert_eq!(CounterClient::SUM, rpc_core::method_id("demo.v1.Counter/sum"));
//! # });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod budget;
mod call_map;
mod client;
mod code;
pub mod codec;
pub mod conn;
mod driver;
mod error;
mod file_receiver;
mod file_region;
mod identity;
mod jitter;
pub mod frame;
mod metadata;
mod method;
mod payload;
mod response_metadata;
mod server;
mod service;
mod stats;
mod stream;
mod transmit;
mod unwind;
pub mod transport;
#[cfg(feature = "tower")]
pub mod tower;

pub use body::Body;
pub use call_map::IdHasher;
pub use bytes::Bytes;
pub use client::{CallOptions, Client, ClientConfig, Reconnect, Reply};
pub use code::Code;
pub use identity::TlsIdentity;
pub use error::{CallError, ConnectError, ConnectionError, DecodeError, Status};
pub use metadata::{Metadata, MetadataError};
pub use file_receiver::{FileReceiver, ReceiveError};
pub use file_region::FileRegion;
pub use payload::{ExternalSegment, Payload, Segment};
pub use rpc_macros::service;
pub use server::{CallInfo, Responder, RouteError, Server, ServerBuilder, ServerHandle};
pub use frame::CallMode;
pub use method::method_id;
pub use response_metadata::ResponseMetadata;
pub use service::{BoxFuture, CallContext, Peer, ServerRequest, Service};
pub use driver::WriterTurn;
pub use stream::{CallStream, ItemWith, MessageRef, Sink, Source, StreamReceiver, StreamSender};
pub use stats::{StatsSnapshot, TransportStats, STATS_TARGET};
pub use transmit::Transmit;
