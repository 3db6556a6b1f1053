//! The prost codec for `.proto` messages. Decoding from `Bytes` keeps `bytes` fields that were
//! generated as `Bytes` (prost-build's `.bytes(["."])`) as slices of the receive buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::{CodecError, EncodeBuffer, SHARED_MAX};

/// Encodes a prost message.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Encodes a prost message into `buf` when it is small (see [`EncodeBuffer`]), else into an
/// allocation of its own.
pub fn encode_in<M: prost::Message>(message: &M, buf: &mut EncodeBuffer) -> Result<Bytes, CodecError> {
    let len = message.encoded_len();
    if len > SHARED_MAX {
        return Ok(encode(message));
    }
    // prost fails only on a buffer without room, and a `BytesMut` grows.
    if let Err(e) = message.encode(buf.room(len)) {
        buf.discard();
        return Err(CodecError(format!("encode: {e}")));
    }
    Ok(buf.split())
}

/// Appends `message` to `packed` when it is at most `max` bytes long (true); else leaves
/// `packed` as it was (false). See [`Encode::encode_packed`](super::Encode::encode_packed).
pub fn encode_packed<M: prost::Message>(message: &M, packed: &mut BytesMut, max: usize) -> bool {
    let len = message.encoded_len();
    if len > max {
        return false;
    }
    packed.reserve(len);
    message.encode_raw(packed);
    true
}

/// Decodes a prost message from `bytes` (a `Bytes`, or a message lying in one: see
/// [`Decode::decode_in`](super::Decode::decode_in)) without copying `bytes` fields.
pub fn decode<M: prost::Message + Default>(bytes: impl Buf) -> Result<M, CodecError> {
    M::decode(bytes).map_err(|e| CodecError(format!("decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Blob {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(bytes = "bytes", tag = "2")]
        data: Bytes,
    }

    #[test]
    fn bytes_fields_are_slices_of_the_input() {
        let msg = Blob { name: "n".into(), data: Bytes::from(vec![9u8; 4096]) };
        let wire = encode(&msg);
        let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        let back: Blob = decode(wire.clone()).unwrap();
        assert_eq!(back, msg);
        assert!(range.contains(&(back.data.as_ptr() as usize)), "bytes field was copied");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode::<Blob>(Bytes::from_static(&[0x12, 0xff, 0xff, 0xff, 0x0f])).is_err());
    }
}
