//! Arbitrary bytes after a valid hello, cut into arbitrary reads: the decoder returns frames
//! or an error, never panics, and never asks for more than the limits allow.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_core::frame::{FrameDecoder, Hello, Limits, HEADER_LEN, WIRE_VERSION};

const LIMITS: Limits = Limits { max_frame: 1 << 16, max_attachments: 8 };

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1 };
    let mut d = FrameDecoder::new(LIMITS);
    let mut buf = BytesMut::from(&hello.encode()[..]);
    d.decode_hello(&mut buf).unwrap().unwrap();
    let step = usize::from(cut).max(1);
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // A pending frame never needs more than the limits allow.
        let bound = HEADER_LEN + 8 * LIMITS.max_attachments as usize + LIMITS.max_frame as usize;
        assert!(d.bytes_needed() <= bound);
    }
});
