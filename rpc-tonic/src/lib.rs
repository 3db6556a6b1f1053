//! # rpc-tonic: tonic services and clients over zcrpc
//!
//! Keep every line of a tonic service and of its client; change the channel and the serve
//! call.
//!
//! - **Level 1, [`io`]:** tonic's own HTTP/2 over zcrpc's io_uring transport
//!   (`transport_uring`). A connector for `Endpoint::connect_with_connector` and an incoming
//!   stream for `Server::serve_with_incoming`; the wire stays ordinary gRPC, so either side
//!   talks to any gRPC peer. h2's writes reach the engine vectored (frame headers and data
//!   payloads as they are, one send per write), and a peer that stops reading holds the
//!   writer back.
//! - **[`interop`]:** the gRPC interoperability suite as a test kit (`grpc.testing`'s
//!   `TestService`, its server, the 14 client cases, a harness parameterized by how a level
//!   serves and connects). `tests/interop_plain.rs` runs it over plain tonic,
//!   `tests/interop_level1.rs` over level 1 (both sides, and each side against plain tonic).
//!
//! The two lines that change for level 1:
//!
//! ```
//! use rpc_tonic::interop::proto::{test_service_client::TestServiceClient, Empty};
//! use rpc_tonic::interop::TestServer;
//! use rpc_tonic::io::{UringConnector, UringIncoming};
//! use tonic::transport::{Endpoint, Server};
//! use transport_uring::UringConfig;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = TestServer::new().into_service(); // any tonic-generated server
//! let incoming = UringIncoming::bind("127.0.0.1:0", UringConfig::default()).await.unwrap();
//! let addr = incoming.local_addr().unwrap();
//! tokio::spawn(
//!     Server::builder()
//!         .add_service(service)
//!         .serve_with_incoming(incoming), // was .serve(addr)
//! );
//!
//! let channel = Endpoint::from_shared(format!("http://{addr}"))
//!     .unwrap()
//!     .connect_with_connector(UringConnector::new(UringConfig::default())) // was .connect()
//!     .await
//!     .unwrap();
//! let mut client = TestServiceClient::new(channel);
//! client.empty_call(Empty {}).await.unwrap();
//! # });
//! ```
//!
//! `UringConfig` chooses the backend (io_uring where the kernel has it, else `MSG_ZEROCOPY`,
//! else plain writes, logged), the receive mode and the socket options, as for zcrpc's own
//! connections. Level 1 is Linux only (the rest of the crate is not).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod interop;
#[cfg(target_os = "linux")]
pub mod io;
