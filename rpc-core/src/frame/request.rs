//! Request: a call with its method id, deadline budget, message and attachments.

use std::time::Duration;

use bytes::Bytes;

use super::header::FrameKind;
use super::raw::{EncodeError, RawFrame};
use crate::error::DecodeError;
use crate::payload::Payload;
use crate::transmit::Transmit;

/// Request flag: the client sends a stream (stream data frames, then a stream end) after the
/// request.
pub const FLAG_CLIENT_STREAM: u8 = 1 << 0;
/// Request flag: the server answers with a stream (stream data frames, then a stream end or an
/// error) instead of one response.
pub const FLAG_SERVER_STREAM: u8 = 1 << 1;

/// Request flag: the message begins with the call's metadata: a `u32` LE length, then that many
/// bytes of metadata block (see [`crate::Metadata`]), then the encoded arguments.
pub const FLAG_METADATA: u8 = 1 << 2;

/// Request flag: hold the request, unrun, until a commit frame for it arrives; a cancel before
/// then discards it. A large request is sent so, its commit following once it is written in
/// full, so that a caller who gives up while it is on the wire never has it run.
pub const FLAG_AWAIT_COMMIT: u8 = 1 << 3;

/// Which directions of a call carry a stream of messages after the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CallMode {
    /// The client sends messages after the request, then ends its side.
    pub client_stream: bool,
    /// The server answers with messages, then ends the call.
    pub server_stream: bool,
}

impl CallMode {
    /// One request, one response.
    pub const UNARY: CallMode = CallMode { client_stream: false, server_stream: false };
    /// A stream of requests, one response.
    pub const CLIENT_STREAMING: CallMode = CallMode { client_stream: true, server_stream: false };
    /// One request, a stream of responses.
    pub const SERVER_STREAMING: CallMode = CallMode { client_stream: false, server_stream: true };
    /// Streams both ways.
    pub const BIDI: CallMode = CallMode { client_stream: true, server_stream: true };

    /// True unless both directions are single messages.
    pub fn is_streaming(self) -> bool {
        self.client_stream || self.server_stream
    }

    /// The header flags.
    pub fn flags(self) -> u8 {
        (u8::from(self.client_stream) * FLAG_CLIENT_STREAM) | (u8::from(self.server_stream) * FLAG_SERVER_STREAM)
    }

    /// From the header flags (other bits ignored).
    pub fn from_flags(flags: u8) -> Self {
        CallMode { client_stream: flags & FLAG_CLIENT_STREAM != 0, server_stream: flags & FLAG_SERVER_STREAM != 0 }
    }
}

/// A call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Call id, unique among the sender's calls in flight.
    pub id: u64,
    /// Method id.
    pub method: u32,
    /// Which directions stream.
    pub mode: CallMode,
    /// The server holds the request until its commit frame ([`FLAG_AWAIT_COMMIT`]).
    pub await_commit: bool,
    /// Time the caller still gives the call, if any (microsecond resolution on the wire).
    pub deadline: Option<Duration>,
    /// The call's metadata as an encoded block ([`crate::Metadata::encode`]); empty for none.
    pub metadata: Bytes,
    /// Encoded arguments.
    pub message: Bytes,
    /// Attachments.
    pub attachments: Vec<Payload>,
}

impl Request {
    /// Encodes the frame.
    pub fn encode(mut self) -> Result<Transmit, EncodeError> {
        let mut f = RawFrame::new(FrameKind::Request);
        f.header.id = self.id;
        f.header.method = self.method;
        f.header.flags = self.mode.flags() | if self.await_commit { FLAG_AWAIT_COMMIT } else { 0 };
        if !self.metadata.is_empty() {
            // Metadata is small and rare on the hot path: one copy joins it to the message.
            let len = u32::try_from(self.metadata.len()).map_err(|_| EncodeError::MessageTooLong(self.metadata.len()))?;
            let mut m = bytes::BytesMut::with_capacity(4 + self.metadata.len() + self.message.len());
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(&self.metadata);
            m.extend_from_slice(&self.message);
            self.message = m.freeze();
            f.header.flags |= FLAG_METADATA;
        }
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
        let mut message = f.message;
        let mut metadata = Bytes::new();
        if h.flags & FLAG_METADATA != 0 {
            let malformed = |reason: String| DecodeError::Malformed { kind: "request", reason };
            if message.len() < 4 {
                return Err(malformed(format!("metadata flag set but the message is {} bytes", message.len())));
            }
            let len = u32::from_le_bytes(message[..4].try_into().expect("4 bytes")) as usize;
            if len > message.len() - 4 {
                return Err(malformed(format!("metadata of {len} bytes in a message of {}", message.len())));
            }
            metadata = message.slice(4..4 + len);
            message = message.slice(4 + len..);
        }
        Ok(Request {
            metadata,
            message,
            id: h.id,
            method: h.method,
            mode: CallMode::from_flags(h.flags),
            await_commit: h.flags & FLAG_AWAIT_COMMIT != 0,
            deadline: (h.deadline_us != 0).then(|| Duration::from_micros(h.deadline_us)),
            attachments: f.attachments,
        })
    }
}
