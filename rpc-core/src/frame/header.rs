//! The fixed 40-byte frame header. Layout in `docs/wire.md`.

use bytes::{Buf, BufMut};

use crate::error::DecodeError;

/// Size of every frame header on the wire.
pub const HEADER_LEN: usize = 40;

/// Frame kinds. The byte values are part of wire version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A call.
    Request = 1,
    /// A call's successful result.
    Response = 2,
    /// A call's error status.
    Error = 3,
    /// The caller gave up on a call.
    Cancel = 4,
    /// A chunk of a streaming call.
    StreamData = 5,
    /// The end of one direction of a streaming call.
    StreamEnd = 6,
    /// Flow-control credit for a stream.
    Credit = 7,
    /// Keepalive probe.
    Ping = 8,
    /// Keepalive answer.
    Pong = 9,
    /// The sender will take no new calls.
    GoAway = 10,
    /// A large request held by the server may now run.
    Commit = 11,
}

impl FrameKind {
    /// Parses the kind byte.
    pub fn from_u8(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Error,
            4 => FrameKind::Cancel,
            5 => FrameKind::StreamData,
            6 => FrameKind::StreamEnd,
            7 => FrameKind::Credit,
            8 => FrameKind::Ping,
            9 => FrameKind::Pong,
            10 => FrameKind::GoAway,
            11 => FrameKind::Commit,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    /// Lower-case name for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Request => "request",
            FrameKind::Response => "response",
            FrameKind::Error => "error",
            FrameKind::Cancel => "cancel",
            FrameKind::StreamData => "stream data",
            FrameKind::StreamEnd => "stream end",
            FrameKind::Credit => "credit",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::GoAway => "goaway",
            FrameKind::Commit => "commit",
        }
    }
}

/// The decoded fixed header. Fields a kind does not use are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame kind.
    pub kind: FrameKind,
    /// Kind-specific flags; unknown bits are ignored.
    pub flags: u8,
    /// Number of attachments; their lengths follow the header as `u64`s.
    pub attachments: u16,
    /// Method id (request), zero otherwise.
    pub method: u32,
    /// Call or stream id; ping id for ping/pong; last accepted call id for goaway.
    pub id: u64,
    /// Request only: time budget in microseconds at send time; 0 means none.
    pub deadline_us: u64,
    /// Length of the message (encoded arguments, result, or error text).
    pub message_len: u32,
    /// Status code (error, goaway, stream end); zero otherwise.
    pub code: u32,
    /// Total length of the attachments.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A header of `kind` with every other field zero.
    pub fn new(kind: FrameKind) -> Self {
        FrameHeader {
            kind,
            flags: 0,
            attachments: 0,
            method: 0,
            id: 0,
            deadline_us: 0,
            message_len: 0,
            code: 0,
            payload_len: 0,
        }
    }

    /// Writes the 40 header bytes.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(self.kind as u8);
        out.put_u8(self.flags);
        out.put_u16_le(self.attachments);
        out.put_u32_le(self.method);
        out.put_u64_le(self.id);
        out.put_u64_le(self.deadline_us);
        out.put_u32_le(self.message_len);
        out.put_u32_le(self.code);
        out.put_u64_le(self.payload_len);
    }

    /// Reads a header from exactly [`HEADER_LEN`] bytes. Checks only the kind; lengths are
    /// checked against the limits by the decoder.
    pub fn decode(mut b: &[u8]) -> Result<Self, DecodeError> {
        debug_assert!(b.len() >= HEADER_LEN);
        if b.len() < HEADER_LEN {
            return Err(DecodeError::Truncated { have: b.len(), need: HEADER_LEN });
        }
        let kind = FrameKind::from_u8(b.get_u8())?;
        Ok(FrameHeader {
            kind,
            flags: b.get_u8(),
            attachments: b.get_u16_le(),
            method: b.get_u32_le(),
            id: b.get_u64_le(),
            deadline_us: b.get_u64_le(),
            message_len: b.get_u32_le(),
            code: b.get_u32_le(),
            payload_len: b.get_u64_le(),
        })
    }
}
