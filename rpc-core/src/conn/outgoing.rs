//! What this side may send: every answer is checked against the limits the peer declared in
//! its hello, since a frame the peer cannot decode ends the whole connection there (and with
//! it every other call on it), not just the one call.

use crate::body::Body;
use crate::code::Code;
use crate::error::Status;
use crate::frame::Hello;

/// Longest reason text this side puts in a goaway or a substituted status. Far below the
/// smallest `max_frame` a peer may declare ([`crate::frame::MIN_MAX_FRAME`]).
const SHORT_TEXT: usize = 256;

/// A body (message + attachments) the peer can take, or why not.
pub(super) fn check_body(peer: &Hello, body: &Body) -> Result<(), String> {
    let limit = u64::from(peer.max_frame);
    if body.len() > limit {
        return Err(format!("response of {} bytes is over the client's limit of {limit} bytes", body.len()));
    }
    if body.attachments.len() > peer.max_attachments as usize {
        return Err(format!(
            "response has {} attachments; the client accepts at most {}",
            body.attachments.len(),
            peer.max_attachments
        ));
    }
    Ok(())
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
        Hello { version: WIRE_VERSION, capabilities: 0, max_frame, max_calls_in_flight: 1, max_attachments }
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
        assert!(check_body(&p, &three).unwrap_err().contains("3 attachments"));
        let big = Body::message(Bytes::from(vec![0u8; 4097]));
        assert!(check_body(&p, &big).unwrap_err().contains("4097 bytes"));
        assert!(check_body(&p, &Body::message(Bytes::from_static(b"fine"))).is_ok());
    }

    #[test]
    fn short_text_cuts_on_a_character_boundary() {
        let t = "é".repeat(300);
        let s = short_text(&t);
        assert!(s.len() <= SHORT_TEXT && s.ends_with("..."));
        assert_eq!(short_text("short"), "short");
    }
}
