//! Response metadata: the headers and trailers a handler sets (server), sent with the first and
//! the last frame of the call's answer; checked when they arrive (client), where a bad block
//! ends that call only: the frame around it was sound, so the connection carries on.

use bytes::Bytes;

use super::calls::ReplyMetadata;
use super::{Connection, Event, Side, State};
use crate::error::CallError;
use crate::frame::{caps, Frame, MetadataBlocks, StreamHeaders};
use crate::metadata::{Metadata, MetadataError};

/// Which of a call's response metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetadataKind {
    /// Response headers: sent with the first frame of the answer (its first stream message,
    /// or its only answer), or ahead of it in a frame of their own
    /// ([`Connection::send_response_headers`]).
    Headers,
    /// Trailers: sent with the last frame of the answer (the response, the error status or the
    /// stream end).
    Trailers,
}

impl MetadataKind {
    fn name(self) -> &'static str {
        match self {
            MetadataKind::Headers => "response headers",
            MetadataKind::Trailers => "trailers",
        }
    }
}

impl Connection {
    /// Server: adds `key: value` to call `id`'s response headers or trailers. Errors for an
    /// invalid key, a block that would be over the client's declared limit (checked as each
    /// entry is added, so the handler learns at once), or a header after the headers went out.
    /// A call that is over (answered, cancelled, expired) ignores it.
    pub fn set_response_metadata(
        &mut self,
        id: u64,
        kind: MetadataKind,
        key: &str,
        value: Bytes,
    ) -> Result<(), MetadataError> {
        debug_assert_eq!(self.side, Side::Server);
        let limit = self.peer.map_or(0, |p| p.max_metadata as usize);
        let Some(call) = self.calls.get_mut(id) else { return Ok(()) };
        if kind == MetadataKind::Headers && call.headers_done {
            return Err(MetadataError::HeadersSent);
        }
        let reply = call.reply.get_or_insert_with(Box::default);
        let block = match kind {
            MetadataKind::Headers => &mut reply.headers,
            MetadataKind::Trailers => &mut reply.trailers,
        };
        block.insert(key, value)?;
        let len = block.encoded_len();
        if len > limit || block.len() > usize::from(u16::MAX) {
            block.pop();
            return Err(MetadataError::TooLarge { what: kind.name(), len, limit });
        }
        Ok(())
    }

    /// Server: call `id`'s response headers or trailers as set so far (and not yet sent).
    pub fn response_metadata(&self, id: u64, kind: MetadataKind) -> Metadata {
        let reply = self.calls.get(id).and_then(|c| c.reply.as_deref());
        match (reply, kind) {
            (Some(r), MetadataKind::Headers) => r.headers.clone(),
            (Some(r), MetadataKind::Trailers) => r.trailers.clone(),
            (None, _) => Metadata::default(),
        }
    }

    /// Server: the blocks for the next frame of call `id`'s answer: its headers, if they have
    /// not gone yet (they go now), and its trailers too if the frame is the last.
    pub(super) fn take_reply_blocks(headers_done: &mut bool, reply: Option<&mut ReplyMetadata>, last: bool) -> MetadataBlocks {
        let first = !std::mem::replace(headers_done, true);
        let Some(reply) = reply else { return MetadataBlocks::default() };
        MetadataBlocks {
            headers: if first { std::mem::take(&mut reply.headers).encode() } else { Bytes::new() },
            trailers: if last { std::mem::take(&mut reply.trailers).encode() } else { Bytes::new() },
        }
    }

    /// Client: the response metadata of a frame of call `id` (which is tracked): checked
    /// against the limit this side declared, parsed, and delivered as events ahead of the
    /// frame's own. `last`: the frame ends the call (trailers allowed). False when the blocks
    /// were bad: the call then fails with an error naming why (and, if the server still runs
    /// it, is cancelled); the frame is to be dropped.
    pub(super) fn on_reply_metadata(&mut self, id: u64, meta: MetadataBlocks, last: bool) -> bool {
        let limit = self.config.max_metadata() as usize;
        let Some(call) = self.calls.get_mut(id) else { return false };
        let parse = |kind: MetadataKind, block: Bytes| -> Result<Metadata, String> {
            if block.len() > limit {
                return Err(format!(
                    "{} of {} bytes, over the limit of {limit} bytes this side declared",
                    kind.name(),
                    block.len()
                ));
            }
            Metadata::decode(block).map_err(|e| format!("{}: {e}", kind.name()))
        };
        let parsed = (|| {
            let mut out = (None, None);
            if !meta.headers.is_empty() {
                if std::mem::replace(&mut call.headers_done, true) {
                    return Err("a second block of response headers".to_owned());
                }
                out.0 = Some(parse(MetadataKind::Headers, meta.headers)?);
            }
            if !meta.trailers.is_empty() {
                if !last {
                    return Err("trailers on a stream data frame (they end the call)".to_owned());
                }
                out.1 = Some(parse(MetadataKind::Trailers, meta.trailers)?);
            }
            Ok(out)
        })();
        match parsed {
            Ok((headers, trailers)) => {
                if let Some(metadata) = headers {
                    self.events.push_back(Event::Headers { id, metadata });
                }
                if let Some(metadata) = trailers {
                    self.events.push_back(Event::Trailers { id, metadata });
                }
                true
            }
            Err(why) => {
                self.refuse_reply_metadata(id, &why, last);
                false
            }
        }
    }

    /// Client: call `id` fails for the response metadata the server sent (`why`); unless the
    /// frame ended the call (`last`), the server is told to stop it.
    pub(super) fn refuse_reply_metadata(&mut self, id: u64, why: &str, last: bool) {
        self.calls.remove(id);
        if !last {
            self.withdraw_or_cancel(id);
        }
        let error = CallError::Metadata(format!("response metadata of call {id} refused: {why}"));
        self.events.push_back(Event::Finished { id, result: Err(error) });
    }

    /// Server: sends call `id`'s response headers now, in a frame of their own, ahead of its
    /// first message (empty when the handler set none): a client waiting for them
    /// ([`crate::StreamReceiver::response_headers`]) learns the call was taken before any
    /// message exists. True when they went; false when they had gone already, the call is
    /// over, or the client does not take such a frame ([`caps::EARLY_HEADERS`]): they then go
    /// with the first frame of the answer, as always.
    pub fn send_response_headers(&mut self, id: u64) -> bool {
        debug_assert_eq!(self.side, Side::Server);
        let early = self.peer.is_some_and(|p| p.capabilities & caps::EARLY_HEADERS != 0);
        if !early || self.state == State::Closed {
            return false;
        }
        let Some(call) = self.calls.get_mut(id) else { return false };
        if call.headers_done {
            return false;
        }
        let meta = Self::take_reply_blocks(&mut call.headers_done, call.reply.as_deref_mut(), false);
        self.push_frame(Frame::StreamHeaders(StreamHeaders { id, headers: meta.headers }));
        true
    }
}
