//! The handshake: each side sends one hello before anything else.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;

/// `b"ZCRP"`.
pub const MAGIC: [u8; 4] = *b"ZCRP";
/// The wire version this crate speaks.
pub const WIRE_VERSION: u16 = 1;
/// Size of the hello on the wire.
pub const HELLO_LEN: usize = 32;
/// The smallest `max_frame` a side may declare: room for any control frame and error text a
/// peer may have to send (a hello with less is refused; a smaller configured limit is raised).
pub const MIN_MAX_FRAME: u32 = 4096;

/// Capability bits.
pub mod caps {
    /// The sender can send and receive stream frames (it also declares a `stream_window`).
    pub const STREAMS: u64 = 1 << 0;
    /// The sender accepts file-region attachments (reserved; always sent as bytes in v1).
    pub const FILE_REGIONS: u64 = 1 << 1;
    /// The sender holds a request flagged await-commit until its commit frame, and discards it
    /// unrun on a cancel.
    pub const COMMIT: u64 = 1 << 2;
    /// The sender takes several small messages of a stream in one frame (a stream batch:
    /// stream data flagged `FLAG_BATCH`).
    pub const STREAM_BATCHES: u64 = 1 << 3;
    /// The sender takes a call's response headers in a frame of their own, ahead of its first
    /// message (stream data flagged `FLAG_HEADERS_ONLY`).
    pub const EARLY_HEADERS: u64 = 1 << 4;
    /// The sender takes a large request in pieces inside one frame (a request flagged
    /// `FLAG_PIECED`), which the client may end part-way with an abort marker.
    pub const PIECES: u64 = 1 << 5;
    /// The sender takes a large response in pieces inside one frame (a response flagged
    /// `FLAG_PIECED`), which the server may end part-way with an abort marker (after the
    /// client's cancel, or when its connection fails).
    pub const PIECED_ANSWERS: u64 = 1 << 6;
    /// The sender takes whole frames of other calls between the pieces of a pieced frame, each
    /// run of them behind a frames marker, so that they need not wait for its last piece.
    pub const FRAMES_BETWEEN_PIECES: u64 = 1 << 7;
}

/// What a side declares about itself. Each side obeys the other's limits when sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Wire version.
    pub version: u16,
    /// Capability bits ([`caps`]).
    pub capabilities: u64,
    /// Largest message + payload this side accepts in one frame.
    pub max_frame: u32,
    /// Most calls this side serves at once on this connection.
    pub max_calls_in_flight: u32,
    /// Most attachments in one frame.
    pub max_attachments: u32,
    /// Largest metadata block the sender accepts on a call, in bytes (carried in KiB: a
    /// multiple of 1024, at most 64 MiB - 1 KiB). `0`: it takes no metadata (a peer from before
    /// metadata; its reserved field was zero).
    pub max_metadata: u32,
    /// Bytes of stream data the sender accepts on each stream before it grants more credit:
    /// every stream toward it starts with this much. `0`: the sender takes no streaming calls
    /// (a peer from before streams; its reserved field was zero).
    pub stream_window: u32,
}

impl Hello {
    /// Encodes the 32 hello bytes.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(HELLO_LEN);
        b.put_slice(&MAGIC);
        b.put_u16_le(self.version);
        b.put_u16_le(u16::try_from(self.max_metadata / 1024).unwrap_or(u16::MAX));
        b.put_u64_le(self.capabilities);
        b.put_u32_le(self.max_frame);
        b.put_u32_le(self.max_calls_in_flight);
        b.put_u32_le(self.max_attachments);
        b.put_u32_le(self.stream_window);
        b.freeze()
    }

    /// Decodes a hello from at least [`HELLO_LEN`] bytes, rejecting foreign magic and other
    /// versions with an error that names both sides' values.
    pub fn decode(mut b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < HELLO_LEN {
            return Err(DecodeError::Truncated { have: b.len(), need: HELLO_LEN });
        }
        let mut magic = [0u8; 4];
        b.copy_to_slice(&mut magic);
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic, expected: MAGIC });
        }
        let version = b.get_u16_le();
        if version != WIRE_VERSION {
            return Err(DecodeError::VersionMismatch { peer: version, ours: WIRE_VERSION });
        }
        let max_metadata = u32::from(b.get_u16_le()) * 1024;
        let hello = Hello {
            version,
            max_metadata,
            capabilities: b.get_u64_le(),
            max_frame: b.get_u32_le(),
            max_calls_in_flight: b.get_u32_le(),
            max_attachments: b.get_u32_le(),
            stream_window: b.get_u32_le(),
        };
        // max_calls_in_flight == 0 is legal: a refusal, with a goaway that says why to follow.
        if hello.max_frame < MIN_MAX_FRAME {
            return Err(DecodeError::Malformed {
                kind: "hello",
                reason: format!("max_frame {} is below the minimum of {MIN_MAX_FRAME} bytes", hello.max_frame),
            });
        }
        Ok(hello)
    }
}
