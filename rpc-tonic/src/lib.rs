//! # rpc-tonic: tonic services and clients over zcrpc
//!
//! Keep every line of a tonic service and its client; change the channel and the serve
//! call.
//!
//! - [`interop`]: the gRPC interoperability suite as a test kit (the `TestService`, its server,
//!   the client cases, a harness parameterized by how a level serves and connects).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod interop;
pub mod io;
