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
//! - [`transport::tcp`] and [`transport::mem`]; the io_uring zero-copy transport lives in the
//!   `transport-uring` crate.
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
pub mod frame;
mod payload;
mod server;
mod service;
mod stats;
mod transmit;
mod unwind;
pub mod transport;

pub use body::Body;
pub use bytes::Bytes;
pub use client::{CallOptions, Client, ClientConfig, Reconnect};
pub use code::Code;
pub use error::{CallError, ConnectError, ConnectionError, DecodeError, Status};
pub use payload::{ExternalSegment, Payload, Segment};
pub use rpc_macros::service;
pub use server::{Server, ServerBuilder, ServerHandle};
pub use service::{BoxFuture, ServerRequest, Service};
pub use stats::{StatsSnapshot, TransportStats, STATS_TARGET};
pub use transmit::Transmit;
