//! Arbitrary bytes into a server connection state machine, with time moving: no panic, and a
//! closed connection stays closed.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_core::conn::{ConnConfig, Connection, Side};
use rpc_core::frame::{Hello, WIRE_VERSION};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let config = ConnConfig { max_frame: 1 << 16, max_attachments: 8, max_calls_in_flight: 4, ..ConnConfig::default() };
    let mut conn = Connection::new(Side::Server, config, now);
    let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 16, max_calls_in_flight: 4, max_attachments: 8 };
    let mut buf = BytesMut::from(&hello.encode()[..]);
    let mut t = now;
    for (i, chunk) in data.chunks(61).enumerate() {
        buf.extend_from_slice(chunk);
        let was_open = conn.is_open();
        let _ = conn.handle_input(&mut buf, t);
        assert!(was_open || !conn.is_open());
        t += Duration::from_millis(u64::from(chunk[0]));
        conn.handle_timeout(t);
        while let Some(ev) = conn.poll_event() {
            if let rpc_core::conn::Event::Request { id, .. } = ev {
                if i % 2 == 0 {
                    conn.respond(id, Ok(rpc_core::Body::default()));
                }
            }
        }
        conn.take_transmits(&mut Vec::new());
    }
    conn.handle_eof(&buf);
    assert!(!conn.is_open());
});
