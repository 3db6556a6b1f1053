//! Codecs for the typed part of a call (arguments and results); attachments bypass them.
//!
//! The serde codec is [postcard]: a compact, varint-based binary format with a documented,
//! frozen wire spec (postcard 1.0), actively maintained, no schema needed, and fast for the
//! small argument structs RPC sends. (bincode, the usual alternative, is no longer maintained.)
//! The prost codec serves `.proto` messages; [`Protobuf`], the codec of services generated from
//! `.proto` files, also sends their attachment fields out of band ([`protobuf`]).

mod buffer;
pub mod prost;
pub mod protobuf;

pub use buffer::{EncodeBuffer, SHARED_MAX};
pub use protobuf::{ProtoMessage, Protobuf};

use bytes::buf::Take;
use bytes::{Buf, Bytes, BytesMut};

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

    /// [`Encode::encode_body`], the message written into `buf` when it is small (at most
    /// [`SHARED_MAX`] bytes) and split off it, sharing its allocation with the messages before
    /// and after it: what a typed stream's [`Sink`](crate::Sink) sends, without an allocation
    /// per message. The default ignores `buf`; the codecs of this crate use it.
    fn encode_body_in(value: &T, extra: Vec<Payload>, buf: &mut EncodeBuffer) -> Result<Body, CodecError> {
        let _ = buf;
        Self::encode_body(value, extra)
    }

    /// Encodes `value` for a run of small messages: when it goes as a message alone (no
    /// attachments) of at most `max` bytes, the message is appended to `packed`, after the run's
    /// messages before it (`Ok(None)`); otherwise its body, as [`Encode::encode_body_in`] makes
    /// it, and `packed` as it was. What a typed stream's [`Sink::send_all`](crate::Sink::send_all)
    /// sends: the connection copies each packed message into its frames from where it lies,
    /// with no `Bytes` made for it. The default appends a copy of `encode_body_in`'s message;
    /// the codecs of this crate encode into `packed` directly.
    fn encode_packed(value: &T, packed: &mut BytesMut, max: usize, buf: &mut EncodeBuffer) -> Result<Option<Body>, CodecError> {
        let body = Self::encode_body_in(value, Vec::new(), buf)?;
        if body.attachments.is_empty() && body.message.len() <= max {
            packed.extend_from_slice(&body.message);
            return Ok(None);
        }
        Ok(Some(body))
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

    /// Decodes a message without attachments that lies in a larger buffer (a batch of small
    /// stream messages): `message` reads exactly its bytes there. A codec that keeps parts of
    /// the message (prost `bytes` fields) takes them as slices of that buffer, so the message
    /// costs no `Bytes` of its own. The default cuts it out and calls [`Decode::decode`].
    fn decode_in(mut message: Take<&mut Bytes>) -> Result<T, CodecError> {
        let len = message.remaining();
        Self::decode(message.copy_to_bytes(len))
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

    fn encode_body_in(value: &T, extra: Vec<Payload>, buf: &mut EncodeBuffer) -> Result<Body, CodecError> {
        // One pass into the room the buffer has: postcard learns the size by writing. An item
        // over SHARED_MAX is then written again in full (`Serialize` reads `&self`: the same
        // bytes both times).
        match postcard_into(value, buf.room(SHARED_MAX), SHARED_MAX) {
            Ok(true) => Ok(Body { message: buf.split(), attachments: extra }),
            Ok(false) => {
                buf.discard();
                Self::encode_body(value, extra)
            }
            Err(e) => {
                buf.discard();
                Err(CodecError(format!("encode: {e}")))
            }
        }
    }

    fn encode_packed(value: &T, packed: &mut BytesMut, max: usize, buf: &mut EncodeBuffer) -> Result<Option<Body>, CodecError> {
        let start = packed.len();
        packed.reserve(max);
        match postcard_into(value, packed, max) {
            Ok(true) => Ok(None),
            Ok(false) => {
                packed.truncate(start);
                Self::encode_body_in(value, Vec::new(), buf).map(Some)
            }
            Err(e) => {
                packed.truncate(start);
                Err(CodecError(format!("encode: {e}")))
            }
        }
    }
}

/// Writes `value` in postcard at the end of `out`, in at most `max` more bytes:
/// `Ok(false)` when the message did not fit (the part written is left for the caller to cut
/// off). With room for `max` more bytes, `out` never grows. The error is postcard's own, for
/// the caller to say what failed to encode.
pub fn postcard_into<T: Serialize + ?Sized>(value: &T, out: &mut BytesMut, max: usize) -> Result<bool, postcard::Error> {
    let limit = out.len().saturating_add(max);
    match postcard::serialize_with_flavor(value, Bounded { buf: out, limit }) {
        Ok(()) => Ok(true),
        Err(postcard::Error::SerializeBufferFull) => Ok(false),
        Err(e) => Err(e),
    }
}

/// postcard's output into a `BytesMut`'s spare room, up to `limit` bytes in all: past it,
/// `SerializeBufferFull`.
struct Bounded<'a> {
    buf: &'a mut BytesMut,
    limit: usize,
}

impl postcard::ser_flavors::Flavor for Bounded<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.buf.len() >= self.limit {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.extend_from_slice(&[data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() > self.limit - self.buf.len() {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl<T: DeserializeOwned> Decode<T> for Postcard {
    fn decode(bytes: Bytes) -> Result<T, CodecError> {
        decode(&bytes)
    }

    /// Read where it lies: postcard's values own their data.
    fn decode_in(message: Take<&mut Bytes>) -> Result<T, CodecError> {
        decode(message.chunk())
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

    fn encode_body_in(value: &M, extra: Vec<Payload>, buf: &mut EncodeBuffer) -> Result<Body, CodecError> {
        Ok(Body { message: prost::encode_in(value, buf)?, attachments: extra })
    }

    fn encode_packed(value: &M, packed: &mut BytesMut, max: usize, buf: &mut EncodeBuffer) -> Result<Option<Body>, CodecError> {
        if prost::encode_packed(value, packed, max) {
            return Ok(None);
        }
        Self::encode_body_in(value, Vec::new(), buf).map(Some)
    }
}

impl<M: ::prost::Message + Default> Decode<M> for Prost {
    fn decode(bytes: Bytes) -> Result<M, CodecError> {
        prost::decode(bytes)
    }

    fn decode_in(message: Take<&mut Bytes>) -> Result<M, CodecError> {
        prost::decode(message)
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
    fn small_messages_are_encoded_back_to_back_and_large_ones_on_their_own() {
        let mut buf = EncodeBuffer::new();
        let first = <Postcard as Encode<Args>>::encode_body_in(&Args { key: "a".into(), n: 1 }, Vec::new(), &mut buf).unwrap();
        let second = <Prost as Encode<Vec<u8>>>::encode_body_in(&vec![7u8; 100], Vec::new(), &mut buf).unwrap();
        assert_eq!(second.message.as_ptr(), first.message.as_ptr().wrapping_add(first.message.len()));
        assert_eq!(<Postcard as Decode<Args>>::decode(first.message).unwrap(), Args { key: "a".into(), n: 1 });
        assert_eq!(<Prost as Decode<Vec<u8>>>::decode(second.message.clone()).unwrap(), vec![7u8; 100]);
        // Past SHARED_MAX: the whole message all the same, in an allocation of its own.
        let big = Args { key: "k".repeat(SHARED_MAX + 1), n: 2 };
        let body = <Postcard as Encode<Args>>::encode_body_in(&big, vec![Payload::from(&b"x"[..])], &mut buf).unwrap();
        assert_eq!(body.message, encode(&big).unwrap());
        assert_eq!(body.attachments.len(), 1);
        let big_bytes = vec![1u8; SHARED_MAX + 1];
        let message = <Prost as Encode<Vec<u8>>>::encode_body_in(&big_bytes, Vec::new(), &mut buf).unwrap().message;
        assert_eq!(<Prost as Decode<Vec<u8>>>::decode(message).unwrap(), big_bytes);
        // Nothing of the large ones was left in the buffer: the next small one follows `second`.
        let third = <Postcard as Encode<u8>>::encode_body_in(&3, Vec::new(), &mut buf).unwrap();
        assert_eq!(third.message.as_ptr(), second.message.as_ptr().wrapping_add(second.message.len()));
    }

    /// A value whose encoding fails after its first byte.
    struct Unencodable;
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&1u8)?;
            Err(S::Error::custom("this value cannot be encoded"))
        }
    }

    #[test]
    fn a_value_postcard_cannot_encode_is_an_error_and_leaves_the_buffer_clean() {
        let mut buf = EncodeBuffer::new();
        assert!(<Postcard as Encode<Unencodable>>::encode_body_in(&Unencodable, Vec::new(), &mut buf).is_err());
        let next = <Postcard as Encode<u16>>::encode_body_in(&300, Vec::new(), &mut buf).unwrap();
        assert_eq!(next.message, encode(&300u16).unwrap(), "the failed value's first byte is gone");
    }

    /// `C`'s packed encoding of `value` after `before` bytes already packed: `None` with the
    /// message appended, or the body with the packed bytes as they were.
    fn packed<T, C: Encode<T>>(value: &T, max: usize) -> Option<Body> {
        let mut packed = BytesMut::from(&b"before"[..]);
        let body = C::encode_packed(value, &mut packed, max, &mut EncodeBuffer::new()).unwrap();
        match &body {
            None => {
                assert_eq!(&packed[..6], b"before");
                assert_eq!(&packed[6..], &C::encode(value).unwrap()[..], "{}: appended as encode writes it", C::NAME);
            }
            Some(_) => assert_eq!(&packed[..], b"before", "{}: a body of its own, nothing packed", C::NAME),
        }
        body
    }

    #[test]
    fn small_messages_are_packed_after_the_run_and_others_get_bodies_of_their_own() {
        let small = Args { key: "a".into(), n: 1 };
        assert!(packed::<Args, Postcard>(&small, 512).is_none());
        assert!(packed::<Vec<u8>, Prost>(&vec![7u8; 100], 512).is_none());
        // Over `max`: the body encode_body makes.
        let big = Args { key: "k".repeat(600), n: 2 };
        assert_eq!(packed::<Args, Postcard>(&big, 512), Some(Body::message(encode(&big).unwrap())));
        let bytes = vec![1u8; 600];
        assert_eq!(packed::<Vec<u8>, Prost>(&bytes, 512), Some(Body::message(prost::encode(&bytes))));
        // Exactly at `max`, packed.
        let exact = encode(&small).unwrap().len();
        assert!(packed::<Args, Postcard>(&small, exact).is_none());
        assert!(packed::<Args, Postcard>(&small, exact - 1).is_some());
        // A value postcard cannot encode: the error, and the packed bytes as they were.
        let mut packed = BytesMut::from(&b"before"[..]);
        assert!(<Postcard as Encode<Unencodable>>::encode_packed(&Unencodable, &mut packed, 512, &mut EncodeBuffer::new()).is_err());
        assert_eq!(&packed[..], b"before");
    }

    #[test]
    fn a_message_decoded_where_it_lies_reads_its_bytes_only_and_slices_bytes_fields() {
        #[derive(Clone, PartialEq, ::prost::Message)]
        struct Blob {
            #[prost(bytes = "bytes", tag = "1")]
            data: Bytes,
        }
        let blob = Blob { data: Bytes::from(vec![5u8; 64]) };
        let message = prost::encode(&blob);
        // The message between two others, as in a batch.
        let mut area = BytesMut::from(&b"front"[..]);
        area.extend_from_slice(&message);
        area.extend_from_slice(b"back");
        let mut area = area.freeze();
        area.advance(5);
        let range = area.as_ptr_range();
        let back = <Prost as Decode<Blob>>::decode_in((&mut area).take(message.len())).unwrap();
        assert_eq!(back, blob);
        assert!(range.contains(&back.data.as_ptr()), "the bytes field was copied");
        assert_eq!(&area[..], b"back", "read past its message");
        // Postcard: the message only, so a message followed by more bytes is no error.
        let a = Args { key: "k".into(), n: 9 };
        let mut area = Bytes::from([&encode(&a).unwrap()[..], b"next"].concat());
        let len = area.len() - 4;
        assert_eq!(<Postcard as Decode<Args>>::decode_in((&mut area).take(len)).unwrap(), a);
        // ... and one cut short is.
        let mut area = encode(&a).unwrap();
        let len = area.len() - 1;
        assert!(<Postcard as Decode<Args>>::decode_in((&mut area).take(len)).is_err());
    }

    #[test]
    fn postcard_into_a_buffer_without_room_writes_the_message_without_a_panic() {
        // A public function: room is what keeps it from growing `out`, not what keeps it right.
        let value = Args { key: "key".into(), n: 7 };
        let mut out = BytesMut::new();
        assert!(postcard_into(&value, &mut out, 100).unwrap());
        assert_eq!(&out[..], &encode(&value).unwrap()[..]);
        let mut out = BytesMut::new();
        assert!(!postcard_into(&value, &mut out, 2).unwrap(), "over the bound");
        let mut out = BytesMut::from(&b"ab"[..]);
        assert!(postcard_into(&value, &mut out, usize::MAX).unwrap(), "no bound at all");
        assert_eq!(&out[2..], &encode(&value).unwrap()[..]);
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
