//! Decoding a `.proto` message with attachment fields (`rpc_core::codec::Protobuf`) from any
//! message and any attachments: an error or the message, never a panic; what decodes encodes
//! back into a body that decodes to the same message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rpc_core::codec::{protobuf, CodecError, Decode, Encode, ProtoMessage, Protobuf};
use rpc_core::{Body, Payload};

/// What the generator writes for a message with two attachment fields, one always out of
/// band and one from 16 bytes on, around an inline string and a nested message.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "bytes", tag = "2")]
    data: Bytes,
    #[prost(message, optional, tag = "3")]
    inner: Option<Inner>,
    #[prost(bytes = "bytes", tag = "4")]
    extra: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Inner {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    chunks: Vec<Bytes>,
}

impl ProtoMessage for Blob {
    const ATTACHMENT_FIELDS: &'static [&'static str] = &["fuzz.Blob.data", "fuzz.Blob.extra"];
    fn detach(&mut self) -> Vec<Payload> {
        vec![protobuf::detach_field(&mut self.data, 0), protobuf::detach_field(&mut self.extra, 16)]
    }
    fn attach(&mut self, attachments: &mut std::vec::IntoIter<Payload>) -> Result<(), CodecError> {
        protobuf::attach_field(&mut self.data, attachments.next(), "fuzz.Blob.data")?;
        protobuf::attach_field(&mut self.extra, attachments.next(), "fuzz.Blob.extra")
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte: how many attachments; each then takes a length byte and that many bytes;
    // the rest is the message.
    let Some((&count, mut rest)) = data.split_first() else { return };
    let mut attachments = Vec::new();
    for _ in 0..count % 5 {
        let Some((&len, tail)) = rest.split_first() else { break };
        let len = usize::from(len).min(tail.len());
        attachments.push(Payload::from(Bytes::copy_from_slice(&tail[..len])));
        rest = &tail[len..];
    }
    let body = Body::new(Bytes::copy_from_slice(rest), attachments);
    if let Ok((blob, _)) = <Protobuf as Decode<Blob>>::decode_body(body) {
        let again = <Protobuf as Encode<Blob>>::encode_body(&blob, Vec::new()).expect("a decoded message encodes");
        let (back, rest) = <Protobuf as Decode<Blob>>::decode_body(again).expect("an encoded message decodes");
        assert!(back == blob && rest.is_empty());
    }
});
