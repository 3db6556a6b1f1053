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
//! - **Level 2, [`Channel`] and [`Server`]:** no HTTP/2 at all: each gRPC call a zcrpc call,
//!   each message a stream message (large ones as attachments), both ends zcrpc (below).
//!   `tests/level2.rs` and `tests/interop_level2.rs` (the 14 cases over TCP and io_uring).
//! - **[`interop`]:** the gRPC interoperability suite as a test kit (`grpc.testing`'s
//!   `TestService`, its server, the 14 client cases, a harness parameterized by how a level
//!   serves and connects). `tests/interop_plain.rs` runs it over plain tonic,
//!   `tests/interop_level1.rs` over level 1 (both sides, and each side against plain tonic).
//!
//! ## Level 1
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
//!
//! ## Level 2
//!
//! | tonic over HTTP/2 | over zcrpc (level 2, message level) |
//! |---|---|
//! | `Endpoint::from_shared(url)?.connect().await?` | [`Channel::connect_tcp`]`(addr).await?` |
//! | `Server::builder().add_service(svc).serve(addr).await?` | [`Server::builder`]`().add_service(svc).serve(TcpAcceptor::bind(addr).await?)` |
//!
//! No HTTP/2 is spoken: each gRPC call is a zcrpc call, its path its name, its headers its
//! metadata, `grpc-timeout` its deadline, its bodies' chunks as tonic's encoder yields them
//! (gRPC messages with their length prefixes) its stream messages, cut at message boundaries
//! into runs of small messages of up to 4,000 bytes and each large message alone (from 4 KiB
//! on an attachment: sent from tonic's own buffer and received as a slice of the receive
//! buffer, zero-copy where the transport does it), its trailers and `grpc-status` the call's
//! end. A stream of small messages costs the adapter next to nothing per message: tonic cuts
//! them out of the runs as it would out of HTTP/2's DATA frames. Both ends must be zcrpc: a plain gRPC client or server at the other end fails at
//! connect with a clear error.
//!
//! tonic encodes each message into a new buffer when its body is polled. Both ends poll a body
//! that has data ready only in the connection's turn ([`rpc_core::StreamSender::writer_turn`],
//! [`rpc_core::Client::writer_turn`]): once the writer has taken what was queued before, and
//! after every producer that asked before, as h2 polls a body only when its stream has window.
//! A window of large requests or answers is made as fast as it goes out, not all at once: at
//! most about two made messages wait for the socket, the allocator hands the next encoding a
//! warm buffer instead of fresh pages to fault in, and a small call beside a stream of large
//! messages gets its turn after the messages asked for before it. A call's deadline runs while
//! it waits. (A plain zcrpc call to a [`Server`] has no stream; its one answer is made without a
//! turn.)
//!
//! ```
//! # mod pb { tonic::include_proto!("zcrpc.echo"); }
//! use pb::echo_client::EchoClient;
//! use pb::echo_server::{Echo, EchoServer};
//! use pb::Blob;
//! use rpc_core::transport::tcp::TcpAcceptor;
//! use tonic::{Request, Response, Status, Streaming};
//!
//! struct Imp;
//! #[tonic::async_trait]
//! impl Echo for Imp {
//!     async fn unary(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
//!         Ok(Response::new(r.into_inner()))
//!     }
//!     # type ServerStreamStream = futures::stream::Empty<Result<Blob, Status>>;
//!     # async fn server_stream(&self, _: Request<Blob>) -> Result<Response<Self::ServerStreamStream>, Status> { Err(Status::unimplemented("")) }
//!     # async fn client_stream(&self, _: Request<Streaming<Blob>>) -> Result<Response<Blob>, Status> { Err(Status::unimplemented("")) }
//!     # type BidiStream = futures::stream::Empty<Result<Blob, Status>>;
//!     # async fn bidi(&self, _: Request<Streaming<Blob>>) -> Result<Response<Self::BidiStream>, Status> { Err(Status::unimplemented("")) }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
//! let addr = acceptor.local_addr().unwrap();
//! let _server = rpc_tonic::Server::builder().add_service(EchoServer::new(Imp)).serve(acceptor);
//!
//! let channel = rpc_tonic::Channel::connect_tcp(addr).await.unwrap();
//! let mut client = EchoClient::new(channel);
//! let reply = client.unary(Blob { data: vec![7u8; 1 << 20].into() }).await.unwrap();
//! assert_eq!(reply.into_inner().data.len(), 1 << 20);
//! # });
//! ```
//!
//! Other transports: [`Channel::from_client`] over any [`rpc_core::Client`] (io_uring with
//! `Client::connect_with(|| transport_uring::connect(addr, cfg))`, TLS, Unix sockets), and
//! [`Server::serve`] with any acceptor. Limits (frame size, calls in flight, metadata size,
//! memory) are zcrpc's: [`Server::with`] an [`rpc_core::ServerBuilder`], a [`rpc_core::ClientConfig`].
//! Request metadata over the server's limit (16 KiB by default) fails the call with
//! `RESOURCE_EXHAUSTED` before anything is sent.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod channel;
mod headers;
pub mod interop;
#[cfg(target_os = "linux")]
pub mod io;
mod message;
mod pace;
mod server;

pub use channel::{Channel, ResponseBody};
pub use server::{Routes, Server};
