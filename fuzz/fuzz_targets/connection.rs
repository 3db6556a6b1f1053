//! Arbitrary bytes into a server connection state machine, with time moving: no panic, and a
//! closed connection stays closed. The peer's hello declares a stream window and a metadata
//! limit, and the handler side sets response headers and trailers, streams back, consumes and
//! answers, so stream, credit and metadata frames reach every branch of the machine. The same
//! bytes then go to a client with calls of every mode in flight: answers with response
//! metadata (flags 0x04 and 0x10, good and bad blocks) reach the client's side too.
#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_core::conn::{ConnConfig, Connection, Event, MetadataKind, Side};
use rpc_core::frame::{CallMode, Hello, WIRE_VERSION};
use rpc_core::Metadata;

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
                    let _ = conn.set_response_metadata(id, MetadataKind::Headers, "h", vec![1u8; usize::from(chunk[0]) * 8].into());
                    let _ = conn.set_response_metadata(id, MetadataKind::Trailers, "t", "v".into());
                    if mode.server_stream {
                        let _ = conn.send_message(id, rpc_core::Body::message(vec![0u8; 3000].into()));
                    }
                    if i % 2 == 0 {
                        conn.respond(id, Ok(rpc_core::Body::default()));
                    }
                }
                Event::StreamData { id, body } if i % 3 != 0 => conn.consumed(id, body.len() as usize),
                Event::StreamMessages { id, messages } if i % 3 != 0 => {
                    conn.consumed_many(id, messages.len(), messages.message_bytes())
                }
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
    client(data, now);
});

fn client(data: &[u8], now: Instant) {
    let config = ConnConfig { max_frame: 1 << 16, max_attachments: 8, max_metadata: 1024, ..ConnConfig::default() };
    let mut conn = Connection::new(Side::Client, config, now);
    let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 1 << 16, max_calls_in_flight: 4, max_attachments: 8, max_metadata: 1024, stream_window: 4096 };
    let mut buf = BytesMut::from(&hello.encode()[..]);
    let _ = conn.handle_input(&mut buf, now);
    for mode in [CallMode::UNARY, CallMode::SERVER_STREAMING, CallMode::CLIENT_STREAMING, CallMode::BIDI] {
        let _ = conn.start_call(1, rpc_core::Body::default(), mode, &Metadata::default(), None, now);
    }
    for chunk in data.chunks(61) {
        buf.extend_from_slice(chunk);
        let was_open = conn.is_open();
        let _ = conn.handle_input(&mut buf, now);
        assert!(was_open || !conn.is_open());
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::StreamData { id, body } => conn.consumed(id, body.len() as usize),
                Event::StreamMessages { id, messages } => {
                    conn.consumed_many(id, messages.len(), messages.message_bytes())
                }
                _ => {}
            }
        }
        conn.take_transmits(&mut Vec::new());
    }
    conn.handle_eof(&buf);
    assert!(!conn.is_open());
}
