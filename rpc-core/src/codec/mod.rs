//! Codecs for the typed part of a call (arguments and results); attachments bypass them.
//!
//! The serde codec is [postcard]: a compact, varint-based binary format with a documented,
//! frozen wire spec (postcard 1.0), actively maintained, no schema needed, and fast for the
//! small argument structs RPC sends. (bincode, the usual alternative, is no longer maintained.)
//! The prost codec serves `.proto` messages; [`Protobuf`], the codec of services generated from
//! `.proto` files, also sends their attachment fields out of band ([`protobuf`]).

pub mod prost;
pub mod protobuf;

pub use protobuf::{ProtoMessage, Protobuf};

use bytes::Bytes;

use crate::body::Body;
use crate::payload::Payload;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encoding or decoding a message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// A way of putting the typed part of calls (arguments, results, application errors) into
/// bytes. `#[service]` uses [`Postcard`] unless told otherwise (`#[service(codec = Prost)]`);
/// what a codec can carry is said by its [`Encode`] and [`Decode`] implementations.
pub trait Codec: Send + Sync + 'static {
    /// The codec's name, for error messages.
    const NAME: &'static str;
}

/// A codec that can encode a `T`.
pub trait Encode<T: ?Sized>: Codec {
    /// Encodes `value` into a message.
    fn encode(value: &T) -> Result<Bytes, CodecError>;

    /// Encodes `value` into a body: its message and attachments, followed by `extra`
    /// attachments. A codec that sends parts of a value out of band ([`Protobuf`]'s attachment
    /// fields) puts them first; the default is [`Encode::encode`]'s message and `extra`.
    fn encode_body(value: &T, extra: Vec<Payload>) -> Result<Body, CodecError> {
        Ok(Body { message: Self::encode(value)?, attachments: extra })
    }
}

/// A codec that can decode a `T`.
pub trait Decode<T>: Codec {
    /// Decodes a message. `bytes` is a slice of the receive buffer: a codec may hand out parts
    /// of it without copying (prost `bytes` fields generated as `Bytes`).
    fn decode(bytes: Bytes) -> Result<T, CodecError>;

    /// Decodes a body: the value, and the attachments it did not take, in order. The default
    /// decodes the message with [`Decode::decode`] and takes none.
    fn decode_body(body: Body) -> Result<(T, Vec<Payload>), CodecError> {
        Ok((Self::decode(body.message)?, body.attachments))
    }
}

/// The serde codec: [postcard] 1.0. Compact (varints), a frozen wire spec, no schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Postcard;

impl Codec for Postcard {
    const NAME: &'static str = "postcard";
}

impl<T: Serialize + ?Sized> Encode<T> for Postcard {
    fn encode(value: &T) -> Result<Bytes, CodecError> {
        postcard::to_stdvec(value).map(Bytes::from).map_err(|e| CodecError(format!("encode: {e}")))
    }
}

impl<T: DeserializeOwned> Decode<T> for Postcard {
    fn decode(bytes: Bytes) -> Result<T, CodecError> {
        decode(&bytes)
    }
}

/// The protobuf codec: [prost] messages (a method then takes one message and returns one;
/// `()` is the empty message). Decoding from `Bytes` keeps `bytes` fields generated as `Bytes`
/// slices of the receive buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prost;

impl Codec for Prost {
    const NAME: &'static str = "prost";
}

impl<M: ::prost::Message> Encode<M> for Prost {
    fn encode(value: &M) -> Result<Bytes, CodecError> {
        Ok(prost::encode(value))
    }
}

impl<M: ::prost::Message + Default> Decode<M> for Prost {
    fn decode(bytes: Bytes) -> Result<M, CodecError> {
        prost::decode(bytes)
    }
}

/// Encodes a value with the serde codec (postcard): [`Postcard`]'s [`Encode`].
///
/// ```
/// let b = rpc_core::codec::encode(&(1u32, "two")).unwrap();
/// let (n, s): (u32, String) = rpc_core::codec::decode(&b).unwrap();
/// assert_eq!((n, s.as_str()), (1, "two"));
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    <Postcard as Encode<T>>::encode(value)
}

/// Decodes a value with the serde codec (postcard). Trailing bytes are an error: a message
/// that is longer than its type is not the message we think it is.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| CodecError(format!("decode: {e}")))?;
    if !rest.is_empty() {
        return Err(CodecError(format!("decode: {} trailing bytes", rest.len())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Args {
        key: String,
        n: u64,
    }

    #[test]
    fn round_trip() {
        let a = Args { key: "k".into(), n: 300 };
        let b = encode(&a).unwrap();
        assert_eq!(b.len(), 1 + 1 + 2, "postcard varints keep small messages small");
        assert_eq!(decode::<Args>(&b).unwrap(), a);
    }

    #[test]
    fn one_value_encodes_as_its_one_tuple_so_single_argument_messages_keep_their_bytes() {
        let a = Args { key: "k".into(), n: 300 };
        assert_eq!(<Postcard as Encode<Args>>::encode(&a).unwrap(), encode(&(&a,)).unwrap());
        assert_eq!(<Postcard as Encode<()>>::encode(&()).unwrap().len(), 0);
        assert_eq!(<Postcard as Decode<Args>>::decode(encode(&a).unwrap()).unwrap(), a);
    }

    #[test]
    fn truncated_and_trailing_fail() {
        let b = encode(&Args { key: "key".into(), n: 1 }).unwrap();
        assert!(decode::<Args>(&b[..b.len() - 1]).is_err());
        let mut long = b.to_vec();
        long.push(0);
        assert!(decode::<Args>(&long).unwrap_err().0.contains("trailing"));
    }
}
