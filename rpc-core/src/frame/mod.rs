//! Frames: one file per kind, each with a pure `encode` and `decode`; [`FrameDecoder`] cuts
//! a byte stream into frames. No IO, no clock. Wire layout: `docs/wire.md`.

mod align;
mod cancel;
mod commit;
mod credit;
mod decoder;
mod error;
mod goaway;
mod header;
mod hello;
mod meta;
mod piece;
mod ping;
mod raw;
mod request;
mod response;
mod stream;

pub use align::ATTACHMENT_ALIGN;
pub(crate) use align::{align_empty, aligned_empty, aligned_with_capacity, is_aligned};
pub use cancel::Cancel;
pub use commit::Commit;
pub use credit::Credit;
pub(crate) use decoder::body_len;
pub use decoder::{FrameDecoder, InputBuf, Limits};
pub use error::{ErrorFrame, FLAG_REFUSED};
pub use goaway::{GoAway, FLAG_LAST_PIECED};
pub use header::{FrameHeader, FrameKind, HEADER_LEN};
pub use hello::{caps, Hello, HELLO_LEN, MAGIC, MIN_MAX_FRAME, WIRE_VERSION};
pub use meta::{MetadataBlocks, FLAG_HEADERS, FLAG_TRAILERS};
pub use piece::{Marker, FLAG_PIECED, MARKER_LEN, MAX_BETWEEN, MIN_PIECE};
pub use ping::Ping;
pub use raw::{EncodeError, RawFrame, INLINE_MESSAGE_MAX};
pub use request::{CallMode, Request, FLAG_AWAIT_COMMIT, FLAG_CLIENT_STREAM, FLAG_METADATA, FLAG_SERVER_STREAM};
pub use response::Response;
pub use stream::{BatchMessages, StreamBatch, StreamData, StreamEnd, StreamHeaders, BATCH_PREFIX, FLAG_BATCH, FLAG_HEADERS_ONLY};

use crate::error::DecodeError;
use crate::transmit::Transmit;

/// Any frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Frame {
    Request(Request),
    Response(Response),
    Error(ErrorFrame),
    Cancel(Cancel),
    StreamData(StreamData),
    StreamBatch(StreamBatch),
    StreamHeaders(StreamHeaders),
    StreamEnd(StreamEnd),
    Credit(Credit),
    Ping(Ping),
    GoAway(GoAway),
    Commit(Commit),
}

impl Frame {
    /// Gives a raw frame its kind's meaning.
    pub fn decode(f: RawFrame) -> Result<Self, DecodeError> {
        Ok(match f.header.kind {
            FrameKind::Request => Frame::Request(Request::decode(f)?),
            FrameKind::Response => Frame::Response(Response::decode(f)?),
            FrameKind::Error => Frame::Error(ErrorFrame::decode(f)?),
            FrameKind::Cancel => Frame::Cancel(Cancel::decode(f)?),
            FrameKind::StreamData if f.header.flags & FLAG_HEADERS_ONLY != 0 => Frame::StreamHeaders(StreamHeaders::decode(f)?),
            FrameKind::StreamData if f.header.flags & FLAG_BATCH != 0 => Frame::StreamBatch(StreamBatch::decode(f)?),
            FrameKind::StreamData => Frame::StreamData(StreamData::decode(f)?),
            FrameKind::StreamEnd => Frame::StreamEnd(StreamEnd::decode(f)?),
            FrameKind::Credit => Frame::Credit(Credit::decode(f)?),
            FrameKind::Ping | FrameKind::Pong => Frame::Ping(Ping::decode(f)?),
            FrameKind::GoAway => Frame::GoAway(GoAway::decode(f)?),
            FrameKind::Commit => Frame::Commit(Commit::decode(f)?),
        })
    }

    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Request(_) => FrameKind::Request,
            Frame::Response(_) => FrameKind::Response,
            Frame::Error(_) => FrameKind::Error,
            Frame::Cancel(_) => FrameKind::Cancel,
            Frame::StreamData(_) | Frame::StreamBatch(_) | Frame::StreamHeaders(_) => FrameKind::StreamData,
            Frame::StreamEnd(_) => FrameKind::StreamEnd,
            Frame::Credit(_) => FrameKind::Credit,
            Frame::Ping(p) if p.pong => FrameKind::Pong,
            Frame::Ping(_) => FrameKind::Ping,
            Frame::GoAway(_) => FrameKind::GoAway,
            Frame::Commit(_) => FrameKind::Commit,
        }
    }

    /// Encodes the frame.
    pub fn encode(self) -> Result<Transmit, EncodeError> {
        match self {
            Frame::Request(f) => f.encode(),
            Frame::Response(f) => f.encode(),
            Frame::Error(f) => f.encode(),
            Frame::Cancel(f) => f.encode(),
            Frame::StreamData(f) => f.encode(),
            Frame::StreamBatch(f) => f.encode(),
            Frame::StreamHeaders(f) => f.encode(),
            Frame::StreamEnd(f) => f.encode(),
            Frame::Credit(f) => f.encode(),
            Frame::Ping(f) => f.encode(),
            Frame::GoAway(f) => f.encode(),
            Frame::Commit(f) => f.encode(),
        }
    }
}
