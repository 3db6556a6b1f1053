//! Flow control of one streaming call, in bytes of stream data (message + attachments of each
//! stream data frame).
//!
//! Each side grants the other a window per stream (its hello's `stream_window`). A sender may
//! start a stream data frame only while its credit is positive; the frame's length is then taken
//! off, so the credit may go negative by less than one frame (a message larger than the window
//! still goes, alone). The receiver grants credit back as the application consumes messages, in
//! bulk: once half a window is owed. So a receiver holds at most one window plus one frame per
//! stream, and a slow reader on one stream never makes the connection buffer without bound.

use bytes::Buf;

use crate::frame::{Frame, FrameHeader, FrameKind, RawFrame, HEADER_LEN};
use crate::transmit::Transmit;

/// What each stream data frame costs beyond its message and attachments, in credit and against
/// the memory budget: its header. So empty messages are flow-controlled too, and a stream of
/// tiny ones is charged for the memory each really takes.
pub(super) const FRAME_COST: u64 = crate::frame::HEADER_LEN as u64;

/// A connection's window is this many stream windows: every stream of the connection together
/// may have at most that much unconsumed at the receiver (see `docs/wire.md`).
pub(super) const CONNECTION_WINDOWS: u64 = 16;

/// The credit a stream data frame with `len` bytes of message and attachments costs.
pub(super) fn cost(len: u64) -> u64 {
    len.saturating_add(FRAME_COST)
}

/// The credit `messages` stream messages of `bytes` bytes in all cost together (each its
/// [`cost`]): a batch, or messages consumed at once.
pub(super) fn run_cost(messages: usize, bytes: u64) -> u64 {
    bytes.saturating_add(messages as u64 * FRAME_COST)
}

/// The credit the stream data in `t` took when it was queued: each message's [`cost`], whether
/// `t` is one stream data frame, a batch, or a run of frames back to back; 0 for a frame of any
/// other kind. For what a withdrawn transmit gives back: the peer never receives it, so it
/// never grants it back. Cold (a cancel's): it reads `t`'s bytes again.
pub(super) fn queued_cost(t: &Transmit) -> u64 {
    let mut bytes = bytes::Bytes::from(t.to_vec());
    let mut total = 0;
    while bytes.len() >= HEADER_LEN {
        let Ok(header) = FrameHeader::decode(&bytes[..HEADER_LEN]) else { break };
        let len = usize::try_from(crate::frame::body_len(&header)).unwrap_or(usize::MAX).saturating_add(HEADER_LEN);
        if header.kind != FrameKind::StreamData || len > bytes.len() {
            break;
        }
        let mut frame = bytes.split_to(len);
        frame.advance(HEADER_LEN);
        total += match RawFrame::from_body(header, frame).and_then(|(raw, _)| Frame::decode(raw)) {
            Ok(Frame::StreamData(d)) => cost(d.message.len() as u64 + d.attachments.iter().map(|a| a.len() as u64).sum::<u64>()),
            Ok(Frame::StreamBatch(b)) => run_cost(b.messages.len(), b.messages.message_bytes() as u64),
            _ => 0,
        };
    }
    total
}

/// The most credit a sender may hold: a grant past it is a protocol violation (it would
/// overflow, or it is nonsense: no one buffers 2^62 bytes).
pub(super) const MAX_CREDIT: i64 = 1 << 62;

/// Flow state of one streaming call, seen from this side.
#[derive(Debug)]
pub(super) struct Flow {
    /// Our direction streams (credit for it is legal).
    sends: bool,
    /// We may still send stream data: our direction streams, and we have not ended it.
    pub(super) send_open: bool,
    /// The peer may still send stream data.
    pub(super) recv_open: bool,
    /// Bytes we may still send (as the peer granted).
    send_credit: i64,
    /// Bytes the peer may still send (as we granted).
    recv_credit: i64,
    /// The window we grant.
    window: u64,
    /// Bytes the application consumed since our last grant.
    owed: u64,
}

impl Flow {
    /// A stream that sends if `send_open`, with the peer's `peer_window` as credit, and receives
    /// if `recv_open`, granting `window`.
    pub(super) fn new(send_open: bool, recv_open: bool, peer_window: u32, window: u32) -> Self {
        Self::with_windows(send_open, recv_open, u64::from(peer_window), u64::from(window))
    }

    /// The flow of a whole connection: every stream's data counts against it too.
    pub(super) fn connection(peer_stream_window: u32, stream_window: u32) -> Self {
        let w = |stream: u32| u64::from(stream).saturating_mul(CONNECTION_WINDOWS);
        Self::with_windows(true, true, w(peer_stream_window), w(stream_window))
    }

    fn with_windows(send_open: bool, recv_open: bool, peer_window: u64, window: u64) -> Self {
        let credit = |w: u64| w.min(MAX_CREDIT as u64) as i64;
        Flow {
            sends: send_open,
            send_open,
            recv_open,
            send_credit: credit(peer_window),
            recv_credit: credit(window),
            window,
            owed: 0,
        }
    }

    /// The credit left to send with (a frame may start while it is positive).
    pub(super) fn send_credit(&self) -> i64 {
        self.send_credit
    }

    /// True when a stream data frame may go now.
    pub(super) fn can_send(&self) -> bool {
        self.send_open && self.send_credit > 0
    }

    /// A stream data frame of `len` bytes (message and attachments) went out.
    pub(super) fn on_sent(&mut self, len: u64) {
        debug_assert!(self.can_send());
        self.send_credit = self.send_credit.saturating_sub(cost(len).min(MAX_CREDIT as u64) as i64);
    }

    /// `messages` stream messages of `bytes` bytes in all went out, each as [`Flow::on_sent`]
    /// would have taken it (the caller checked the credit before each).
    pub(super) fn on_sent_run(&mut self, messages: usize, bytes: u64) {
        self.send_credit = self.send_credit.saturating_sub(run_cost(messages, bytes).min(MAX_CREDIT as u64) as i64);
    }

    /// Stream data costing `cost` that went out of credit was withdrawn before it was written:
    /// the credit is ours again. True when sending was blocked and now may go on.
    pub(super) fn on_withdrawn(&mut self, cost: u64) -> bool {
        let was_blocked = self.send_credit <= 0;
        self.send_credit = self.send_credit.saturating_add(cost.min(MAX_CREDIT as u64) as i64).min(MAX_CREDIT);
        was_blocked && self.send_credit > 0
    }

    /// The peer granted `bytes` more. `Ok(true)` when sending was blocked and now may go on.
    pub(super) fn on_credit(&mut self, bytes: u64) -> Result<bool, String> {
        if !self.sends {
            return Err("a credit for a direction that does not stream".into());
        }
        let was_blocked = self.send_credit <= 0;
        let grant = i64::try_from(bytes).ok().filter(|&b| b <= MAX_CREDIT);
        match grant.and_then(|g| self.send_credit.checked_add(g)).filter(|&c| c <= MAX_CREDIT) {
            Some(credit) => {
                self.send_credit = credit;
                Ok(was_blocked && credit > 0)
            }
            None => Err(format!(
                "a grant of {bytes} bytes on top of {} would exceed the most credit a stream may hold (2^62)",
                self.send_credit
            )),
        }
    }

    /// A stream data frame of `len` bytes arrived: an error when the peer had no credit left or
    /// had ended its side.
    #[cfg(test)]
    pub(super) fn on_received(&mut self, len: u64) -> Result<(), String> {
        let c = cost(len);
        self.on_received_run(c, c)
    }

    /// Stream data frames costing `total` in all arrived one after the other (the messages of a
    /// batch), the last costing `last`: charged as frame after frame, in one step. Credit only
    /// falls along the run, so the peer had credit before each frame exactly when it had some
    /// before the last.
    pub(super) fn on_received_run(&mut self, total: u64, last: u64) -> Result<(), String> {
        if !self.recv_open {
            return Err("stream data after the stream ended".into());
        }
        let clamp = |c: u64| c.min(MAX_CREDIT as u64) as i64;
        let before_last = self.recv_credit.saturating_sub(clamp(total.saturating_sub(last)));
        if before_last <= 0 {
            return Err(format!("stream data beyond the granted credit ({before_last} bytes left)"));
        }
        self.recv_credit = before_last.saturating_sub(clamp(last));
        Ok(())
    }

    /// The application consumed a message of `len` bytes: the grant to send back, once half a
    /// window is owed.
    #[cfg(test)]
    pub(super) fn on_consumed(&mut self, len: u64) -> Option<u64> {
        self.on_consumed_cost(cost(len))
    }

    /// The application consumed messages costing `cost` in all (see [`cost`]).
    pub(super) fn on_consumed_cost(&mut self, cost: u64) -> Option<u64> {
        if !self.recv_open {
            return None;
        }
        self.owed = self.owed.saturating_add(cost);
        if self.owed < self.window.div_ceil(2).max(1) {
            return None;
        }
        let grant = std::mem::take(&mut self.owed);
        self.recv_credit = self.recv_credit.saturating_add(grant as i64);
        Some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_goes_while_credit_is_positive_and_may_overshoot_by_one_frame() {
        let mut f = Flow::new(true, false, 100 + 2 * FRAME_COST as u32, 0);
        assert!(f.can_send());
        f.on_sent(60);
        assert!(f.can_send());
        // A frame larger than what is left still goes; then the sender waits.
        f.on_sent(1000);
        assert!(!f.can_send());
        assert_eq!(f.on_credit(500), Ok(false), "still in debt: not yet ready");
        assert_eq!(f.on_credit(600), Ok(true));
        assert!(f.can_send());
    }

    #[test]
    fn grants_come_in_bulk_once_half_a_window_is_consumed() {
        let c = FRAME_COST;
        let mut f = Flow::new(false, true, 0, 1000 + 2 * c as u32);
        f.on_received(400).unwrap();
        f.on_received(400).unwrap();
        assert_eq!(f.on_consumed(400), None);
        assert_eq!(f.on_consumed(400), Some(800 + 2 * c));
        // The receiver's view of the peer's credit follows the grants; every frame costs its
        // header too, an empty one included.
        f.on_received(900).unwrap();
        f.on_received(100).unwrap();
        f.on_received(0).unwrap_err();
    }

    #[test]
    fn a_run_of_frames_is_charged_as_frame_after_frame() {
        let c = FRAME_COST;
        // Three frames of 100 bytes: the last may start with any credit left, and overshoot.
        let mut one_by_one = Flow::new(false, true, 0, (200 + 2 * c + 1) as u32);
        let mut run = Flow::new(false, true, 0, (200 + 2 * c + 1) as u32);
        for _ in 0..3 {
            one_by_one.on_received(100).unwrap();
        }
        run.on_received_run(3 * cost(100), cost(100)).unwrap();
        assert_eq!(run.recv_credit, one_by_one.recv_credit);
        assert_eq!(run.recv_credit, 1 - 100 - c as i64);
        // A fourth frame would have found no credit: the run of four is refused.
        let mut run = Flow::new(false, true, 0, (200 + 2 * c + 1) as u32);
        one_by_one.on_received(1).unwrap_err();
        let e = run.on_received_run(3 * cost(100) + cost(1), cost(1)).unwrap_err();
        assert!(e.contains("beyond the granted credit"), "{e}");
        run.recv_open = false;
        assert!(run.on_received_run(cost(1), cost(1)).unwrap_err().contains("after the stream ended"));
    }

    #[test]
    fn a_credit_for_a_direction_that_does_not_stream_is_an_error() {
        let mut f = Flow::new(false, true, 0, 4096);
        assert!(f.on_credit(1).unwrap_err().contains("does not stream"));
        // A direction that streamed and ended may still get a late grant.
        let mut f = Flow::new(true, false, 4096, 0);
        f.send_open = false;
        assert!(f.on_credit(1).is_ok());
    }

    #[test]
    fn overflowing_grants_and_data_past_credit_or_end_are_errors() {
        let mut f = Flow::new(true, true, 10, 10 + FRAME_COST as u32);
        assert!(f.on_credit(u64::MAX).unwrap_err().contains("2^62"));
        assert!(f.on_credit(MAX_CREDIT as u64).is_err(), "10 + 2^62 is over");
        f.on_received(10).unwrap();
        assert!(f.on_received(1).unwrap_err().contains("beyond the granted credit"));
        f.recv_open = false;
        assert!(f.on_received(1).unwrap_err().contains("after the stream ended"));
        assert_eq!(f.on_consumed(1000), None, "no grants for a stream that ended");
    }
}
