//! Frame encode and decode, and the slicing of attachments out of a received frame.
//!
//! `cargo bench -p rpc-bench --bench frame`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rpc_core::frame::{Frame, FrameDecoder, Hello, Limits, Request, WIRE_VERSION};
use rpc_core::Payload;

fn request(message: usize, attachments: usize, attachment_len: usize) -> Request {
    let blob = Bytes::from(vec![0xA5u8; attachment_len * attachments.max(1)]);
    Request {
        id: 7,
        method: 1,
        mode: Default::default(), await_commit: false,
        metadata: Bytes::new(),
        deadline: None,
        message: Bytes::from(vec![1u8; message]),
        attachments: (0..attachments)
            .map(|i| Payload::from(blob.slice(i * attachment_len..(i + 1) * attachment_len)))
            .collect(),
    }
}

/// The bytes a receiver sees: the peer's hello, then the frame.
fn wire(req: &Request) -> Vec<u8> {
    let limits = Limits::default();
    let hello = Hello {
        version: WIRE_VERSION,
        capabilities: 0,
        max_frame: limits.max_frame,
        max_calls_in_flight: 1024,
        max_attachments: limits.max_attachments,
        max_metadata: 0,
        stream_window: 0,
    };
    let mut out = hello.encode().to_vec();
    out.extend_from_slice(&req.clone().encode().expect("encodable").to_vec());
    out
}

/// (name, message bytes, attachments, bytes per attachment)
const CASES: [(&str, usize, usize, usize); 4] = [
    ("msg_64b", 64, 0, 0),
    ("msg_4k", 4096, 0, 0),
    ("attach_1x1m", 16, 1, 1 << 20),
    ("attach_1024x1k", 16, 1024, 1024),
];

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    for (name, message, attachments, len) in CASES {
        let req = request(message, attachments, len);
        g.bench_function(name, |b| {
            b.iter_batched(
                || req.clone(),
                |r| black_box(r.encode().expect("encodable")),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_decode");
    for (name, message, attachments, len) in CASES {
        let bytes = wire(&request(message, attachments, len));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut buf = BytesMut::from(&bytes[..]);
                    let mut dec = FrameDecoder::new(Limits::default());
                    dec.decode_hello(&mut buf).expect("hello").expect("whole");
                    (dec, buf)
                },
                |(mut dec, mut buf)| {
                    black_box(dec.decode(&mut buf).expect("valid").expect("whole"))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Receiving a payload hands out slices of the receive buffer; this is the cost of cutting
/// them and of walking them as a consumer would, per payload byte.
fn payload_slicing(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload_slicing");
    for (name, message, attachments, len) in CASES.into_iter().skip(2) {
        let bytes = wire(&request(message, attachments, len));
        g.throughput(Throughput::Bytes((attachments * len) as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut buf = BytesMut::from(&bytes[..]);
                    let mut dec = FrameDecoder::new(Limits::default());
                    dec.decode_hello(&mut buf).expect("hello").expect("whole");
                    (dec, buf)
                },
                |(mut dec, mut buf)| {
                    let Some(Frame::Request(req)) = dec.decode(&mut buf).expect("valid") else {
                        panic!("not a request");
                    };
                    let segments: usize = req.attachments.iter().map(|p| p.segments().len()).sum();
                    black_box((segments, req.attachments))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, encode, decode, payload_slicing);
criterion_main!(benches);
