//! Request: a call with its method id, deadline budget, message and attachments.

use std::time::Duration;

use bytes::Bytes;

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;
use crate::payload::Payload;
use crate::transmit::Transmit;

/// A call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Call id, unique among the sender's calls in flight.
    pub id: u64,
    /// Method id.
    pub method: u32,
    /// Time the caller still gives the call, if any (microsecond resolution on the wire).
    pub deadline: Option<Duration>,
    /// Encoded arguments.
    pub message: Bytes,
    /// Attachments.
    pub attachments: Vec<Payload>,
}

impl Request {
    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::Request);
        f.header.id = self.id;
        f.header.method = self.method;
        // A budget under 1 µs still is a deadline: round up so it is not read as "none". One
        // too long for 64 bits of microseconds (580 000 years) saturates instead of wrapping.
        f.header.deadline_us = self.deadline.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
        f.message = self.message;
        f.attachments = self.attachments;
        f.encode()
    }

    /// Decodes from a raw frame.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        let h = f.header;
        Ok(Request {
            id: h.id,
            method: h.method,
            deadline: (h.deadline_us != 0).then(|| Duration::from_micros(h.deadline_us)),
            message: f.message,
            attachments: f.attachments,
        })
    }
}
