//! What this side may send: every answer is checked against the limits the peer declared in
//! its hello, since a frame the peer cannot decode ends the whole connection there (and with
//! it every other call on it), not just the one call.

use bytes::Bytes;

use super::Side;
use crate::body::Body;
use crate::code::Code;
use crate::error::{CallError, Status};
use crate::frame::Hello;
use crate::metadata::{self, Metadata};

/// Longest reason text this side puts in a goaway or a substituted status. Far below the
/// smallest `max_frame` a peer may declare ([`crate::frame::MIN_MAX_FRAME`]).
const SHORT_TEXT: usize = 256;

/// A body (message + attachments) the peer can take, with `extra` bytes of response metadata
/// beside it, or why not; `from` is this side (a server's answers and stream messages go to
/// the client, a client's stream messages to the server, and the error says which).
pub(super) fn check_body(peer: &Hello, from: Side, body: &Body, extra: u64) -> Result<(), String> {
    let (what, whose) = match from {
        Side::Server => ("response", "client"),
        Side::Client => ("stream message", "server"),
    };
    let limit = u64::from(peer.max_frame);
    if body.len() + extra > limit {
        let with = if extra > 0 { format!(" (with {extra} bytes of response metadata)") } else { String::new() };
        return Err(format!("{what} of {} bytes{with} is over the {whose}'s limit of {limit} bytes", body.len() + extra));
    }
    if body.attachments.len() > peer.max_attachments as usize {
        return Err(format!(
            "{what} has {} attachments; the {whose} accepts at most {}",
            body.attachments.len(),
            peer.max_attachments
        ));
    }
    Ok(())
}

/// The encoded block of a call's metadata, if the peer takes it: its keys valid, its size
/// within the limit the peer declared (the caller learns why not; nothing is sent).
pub(super) fn metadata_block(peer: &Hello, m: &Metadata) -> Result<Bytes, CallError> {
    if m.is_empty() {
        return Ok(Bytes::new());
    }
    metadata::check_keys(m).map_err(|e| CallError::Codec(e.to_string()))?;
    let len = m.encoded_len();
    let limit = peer.max_metadata as usize;
    if len > limit || m.len() > usize::from(u16::MAX) || m.iter().any(|(_, v)| v.len() > u32::MAX as usize) {
        let why = match limit {
            0 => "the server takes no metadata (its hello declares no limit)".to_owned(),
            _ => format!("metadata of {len} bytes ({} entries) is over the server's limit of {limit} bytes", m.len()),
        };
        return Err(CallError::Codec(why));
    }
    Ok(m.encode())
}

/// The status itself if the peer can take it; otherwise a short `RESOURCE_EXHAUSTED` saying
/// what was too large (the original code kept in the text).
pub(super) fn fit_status(peer: &Hello, status: Status) -> Status {
    let attachments = usize::from(!status.details.is_empty());
    let len = status.message.len() as u64 + status.details.len() as u64;
    if len <= u64::from(peer.max_frame) && attachments <= peer.max_attachments as usize {
        return status;
    }
    Status::new(
        Code::RESOURCE_EXHAUSTED,
        format!(
            "the handler's {} status ({} bytes of text, {} bytes of details) is over the client's limits \
             (max_frame {}, max_attachments {})",
            status.code,
            status.message.len(),
            status.details.len(),
            peer.max_frame,
            peer.max_attachments
        ),
    )
}

/// `text` cut to at most [`SHORT_TEXT`] bytes, on a character boundary.
pub(super) fn short_text(text: &str) -> String {
    if text.len() <= SHORT_TEXT {
        return text.to_owned();
    }
    let mut end = SHORT_TEXT - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::WIRE_VERSION;
    use crate::payload::Payload;
    use bytes::Bytes;

    fn peer(max_frame: u32, max_attachments: u32) -> Hello {
        Hello { version: WIRE_VERSION, capabilities: 0, max_frame, max_calls_in_flight: 1, max_attachments, max_metadata: 1024, stream_window: 0 }
    }

    #[test]
    fn statuses_over_the_peers_limits_become_short_resource_exhausted() {
        let p = peer(4096, 0);
        let long = Status::new(Code::INTERNAL, "x".repeat(5000));
        let s = fit_status(&p, long);
        assert_eq!(s.code, Code::RESOURCE_EXHAUSTED);
        assert!(s.message.contains("5000 bytes of text") && s.message.len() < 4096, "{}", s.message);
        // Details need an attachment the peer does not accept.
        let s = fit_status(&p, Status::application(Bytes::from_static(b"e")));
        assert_eq!(s.code, Code::RESOURCE_EXHAUSTED);
        let ok = Status::new(Code::INVALID_ARGUMENT, "missing");
        assert_eq!(fit_status(&p, ok.clone()), ok);
    }

    #[test]
    fn bodies_are_checked_for_size_and_attachment_count() {
        let p = peer(4096, 2);
        let three = Body::new(Bytes::new(), vec![Payload::from(Bytes::from_static(b"a")); 3]);
        assert!(check_body(&p, Side::Server, &three, 0).unwrap_err().contains("3 attachments"));
        let big = Body::message(Bytes::from(vec![0u8; 4097]));
        assert_eq!(check_body(&p, Side::Server, &big, 0).unwrap_err(), "response of 4097 bytes is over the client's limit of 4096 bytes");
        assert_eq!(check_body(&p, Side::Client, &big, 0).unwrap_err(), "stream message of 4097 bytes is over the server's limit of 4096 bytes");
        assert!(check_body(&p, Side::Server, &Body::message(Bytes::from_static(b"fine")), 0).is_ok());
    }

    #[test]
    fn metadata_is_checked_against_the_peers_limit_before_sending() {
        let p = peer(4096, 1);
        assert!(metadata_block(&p, &Metadata::new()).unwrap().is_empty());
        let small = Metadata::new().with("a", "b");
        assert_eq!(metadata_block(&p, &small).unwrap(), small.encode());
        let big = Metadata::new().with("a", vec![0u8; 2000]);
        let e = metadata_block(&p, &big).unwrap_err().to_string();
        assert!(e.contains("over the server's limit of 1024 bytes"), "{e}");
        let none = Hello { max_metadata: 0, ..p };
        assert!(metadata_block(&none, &small).unwrap_err().to_string().contains("takes no metadata"));
        let bad: Metadata = [("bad key".to_owned(), Bytes::new())].into_iter().collect();
        assert!(metadata_block(&p, &bad).unwrap_err().to_string().contains("not printable ASCII"));
    }

    #[test]
    fn short_text_cuts_on_a_character_boundary() {
        let t = "é".repeat(300);
        let s = short_text(&t);
        assert!(s.len() <= SHORT_TEXT && s.ends_with("..."));
        assert_eq!(short_text("short"), "short");
    }
}
