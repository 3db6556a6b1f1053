//! The serde and prost codecs reject garbage with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rpc_core::codec::decode::<(String, u64, Vec<u8>, Option<bool>)>(data);
    let _ = rpc_core::codec::decode::<Vec<String>>(data);
});
