//! Codecs for the typed part of a call (arguments and results); attachments bypass them.
//!
//! The serde codec is [postcard]: a compact, varint-based binary format with a documented,
//! frozen wire spec (postcard 1.0), actively maintained, no schema needed, and fast for the
//! small argument structs RPC sends. (bincode, the usual alternative, is no longer maintained.)
//! The prost codec serves `.proto` messages.

pub mod prost;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encoding or decoding a message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Encodes a value with the serde codec (postcard).
///
/// ```
/// let b = rpc_core::codec::encode(&(1u32, "two")).unwrap();
/// let (n, s): (u32, String) = rpc_core::codec::decode(&b).unwrap();
/// assert_eq!((n, s.as_str()), (1, "two"));
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, CodecError> {
    postcard::to_stdvec(value).map(Bytes::from).map_err(|e| CodecError(format!("encode: {e}")))
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
    fn truncated_and_trailing_fail() {
        let b = encode(&Args { key: "key".into(), n: 1 }).unwrap();
        assert!(decode::<Args>(&b[..b.len() - 1]).is_err());
        let mut long = b.to_vec();
        long.push(0);
        assert!(decode::<Args>(&long).unwrap_err().0.contains("trailing"));
    }
}
