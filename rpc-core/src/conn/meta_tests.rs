//! Response headers and trailers through the state machine, two endpoints in memory: where the
//! server's blocks go, and how a client treats bad ones (the call ends, the connection stays).

use bytes::{BufMut, Bytes, BytesMut};

use super::tests::Pair;
use super::*;
use crate::frame::{caps, MetadataBlocks, StreamData, StreamHeaders};
use crate::metadata::MetadataError;

fn pair() -> Pair {
    Pair::with(ConnConfig::default(), ConnConfig::default())
}

fn open(p: &mut Pair, mode: CallMode) -> u64 {
    let id = p.client.start_call(1, Body::default(), mode, &Metadata::default(), None, p.now).unwrap();
    p.drive();
    assert!(matches!(p.server_events.remove(0), Event::Request { .. }));
    id
}

fn set(p: &mut Pair, id: u64, kind: MetadataKind, key: &str, value: &'static str) -> Result<(), MetadataError> {
    p.server.set_response_metadata(id, kind, key, Bytes::from_static(value.as_bytes()))
}

/// The client's events, each as a short word, for checking their order.
fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::StreamMessages { messages, .. } => messages.iter().map(|m| format!("data {}", m.len())).collect(),
            e => vec![kind(e)],
        })
        .collect()
}

/// One event as a short word.
fn kind(e: &Event) -> String {
    match e {
        Event::Headers { metadata, .. } => format!("headers {}", metadata.get_str("h").unwrap_or("?")),
        Event::Trailers { metadata, .. } => format!("trailers {}", metadata.get_str("t").unwrap_or("?")),
        Event::StreamData { body, .. } => format!("data {}", body.len()),
        Event::StreamEnd { code, .. } => format!("end {code}"),
        Event::Finished { result: Ok(b), .. } => format!("ok {}", b.len()),
        Event::Finished { result: Err(e), .. } => format!("err {e}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn a_unary_answer_carries_headers_then_trailers_before_it_finishes() {
    let mut p = pair();
    let id = open(&mut p, CallMode::UNARY);
    set(&mut p, id, MetadataKind::Headers, "h", "1").unwrap();
    set(&mut p, id, MetadataKind::Trailers, "t", "2").unwrap();
    assert_eq!(p.server.response_metadata(id, MetadataKind::Headers).get_str("h"), Some("1"));
    p.server.respond(id, Ok(Body::message(Bytes::from_static(b"abc"))));
    p.drive();
    assert_eq!(kinds(&p.client_events), ["headers 1", "trailers 2", "ok 3"]);
}

#[test]
fn a_plain_answer_has_no_blocks_and_no_events() {
    let mut p = pair();
    let id = open(&mut p, CallMode::UNARY);
    p.server.respond(id, Ok(Body::message(Bytes::from_static(b"abc"))));
    let mut out = Vec::new();
    p.server.take_transmits(&mut out);
    assert_eq!(out[0].len(), HEADER_LEN + 3, "not a byte more on the wire");
    assert_eq!(out[0].head[1], 0, "no flags");
}

#[test]
fn a_server_stream_sends_headers_with_its_first_message_and_trailers_with_its_end() {
    let mut p = pair();
    let id = open(&mut p, CallMode::SERVER_STREAMING);
    set(&mut p, id, MetadataKind::Headers, "h", "first").unwrap();
    p.server.send_message(id, Body::message(Bytes::from_static(b"a"))).unwrap();
    assert_eq!(set(&mut p, id, MetadataKind::Headers, "h", "late"), Err(MetadataError::HeadersSent));
    p.server.send_message(id, Body::message(Bytes::from_static(b"bb"))).unwrap();
    set(&mut p, id, MetadataKind::Trailers, "t", "done").unwrap();
    p.server.respond(id, Ok(Body::default()));
    p.drive();
    assert_eq!(kinds(&p.client_events), ["headers first", "data 1", "data 2", "trailers done", "end ok"]);
}

#[test]
fn headers_set_and_never_sent_before_the_end_go_with_the_end_and_an_error_carries_trailers() {
    let mut p = pair();
    let a = open(&mut p, CallMode::SERVER_STREAMING);
    let b = open(&mut p, CallMode::UNARY);
    set(&mut p, a, MetadataKind::Headers, "h", "only").unwrap();
    p.server.respond(a, Ok(Body::default()));
    set(&mut p, b, MetadataKind::Trailers, "t", "why").unwrap();
    p.server.respond(b, Err(Status::new(Code::INVALID_ARGUMENT, "bad input")));
    p.drive();
    assert_eq!(
        kinds(&p.client_events),
        ["headers only", "end ok", "trailers why", "err server returned invalid argument: bad input"]
    );
}

#[test]
fn response_metadata_over_the_clients_limit_is_refused_when_set() {
    let small = ConnConfig { max_metadata: 1024, ..ConnConfig::default() };
    let mut p = Pair::with(small, ConnConfig::default());
    let id = open(&mut p, CallMode::UNARY);
    let big = Bytes::from(vec![b'x'; 1100]);
    let e = p.server.set_response_metadata(id, MetadataKind::Trailers, "big", big).unwrap_err();
    assert_eq!(e.to_string(), "trailers of 1111 bytes would be over the client's limit of 1024 bytes");
    assert!(p.server.response_metadata(id, MetadataKind::Trailers).is_empty(), "nothing was added");
    let e = set(&mut p, id, MetadataKind::Headers, "naïve", "v").unwrap_err();
    assert!(e.to_string().contains("not printable ASCII"), "{e}");

    let none = ConnConfig { max_metadata: 0, ..ConnConfig::default() };
    let mut p = Pair::with(none, ConnConfig::default());
    let id = open(&mut p, CallMode::UNARY);
    assert!(matches!(set(&mut p, id, MetadataKind::Headers, "h", "1"), Err(MetadataError::TooLarge { limit: 0, .. })));
}

/// Puts a frame from a hostile server in front of the client.
fn inject(p: &mut Pair, frame: Frame) {
    p.client_in.extend_from_slice(&frame.encode().unwrap().to_vec());
    // Once to read it, once more to carry what the client answers (a cancel) to the server.
    p.drive();
    p.drive();
}

fn raw_block(key: &[u8], value_len: usize) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u16_le(1);
    b.put_u16_le(key.len() as u16);
    b.put_slice(key);
    b.put_u32_le(value_len as u32);
    b.put_bytes(b'v', value_len);
    b.freeze()
}

#[test]
fn bad_response_metadata_ends_the_call_and_the_connection_carries_on() {
    let small = ConnConfig { max_metadata: 1024, ..ConnConfig::default() };
    let mut p = Pair::with(small, ConnConfig::default());
    let cases: [(CallMode, MetadataBlocks, bool, &str); 4] = [
        (CallMode::UNARY, MetadataBlocks { headers: raw_block(b"big", 2000), trailers: Bytes::new() }, true,
            "response headers of 2011 bytes, over the limit of 1024 bytes this side declared"),
        (CallMode::SERVER_STREAMING, MetadataBlocks { headers: raw_block("é".as_bytes(), 1), trailers: Bytes::new() }, false,
            "not printable ASCII"),
        (CallMode::SERVER_STREAMING, MetadataBlocks { headers: Bytes::new(), trailers: raw_block(b"t", 1) }, false,
            "trailers on a stream data frame"),
        (CallMode::UNARY, MetadataBlocks { headers: Bytes::new(), trailers: Bytes::from_static(&[1, 0, 9]) }, true,
            "malformed metadata block"),
    ];
    for (mode, meta, last, why) in cases {
        let id = open(&mut p, mode);
        let message = Bytes::from_static(b"m");
        let frame = match last {
            true => Frame::Response(Response { id, message, attachments: vec![], meta }),
            false => Frame::StreamData(StreamData { id, message, attachments: vec![], meta }),
        };
        inject(&mut p, frame);
        let ev = p.client_events.remove(0);
        let Event::Finished { id: i, result: Err(CallError::Metadata(e)) } = ev else { panic!("{ev:?}") };
        assert_eq!(i, id);
        assert!(e.contains(&format!("response metadata of call {id} refused")) && e.contains(why), "{e}");
        assert!(p.client_events.is_empty(), "{:?}", kinds(&p.client_events));
        if !last {
            // The server still ran the call: it is cancelled there.
            assert!(matches!(p.server_events.remove(0), Event::Abort { id: i, reason: AbortReason::Cancelled } if i == id));
        }
        assert!(p.client.is_open() && p.client.calls_in_flight() == 0);
    }
    // A second block of headers.
    let id = open(&mut p, CallMode::SERVER_STREAMING);
    let headers = || MetadataBlocks { headers: raw_block(b"h", 1), trailers: Bytes::new() };
    inject(&mut p, Frame::StreamData(StreamData { id, message: Bytes::new(), attachments: vec![], meta: headers() }));
    inject(&mut p, Frame::StreamData(StreamData { id, message: Bytes::new(), attachments: vec![], meta: headers() }));
    let k = kinds(&p.client_events);
    assert_eq!(k[..2], ["headers v", "data 0"]);
    assert!(k[2].contains("a second block of response headers"), "{k:?}");
    assert!(matches!(p.server_events.remove(0), Event::Abort { id: i, .. } if i == id));
    // And calls go on.
    let id = open(&mut p, CallMode::UNARY);
    p.server.respond(id, Ok(Body::default()));
    p.drive();
    assert!(matches!(p.client_events.last(), Some(Event::Finished { result: Ok(_), .. })));
}

#[test]
fn response_metadata_from_a_client_is_a_protocol_violation() {
    let meta = MetadataBlocks { headers: raw_block(b"h", 1), trailers: Bytes::new() };
    from_a_client_ends_the_connection(
        |id| Frame::StreamData(StreamData { id, message: Bytes::new(), attachments: vec![], meta }),
        "response metadata from a client",
    );
}

/// A client-streaming call whose client sends `frame(id)`: the server ends the connection,
/// saying `why`.
fn from_a_client_ends_the_connection(frame: impl FnOnce(u64) -> Frame, why: &str) {
    let mut p = pair();
    let id = open(&mut p, CallMode::CLIENT_STREAMING);
    p.server_in.extend_from_slice(&frame(id).encode().unwrap().to_vec());
    p.drive();
    assert!(!p.server.is_open());
    let closed = p.server_events.iter().find_map(|e| match e {
        Event::Closed(err) => Some(err.to_string()),
        _ => None,
    });
    assert!(closed.as_deref().is_some_and(|e| e.contains(why)), "{closed:?}");
}

#[test]
fn headers_sent_early_go_in_a_frame_of_their_own_before_any_message() {
    let mut p = pair();
    let id = open(&mut p, CallMode::SERVER_STREAMING);
    set(&mut p, id, MetadataKind::Headers, "h", "early").unwrap();
    assert!(p.server.send_response_headers(id));
    p.drive();
    assert_eq!(kinds(&p.client_events), ["headers early"], "the headers arrived alone");
    p.client_events.clear();
    // They went: no more headers, and no second frame of them.
    assert_eq!(set(&mut p, id, MetadataKind::Headers, "h", "late"), Err(MetadataError::HeadersSent));
    assert!(!p.server.send_response_headers(id));
    p.server.send_message(id, Body::message(Bytes::from_static(b"a"))).unwrap();
    set(&mut p, id, MetadataKind::Trailers, "t", "done").unwrap();
    p.server.respond(id, Ok(Body::default()));
    p.drive();
    assert_eq!(kinds(&p.client_events), ["data 1", "trailers done", "end ok"]);

    // None set: the frame says so, and the client has its (empty) headers.
    let id = open(&mut p, CallMode::BIDI);
    p.client_events.clear();
    assert!(p.server.send_response_headers(id));
    p.drive();
    match &p.client_events[..] {
        [Event::Headers { id: i, metadata }] => assert!(*i == id && metadata.is_empty()),
        other => panic!("{:?}", kinds(other)),
    }
    // A unary call may send them early too; its answer then carries none.
    let id = open(&mut p, CallMode::UNARY);
    p.client_events.clear();
    set(&mut p, id, MetadataKind::Headers, "h", "u").unwrap();
    assert!(p.server.send_response_headers(id));
    p.server.respond(id, Ok(Body::message(Bytes::from_static(b"abc"))));
    p.drive();
    assert_eq!(kinds(&p.client_events), ["headers u", "ok 3"]);
}

#[test]
fn a_client_that_does_not_take_early_headers_gets_them_with_the_first_message() {
    let mut p = pair();
    let id = open(&mut p, CallMode::SERVER_STREAMING);
    // A peer of the same wire version without the capability.
    p.server.peer.as_mut().expect("after the hello").capabilities &= !caps::EARLY_HEADERS;
    set(&mut p, id, MetadataKind::Headers, "h", "with-data").unwrap();
    assert!(!p.server.send_response_headers(id), "not sent alone");
    p.drive();
    assert!(p.client_events.is_empty(), "{:?}", kinds(&p.client_events));
    p.server.send_message(id, Body::message(Bytes::from_static(b"a"))).unwrap();
    p.drive();
    assert_eq!(kinds(&p.client_events), ["headers with-data", "data 1"]);
}

#[test]
fn bad_early_headers_end_the_call_or_the_connection() {
    let mut p = pair();
    // A second block: after headers on a frame of their own, or after the first message's.
    for first in [true, false] {
        let id = open(&mut p, CallMode::SERVER_STREAMING);
        p.client_events.clear();
        if first {
            inject(&mut p, Frame::StreamHeaders(StreamHeaders { id, headers: raw_block(b"h", 1) }));
        } else {
            let meta = MetadataBlocks { headers: raw_block(b"h", 1), trailers: Bytes::new() };
            inject(&mut p, Frame::StreamData(StreamData { id, message: Bytes::new(), attachments: vec![], meta }));
        }
        inject(&mut p, Frame::StreamHeaders(StreamHeaders { id, headers: Bytes::new() }));
        let k = kinds(&p.client_events);
        assert!(k.last().is_some_and(|e| e.contains("a second block of response headers")), "{k:?}");
        assert!(p.server_events.iter().any(|e| matches!(e, Event::Abort { id: i, .. } if *i == id)));
        assert!(p.client.is_open());
        p.server_events.clear();
    }
    // Headers over the client's limit end the call.
    let small = ConnConfig { max_metadata: 1024, ..ConnConfig::default() };
    let mut p = Pair::with(small, ConnConfig::default());
    let id = open(&mut p, CallMode::SERVER_STREAMING);
    inject(&mut p, Frame::StreamHeaders(StreamHeaders { id, headers: raw_block(b"big", 2000) }));
    let k = kinds(&p.client_events);
    assert!(k.last().is_some_and(|e| e.contains("over the limit of 1024 bytes")), "{k:?}");
    // For a call that ended they are dropped; for one never started, the connection ends.
    inject(&mut p, Frame::StreamHeaders(StreamHeaders { id, headers: Bytes::new() }));
    assert!(p.client.is_open());
    inject(&mut p, Frame::StreamHeaders(StreamHeaders { id: 999, headers: Bytes::new() }));
    assert!(!p.client.is_open());

    // From a client: a protocol violation.
    from_a_client_ends_the_connection(
        |id| Frame::StreamHeaders(StreamHeaders { id, headers: Bytes::new() }),
        "response headers from a client",
    );
}
