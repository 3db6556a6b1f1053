//! # rpc-tonic: tonic services and clients over zcrpc
//!
//! Keep every line of a tonic service and its client — the `.proto`, the code tonic generates,
//! the implementation, the calls — and change the channel and the serve call. Two levels:
//!
//! - [`io`] (level 1, byte stream): tonic's own HTTP/2 over the io_uring transport; talks to
//!   any gRPC peer.
//! - [`Channel`] and [`Server`] (level 2, message level): no HTTP/2 at all, both ends zcrpc.
//! - [`interop`]: the gRPC interoperability suite as a test kit (the `TestService`, its server,
//!   the client cases, a harness parameterized by how a level serves and connects).
//!
//! ## Level 2
//!
//! | tonic over HTTP/2 | over zcrpc (level 2, message level) |
//! |---|---|
//! | `Endpoint::from_shared(url)?.connect().await?` | [`Channel::connect_tcp`]`(addr).await?` |
//! | `Server::builder().add_service(svc).serve(addr).await?` | [`Server::builder`]`().add_service(svc).serve(TcpAcceptor::bind(addr).await?)` |
//!
//! No HTTP/2 is spoken: each gRPC call is a zcrpc call, its path its name, its headers its
//! metadata, `grpc-timeout` its deadline, each gRPC message one stream message (from 4 KiB on
//! an attachment: sent from tonic's own buffer and received as a slice of the receive buffer,
//! zero-copy where the transport does it), its trailers and `grpc-status` the call's end. Both
//! ends must be zcrpc: a plain gRPC client or server at the other end fails at connect with a
//! clear error.
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
pub mod io;
mod message;
mod server;

pub use channel::{Channel, ResponseBody};
pub use server::{Routes, Server};
