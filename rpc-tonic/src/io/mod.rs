//! Level 1: tonic's HTTP/2 over the io_uring transport. A connector for
//! `Endpoint::connect_with_connector` ([`UringConnector`]) and an incoming stream for
//! `Server::serve_with_incoming` ([`UringIncoming`]); both make [`UringIo`]s, byte streams
//! over `transport_uring` whose writes take h2's slices as they are (see [`UringIo`]). The
//! wire is ordinary gRPC: either side talks to any gRPC peer.

mod connector;
mod incoming;
mod stream;

pub use connector::UringConnector;
pub use incoming::{UringIncoming, ACCEPT_BACKOFF, FIRST_BYTES_TIMEOUT, MAX_CONNECTIONS};
pub use stream::{IoStats, UringIo, MAX_WRITE, READ_CHUNK};
