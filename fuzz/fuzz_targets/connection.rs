//! Arbitrary bytes into a server connection state machine, with time moving: no panic, and a
//! closed connection stays closed. The peer's hello declares a stream window and a metadata
//! limit, and the handler side streams back, consumes and answers, so stream, credit and
//! metadata frames reach every branch of the machine.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_core::conn::{ConnConfig, Connection, Event, Side};
use rpc_core::frame::{Hello, WIRE_VERSION};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let config = ConnConfig { max_frame: 1 << 16, max_attachments: 8, max_calls_in_flight: 4, ..ConnConfig::default() };
    let mut conn = Connection::new(Side::Server, config, now);
    let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 16, max_calls_in_flight: 4, max_attachments: 8, max_metadata: 1024, stream_window: 4096 };
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
            match ev {
                Event::Request { id, mode, .. } => {
                    if mode.server_stream {
                        let _ = conn.send_message(id, rpc_core::Body::message(vec![0u8; 3000].into()));
                    }
                    if i % 2 == 0 {
                        conn.respond(id, Ok(rpc_core::Body::default()));
                    }
                }
                Event::StreamData { id, body } if i % 3 != 0 => conn.consumed(id, body.len() as usize),
                Event::SendReady { id } => {
                    let _ = conn.send_message(id, rpc_core::Body::default());
                }
                _ => {}
            }
        }
        conn.take_transmits(&mut Vec::new());
    }
    conn.handle_eof(&buf);
    assert!(!conn.is_open());
});
