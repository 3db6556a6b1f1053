//! tower (feature `tower`): the client as a `tower::Service`, a client balanced over several
//! servers, and tower layers around a server's services.
//!
//! - [`Call`]: one unary call as a tower request (method id or path, body, options); a
//!   [`Client`](crate::Client) is a `tower::Service<Call>` answering the reply's
//!   [`Body`](crate::Body), so `tower::timeout`, `tower::limit`, `tower::retry` (with
//!   [`RetryPolicy`]) and the rest wrap it;
//! - [`Balanced`]: calls spread over several servers by `tower::balance::p2c` with
//!   `PendingRequests` as the load, from a static list or a `tower::discover::Change`
//!   stream; a server that goes away leaves the choice at once;
//! - [`ServerBuilder::layer`](crate::ServerBuilder::layer): tower layers (auth, logging,
//!   limits) around the services a server runs, which are `tower::Service<ServerRequest>`s
//!   ([`Handler`]); [`TowerService`] serves any such tower service.
//!
//! Unary calls only: a streaming call ([`Client::open`](crate::Client::open)) keeps its own
//! API.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use rpc_core::tower::{Call, RetryPolicy};
//! use rpc_core::{service, Body, Client, ClientConfig, Server};
//!
//! #[service]
//! pub trait Greeter {
//!     async fn hello(&self, name: String) -> String;
//! }
//! struct G;
//! impl Greeter for G {
//!     async fn hello(&self, name: String) -> String { format!("hello {name}") }
//! }
//!
//! // Server: a layer around the service (here: tower's concurrency limit).
//! let server = Server::builder()
//!     .layer(tower::limit::ConcurrencyLimitLayer::new(100))
//!     .build(GreeterServer::new(G));
//! let (a, b) = rpc_core::transport::mem::pair();
//! tokio::spawn(server.serve_connection(b));
//!
//! // Client: timeouts and retries from tower.
//! let client = Client::connect(a, ClientConfig::default()).await.unwrap();
//! let mut svc = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(5))
//!     .retry(RetryPolicy::new(3))
//!     .service(client);
//! let request = rpc_core::codec::encode("world").unwrap(); // one argument: encoded as it is
//! let call = Call::path(GreeterClient::HELLO_PATH, Body::message(request));
//! let reply = svc.ready().await.unwrap().call(call).await.unwrap();
//! let answer: String = rpc_core::codec::decode(&reply.message).unwrap();
//! assert_eq!(answer, "hello world");
//! # });
//! ```

mod balance;
mod call;
mod layer;
mod retry;

pub use balance::Balanced;
pub use call::Call;
pub use layer::{Handler, TowerService};
pub(crate) use layer::{layer_fn, LayerFn};
pub use retry::{retryable, RetryPolicy};
