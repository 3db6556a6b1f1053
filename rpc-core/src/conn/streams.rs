//! The streaming half of the state machine: stream data, stream ends and credit, both sides.
//! The rules are in `flow.rs` and `docs/wire.md`; this room applies them to the call table.

use std::collections::VecDeque;

use bytes::Bytes;

use super::small_frames::SmallFrames;
use super::flow::{self, Flow};
use super::{outgoing, Connection, Event, Side, State};
use crate::body::Body;
use crate::code::Code;
use crate::error::{CallError, ConnectionError, Status};
use crate::frame::{Credit, Frame, MetadataBlocks, StreamBatch, StreamData, StreamEnd, StreamHeaders, BATCH_PREFIX};

/// Why a stream message was not sent.
#[derive(Debug)]
pub enum SendError {
    /// The stream is out of credit: wait for [`Event::SendReady`], then try again with the
    /// message handed back.
    NoCredit(Body),
    /// The message cannot go, ever: the call is over, this side's stream ended, or the message
    /// is over the peer's limits.
    Failed(CallError),
}

/// A message queued for [`Connection::send_messages`]: a [`Body`] the queue owns, or a
/// [`LentMessage`]. A small one is copied into its run of frames from where it is; any other
/// goes as an owned body.
pub trait Outgoing {
    /// The message's bytes when it goes as a small frame (no attachments, at most
    /// [`INLINE_MESSAGE_MAX`](crate::frame::INLINE_MESSAGE_MAX) bytes); `None` otherwise.
    fn small(&self) -> Option<&[u8]>;
    /// The message as an owned body.
    fn into_body(self) -> Body;
    /// An owned body, queued again (the stream was out of credit for it).
    fn owned(body: Body) -> Self;
}

impl Outgoing for Body {
    fn small(&self) -> Option<&[u8]> {
        SmallFrames::fits(self).then_some(&self.message[..])
    }

    fn into_body(self) -> Body {
        self
    }

    fn owned(body: Body) -> Self {
        body
    }
}

/// A message the application lends to [`Connection::send_messages`], which copies a small one
/// into its run of frames from where it lies: no `Bytes` is cloned and dropped for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LentMessage<'a> {
    /// A body the application keeps ([`crate::StreamSender::send_all_lent`]); a large one is
    /// cloned to be queued (its bytes shared, not copied).
    Body(&'a Body),
    /// An encoded message without attachments, lying where the application keeps it (a typed
    /// [`Sink`](crate::Sink)'s items, encoded back to back); made a body of its own (a copy)
    /// only when it cannot go at once.
    Message(&'a [u8]),
    /// An owned body: one the stream had no credit for, or that goes whole anyway.
    Owned(Body),
}

impl Outgoing for LentMessage<'_> {
    fn small(&self) -> Option<&[u8]> {
        match self {
            LentMessage::Body(body) => body.small(),
            LentMessage::Message(message) => SmallFrames::message_fits(message).then_some(message),
            LentMessage::Owned(body) => body.small(),
        }
    }

    fn into_body(self) -> Body {
        match self {
            LentMessage::Body(body) => body.clone(),
            LentMessage::Message(message) => Body::message(Bytes::copy_from_slice(message)),
            LentMessage::Owned(body) => body,
        }
    }

    fn owned(body: Body) -> Self {
        LentMessage::Owned(body)
    }
}

/// Where [`Connection::send_messages`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStop {
    /// Every message went.
    Sent,
    /// The stream is out of credit: wait for [`Event::SendReady`].
    NoCredit,
    /// The writer has enough to write: wait until it takes what is queued
    /// ([`Connection::take_transmits`]).
    AheadOfWriter,
}

impl Connection {
    /// Sends messages of call `id`'s stream from the front of `queue`, each as
    /// [`Connection::send_message`] would, while its credit allows and fewer than `max_queued`
    /// bytes wait for the writer ([`Connection::queued_bytes`]). What was not sent stays in
    /// `queue`. An error when the stream cannot go on: the messages before went, the one that
    /// failed is dropped, those after it stay.
    pub fn send_messages<T: Outgoing>(&mut self, id: u64, queue: &mut VecDeque<T>, max_queued: usize) -> Result<SendStop, CallError> {
        loop {
            if self.send_small_run(id, queue, max_queued) > 0 {
                continue;
            }
            if queue.is_empty() {
                return Ok(SendStop::Sent);
            }
            if self.state != State::Closed && self.queued_bytes() >= max_queued {
                return Ok(SendStop::AheadOfWriter);
            }
            let body = queue.pop_front().expect("not empty");
            match self.send_message(id, body.into_body()) {
                Ok(()) => {}
                Err(SendError::NoCredit(body)) => {
                    queue.push_front(T::owned(body));
                    return Ok(SendStop::NoCredit);
                }
                Err(SendError::Failed(e)) => return Err(e),
            }
        }
    }

    /// The common case of [`Connection::send_messages`] without a lookup per message: small
    /// messages (see [`SmallFrames::fits`]) of a live stream whose response headers, if any,
    /// went with an earlier message, while credit lasts. How many went; the rest (and every
    /// other case) takes [`Connection::send_message`].
    fn send_small_run<T: Outgoing>(&mut self, id: u64, queue: &mut VecDeque<T>, max_queued: usize) -> usize {
        if self.state == State::Closed {
            return 0;
        }
        // Not ahead of the writer: what it has, and pieces the messages go between.
        let not_queued = self.in_writer() + self.pieces_overtaken();
        let between = self.takes_frames_between();
        let Some(call) = self.calls.get_mut(id) else { return 0 };
        if self.side == Side::Server && !call.headers_done {
            return 0;
        }
        let (Some(flow), Some(conn_flow)) = (call.flow.as_mut().filter(|f| f.send_open), self.conn_flow.as_mut()) else {
            return 0;
        };
        // The messages are read where they are queued and dropped together at the end.
        let mut sent = 0;
        while let Some(message) = queue.get(sent).and_then(T::small) {
            let ahead = self.out_bytes.saturating_sub(not_queued) >= max_queued;
            if ahead || !flow.can_send() || !conn_flow.can_send() {
                break;
            }
            flow.on_sent(message.len() as u64);
            conn_flow.on_sent(message.len() as u64);
            let (sealed, added) = self.small.push(id, message);
            if let Some(run) = sealed {
                super::pieced::queue(&mut self.pieced, &mut self.transmits, between, run);
            }
            self.out_bytes += added;
            sent += 1;
            // The run goes on: the same checks, on budgets counted down here, then applied once.
            let mut credit = flow.send_credit().min(conn_flow.send_credit());
            let mut room = max_queued.saturating_sub(self.out_bytes.saturating_sub(not_queued));
            let mut bytes = 0;
            let (taken, added) = self.small.append_from(id, queue.range(sent..).map_while(T::small), |len| {
                if credit <= 0 || room == 0 {
                    return false;
                }
                credit -= flow::cost(len as u64) as i64;
                room = room.saturating_sub(BATCH_PREFIX + len);
                bytes += len as u64;
                true
            });
            flow.on_sent_run(taken, bytes);
            conn_flow.on_sent_run(taken, bytes);
            self.out_bytes += added;
            sent += taken;
        }
        queue.drain(..sent);
        sent
    }

    /// Sends `body` as the next message of call `id`'s stream, if its credit allows.
    pub fn send_message(&mut self, id: u64, body: Body) -> Result<(), SendError> {
        if self.state == State::Closed {
            return Err(SendError::Failed(CallError::Connection(ConnectionError::LocallyClosed)));
        }
        let peer = self.peer.expect("calls exist only after the hello");
        let side = self.side;
        let Some(call) = self.calls.get_mut(id) else {
            return Err(SendError::Failed(CallError::Status(Status::new(Code::CANCELLED, "the call is over"))));
        };
        let Some(flow) = call.flow.as_mut().filter(|f| f.send_open) else {
            return Err(SendError::Failed(CallError::Codec(
                "this side's stream of the call has ended (or the call does not stream this way)".into(),
            )));
        };
        // Server: the response headers the handler set go with its first message.
        let headers_len = match (&call.reply, call.headers_done) {
            (Some(r), false) if side == Side::Server && !r.headers.is_empty() => 4 + r.headers.encoded_len() as u64,
            _ => 0,
        };
        if let Err(why) = outgoing::check_body(&peer, side, &body, headers_len) {
            return Err(SendError::Failed(CallError::Codec(why)));
        }
        let conn_flow = self.conn_flow.as_mut().expect("calls exist only after the hello");
        if !flow.can_send() || !conn_flow.can_send() {
            return Err(SendError::NoCredit(body));
        }
        flow.on_sent(body.len());
        conn_flow.on_sent(body.len());
        let meta = match side {
            Side::Server => Self::take_reply_blocks(&mut call.headers_done, call.reply.as_deref_mut(), false),
            Side::Client => MetadataBlocks::default(),
        };
        if meta.is_empty() && SmallFrames::fits(&body) {
            self.push_small_frame(id, &body.message);
            return Ok(());
        }
        let frame = StreamData { id, message: body.message, attachments: body.attachments, meta };
        match frame.encode() {
            Ok(t) => {
                self.push_transmit(t);
                Ok(())
            }
            Err(e) => Err(SendError::Failed(CallError::Codec(e.to_string()))),
        }
    }

    /// True when call `id` may send a stream message now (it streams this way, has credit).
    pub fn can_send(&self, id: u64) -> bool {
        self.calls.get(id).and_then(|c| c.flow.as_ref()).is_some_and(|f| f.can_send())
            && self.conn_flow.as_ref().is_some_and(|f| f.can_send())
    }

    /// Client: ends this side's stream of call `id` (the server's `recv` then sees its end). A
    /// code other than OK abandons the stream. Ignored when the call is over or already ended.
    pub fn end_stream(&mut self, id: u64, code: Code) {
        // The server ends its stream by answering the call (`respond`).
        if self.state == State::Closed || self.side != Side::Client {
            return;
        }
        let Some(flow) = self.calls.get_mut(id).and_then(|c| c.flow.as_mut()) else { return };
        if std::mem::replace(&mut flow.send_open, false) {
            self.push_frame(Frame::StreamEnd(StreamEnd::new(id, code)));
        }
    }

    /// The application took a message of `bytes` bytes (message and attachments) of call `id`'s
    /// stream: it stops counting against the memory budget, and credit goes back to the peer
    /// once half a window is owed.
    pub fn consumed(&mut self, id: u64, bytes: usize) {
        self.consumed_many(id, 1, bytes);
    }

    /// The application took `messages` messages of `bytes` bytes in all of call `id`'s stream
    /// (a receiver reports in batches: one step for many small messages).
    pub fn consumed_many(&mut self, id: u64, messages: usize, bytes: usize) {
        let cost = flow::run_cost(messages, bytes as u64);
        self.stream_held = self.stream_held.saturating_sub(cost as usize);
        if self.state == State::Closed {
            return;
        }
        let grant = self.calls.get_mut(id).and_then(|c| c.flow.as_mut()).and_then(|f| f.on_consumed_cost(cost));
        if let Some(bytes) = grant {
            self.push_frame(Frame::Credit(Credit { id, bytes }));
        }
        // The connection's credit comes back whether or not the call still exists.
        if let Some(bytes) = self.conn_flow.as_mut().and_then(|f| f.on_consumed_cost(cost)) {
            self.push_frame(Frame::Credit(Credit { id: 0, bytes }));
        }
    }

    /// True when `id` names a call this connection knows of, now or before: frames for a call
    /// that ended (answered, cancelled, expired) may still be on their way and are dropped; a
    /// call that never existed is a protocol violation.
    fn call_existed(&self, id: u64) -> bool {
        match self.side {
            Side::Client => id != 0 && id < self.next_id,
            Side::Server => id != 0 && id <= self.last_seen,
        }
    }

    fn stream_violation(kind: &str, id: u64, why: impl std::fmt::Display) -> ConnectionError {
        ConnectionError::Protocol(format!("{kind} for call {id}: {why}"))
    }

    pub(super) fn on_stream_data(&mut self, d: StreamData) -> Result<(), ConnectionError> {
        let id = d.id;
        if !self.calls.contains(id) && !self.call_existed(id) {
            return Err(Self::stream_violation("stream data", id, "no such call was ever started"));
        }
        self.on_stream_message(id, Body { message: d.message, attachments: d.attachments }, d.meta)
    }

    /// Client: the server's response headers, ahead of the call's first message.
    pub(super) fn on_stream_headers(&mut self, h: StreamHeaders) -> Result<(), ConnectionError> {
        let id = h.id;
        if self.side == Side::Server {
            return Err(Self::stream_violation("stream headers", id, "response headers from a client"));
        }
        let Some(call) = self.calls.get_mut(id) else {
            if self.call_existed(id) {
                // A call that ended (cancelled, expired): nothing waits for them.
                return Ok(());
            }
            return Err(Self::stream_violation("stream headers", id, "no such call was ever started"));
        };
        if !h.headers.is_empty() {
            self.on_reply_metadata(id, MetadataBlocks { headers: h.headers, trailers: Bytes::new() }, false);
        } else if std::mem::replace(&mut call.headers_done, true) {
            self.refuse_reply_metadata(id, "a second block of response headers", false);
        } else {
            // The server set none: the headers are in, and empty.
            self.events.push_back(Event::Headers { id, metadata: crate::Metadata::default() });
        }
        Ok(())
    }

    /// Each message of a batch, as if it came in a frame of its own (the sender charged each
    /// one's credit so).
    pub(super) fn on_stream_batch(&mut self, b: StreamBatch) -> Result<(), ConnectionError> {
        let id = b.id;
        if !self.calls.contains(id) && !self.call_existed(id) {
            return Err(Self::stream_violation("stream batch", id, "no such call was ever started"));
        }
        let conn_flow = self.conn_flow.as_mut().expect("frames come after the hello");
        let flow = match self.calls.get_mut(id).map(|c| c.flow.as_mut()) {
            Some(Some(flow)) => flow,
            Some(None) => return Err(Self::stream_violation("stream batch", id, "the call does not stream")),
            // A call that ended: each message dropped as it would be alone.
            None => {
                for message in b.messages {
                    self.on_stream_message(id, Body::message(message), MetadataBlocks::default())?;
                }
                return Ok(());
            }
        };
        // One event for the batch, as it came: the receiver takes it as one (see
        // `stream/routes.rs`) and cuts each message out when it takes it. Charged as one run:
        // the same checks as message after message, in one step.
        let messages = b.messages;
        let total = flow::run_cost(messages.len(), messages.message_bytes() as u64);
        let last = flow::cost(messages.last_len() as u64);
        Self::charge_received_run(conn_flow, Some(flow), id, total, last)?;
        self.stream_held += total as usize;
        self.events.push_back(Event::StreamMessages { id, messages });
        Ok(())
    }

    /// One message of call `id`'s stream, with the response metadata its frame carried.
    fn on_stream_message(&mut self, id: u64, body: Body, meta: MetadataBlocks) -> Result<(), ConnectionError> {
        let len = body.len();
        let conn_flow = self.conn_flow.as_mut().expect("frames come after the hello");
        let Some(call) = self.calls.get_mut(id) else {
            Self::charge_received(conn_flow, None, id, len)?;
            // A call that ended: dropped, and its share of the connection's credit given back.
            self.stream_held += flow::cost(len) as usize;
            self.consumed(id, len as usize);
            return Ok(());
        };
        let Some(flow) = call.flow.as_mut() else {
            Self::charge_received(conn_flow, None, id, len)?;
            return Err(Self::stream_violation("stream data", id, "the call does not stream"));
        };
        Self::charge_received(conn_flow, Some(flow), id, len)?;
        self.stream_held += flow::cost(len) as usize;
        if !meta.is_empty() {
            if self.side == Side::Server {
                return Err(Self::stream_violation("stream data", id, "response metadata from a client"));
            }
            if !self.on_reply_metadata(id, meta, false) {
                // The call failed for its metadata: the message is dropped, its credit given back.
                self.consumed(id, len as usize);
                return Ok(());
            }
        }
        self.events.push_back(Event::StreamData { id, body });
        Ok(())
    }

    /// A stream message of `len` bytes arrived for call `id`: taken off the connection's credit,
    /// then the call's (`None`: the call ended), each an error when the peer had none left.
    fn charge_received(conn_flow: &mut Flow, flow: Option<&mut Flow>, id: u64, len: u64) -> Result<(), ConnectionError> {
        let c = flow::cost(len);
        Self::charge_received_run(conn_flow, flow, id, c, c)
    }

    /// Stream messages costing `total` in all arrived for call `id`, the last costing `last`
    /// (a batch): charged as [`Connection::charge_received`] would one by one, in one step.
    fn charge_received_run(conn_flow: &mut Flow, flow: Option<&mut Flow>, id: u64, total: u64, last: u64) -> Result<(), ConnectionError> {
        conn_flow.on_received_run(total, last).map_err(|why| Self::stream_violation("stream data", id, format!("connection: {why}")))?;
        match flow {
            Some(flow) => flow.on_received_run(total, last).map_err(|why| Self::stream_violation("stream data", id, why)),
            None => Ok(()),
        }
    }

    /// Credit for the whole connection: every stream that waited on it alone may go on.
    fn on_connection_credit(&mut self, bytes: u64) -> Result<(), ConnectionError> {
        let conn_flow = self.conn_flow.as_mut().expect("frames come after the hello");
        let ready = conn_flow.on_credit(bytes).map_err(|why| ConnectionError::Protocol(format!("connection credit: {why}")))?;
        if ready {
            self.wake_credit_waiters();
        }
        Ok(())
    }

    /// The connection's credit came back from nothing: every stream that waited on it alone
    /// may go on.
    pub(super) fn wake_credit_waiters(&mut self) {
        let ids: Vec<u64> = self.calls.ids().collect();
        for id in ids {
            if self.calls.get(id).and_then(|c| c.flow.as_ref()).is_some_and(|f| f.can_send()) {
                self.events.push_back(Event::SendReady { id });
            }
        }
    }

    pub(super) fn on_stream_end(&mut self, e: StreamEnd) -> Result<(), ConnectionError> {
        let id = e.id;
        let Some(call) = self.calls.get_mut(id) else {
            return match self.call_existed(id) {
                true => Ok(()),
                false => Err(Self::stream_violation("stream end", id, "no such call was ever started")),
            };
        };
        let Some(flow) = call.flow.as_mut() else {
            return Err(Self::stream_violation("stream end", id, "the call does not stream"));
        };
        if !std::mem::replace(&mut flow.recv_open, false) {
            return Err(Self::stream_violation("stream end", id, "the stream had already ended"));
        }
        if !e.meta.is_empty() {
            if self.side == Side::Server {
                return Err(Self::stream_violation("stream end", id, "response metadata from a client"));
            }
            if !self.on_reply_metadata(id, e.meta, true) {
                return Ok(());
            }
        }
        match self.side {
            Side::Server => self.events.push_back(Event::StreamEnd { id, code: e.code }),
            // The server's end is the end of the call.
            Side::Client => {
                self.calls.remove(id);
                let event = match e.code {
                    Code::OK => Event::StreamEnd { id, code: e.code },
                    code => Event::Finished {
                        id,
                        result: Err(CallError::Status(Status::new(code, "the server ended the stream"))),
                    },
                };
                self.events.push_back(event);
            }
        }
        Ok(())
    }

    pub(super) fn on_credit(&mut self, c: Credit) -> Result<(), ConnectionError> {
        let id = c.id;
        if id == 0 {
            return self.on_connection_credit(c.bytes);
        }
        let Some(call) = self.calls.get_mut(id) else {
            return match self.call_existed(id) {
                true => Ok(()),
                false => Err(Self::stream_violation("credit", id, "no such call was ever started")),
            };
        };
        let Some(flow) = call.flow.as_mut() else {
            return Err(Self::stream_violation("credit", id, "the call does not stream"));
        };
        if flow.on_credit(c.bytes).map_err(|why| Self::stream_violation("credit", id, why))? {
            self.events.push_back(Event::SendReady { id });
        }
        Ok(())
    }
}
