//! # rpc-tarpc: tarpc services over zcrpc
//!
//! A `tarpc::Transport` whose requests travel over zcrpc: keep every line of a
//! `#[tarpc::service]` and its implementation, change the two lines that make the transports.
//!
//! | tarpc's own transport | over zcrpc |
//! |---|---|
//! | `tarpc::serde_transport::tcp::listen(addr, Bincode::default).await?` | [`listen`]`(addr).await?` |
//! | `tarpc::serde_transport::tcp::connect(addr, Bincode::default).await?` | [`connect`]`(addr).await?` |
//!
//! ## On the wire
//!
//! tarpc does its own request ids, deadlines and cancels; the transport carries its messages
//! two ways:
//!
//! - **Small requests** (under 64 KiB encoded) go as messages of one long-lived bidirectional
//!   zcrpc call per client transport, [`STREAM_PATH`] (`tarpc/stream`), opened at the first
//!   request: a request is one message (tagged with tarpc's request id), its response one
//!   message back, a cancel (the caller dropped its future) one message that makes the server
//!   drop the handler. A message on an open stream costs a fraction of a zcrpc call. Both
//!   ends queue at most 64 messages and send them as the peer's credit allows (the `Sink`s'
//!   `poll_ready` waits), so a side that stops reading holds the other back instead of
//!   making it buffer. The server accepts the stream by sending its response headers at once;
//!   until then (and with a server that does not know it, or that refuses it: at most 64
//!   are open on one connection) requests go as calls; after a refusal the next stream is
//!   tried 1 s later ([`STREAM_REST_FIRST`]), twice as long after each refusal in a row up to
//!   30 s, not at each request. A lost
//!   stream or connection fails the requests in flight on it with `ConnectionAborted`
//!   ("zcrpc: the tarpc stream the request went on was lost: ..."); the zcrpc client re-dials
//!   and the next request opens a new stream. A request or response on the stream whose
//!   id reads but whose message does not decode (a method of another version of the service, a
//!   type postcard cannot read) fails alone with an error saying so; a stream message that is
//!   not one at all (an unknown kind, no id, an id in flight already) ends that stream with
//!   `INVALID_ARGUMENT`.
//! - **Large requests** go as one zcrpc call each, [`CALL_PATH`] (`tarpc/call`): zcrpc
//!   multiplexes, bounds and cancels it, its deadline is the call's deadline, and a large
//!   message does not hold the small ones behind it.
//!
//! Either way the request's context (deadline and trace) travels before the message as tarpc's
//! serde transports send it, and tarpc's server enforces the deadline (its handler is dropped
//! when it passes). A deadline longer than two years is cut to two years: tarpc's server timers
//! panic past about 2.2, and a peer's deadline past the clock's range would panic as it is
//! read. Responses go back the way their request came, whatever their size.
//! Messages are serialized with postcard into
//! buffers each transport reuses once the messages in them are written out, and decoded in
//! the task of the tarpc channel or client that takes them; after a large one (64 KiB and up)
//! the transport yields, so that its taker runs (and drops it) before the next is decoded,
//! and the allocator hands warm memory back instead of faulting fresh pages in. Frames are
//! limited by zcrpc's `max_frame` (128 MiB by default, against 8 MiB for tarpc's
//! length-delimited codec); a request or response over the limit fails alone, with an
//! error that says so — the connection and the other calls carry on (tarpc issue #389: there
//! it is a bare disconnect).
//!
//! ```
//! use futures::StreamExt;
//! use tarpc::server::{BaseChannel, Channel};
//! use tarpc::{client, context};
//!
//! #[tarpc::service]
//! pub trait World {
//!     async fn hello(name: String) -> String;
//! }
//!
//! #[derive(Clone)]
//! struct HelloServer;
//! impl World for HelloServer {
//!     async fn hello(self, _: context::Context, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let listener = rpc_tarpc::listen("127.0.0.1:0").await.unwrap(); // was tarpc::serde_transport::tcp::listen
//! let addr = listener.local_addr().unwrap();
//! tokio::spawn(listener.filter_map(|r| async { r.ok() }).for_each(|transport| async {
//!     let serve = BaseChannel::with_defaults(transport).execute(HelloServer.serve());
//!     tokio::spawn(serve.for_each(|response| async { tokio::spawn(response); }));
//! }));
//!
//! let transport = rpc_tarpc::connect(addr).await.unwrap(); // was tarpc::serde_transport::tcp::connect
//! let client = WorldClient::new(client::Config::default(), transport).spawn();
//! assert_eq!(client.hello(context::current(), "zcrpc".into()).await.unwrap(), "Hello, zcrpc!");
//! # });
//! ```
//!
//! Other zcrpc transports (io_uring, TLS, Unix sockets) and limits: [`ClientTransport::new`]
//! over any [`rpc_core::Client`], [`Incoming::new`] over any acceptor and
//! [`rpc_core::ServerBuilder`]. On Linux, [`uring::listen`] and [`uring::connect`] are the same
//! two lines on zcrpc's io_uring engine, whose receiver is woken once per megabyte of a large
//! frame rather than per segment, which on loopback spares the sender's CPU (1 MiB answers, 8
//! in flight: 24–29% faster than over [`listen`] and [`connect`]'s tokio TCP). postcard does not describe itself: message types that need
//! `deserialize_any` (`#[serde(untagged)]`, `#[serde(flatten)]`, `serde_json::Value`) do not
//! decode.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod codec;
mod errors;
mod ids;
mod server;
#[cfg(target_os = "linux")]
pub mod uring;
mod wire;

pub use client::{ClientTransport, STREAM_REST_FIRST, STREAM_REST_MAX};
pub use server::{listen, Incoming, ServerTransport};

use rpc_core::{Client, ClientConfig, ConnectError};

/// The path of the zcrpc method that carries large tarpc requests, one call each (the request
/// enum says which method of the tarpc service).
pub const CALL_PATH: &str = "tarpc/call";
/// Its wire id. A call's message is the postcard of the request's `tarpc::context::Context`
/// (its deadline relative to the moment it was sent, its trace context) followed by the
/// postcard of the request; its reply, the postcard of the response.
pub const CALL: u32 = rpc_core::method_id(CALL_PATH);

/// The path of the bidirectional zcrpc streaming call that carries a client's small requests
/// (see the crate docs). The server accepts it by sending its response headers
/// (`tarpc-stream: 1`) at once, before any message.
pub const STREAM_PATH: &str = "tarpc/stream";
/// Its wire id. Each message of the client's stream is the postcard of one of: kind 0, a
/// request — its id (tarpc's, the client's), then the same bytes as a [`CALL`] message (the
/// context, then the request); kind 1, a cancel — the id of a request it sent. Each message of
/// the server's stream: kind 0, a response — the request's id, then the postcard of
/// `Result<Resp, tarpc::ServerError>`. Any other kind, a message whose kind and id do not
/// decode, or a request id already in flight on the stream ends the stream with an error; a
/// request or response whose rest does not decode fails alone (the server answers such a request
/// with an error).
pub const STREAM: u32 = rpc_core::method_id(STREAM_PATH);

/// The stream window [`client_config`] declares: the bytes of responses one connection's
/// server may have sent ahead of the tarpc client taking them.
pub const STREAM_WINDOW: u32 = 16 << 20;

/// The client settings [`connect`] uses: zcrpc's defaults, with a stream window of
/// [`STREAM_WINDOW`] (16 MiB, against zcrpc's 4). Every response to a small request comes back
/// on the one `tarpc/stream` call, whose window bounds the responses in flight: with 4 MiB, eight
/// concurrent calls answered with 1 MiB each would wait for one another's credit. The client
/// holds at most this much of responses its tarpc dispatch has not taken yet.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.conn.stream_window = config.conn.stream_window.max(STREAM_WINDOW);
    config
}

/// Connects over TCP to a zcrpc server made by [`listen`] (or [`Incoming::new`]), with
/// [`client_config`] (a 10 s connect timeout; it re-dials a lost connection; a 16 MiB stream
/// window), and returns the transport for a tarpc client.
///
/// # Errors
///
/// When no zcrpc server answers at `addr` within the connect timeout (the error names the
/// address).
pub async fn connect<Req, Resp>(addr: impl tokio::net::ToSocketAddrs) -> Result<ClientTransport<Req, Resp>, ConnectError> {
    connect_with(addr, client_config()).await
}

/// [`connect`] with other client settings (start from [`client_config`]).
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with<Req, Resp>(
    addr: impl tokio::net::ToSocketAddrs,
    config: ClientConfig,
) -> Result<ClientTransport<Req, Resp>, ConnectError> {
    Ok(ClientTransport::new(Client::connect_tcp(addr, config).await?))
}

