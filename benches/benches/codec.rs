//! The codecs for the typed part of a call: serde (postcard) and prost, small arguments and
//! a `bytes` field carrying 1 MiB (decoded as a slice, not copied).
//!
//! `cargo bench -p rpc-bench --bench codec`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rpc_core::codec;
use serde::{Deserialize, Serialize};

/// Typical small arguments: a key, an offset, a length, a flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct GetArgs {
    key: String,
    offset: u64,
    len: u32,
    verify: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetArgsPb {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(uint64, tag = "2")]
    offset: u64,
    #[prost(uint32, tag = "3")]
    len: u32,
    #[prost(bool, tag = "4")]
    verify: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BlobPb {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

fn args() -> GetArgs {
    GetArgs {
        key: "bucket/objects/2026/11/25/part-00042".into(),
        offset: 1 << 33,
        len: 1 << 20,
        verify: true,
    }
}

fn serde_postcard(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_postcard");
    let value = args();
    let encoded = codec::encode(&value).expect("encodable");
    g.bench_function("encode_args", |b| {
        b.iter(|| codec::encode(black_box(&value)).expect("ok"))
    });
    g.bench_function("decode_args", |b| {
        b.iter(|| codec::decode::<GetArgs>(black_box(&encoded)).expect("ok"))
    });
    // A 64 KiB byte field through serde: postcard copies it both ways.
    let blob = serde_bytes_vec(64 << 10);
    let encoded = codec::encode(&blob).expect("encodable");
    g.throughput(Throughput::Bytes(blob.len() as u64));
    g.bench_function("encode_bytes_64k", |b| {
        b.iter(|| codec::encode(black_box(&blob)).expect("ok"))
    });
    g.bench_function("decode_bytes_64k", |b| {
        b.iter(|| codec::decode::<Bytes>(black_box(&encoded)).expect("ok"))
    });
    g.finish();
}

fn serde_bytes_vec(len: usize) -> Bytes {
    Bytes::from(vec![0xA5u8; len])
}

fn prost_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec_prost");
    let a = args();
    let value = GetArgsPb {
        key: a.key,
        offset: a.offset,
        len: a.len,
        verify: a.verify,
    };
    let encoded = codec::prost::encode(&value);
    g.bench_function("encode_args", |b| {
        b.iter(|| codec::prost::encode(black_box(&value)))
    });
    g.bench_function("decode_args", |b| {
        b.iter(|| codec::prost::decode::<GetArgsPb>(black_box(encoded.clone())).expect("ok"))
    });
    // A `bytes` field as `Bytes`: encoding copies it into the message buffer; decoding slices
    // the input, so its cost should not grow with the field.
    let blob = BlobPb {
        data: Bytes::from(vec![0xA5u8; 1 << 20]),
    };
    let encoded = codec::prost::encode(&blob);
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("encode_bytes_field_1m", |b| {
        b.iter(|| codec::prost::encode(black_box(&blob)))
    });
    g.bench_function("decode_bytes_field_1m", |b| {
        b.iter(|| codec::prost::decode::<BlobPb>(black_box(encoded.clone())).expect("ok"))
    });
    g.finish();
}

criterion_group!(benches, serde_postcard, prost_codec);
criterion_main!(benches);
