//! The state machine driven in memory, two endpoints, simulated time: no sockets, no sleeps.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::payload::Payload;

/// Two connections wired back to back; `drive` moves bytes until both are quiet.
pub(super) struct Pair {
    pub(super) client: Connection,
    pub(super) server: Connection,
    pub(super) client_in: BytesMut,
    pub(super) server_in: BytesMut,
    pub(super) now: Instant,
    pub(super) client_events: Vec<Event>,
    pub(super) server_events: Vec<Event>,
}

impl Pair {
    pub(super) fn new() -> Self {
        Self::with(ConnConfig::default(), ConnConfig::default())
    }

    pub(super) fn with(client: ConnConfig, server: ConnConfig) -> Self {
        let now = Instant::now();
        let mut p = Pair {
            client: Connection::new(Side::Client, client, now),
            server: Connection::new(Side::Server, server, now),
            client_in: BytesMut::new(),
            server_in: BytesMut::new(),
            now,
            client_events: Vec::new(),
            server_events: Vec::new(),
        };
        p.drive();
        assert!(matches!(p.client_events.remove(0), Event::Connected(_)));
        assert!(matches!(p.server_events.remove(0), Event::Connected(_)));
        p
    }

    pub(super) fn drive(&mut self) {
        loop {
            let mut moved = false;
            let mut out = Vec::new();
            self.client.take_transmits(&mut out);
            for t in out.drain(..) {
                self.server_in.extend_from_slice(&t.to_vec());
                moved = true;
            }
            self.server.take_transmits(&mut out);
            for t in out.drain(..) {
                self.client_in.extend_from_slice(&t.to_vec());
                moved = true;
            }
            let _ = self.server.handle_input(&mut self.server_in, self.now);
            let _ = self.client.handle_input(&mut self.client_in, self.now);
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.drive();
    }

    pub(super) fn call(&mut self, method: u32, body: Body, timeout: Option<Duration>) -> u64 {
        let id = self.client.start_call(method, body, CallMode::UNARY, &Metadata::default(), timeout, self.now).unwrap();
        self.drive();
        id
    }
}

fn body(msg: &'static [u8], att: &'static [u8]) -> Body {
    Body::new(Bytes::from_static(msg), vec![Payload::from(Bytes::from_static(att))])
}

#[test]
fn call_and_response_carry_message_and_attachments() {
    let mut p = Pair::new();
    let id = p.call(7, body(b"args", b"blob"), None);
    let Event::Request { id: sid, method, deadline, body: got, .. } = p.server_events.remove(0) else { panic!() };
    assert_eq!((sid, method, deadline), (id, 7, None));
    assert_eq!(got, body(b"args", b"blob"));
    p.server.respond(sid, Ok(body(b"result", b"out")));
    p.drive();
    let Event::Finished { id: cid, result } = p.client_events.remove(0) else { panic!() };
    assert_eq!(cid, id);
    assert_eq!(result.unwrap(), body(b"result", b"out"));
    assert_eq!(p.client.calls_in_flight(), 0);
    assert_eq!(p.server.calls_in_flight(), 0);
}

#[test]
fn error_status_reaches_the_caller() {
    let mut p = Pair::new();
    let id = p.call(9, Body::default(), None);
    p.server.respond(id, Err(Status::unimplemented(9)));
    p.drive();
    let Event::Finished { result: Err(CallError::Status(s)), .. } = p.client_events.remove(0) else { panic!() };
    assert_eq!(s.code, Code::UNIMPLEMENTED);
    assert!(s.message.contains("unknown method id 0x00000009"), "{}", s.message);
}

#[test]
fn cancel_aborts_the_handler_and_late_answers_are_dropped() {
    let mut p = Pair::new();
    let id = p.call(1, Body::default(), None);
    p.server_events.clear();
    p.client.cancel_call(id);
    p.drive();
    assert!(matches!(p.server_events.remove(0), Event::Abort { id: i, reason: AbortReason::Cancelled } if i == id));
    // The handler raced and answered anyway: nothing is sent, nothing reaches the client.
    p.server.respond(id, Ok(Body::default()));
    assert!(!p.server.has_transmits());
    p.drive();
    assert!(p.client_events.is_empty());
}

#[test]
fn deadline_fails_the_call_on_both_sides() {
    let mut p = Pair::new();
    let id = p.call(1, Body::default(), Some(Duration::from_millis(50)));
    let Event::Request { deadline, .. } = p.server_events.remove(0) else { panic!() };
    assert_eq!(deadline, Some(p.now + Duration::from_millis(50)));
    assert_eq!(p.client.poll_timeout(), Some(p.now + Duration::from_millis(50)));
    p.advance(Duration::from_millis(49));
    assert!(p.client_events.is_empty() && p.server_events.is_empty());
    p.advance(Duration::from_millis(1));
    assert!(matches!(
        p.client_events.remove(0),
        Event::Finished { id: i, result: Err(CallError::DeadlineExceeded(d)) } if i == id && d == Duration::from_millis(50)
    ));
    assert!(matches!(
        p.server_events.remove(0),
        Event::Abort { id: i, reason: AbortReason::DeadlineExceeded | AbortReason::Cancelled } if i == id
    ));
    assert_eq!(p.server.calls_in_flight(), 0);
}

#[test]
fn the_servers_max_call_duration_bounds_calls_without_a_deadline_and_cuts_longer_ones() {
    let server = ConnConfig { max_call_duration: Some(Duration::from_millis(100)), ..ConnConfig::default() };
    let mut p = Pair::with(ConnConfig::default(), server);
    // No deadline from the caller: the server's limit is the call's deadline there.
    let open = p.call(1, Body::default(), None);
    let Event::Request { deadline, .. } = p.server_events.remove(0) else { panic!() };
    assert_eq!(deadline, Some(p.now + Duration::from_millis(100)));
    // A longer deadline is cut to the limit; a shorter one stays.
    let long = p.call(1, Body::default(), Some(Duration::from_secs(60)));
    let Event::Request { deadline, .. } = p.server_events.remove(0) else { panic!() };
    assert_eq!(deadline, Some(p.now + Duration::from_millis(100)));
    let short = p.call(1, Body::default(), Some(Duration::from_millis(30)));
    let Event::Request { deadline, .. } = p.server_events.remove(0) else { panic!() };
    assert_eq!(deadline, Some(p.now + Duration::from_millis(30)));
    p.advance(Duration::from_millis(30));
    assert!(matches!(p.client_events.remove(0), Event::Finished { id, result: Err(CallError::DeadlineExceeded(_)) } if id == short));
    p.server_events.clear();
    // At the limit the server drops both handlers and tells both callers why.
    p.advance(Duration::from_millis(70));
    let aborted: Vec<u64> = p.server_events.iter().filter_map(|e| match e {
        Event::Abort { id, reason: AbortReason::DeadlineExceeded } => Some(*id),
        _ => None,
    }).collect();
    assert_eq!(aborted.len(), 2, "{:?}", p.server_events);
    for (i, want) in [open, long].into_iter().enumerate() {
        let Event::Finished { id, result: Err(e) } = &p.client_events[i] else { panic!("{:?}", p.client_events) };
        assert_eq!(*id, want);
        assert_eq!(e.code(), Code::DEADLINE_EXCEEDED, "{e}");
        assert!(e.to_string().contains("deadline of 100ms exceeded"), "{e}");
    }
    assert_eq!((p.server.calls_in_flight(), p.client.calls_in_flight()), (0, 0));
}

#[test]
fn a_deadline_answer_from_the_server_that_comes_first_is_the_callers_own_deadline() {
    let mut p = Pair::new();
    let id = p.call(1, Body::default(), Some(Duration::from_millis(50)));
    // The server's timer runs first; its answer is read before the client's timer runs.
    p.now += Duration::from_millis(50);
    p.server.handle_timeout(p.now);
    p.drive();
    assert!(matches!(
        p.client_events.remove(0),
        Event::Finished { id: i, result: Err(CallError::DeadlineExceeded(d)) } if i == id && d == Duration::from_millis(50)
    ));
    assert_eq!(p.client.calls_in_flight(), 0);
    // A handler that answers DEADLINE_EXCEEDED itself, before the call's deadline: its status.
    let id = p.call(1, Body::default(), Some(Duration::from_millis(50)));
    let Event::Request { id: sid, .. } = p.server_events.pop().unwrap() else { panic!() };
    p.server.respond(sid, Err(Status::new(Code::DEADLINE_EXCEEDED, "upstream timed out")));
    p.drive();
    let Event::Finished { id: i, result: Err(CallError::Status(s)) } = p.client_events.remove(0) else { panic!() };
    assert_eq!((i, s.message.as_str()), (id, "upstream timed out"));
}

#[test]
fn keepalive_pings_when_quiet_and_gives_up_without_pong() {
    let cfg = ConnConfig {
        keepalive_interval: Some(Duration::from_secs(1)),
        keepalive_timeout: Duration::from_secs(2),
        ..ConnConfig::default()
    };
    let mut p = Pair::with(cfg.clone(), ConnConfig { keepalive_interval: None, ..cfg });
    p.advance(Duration::from_secs(1));
    // The ping went out and the pong came back: still open, nothing outstanding.
    assert!(p.client.is_open());
    assert!(!p.client.keepalive.ping_out());
    // Now the server stops answering (we stop delivering its bytes).
    p.now += Duration::from_secs(1);
    p.client.handle_timeout(p.now);
    assert!(p.client.has_transmits(), "ping queued");
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    p.client.handle_written(out.iter().map(Transmit::len).sum(), p.now);
    p.now += Duration::from_secs(2);
    p.client.handle_timeout(p.now);
    assert!(!p.client.is_open());
    let mut saw = false;
    while let Some(e) = p.client.poll_event() {
        saw |= matches!(e, Event::Closed(ConnectionError::KeepaliveTimeout(_)));
    }
    assert!(saw);
}

#[test]
fn goaway_lets_accepted_calls_finish_and_refuses_new_ones() {
    let mut p = Pair::new();
    let first = p.call(1, Body::default(), None);
    p.server_events.clear();
    p.server.goaway("maintenance");
    p.drive();
    assert!(matches!(&p.client_events[0], Event::GoAway { code: Code::OK, message } if message == "maintenance"));
    assert!(matches!(p.client.start_call(1, Body::default(), CallMode::UNARY, &Metadata::default(), None, p.now), Err(CallError::ShuttingDown)));
    // The accepted call still gets its answer.
    p.server.respond(first, Ok(Body::message(Bytes::from_static(b"done"))));
    p.drive();
    assert!(matches!(&p.client_events[1], Event::Finished { id, result: Ok(_) } if *id == first));
}

#[test]
fn request_after_goaway_is_unavailable() {
    let mut p = Pair::new();
    p.server.goaway("bye");
    // The client has not seen the goaway yet when it sends.
    let id = p.client.start_call(1, Body::default(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    p.drive();
    assert!(p.server_events.is_empty());
    let finished = p.client_events.iter().find_map(|e| match e {
        Event::Finished { id: i, result } if *i == id => Some(result.clone()),
        _ => None,
    });
    let err = finished.expect("call finished").unwrap_err();
    assert!(matches!(err, CallError::ShuttingDown) || err.code() == Code::UNAVAILABLE, "{err:?}");
}

#[test]
fn calls_over_the_limit_are_refused_with_resource_exhausted() {
    let server = ConnConfig { max_calls_in_flight: 2, ..ConnConfig::default() };
    let mut p = Pair::with(ConnConfig::default(), server);
    p.call(1, Body::default(), None);
    p.call(1, Body::default(), None);
    let third = p.call(1, Body::default(), None);
    assert_eq!(p.server.calls_in_flight(), 2);
    let Some(Event::Finished { id, result: Err(CallError::Status(s)) }) = p.client_events.pop() else { panic!() };
    assert_eq!((id, s.code), (third, Code::RESOURCE_EXHAUSTED));
}

#[test]
fn client_checks_the_servers_frame_limit_before_sending() {
    let server = ConnConfig { max_frame: 4096, ..ConnConfig::default() };
    let mut p = Pair::with(ConnConfig::default(), server);
    let big = Body::new(Bytes::new(), vec![Payload::from(vec![0u8; 8192])]);
    let err = p.client.start_call(1, big, CallMode::UNARY, &Metadata::default(), None, p.now).unwrap_err();
    assert_eq!(err, CallError::TooLarge { len: 8192, limit: 4096 });
    assert!(!p.client.has_transmits());
}

#[test]
fn a_request_sent_to_a_client_is_a_protocol_violation() {
    let mut p = Pair::new();
    let t = crate::frame::Request { id: 1, method: 1, mode: Default::default(), await_commit: false, deadline: None, metadata: Bytes::new(), message: Bytes::new(), attachments: vec![] }
        .encode()
        .unwrap();
    p.client_in.extend_from_slice(&t.to_vec());
    let err = p.client.handle_input(&mut p.client_in, p.now).unwrap_err();
    assert!(matches!(&err, ConnectionError::Protocol(m) if m.contains("request frame is not allowed from a server")));
    // The goaway that names the problem is queued for the peer.
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    let bytes = out.last().unwrap().to_vec();
    assert_eq!(bytes[0], crate::frame::FrameKind::GoAway as u8);
    assert!(String::from_utf8_lossy(&bytes).contains("not allowed"));
}

#[test]
fn refused_connection_reports_the_servers_reason() {
    let now = Instant::now();
    let mut server = Connection::refuse(ConnConfig::default(), now, Code::RESOURCE_EXHAUSTED, "full".into());
    let mut client = Connection::new(Side::Client, ConnConfig::default(), now);
    let mut out = Vec::new();
    server.take_transmits(&mut out);
    let mut buf = BytesMut::new();
    for t in &out {
        buf.extend_from_slice(&t.to_vec());
    }
    let _ = client.handle_input(&mut buf, now);
    let events: Vec<Event> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(matches!(&events[0], Event::Refused { code: Code::RESOURCE_EXHAUSTED, message } if message == "full"));
    assert!(!client.is_open());
}

#[test]
fn peer_vanishing_fails_every_call_in_flight() {
    let mut p = Pair::new();
    let a = p.call(1, Body::default(), None);
    let b = p.call(1, Body::default(), None);
    p.client.handle_eof(&BytesMut::new());
    let failed: Vec<u64> = std::iter::from_fn(|| p.client.poll_event())
        .filter_map(|e| match e {
            Event::Finished { id, result: Err(CallError::Connection(ConnectionError::Closed)) } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.contains(&a) && failed.contains(&b));
}

#[test]
fn eof_in_the_middle_of_a_frame_is_reported_as_truncated() {
    let mut p = Pair::new();
    let mut partial = BytesMut::from(&[1u8, 0, 0][..]);
    let _ = p.client.handle_input(&mut partial, p.now);
    p.client.handle_eof(&partial);
    let closed = std::iter::from_fn(|| p.client.poll_event()).find_map(|e| match e {
        Event::Closed(err) => Some(err),
        _ => None,
    });
    assert!(matches!(closed, Some(ConnectionError::Decode(DecodeError::Truncated { have: 3, .. }))));
}

#[test]
fn a_peer_that_pings_without_reading_is_cut_off_not_buffered_forever() {
    let mut p = Pair::new();
    let mut flood = BytesMut::new();
    for id in 0..12_000 {
        flood.extend_from_slice(&crate::frame::Ping { id, pong: false }.encode().unwrap().to_vec());
    }
    // The server never gets to send (its transmits are not taken).
    let err = p.server.handle_input(&mut flood, p.now).unwrap_err();
    assert!(matches!(&err, ConnectionError::Protocol(m) if m.contains("not reading")), "{err}");
    let mut out = Vec::new();
    p.server.take_transmits(&mut out);
    assert!(out.len() <= 10_000 + CONTROL_BACKLOG + 1, "{} answers queued", out.len());
}

#[test]
fn a_peer_that_never_says_hello_is_closed_after_the_handshake_timeout() {
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, ConnConfig::default(), now);
    assert_eq!(server.poll_timeout(), Some(now + Duration::from_secs(10)));
    server.handle_timeout(now + Duration::from_secs(9));
    assert!(server.is_open());
    server.handle_timeout(now + Duration::from_secs(10));
    assert!(!server.is_open());
    let closed = std::iter::from_fn(|| server.poll_event()).find_map(|e| match e {
        Event::Closed(err) => Some(err.to_string()),
        _ => None,
    });
    assert!(closed.unwrap().contains("no hello from the peer within 10s"));
}

#[test]
fn a_peer_trickling_its_hello_does_not_stretch_the_handshake_timeout() {
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, ConnConfig::default(), now);
    let hello = Hello { version: crate::frame::WIRE_VERSION, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 };
    // Most of the hello, one second before the deadline: still a handshake.
    let mut buf = BytesMut::from(&hello.encode()[..20]);
    let _ = server.handle_input(&mut buf, now + Duration::from_secs(9));
    assert_eq!(server.poll_timeout(), Some(now + Duration::from_secs(10)));
    server.handle_timeout(now + Duration::from_secs(10));
    assert!(!server.is_open());
}

fn closed_reason(events: &mut Vec<Event>) -> Option<ConnectionError> {
    events.drain(..).find_map(|e| match e {
        Event::Closed(err) => Some(err),
        _ => None,
    })
}

/// A client past its handshake, pinging after 1 s of quiet and giving up 2 s after a ping.
pub(super) fn keepalive_client(now: Instant) -> Connection {
    client_with_keepalive(Some(Duration::from_secs(1)), Duration::from_secs(2), now)
}

#[test]
fn a_ping_stuck_behind_our_own_large_frame_does_not_time_out_until_written() {
    let now = Instant::now();
    let mut c = keepalive_client(now);
    c.take_transmits(&mut Vec::new());
    c.handle_written(usize::MAX, now);
    // Quiet for the interval: a ping is queued, and taken by a writer busy with a large upload.
    c.handle_timeout(now + Duration::from_secs(1));
    assert!(c.awaits_write_time());
    c.take_transmits(&mut Vec::new());
    // Long past the timeout, the batch is still being written: not dead, no deadline armed.
    c.handle_timeout(now + Duration::from_secs(60));
    assert!(c.is_open());
    assert_eq!(c.poll_timeout(), None);
    // Written at 60 s: the timeout counts from there.
    c.handle_written(1 << 20, now + Duration::from_secs(60));
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(62)));
    c.handle_timeout(now + Duration::from_secs(61));
    assert!(c.is_open());
    c.handle_timeout(now + Duration::from_secs(62));
    assert!(!c.is_open());
}

#[test]
fn any_bytes_from_the_peer_count_as_liveness() {
    let now = Instant::now();
    let mut c = keepalive_client(now);
    // The peer never answers a ping, but keeps sending other frames (here: pongs for pings we
    // never sent, which are ignored but are bytes): the connection stays up for a minute.
    for s in 1..=60 {
        let t = now + Duration::from_secs(s);
        c.handle_timeout(t);
        let mut out = Vec::new();
        c.take_transmits(&mut out);
        c.handle_written(out.iter().map(Transmit::len).sum(), t);
        let mut bytes = BytesMut::from(&crate::frame::Ping { id: 1000 + s, pong: true }.encode().unwrap().to_vec()[..]);
        c.handle_input(&mut bytes, t + Duration::from_millis(500)).unwrap();
    }
    assert!(c.is_open());
    // Silence: the next ping goes unanswered and the timeout ends it.
    let t = now + Duration::from_secs(62);
    c.handle_timeout(t);
    let mut out = Vec::new();
    c.take_transmits(&mut out);
    c.handle_written(out.iter().map(Transmit::len).sum(), t);
    c.handle_timeout(t + Duration::from_secs(2));
    assert!(!c.is_open());
}

#[test]
fn huge_timeouts_mean_no_deadline_instead_of_a_panic_or_a_wrapped_budget() {
    let mut p = Pair::new();
    let id = p.call(1, Body::default(), Some(Duration::MAX));
    let Some(Event::Request { id: rid, deadline, .. }) = p.server_events.pop() else { panic!("request") };
    assert_eq!((rid, deadline), (id, None));
    // 2^64 µs + 5 µs: the wire saturates instead of wrapping around to a 5 µs budget.
    let t = Duration::from_micros(u64::MAX) + Duration::from_micros(6);
    let wire = crate::frame::Request { id: 9, method: 1, mode: Default::default(), await_commit: false, deadline: Some(t), metadata: Bytes::new(), message: Bytes::new(), attachments: vec![] }
        .encode()
        .unwrap();
    let mut buf = BytesMut::from(&wire.to_vec()[..]);
    p.server.handle_input(&mut buf, p.now).unwrap();
    let Some(Event::Request { deadline, .. }) = p.server.poll_event() else { panic!("request") };
    assert!(deadline.is_none_or(|d| d > p.now + Duration::from_secs(86_400 * 365 * 1000)), "{deadline:?}");
}

#[test]
fn an_error_status_over_the_clients_limits_becomes_resource_exhausted_and_the_connection_lives() {
    let client = ConnConfig { max_frame: 4096, ..ConnConfig::default() };
    let mut p = Pair::with(client, ConnConfig::default());
    let id = p.call(1, Body::default(), None);
    p.server.respond(id, Err(Status::new(Code::INTERNAL, "e".repeat(10_000))));
    let id2 = p.call(1, Body::default(), None);
    p.server.respond(id2, Ok(Body::default()));
    p.drive();
    assert!(p.client.is_open());
    let results: Vec<_> = p
        .client_events
        .drain(..)
        .filter_map(|e| match e {
            Event::Finished { id, result } => Some((id, result)),
            _ => None,
        })
        .collect();
    let Err(CallError::Status(s)) = &results[0].1 else { panic!("{results:?}") };
    assert_eq!((results[0].0, s.code), (id, Code::RESOURCE_EXHAUSTED));
    assert!(s.message.contains("10000 bytes of text"), "{}", s.message);
    assert!(results[1].1.is_ok());
}

#[test]
fn a_response_the_wire_cannot_describe_is_answered_internal_not_dropped() {
    let client = ConnConfig { max_attachments: 100_000, ..ConnConfig::default() };
    let mut p = Pair::with(client, ConnConfig::default());
    let id = p.call(1, Body::default(), None);
    let many = Body::new(Bytes::new(), vec![Payload::from(Bytes::from_static(b"x")); 70_000]);
    p.server.respond(id, Ok(many));
    p.drive();
    let Some(Event::Finished { id: fid, result: Err(CallError::Status(s)) }) = p.client_events.pop() else { panic!() };
    assert_eq!((fid, s.code), (id, Code::INTERNAL));
    assert!(s.message.contains("70000 attachments"), "{}", s.message);
}

#[test]
fn held_bytes_count_requests_until_answered_and_answers_until_written() {
    let mut p = Pair::new();
    p.server.take_transmits(&mut Vec::new());
    p.server.handle_written(usize::MAX, p.now);
    assert_eq!(p.server.held_bytes(), 0);
    let id = p.call(1, Body::new(Bytes::new(), vec![Payload::from(vec![7u8; 1000])]), None);
    assert_eq!(p.server.held_bytes(), 1000);
    p.server.respond(id, Ok(Body::new(Bytes::new(), vec![Payload::from(vec![7u8; 3000])])));
    let queued = p.server.held_bytes();
    assert!(queued > 3000 && queued < 3100, "{queued}");
    let mut out = Vec::new();
    p.server.take_transmits(&mut out);
    assert_eq!(p.server.held_bytes(), queued, "taken but not yet written still counts");
    p.server.handle_written(out.iter().map(Transmit::len).sum(), p.now);
    assert_eq!(p.server.held_bytes(), 0);
}

#[test]
fn closing_on_a_protocol_error_drops_unwritten_answers_but_keeps_the_goaway() {
    let mut p = Pair::new();
    let id = p.call(1, Body::default(), None);
    p.server.take_transmits(&mut Vec::new());
    p.server.handle_written(usize::MAX, p.now);
    p.server.respond(id, Ok(Body::new(Bytes::new(), vec![Payload::from(vec![0u8; 1 << 20])])));
    assert!(p.server.held_bytes() > 1 << 20);
    let mut junk = BytesMut::from(&[0xffu8; 64][..]);
    assert!(p.server.handle_input(&mut junk, p.now).is_err());
    let mut out = Vec::new();
    p.server.take_transmits(&mut out);
    assert_eq!(out.len(), 1, "only the goaway is left");
    assert!(p.server.held_bytes() < 1024);
    p.client_in.extend_from_slice(&out[0].to_vec());
    let _ = p.client.handle_input(&mut p.client_in, p.now);
    let mut events: Vec<Event> = std::iter::from_fn(|| p.client.poll_event()).collect();
    assert!(matches!(closed_reason(&mut events), Some(ConnectionError::GoAway { code: Code::PROTOCOL, .. })));
}

#[test]
fn a_hello_with_a_frame_limit_below_the_minimum_is_refused() {
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, ConnConfig::default(), now);
    let hello = Hello { version: crate::frame::WIRE_VERSION, capabilities: 0, max_frame: 100, max_calls_in_flight: 1, max_attachments: 1, max_metadata: 0, stream_window: 0 };
    let mut buf = BytesMut::from(&hello.encode()[..]);
    let err = server.handle_input(&mut buf, now).unwrap_err();
    assert!(err.to_string().contains("below the minimum of 4096"), "{err}");
}

#[test]
fn a_request_cancelled_or_expired_before_the_writer_took_it_is_never_sent() {
    let mut p = Pair::new();
    let big = Body::new(Bytes::new(), vec![Payload::from(vec![1u8; 1 << 20])]);
    // Cancelled while still queued: withdrawn, no cancel either.
    let id = p.client.start_call(1, big.clone(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let held = p.client.held_bytes();
    p.client.cancel_call(id);
    assert!(!p.client.has_transmits());
    assert!(p.client.held_bytes() < held - (1 << 20));
    // Expired while still queued: the same.
    let id2 = p.client.start_call(1, big.clone(), CallMode::UNARY, &Metadata::default(), Some(Duration::from_millis(1)), p.now).unwrap();
    p.client.handle_timeout(p.now + Duration::from_millis(2));
    assert!(!p.client.has_transmits());
    assert!(matches!(p.client.poll_event(), Some(Event::Finished { id, result: Err(CallError::DeadlineExceeded(_)) }) if id == id2));
    p.drive();
    assert!(p.server_events.is_empty(), "the server saw {:?}", p.server_events);
    // Taken by the writer: it goes, and a cancel follows it.
    let id3 = p.client.start_call(1, big, CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    p.client.cancel_call(id3);
    let mut cancel = Vec::new();
    p.client.take_transmits(&mut cancel);
    assert_eq!(cancel.len(), 1);
    let h = FrameHeader::decode(&cancel[0].head[..HEADER_LEN]).unwrap();
    assert_eq!((h.kind, h.id), (FrameKind::Cancel, id3));
}

// ---- review findings (issue #8 change) ----

/// A client past its handshake with the given keepalive settings.
fn client_with_keepalive(interval: Option<Duration>, timeout: Duration, now: Instant) -> Connection {
    let cfg = ConnConfig { keepalive_interval: interval, keepalive_timeout: timeout, ..ConnConfig::default() };
    let mut c = Connection::new(Side::Client, cfg, now);
    let mut hello = BytesMut::from(&Connection::new(Side::Server, ConnConfig::default(), now).transmits[0].to_vec()[..]);
    c.handle_input(&mut hello, now).unwrap();
    c
}

/// keepalive.rs `next_timeout` adds `written_at + self.timeout` unchecked: a keepalive timeout
/// of `Duration::MAX` ("never give up on a ping") panics in `poll_timeout` once a ping is written
/// (in the driver: the timer task panics and the connection is closed as a zcrpc bug).
#[test]
fn review_keepalive_timeout_of_duration_max_does_not_panic() {
    let now = Instant::now();
    let mut c = client_with_keepalive(Some(Duration::from_secs(1)), Duration::MAX, now);
    c.take_transmits(&mut Vec::new());
    c.handle_written(usize::MAX, now);
    c.handle_timeout(now + Duration::from_secs(1));
    c.take_transmits(&mut Vec::new());
    c.handle_written(64, now + Duration::from_secs(1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.poll_timeout()));
    assert!(r.is_ok(), "poll_timeout panicked with keepalive_timeout = Duration::MAX");
}

/// keepalive.rs `on_timeout` compares `now >= self.last_rx + i` unchecked, while `next_timeout`
/// uses `checked_add` for the same sum: with `keepalive_interval = Some(Duration::MAX)` no
/// keepalive deadline is armed, but the first `handle_timeout` for any other reason (here: a
/// call's deadline) panics.
#[test]
fn review_keepalive_interval_of_duration_max_does_not_panic_at_a_call_deadline() {
    let now = Instant::now();
    let mut c = client_with_keepalive(Some(Duration::MAX), Duration::from_secs(20), now);
    c.start_call(1, Body { message: Bytes::from_static(b"x"), attachments: Vec::new() }, CallMode::UNARY, &Metadata::default(), Some(Duration::from_secs(1)), now)
        .unwrap();
    let at = c.poll_timeout().expect("the call's deadline");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.handle_timeout(at)));
    assert!(r.is_ok(), "handle_timeout panicked with keepalive_interval = Some(Duration::MAX)");
}

#[test]
fn a_large_request_is_held_until_its_commit_and_a_cancel_before_then_discards_it() {
    let mut p = Pair::new();
    let big = Body::new(Bytes::new(), vec![Payload::from(vec![1u8; AWAIT_COMMIT_FROM as usize])]);
    let id = p.client.start_call(1, big.clone(), CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    p.drive();
    // The whole request reached the server, which holds it: the writer has not said it is
    // written, so no commit followed.
    assert!(p.server_events.is_empty() && p.server.calls_in_flight() == 1);
    p.client.handle_written(usize::MAX / 2, p.now);
    p.drive();
    assert!(matches!(p.server_events.remove(0), Event::Request { id: i, .. } if i == id));
    p.server.respond(id, Ok(Body::default()));
    p.drive();

    // Given up on while being written: the cancel goes, the commit never does.
    let id = p.client.start_call(1, big, CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    p.drive();
    p.client.cancel_call(id);
    p.client.handle_written(usize::MAX / 2, p.now);
    p.drive();
    assert!(p.server_events.is_empty(), "never run, so nothing to abort: {:?}", p.server_events);
    assert_eq!(p.server.calls_in_flight(), 0);

    // Small requests are not held.
    p.call(1, Body::default(), None);
    assert!(matches!(p.server_events.remove(0), Event::Request { .. }));
}

/// review2: the caller gives up after the request was written but before the writer took its
/// commit: `withdraw_or_cancel` withdraws a queued request and its stream frames, not the queued
/// commit, so commit and cancel both go and the server runs the request (in a later read than
/// the commit, the handler runs until the cancel arrives). wire.md: the cancel takes the
/// commit's place. The built-in write loop calls handle_written and take_transmits in one
/// locked step, so only a driver of the public sans-IO `Connection` that does not hits it.
#[test]
fn a_cancel_withdraws_a_commit_still_queued() {
    let mut p = Pair::new();
    let big = Body::new(Bytes::new(), vec![Payload::from(vec![1u8; AWAIT_COMMIT_FROM as usize])]);
    let id = p.client.start_call(1, big, CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    p.drive();
    assert!(p.server_events.is_empty(), "held");
    // The writer reports the request written: the commit is queued, not yet taken.
    p.client.handle_written(usize::MAX / 2, p.now);
    assert!(p.client.has_transmits());
    // The caller gives up now (a cancel, a drop, its deadline).
    p.client.cancel_call(id);
    // The server reads the commit in one read, the cancel in the next.
    let mut out = Vec::new();
    p.client.take_transmits(&mut out);
    let now = p.now;
    for t in out {
        p.server_in.extend_from_slice(&t.to_vec());
        let _ = p.server.handle_input(&mut p.server_in, now);
        while let Some(e) = p.server.poll_event() {
            p.server_events.push(e);
        }
    }
    assert!(
        !p.server_events.iter().any(|e| matches!(e, Event::Request { .. })),
        "the request given up on ran on the server: {:?}",
        p.server_events.iter().map(|e| format!("{e:?}").chars().take(60).collect::<String>()).collect::<Vec<_>>()
    );
}

/// review2: start_call checks the body against the server's max_frame but not the metadata
/// block joined to the message (4 + block bytes), so a request with headers and a body near
/// the limit is sent over it; the server's decoder ends the connection with a PROTOCOL goaway
/// and every other call in flight fails with it. wire.md: the sender checks before sending.
#[test]
fn metadata_counts_toward_the_frame_limit_checked_before_sending() {
    let server = ConnConfig { max_frame: MIN_MAX_FRAME, ..ConnConfig::default() };
    let mut p = Pair::with(ConnConfig::default(), server);
    let other = p.call(1, Body::default(), None);
    assert!(matches!(p.server_events.remove(0), Event::Request { .. }));
    let md = Metadata::new().with("authorization", "bearer 0123456789");
    let body = Body::message(Bytes::from(vec![0u8; MIN_MAX_FRAME as usize]));
    let r = p.client.start_call(1, body, CallMode::UNARY, &md, None, p.now);
    p.drive();
    let killed = !p.server.is_open();
    assert!(
        r.is_err() && !killed,
        "start_call: {:?}; server closed: {killed}; the other call in flight ({other}) got: {:?}",
        r.map(|_| ()),
        p.client_events.iter().map(|e| format!("{e:?}").chars().take(90).collect::<String>()).collect::<Vec<_>>()
    );
}

#[test]
fn a_held_request_released_early_at_the_bound_still_takes_its_commit() {
    let server = ConnConfig { memory_budget: 128 << 10, ..ConnConfig::default() };
    let mut p = Pair::with(ConnConfig::default(), server);
    let big = Body::new(Bytes::new(), vec![Payload::from(vec![1u8; 300 << 10])]);
    let id = p.client.start_call(1, big, CallMode::UNARY, &Metadata::default(), None, p.now).unwrap();
    p.drive();
    // Over the bound on held requests: it runs at once, as if committed.
    assert!(matches!(p.server_events.remove(0), Event::Request { id: i, .. } if i == id));
    // Its commit, when it comes, is no protocol violation.
    p.client.handle_written(usize::MAX / 2, p.now);
    p.drive();
    assert!(p.server.is_open() && p.server_events.is_empty(), "{:?}", p.server_events);
}

