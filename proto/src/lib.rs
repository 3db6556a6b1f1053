//! zcrpc's `.proto` schemas, compiled with prost (`bytes` fields as `Bytes`).
//!
//! ```
//! use zcrpc_proto::blob::PutRequest;
//! use prost::Message;
//! let req = PutRequest { key: "k".into(), data: bytes::Bytes::from_static(b"data") };
//! let wire = req.encode_to_vec();
//! assert_eq!(PutRequest::decode(&wire[..]).unwrap(), req);
//! ```
#![forbid(unsafe_code)]

/// `zcrpc.blob`: put/get of named blobs.
#[allow(missing_docs, clippy::all)]
pub mod blob {
    include!(concat!(env!("OUT_DIR"), "/zcrpc.blob.rs"));
}
