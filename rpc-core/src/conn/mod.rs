//! The connection state machine, sans IO: bytes and time go in, transmits and events come out.
//!
//! [`Connection`] owns the handshake, the call table, deadlines, cancellation, keepalive and
//! goaway. It never touches a socket and never reads a clock: the driver passes `now` in, asks
//! [`Connection::poll_timeout`] when to wake it, and moves [`Transmit`]s to a transport. The same
//! machine serves both sides; [`Side`] picks which frames are legal.

mod calls;
mod config;
mod deadlines;
mod flow;
mod keepalive;
mod outgoing;
mod pieced;
mod response_meta;
mod small_frames;
mod streams;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

pub use config::ConnConfig;
pub use response_meta::MetadataKind;
pub use streams::{LentMessage, Outgoing, SendError, SendStop};
use calls::{Calls, InFlight};
use keepalive::Keepalive;
use small_frames::SmallFrames;

use crate::body::Body;
use crate::code::Code;
use crate::error::{CallError, ConnectionError, DecodeError, Status};
use crate::metadata::Metadata;
use crate::frame::{
    caps, BatchMessages, CallMode, Cancel, Commit, ErrorFrame, Frame, FrameDecoder, FrameHeader, FrameKind, GoAway, Hello, InputBuf, Ping,
    Request, Response, StreamEnd, HEADER_LEN, MIN_MAX_FRAME, WIRE_VERSION,
};
use crate::transmit::Transmit;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Makes calls.
    Client,
    /// Serves calls.
    Server,
}

/// Why the server must stop a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The client cancelled the call.
    Cancelled,
    /// The call's deadline passed.
    DeadlineExceeded,
    /// The connection ended.
    ConnectionClosed,
}

/// What the driver must act on.
#[derive(Debug)]
pub enum Event {
    /// The peer's hello arrived and fits.
    Connected(Hello),
    /// The peer refused the connection (its hello said so; its goaway said why).
    Refused {
        /// The peer's code.
        code: Code,
        /// The peer's reason.
        message: String,
    },
    /// Server: a new call to run.
    Request {
        /// Call id.
        id: u64,
        /// Method id.
        method: u32,
        /// Which directions stream; stream data for it arrives as [`Event::StreamData`] (a batch of
        /// small messages as [`Event::StreamMessages`]).
        mode: CallMode,
        /// The call's metadata (headers).
        metadata: Metadata,
        /// When the handler must be dropped.
        deadline: Option<Instant>,
        /// Arguments.
        body: Body,
    },
    /// Server: stop the handler of call `id`; its answer is no longer wanted.
    Abort {
        /// Call id.
        id: u64,
        /// Why.
        reason: AbortReason,
    },
    /// A message of the stream of call `id`. Its bytes count against the memory budget until
    /// the application reports them consumed ([`Connection::consumed`]).
    StreamData {
        /// Call id.
        id: u64,
        /// The message.
        body: Body,
    },
    /// Messages of the stream of call `id` that came in one frame (a stream batch), in order;
    /// counted as [`Event::StreamData`] is, each message on its own. None has attachments.
    StreamMessages {
        /// Call id.
        id: u64,
        /// The messages, at least one, as the frame carried them.
        messages: BatchMessages,
    },
    /// The peer ended its stream on call `id`. Server: the client sent its last message (a
    /// code other than OK: it abandoned its stream). Client: the server ended the call without
    /// a final message (the call is over).
    StreamEnd {
        /// Call id.
        id: u64,
        /// [`Code::OK`] for a clean end.
        code: Code,
    },
    /// Client: the server's response headers for call `id` (before the frame they came with).
    Headers {
        /// Call id.
        id: u64,
        /// The headers.
        metadata: Metadata,
    },
    /// Client: the server's trailers for call `id` (just before the call's end).
    Trailers {
        /// Call id.
        id: u64,
        /// The trailers.
        metadata: Metadata,
    },
    /// Call `id` was out of credit and may send stream data again.
    SendReady {
        /// Call id.
        id: u64,
    },
    /// Client: call `id` finished.
    Finished {
        /// Call id.
        id: u64,
        /// The reply or why there is none.
        result: Result<Body, CallError>,
    },
    /// The peer sent a goaway; no new calls will be accepted.
    GoAway {
        /// The peer's code ([`Code::OK`] for a graceful shutdown).
        code: Code,
        /// The peer's reason.
        message: String,
    },
    /// The connection is over; flush the transmits and close the transport.
    Closed(ConnectionError),
}

/// Unsolicited answers (pongs, refusals) that may wait unsent beyond the calls in flight.
const CONTROL_BACKLOG: usize = 1024;

/// Requests of at least this many bytes are sent awaiting a commit (when the server can): one
/// that the caller gives up on while it is being written is then never run.
pub const AWAIT_COMMIT_FROM: u64 = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's hello.
    Handshake,
    /// Calls flow.
    Open,
    /// A goaway went one way or the other: in-flight calls finish, no new ones.
    Draining,
    /// Over.
    Closed,
}

/// The connection state machine. See the module docs.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: ConnConfig,
    decoder: FrameDecoder,
    state: State,
    peer: Option<Hello>,
    /// Client: calls waiting for an answer. Server: calls being served.
    calls: Calls,
    next_id: u64,
    /// Server: the highest call id accepted, for the goaway.
    last_accepted: u64,
    /// Server: the pieced request the goaway sent promised to answer before it had arrived
    /// whole: later calls' requests came between its pieces, so its id is at most the
    /// goaway's last. It is still taken when it arrives; no other request is, after a goaway.
    promised: Option<u64>,
    /// Server: the highest call id seen (accepted or refused): stream frames for ids above it
    /// name calls that never existed.
    last_seen: u64,
    transmits: Vec<Transmit>,
    /// Large frames going out in pieces (client: requests; server: answers), in order, each
    /// with the frames queued behind it (`pieced.rs`); they follow `transmits`.
    pieced: VecDeque<pieced::PiecedOut>,
    /// Small stream frames written back to back, queued after `transmits`.
    small: SmallFrames,
    events: VecDeque<Event>,
    /// When the peer's hello must have arrived by: fixed at creation, so a peer trickling
    /// bytes cannot stretch it.
    hello_deadline: Instant,
    keepalive: Keepalive,
    /// Bytes of frames queued or being written: counted when queued, released when the driver
    /// reports them written ([`Connection::handle_written`]).
    out_bytes: usize,
    /// The writer has taken our hello (it is the first transmit).
    hello_taken: bool,
    /// Server: refuse the connection after the handshake with this goaway.
    refusal: Option<(Code, String)>,
    /// Client: requests sent awaiting a commit, in order, each with the stream position (bytes
    /// taken by the writer since the start) at which it ends, once taken.
    commits: VecDeque<(u64, Option<u64>)>,
    /// Bytes of transmits the writer took, since the start.
    taken: u64,
    /// Bytes the writer reported written, since the start.
    written: u64,
    /// Server: requests held for their commit, oldest first, with their bytes.
    held: VecDeque<(u64, usize)>,
    /// Stream data delivered to the application and not yet consumed (bounded by the
    /// connection's window, so it does not pause reading: the credit that frees it must flow).
    stream_held: usize,
    /// The connection's own flow (every stream together), once the peer's hello is in.
    conn_flow: Option<flow::Flow>,
    /// Requests, answers and stream messages received since the start.
    messages_in: u64,
}

impl Connection {
    /// A connection that starts by sending its hello.
    pub fn new(side: Side, config: ConnConfig, now: Instant) -> Self {
        Self::with_hello(side, config, now, None)
    }

    /// A server connection that only says why it refuses (connection limit, shutdown): its
    /// hello declares zero calls in flight and a goaway with `code` and `message` follows.
    pub fn refuse(config: ConnConfig, now: Instant, code: Code, message: String) -> Self {
        Self::with_hello(Side::Server, config, now, Some((code, message)))
    }

    fn with_hello(side: Side, config: ConnConfig, now: Instant, refusal: Option<(Code, String)>) -> Self {
        let hello = Hello {
            version: WIRE_VERSION,
            capabilities: caps::STREAMS
                | caps::COMMIT
                | caps::STREAM_BATCHES
                | caps::EARLY_HEADERS
                | caps::PIECES
                | caps::PIECED_ANSWERS
                | caps::FRAMES_BETWEEN_PIECES,
            max_frame: config.max_frame.max(MIN_MAX_FRAME),
            max_calls_in_flight: if refusal.is_some() { 0 } else { config.max_calls_in_flight },
            max_attachments: config.max_attachments,
            max_metadata: config.max_metadata(),
            stream_window: config.stream_window(),
        };
        let hello_deadline = now.checked_add(config.handshake_timeout).unwrap_or(now + Duration::from_secs(86_400));
        let head = hello.encode();
        let keepalive = Keepalive::new(config.keepalive_interval, config.keepalive_timeout, now);
        let mut conn = Connection {
            side,
            decoder: FrameDecoder::new(config.limits()),
            config,
            state: State::Handshake,
            peer: None,
            calls: Calls::default(),
            next_id: 1,
            last_accepted: 0,
            promised: None,
            last_seen: 0,
            out_bytes: head.len(),
            hello_taken: false,
            transmits: vec![Transmit { head, segments: Vec::new() }],
            pieced: VecDeque::new(),
            small: SmallFrames::default(),
            events: VecDeque::new(),
            hello_deadline,
            keepalive,
            refusal: None,
            commits: VecDeque::new(),
            taken: 0,
            written: 0,
            held: VecDeque::new(),
            stream_held: 0,
            conn_flow: None,
            messages_in: 0,
        };
        if let Some((code, message)) = refusal {
            conn.push_frame(Frame::GoAway(GoAway { last_id: 0, last_pieced: None, code, message: message.clone() }));
            conn.refusal = Some((code, message));
            conn.state = State::Draining;
        }
        conn
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ConnConfig {
        &self.config
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The peer's hello, once received.
    pub fn peer(&self) -> Option<&Hello> {
        self.peer.as_ref()
    }

    /// True until the connection is closed.
    pub fn is_open(&self) -> bool {
        self.state != State::Closed
    }

    /// True once a goaway went either way (or the connection closed): no new calls.
    pub fn is_draining(&self) -> bool {
        matches!(self.state, State::Draining | State::Closed)
    }

    /// Calls in flight (client: awaiting answers; server: being served).
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Server: a request numbered up to the goaway's last id is part-way received in pieces:
    /// the one the goaway promised to answer, or one that later calls overtook before it began
    /// and that began after the goaway went, to be refused once whole (flagged, so that the
    /// client knows it never ran). A draining server waits for it before it closes (within its
    /// grace period), so that neither is lost with the connection.
    pub fn awaits_pieced_request(&self) -> bool {
        matches!(self.decoder.pending_pieced(), Some((FrameKind::Request, id)) if id <= self.last_accepted)
    }

    /// Bytes the frame being received needs in all, counted from the front of the receive
    /// buffer. The driver sizes its buffer with it so that a large payload lands in one piece.
    pub fn bytes_needed(&self) -> usize {
        self.decoder.bytes_needed()
    }

    /// While a pieced frame is being received into a buffer holding `have` bytes of it: how
    /// many the next read may bring ([`FrameDecoder::piece_room`]).
    pub fn piece_room(&self, have: usize) -> Option<usize> {
        self.decoder.piece_room(have)
    }

    /// Takes every pending transmit (appends to `out`). Their bytes stay counted against the
    /// memory budget until [`Connection::handle_written`] reports them written.
    pub fn take_transmits(&mut self, out: &mut Vec<Transmit>) {
        self.seal_small_frames();
        let before = out.len();
        hand_out(&mut self.taken, &mut self.commits, &mut self.transmits, out);
        if !self.pieced.is_empty() {
            self.take_pieces(out);
        }
        if out.len() > before {
            self.hello_taken = true;
            // A ping queued behind a pieced request is not taken until the request's last piece
            // is: its timeout must not start while it waits there.
            if self.pieced.is_empty() {
                self.keepalive.on_taken();
            }
        }
    }
    /// The writer finished writing `bytes` bytes of transmits it took: they no longer count
    /// against the memory budget, and a keepalive ping among them starts its timeout now.
    pub fn handle_written(&mut self, bytes: usize, now: Instant) {
        self.keepalive.on_written(now);
        self.handle_written_part(bytes);
    }

    /// The first `bytes` bytes of what the writer took are written, perhaps not all of it (the
    /// driver's direct path, cut short, left the rest to its writer): they no longer count
    /// against the budget and requests among them get their commit, but a keepalive ping that
    /// was taken may be in the rest, so its timeout waits for [`Connection::handle_written`].
    /// With no ping awaiting its write ([`Connection::awaits_write_time`]) the two are the
    /// same, and the driver calls this one to skip reading the clock.
    pub fn handle_written_part(&mut self, bytes: usize) {
        self.out_bytes = self.out_bytes.saturating_sub(bytes);
        self.written = self.written.saturating_add(bytes as u64);
        while let Some(&(id, Some(end))) = self.commits.front() {
            if end > self.written {
                break;
            }
            self.commits.pop_front();
            if self.calls.contains(id) && self.state != State::Closed {
                self.push_frame(Frame::Commit(Commit { id }));
            }
        }
    }

    /// True while a keepalive ping waits to be written: the driver must then pass the time to
    /// [`Connection::handle_written`] (otherwise it may skip reading the clock).
    pub fn awaits_write_time(&self) -> bool {
        self.keepalive.awaits_write()
    }

    /// Bytes this connection holds against its memory budget: requests received and not yet
    /// answered (server), plus frames produced and not yet written (both sides). The driver
    /// stops reading while it is at the budget.
    pub fn held_bytes(&self) -> usize {
        self.out_bytes + self.calls.bytes() + self.stream_held
    }

    /// The part of [`Connection::held_bytes`] that stops reading at the memory budget: without
    /// stream data (bounded by the connection's window instead, and freed only by credit that
    /// must keep being read) and without requests held for their commit (at most one budget's
    /// worth; the commit that frees them is behind them on the wire).
    pub fn pausing_bytes(&self) -> usize {
        let held: usize = self.held.iter().map(|(_, b)| b).sum();
        (self.out_bytes + self.calls.bytes()).saturating_sub(held)
    }

    /// Server: true while call `id` is in flight (not answered, cancelled or expired).
    pub fn is_call_live(&self, id: u64) -> bool {
        self.calls.contains(id)
    }

    /// Bytes of frames queued and not yet taken by the writer (the writer's own batch aside):
    /// how far a stream sender is ahead of its writer. The pieces of a pieced frame that a
    /// stream's messages go between (to a peer that takes frames there) do not count: the
    /// messages do not wait for them.
    pub fn queued_bytes(&self) -> usize {
        self.out_bytes.saturating_sub(self.in_writer() + self.pieces_overtaken())
    }

    /// Bytes the writer took and has not yet reported written: its batch.
    fn in_writer(&self) -> usize {
        usize::try_from(self.taken.saturating_sub(self.written)).unwrap_or(usize::MAX)
    }

    /// Requests, answers and stream messages received since the start (each message of a
    /// batch counted): the driver tells one message in from a burst by it.
    pub fn messages_received(&self) -> u64 {
        self.messages_in
    }

    /// True when what waits to be written is a few small whole frames of at most `max` bytes
    /// in all (no file region, no credit grant) and at most one call is in flight: the case
    /// where the driver writes them from the task that queued them instead of waking its writer
    /// (with more calls the writer gathers them into one write). A run of small stream
    /// messages is sealed into a frame here, so that it can go. The driver takes this path at
    /// most once per message received (its `lone_call`): a stream sender queues its messages
    /// faster than one write each (measured, 4,000 messages of 4 KB: 4,016 `writev` calls when
    /// each went direct, about 2,600 by the writer).
    pub fn wants_direct_write(&mut self, max: usize) -> bool {
        if self.calls.len() > 1 || !self.pieced.is_empty() {
            return false;
        }
        self.seal_small_frames();
        !self.transmits.is_empty()
            && self.transmits.len() <= 4
            && self.transmits.iter().map(Transmit::len).sum::<usize>() <= max
            && !self.transmits.iter().any(|t| t.has_files() || is_kind(t, FrameKind::Credit))
    }

    /// True when at least `frames` whole frames wait to be written, each under `frame_max`
    /// bytes, none a file region, a credit grant or a stream message: a burst of calls or
    /// answers, whose first frames the driver writes at once so that the peer starts on them
    /// while this side queues the rest (an early flush). A stream's messages are left to the
    /// writer, which gathers them into larger writes (their sender waits for it every
    /// `SEND_AHEAD` bytes).
    pub fn wants_early_write(&self, frames: usize, frame_max: usize) -> bool {
        self.small.is_empty()
            && self.pieced.is_empty()
            && self.transmits.len() >= frames
            && !self.transmits.iter().any(|t| {
                t.len() >= frame_max || t.has_files() || is_kind(t, FrameKind::Credit) || is_kind(t, FrameKind::StreamData)
            })
    }

    /// True when transmits are waiting.
    pub fn has_transmits(&self) -> bool {
        !self.transmits.is_empty() || !self.small.is_empty() || self.has_pieces_ready()
    }

    /// True when events are waiting.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        if self.state == State::Handshake {
            return Some(self.hello_deadline);
        }
        match (self.calls.next_deadline(), self.keepalive.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Consumes every complete frame at the front of `buf`. On a protocol violation the
    /// connection queues a goaway that says what was wrong, closes, and returns the error.
    pub fn handle_input<B: InputBuf>(&mut self, buf: &mut B, now: Instant) -> Result<(), ConnectionError> {
        if self.state == State::Closed {
            let n = buf.remaining();
            buf.advance(n);
            return Ok(());
        }
        if !buf.is_empty() {
            self.keepalive.on_rx(now);
        }
        let r = self.decode_all(buf, now);
        if let Err(e) = &r {
            self.fail(e.clone(), true);
        }
        r
    }

    fn decode_all<B: InputBuf>(&mut self, buf: &mut B, now: Instant) -> Result<(), ConnectionError> {
        if self.peer.is_none() {
            match self.decoder.decode_hello(buf)? {
                Some(hello) => self.on_hello(hello)?,
                None => return Ok(()),
            }
        }
        while self.state != State::Closed {
            let frame = self.decoder.decode(buf)?;
            // Frames the peer aborted part-way came before this one (or before the end of the
            // input): they are dealt with first.
            if self.decoder.has_aborted() {
                self.on_aborted()?;
            }
            match frame {
                Some(frame) => self.on_frame(frame, now)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Pieced frames the peer ended part-way with an abort marker (`docs/wire.md`, "Pieces").
    /// Server: a request that awaited its commit, so no call exists for it. Client: an answer
    /// the server abandoned (after our cancel: the call is gone, and this is silent; otherwise
    /// its connection failed or it stopped answering), which fails the call if it is still
    /// waiting, instead of leaving it to its deadline. Another kind could not have been pieced.
    #[cold]
    fn on_aborted(&mut self) -> Result<(), ConnectionError> {
        for (kind, id) in self.decoder.take_aborted() {
            match (self.side, kind) {
                // A promised request the client gave up on will not come.
                (Side::Server, FrameKind::Request) => {
                    if self.promised == Some(id) {
                        self.promised = None;
                    }
                }
                (Side::Client, FrameKind::Response) => {
                    let why = "the server abandoned its answer part-way (its pieced response ended at an abort marker: it stopped answering the call, or its connection failed)";
                    self.finish(id, Err(CallError::Status(Status::new(Code::ABORTED, why))));
                }
                (side, kind) => return Err(not_allowed(side, kind)),
            }
        }
        Ok(())
    }

    /// The peer closed its side. An error if it did so in the middle of a frame.
    pub fn handle_eof(&mut self, buf: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        let err = match self.decoder.finish(buf) {
            Err(e) => ConnectionError::Decode(e),
            Ok(()) => ConnectionError::Closed,
        };
        self.fail(err, false);
    }

    /// The transport failed.
    pub fn handle_io_error(&mut self, err: &std::io::Error) {
        self.fail(ConnectionError::Io(err.to_string()), false);
    }

    /// Time passed: expire deadlines, send a keepalive ping, or give up on the peer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Handshake {
            if now >= self.hello_deadline {
                let limit = self.config.handshake_timeout;
                self.fail(ConnectionError::HelloTimeout(limit), true);
            }
            return;
        }
        for (id, call) in self.calls.expire(now) {
            self.held.retain(|(i, _)| *i != id);
            let budget = call.budget.unwrap_or_default();
            match self.side {
                Side::Client => {
                    self.withdraw_or_cancel(id);
                    self.events
                        .push_back(Event::Finished { id, result: Err(CallError::DeadlineExceeded(budget)) });
                }
                Side::Server => {
                    let status = Status::new(
                        Code::DEADLINE_EXCEEDED,
                        format!("deadline of {budget:?} exceeded; handler dropped"),
                    );
                    self.push_frame(Frame::Error(ErrorFrame::new(id, status)));
                    self.events.push_back(Event::Abort { id, reason: AbortReason::DeadlineExceeded });
                }
            }
        }
        match self.keepalive.on_timeout(now) {
            keepalive::Action::Dead => {
                let timeout = self.keepalive.timeout();
                self.fail(ConnectionError::KeepaliveTimeout(timeout), true);
            }
            keepalive::Action::Ping(id) => self.push_frame(Frame::Ping(Ping { id, pong: false })),
            keepalive::Action::None => {}
        }
    }

    /// Client: starts a call; the request is queued for sending. `timeout` becomes the call's
    /// deadline here and its budget on the server. A streaming `mode` sends and receives the
    /// call's messages with [`Connection::send_message`] and [`Event::StreamData`].
    pub fn start_call(
        &mut self,
        method: u32,
        body: Body,
        mode: CallMode,
        metadata: &Metadata,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<u64, CallError> {
        debug_assert_eq!(self.side, Side::Client);
        match self.state {
            State::Open => {}
            State::Handshake | State::Draining => return Err(CallError::ShuttingDown),
            State::Closed => return Err(CallError::Connection(ConnectionError::LocallyClosed)),
        }
        let peer = self.peer.expect("open implies hello");
        let metadata = outgoing::metadata_block(&peer, metadata)?;
        // The metadata block and its length word travel in the message: they count too.
        let len = body.len() + if metadata.is_empty() { 0 } else { 4 + metadata.len() as u64 };
        if len > u64::from(peer.max_frame) {
            return Err(CallError::TooLarge { len, limit: u64::from(peer.max_frame) });
        }
        if body.attachments.len() > peer.max_attachments as usize {
            return Err(CallError::Codec(format!(
                "{} attachments; the server accepts at most {}",
                body.attachments.len(),
                peer.max_attachments
            )));
        }
        if mode.is_streaming() && peer.stream_window == 0 {
            return Err(CallError::Status(Status::new(
                Code::UNIMPLEMENTED,
                "the server does not take streaming calls (its hello declares no stream window)",
            )));
        }
        let await_commit =
            peer.capabilities & caps::COMMIT != 0 && len >= AWAIT_COMMIT_FROM && !mode.client_stream;
        let id = self.next_id;
        // A timeout too large to add to the clock (`Duration::MAX`) is no deadline at all.
        let deadline = timeout.and_then(|t| now.checked_add(t));
        let timeout = timeout.filter(|_| deadline.is_some());
        let request =
            Request { id, method, mode, await_commit, deadline: timeout, metadata, message: body.message, attachments: body.attachments };
        let transmit = request.encode().map_err(|e| CallError::Codec(e.to_string()))?;
        self.next_id += 1;
        let mut call = InFlight::unary(deadline, timeout, 0);
        if mode.is_streaming() {
            let window = self.config.stream_window();
            call.flow = Some(Box::new(flow::Flow::new(mode.client_stream, mode.server_stream, peer.stream_window, window)));
        }
        call.pieced = await_commit && peer.capabilities & caps::PIECES != 0 && len > pieced::PIECED_FROM;
        let pieced = call.pieced;
        self.calls.insert(id, call);
        if pieced {
            // In pieces, so that a cancel can end it part-way (`pieced.rs`).
            self.push_pieced(id, transmit);
        } else {
            self.push_transmit(transmit);
        }
        if await_commit {
            self.commits.push_back((id, None));
        }
        Ok(id)
    }

    /// Client: the caller gave up on call `id` (its future was dropped). A request not yet taken
    /// by the writer is withdrawn (never sent); otherwise a cancel follows it.
    pub fn cancel_call(&mut self, id: u64) {
        if self.calls.remove(id).is_some() && self.state != State::Closed {
            self.withdraw_or_cancel(id);
        }
    }

    /// Client: call `id` is over on our side. A request still queued (not yet taken by the
    /// writer) is withdrawn with the stream frames queued behind it, so the server never sees
    /// the call; for one already on its way, the stream frames still queued are dropped and a
    /// cancel follows.
    fn withdraw_or_cancel(&mut self, id: u64) {
        // Its commit, if it awaits one, is never sent: the server discards the request unrun.
        self.commits.retain(|(i, _)| *i != id);
        self.seal_small_frames();
        // A pieced request not begun is withdrawn; one begun ends at an abort marker. Either
        // way the server never sees a call.
        let mut request_withdrawn = self.withdraw_or_abort_pieced(id);
        // Its frames still queued, also behind a pieced request (not begun on the wire either).
        let mut credit = 0;
        let mut freed = withdraw_from(&mut self.transmits, id, Side::Client, &mut request_withdrawn, &mut credit);
        for p in &mut self.pieced {
            freed += withdraw_from(&mut p.behind, id, Side::Client, &mut request_withdrawn, &mut credit);
        }
        self.out_bytes -= freed;
        // Stream data that will not cross took the connection's credit, which the server,
        // never receiving it, would never grant back: every stream would wait for it at last.
        if credit > 0 && self.conn_flow.as_mut().is_some_and(|f| f.on_withdrawn(credit)) {
            self.wake_credit_waiters();
        }
        if !request_withdrawn {
            self.push_frame(Frame::Cancel(Cancel { id }));
        }
    }

    /// Server: the client cancelled call `id` after it was answered. A pieced answer not begun
    /// is withdrawn, one begun ends at an abort marker (at most the pieces the writer holds
    /// still cross), and a whole answer (a response or an error) not yet taken by the writer is
    /// withdrawn. The call's stream frames stay: they were charged to the connection's flow,
    /// and the client's credit for them is what gives it back.
    fn withdraw_answer(&mut self, id: u64) {
        self.withdraw_or_abort_pieced(id);
        let mut answer_withdrawn = false;
        // Its stream frames stay (below): no credit comes back here.
        let mut credit = 0;
        let mut freed = withdraw_from(&mut self.transmits, id, Side::Server, &mut answer_withdrawn, &mut credit);
        for p in &mut self.pieced {
            freed += withdraw_from(&mut p.behind, id, Side::Server, &mut answer_withdrawn, &mut credit);
        }
        debug_assert_eq!(credit, 0);
        self.out_bytes -= freed;
    }

    /// Server: the handler of call `id` finished. Ignored when the call was cancelled or
    /// expired meanwhile (its answer is no longer wanted).
    ///
    /// A server-streaming call ends with a stream end when the body is empty, and with a
    /// response carrying the body (the last message) otherwise.
    pub fn respond(&mut self, id: u64, result: Result<Body, Status>) {
        debug_assert_eq!(self.side, Side::Server);
        let Some(mut call) = self.calls.remove(id) else { return };
        let streams_answer = call.flow.as_ref().is_some_and(|f| f.send_open);
        if self.state == State::Closed {
            return;
        }
        let Some(peer) = self.peer else { return };
        // The call's last frame: its headers (if none went yet) and its trailers go with it.
        let meta = Self::take_reply_blocks(&mut call.headers_done, call.reply.as_deref_mut(), true);
        let extra = meta.wire_len() as u64;
        // Every answer is checked against what the client declared it accepts: one it cannot
        // decode would end its connection and fail its other calls too.
        let frame = match result {
            Ok(body) if streams_answer && body.is_empty() => Frame::StreamEnd(StreamEnd { id, code: Code::OK, meta }),
            Ok(body) => match outgoing::check_body(&peer, Side::Server, &body, extra) {
                Ok(()) => Frame::Response(Response { id, message: body.message, attachments: body.attachments, meta }),
                Err(why) => Frame::Error(ErrorFrame::new(id, Status::new(Code::RESOURCE_EXHAUSTED, why))),
            },
            Err(status) => {
                let status = outgoing::fit_status(&peer, status);
                if status.message.len() as u64 + status.details.len() as u64 + extra <= u64::from(peer.max_frame) {
                    Frame::Error(ErrorFrame { id, status, meta, refused: false })
                } else {
                    let why = format!("the {} status with its response metadata ({extra} bytes) is over the client's frame limit of {}", status.code, peer.max_frame);
                    Frame::Error(ErrorFrame::new(id, Status::new(Code::RESOURCE_EXHAUSTED, why)))
                }
            }
        };
        // A large response goes in pieces to a client that takes them, so that a cancel can
        // stop it part-way (`pieced.rs`); errors and stream frames go whole (`docs/wire.md`).
        let may_piece = matches!(frame, Frame::Response(_)) && peer.capabilities & caps::PIECED_ANSWERS != 0;
        match frame.encode() {
            Ok(t) if may_piece && t.len() as u64 > pieced::PIECED_FROM => self.push_pieced(id, t),
            Ok(t) => self.push_transmit(t),
            Err(e) => {
                // E.g. more attachments than the wire can count: still an answer, never silence.
                let status = Status::new(Code::INTERNAL, format!("response could not be encoded: {e}"));
                self.push_frame(Frame::Error(ErrorFrame::new(id, status)));
            }
        }
    }

    /// Server: begins a graceful shutdown: a goaway tells the client which calls will still be
    /// answered; later requests are refused with [`Code::UNAVAILABLE`].
    pub fn goaway(&mut self, message: &str) {
        if matches!(self.state, State::Open | State::Handshake) {
            self.state = State::Draining;
            let last_id = self.last_accepted;
            // Only the request being received in pieces can have an id at most the last and
            // still be coming: a later call can overtake it between its pieces, none other.
            self.promised = self.decoder.pending_pieced().filter(|&(kind, id)| kind == FrameKind::Request && id <= last_id).map(|(_, id)| id);
            let last_pieced = Some(self.decoder.last_pieced_request());
            self.push_frame(Frame::GoAway(GoAway { last_id, last_pieced, code: Code::OK, message: outgoing::short_text(message) }));
        }
    }

    /// Ends the connection now: every call in flight fails (client) or is aborted (server).
    pub fn close(&mut self, err: ConnectionError) {
        self.fail(err, false);
    }

    fn on_hello(&mut self, hello: Hello) -> Result<(), ConnectionError> {
        self.peer = Some(hello);
        self.small.configure(hello.capabilities & caps::STREAM_BATCHES != 0, hello.max_frame);
        self.conn_flow = Some(flow::Flow::connection(hello.stream_window, self.config.stream_window()));
        if hello.max_calls_in_flight == 0 {
            // A refusal: its goaway follows and says why (see `Connection::refuse`).
            self.state = State::Draining;
            return Ok(());
        }
        if self.state == State::Handshake {
            self.state = State::Open;
        }
        if self.refusal.is_none() {
            self.events.push_back(Event::Connected(hello));
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) -> Result<(), ConnectionError> {
        self.messages_in += match &frame {
            Frame::Request(_) | Frame::Response(_) | Frame::Error(_) | Frame::StreamData(_) => 1,
            Frame::StreamBatch(b) => b.messages.len() as u64,
            _ => 0,
        };
        match (self.side, frame) {
            (_, Frame::Ping(p)) if !p.pong => {
                self.check_backlog()?;
                self.push_frame(Frame::Ping(Ping { id: p.id, pong: true }));
            }
            (_, Frame::Ping(p)) => self.keepalive.on_pong(p.id),
            (_, Frame::GoAway(g)) => self.on_goaway(g),
            (Side::Server, Frame::Request(r)) => self.on_request(r, now)?,
            (Side::Server, Frame::Cancel(c)) => {
                // A request still held for its commit never ran: nothing to abort.
                self.held.retain(|(i, _)| *i != c.id);
                match self.calls.remove(c.id) {
                    Some(call) if call.held.is_none() => self.events.push_back(Event::Abort { id: c.id, reason: AbortReason::Cancelled }),
                    Some(_) => {}
                    // Answered already: its answer, if still queued, is no longer wanted.
                    None => self.withdraw_answer(c.id),
                }
            }
            (Side::Server, Frame::Commit(c)) => self.on_commit(c)?,
            (Side::Client, Frame::Response(r)) => {
                if r.meta.is_empty() || self.on_reply_metadata(r.id, r.meta, true) {
                    let body = Body { message: r.message, attachments: r.attachments };
                    self.finish(r.id, Ok(body));
                }
            }
            (Side::Client, Frame::Error(e)) if e.refused => self.finish(e.id, Err(CallError::ShuttingDown)),
            (Side::Client, Frame::Error(e)) => {
                if e.meta.is_empty() || self.on_reply_metadata(e.id, e.meta, true) {
                    let error = self.deadline_answer(e.id, &e.status, now).unwrap_or(CallError::Status(e.status));
                    self.finish(e.id, Err(error));
                }
            }
            (_, Frame::StreamData(d)) => self.on_stream_data(d)?,
            (_, Frame::StreamBatch(b)) => self.on_stream_batch(b)?,
            (_, Frame::StreamHeaders(h)) => self.on_stream_headers(h)?,
            (_, Frame::StreamEnd(e)) => self.on_stream_end(e)?,
            (_, Frame::Credit(c)) => self.on_credit(c)?,
            (side, frame) => return Err(not_allowed(side, frame.kind())),
        }
        Ok(())
    }

    /// Client: the server's `DEADLINE_EXCEEDED` for a call whose own deadline has passed too is
    /// that deadline, as if our timer had run first: both sides give up at the same moment
    /// (docs/wire.md), and which timer runs first is a race (a server answering from the task
    /// that expired the call won it about one time in eight on loopback). A handler's own
    /// `DEADLINE_EXCEEDED` before the deadline stays its answer.
    fn deadline_answer(&self, id: u64, status: &Status, now: Instant) -> Option<CallError> {
        let call = self.calls.get(id)?;
        let passed = status.code == Code::DEADLINE_EXCEEDED && call.deadline.is_some_and(|at| now >= at);
        passed.then(|| CallError::DeadlineExceeded(call.budget.unwrap_or_default()))
    }

    fn on_request(&mut self, r: Request, now: Instant) -> Result<(), ConnectionError> {
        let id = r.id;
        if self.calls.contains(id) {
            return Err(ConnectionError::Protocol(format!("call id {id} is already in flight")));
        }
        self.last_seen = self.last_seen.max(id);
        // The goaway named calls up to its last id as answered: one of them may come after
        // it, the pieced request that later calls' requests overtook between its pieces. Once.
        let taken = self.state == State::Open || (self.state == State::Draining && self.promised == Some(id));
        if taken && self.state == State::Draining {
            self.promised = None;
        }
        if !taken || self.calls.len() >= self.config.max_calls_in_flight as usize {
            // Refusals are answers nobody waits on a handler for: bound them.
            self.check_backlog()?;
        }
        if !taken {
            let status = Status::new(Code::UNAVAILABLE, "server is shutting down; call not accepted");
            // Flagged refused: the client fails the call `ShuttingDown` (never ran, may go
            // again elsewhere) whether it reads this before or after the goaway (which waits
            // behind the last pieced answer), and even for a call numbered up to the goaway's
            // last id (a pieced request that later calls overtook, begun after the goaway went).
            self.push_frame(Frame::Error(ErrorFrame::refused(id, status)));
            return Ok(());
        }
        if self.calls.len() >= self.config.max_calls_in_flight as usize {
            let status = Status::new(
                Code::RESOURCE_EXHAUSTED,
                format!("{} calls already in flight on this connection (the limit)", self.calls.len()),
            );
            self.push_frame(Frame::Error(ErrorFrame::new(id, status)));
            return Ok(());
        }
        let peer_window = self.peer.map_or(0, |p| p.stream_window);
        if r.mode.server_stream && peer_window == 0 {
            let status = Status::new(
                Code::INVALID_ARGUMENT,
                "a server-streaming call from a peer that declared no stream window (it could receive nothing)",
            );
            self.push_frame(Frame::Error(ErrorFrame::new(id, status)));
            return Ok(());
        }
        let metadata = self.request_metadata(id, r.metadata)?;
        self.last_accepted = self.last_accepted.max(id);
        // The caller's budget, cut to the server's limit; one too large to add to the clock is
        // no deadline.
        let budget = match (r.deadline, self.config.max_call_duration) {
            (Some(asked), Some(limit)) => Some(asked.min(limit)),
            (asked, limit) => asked.or(limit),
        };
        let deadline = budget.and_then(|d| now.checked_add(d));
        let body = Body { message: r.message, attachments: r.attachments };
        let mut call = InFlight::unary(deadline, budget, body.len() as usize);
        if r.mode.is_streaming() {
            let window = self.config.stream_window();
            call.flow = Some(Box::new(flow::Flow::new(r.mode.server_stream, r.mode.client_stream, peer_window, window)));
        }
        let event = Event::Request { id, method: r.method, mode: r.mode, metadata, deadline, body };
        if r.await_commit && !r.mode.client_stream {
            call.held = Some(Box::new(event));
            call.awaits_commit = true;
            let bytes = call.bytes;
            self.calls.insert(id, call);
            self.held.push_back((id, bytes));
            // A peer that sends requests awaiting commits and never commits them may make us
            // hold at most one memory budget of them: past it, the oldest run as if committed.
            while self.held.iter().map(|(_, b)| b).sum::<usize>() > self.config.memory_budget {
                let Some((oldest, _)) = self.held.pop_front() else { break };
                if let Some(event) = self.calls.get_mut(oldest).and_then(|c| c.held.take()) {
                    self.events.push_back(*event);
                }
            }
        } else {
            self.calls.insert(id, call);
            self.events.push_back(event);
        }
        Ok(())
    }

    /// Server: the request held for this commit runs now.
    fn on_commit(&mut self, c: Commit) -> Result<(), ConnectionError> {
        let id = c.id;
        self.held.retain(|(i, _)| *i != id);
        match self.calls.get_mut(id) {
            Some(call) if call.awaits_commit => {
                call.awaits_commit = false;
                // Already running if it was released early (the bound on held requests).
                if let Some(event) = call.held.take() {
                    self.events.push_back(*event);
                }
            }
            Some(_) => return Err(ConnectionError::Protocol(format!("commit for call {id}, which awaits none"))),
            // Cancelled or expired meanwhile: the commit crossed the cancel.
            None if id != 0 && id <= self.last_seen => {}
            None => return Err(ConnectionError::Protocol(format!("commit for call {id}, which was never started"))),
        }
        Ok(())
    }

    /// Server: the metadata of request `id`, checked against the limit this side declared.
    fn request_metadata(&self, id: u64, block: Bytes) -> Result<Metadata, ConnectionError> {
        let limit = self.config.max_metadata() as usize;
        if block.len() > limit {
            return Err(ConnectionError::Protocol(format!(
                "metadata of call {id} is {} bytes, over the limit of {limit} bytes this side declared",
                block.len()
            )));
        }
        Metadata::decode(block).map_err(|e| ConnectionError::Protocol(format!("metadata of call {id}: {e}")))
    }

    /// A peer that keeps sending frames that need an answer (pings, refused calls) while it
    /// reads nothing would make the queue of answers grow without end; past a bound that is
    /// a protocol violation.
    fn check_backlog(&self) -> Result<(), ConnectionError> {
        let limit = self.config.max_calls_in_flight as usize + CONTROL_BACKLOG;
        // Behind a pieced request too: a peer that stops reading in the middle of one holds
        // every answer there.
        let queued = self.transmits.len() + self.pieced.iter().map(|p| p.behind.len()).sum::<usize>();
        if queued >= limit {
            return Err(ConnectionError::Protocol(format!(
                "peer keeps sending while not reading: {queued} answers queued (limit {limit})"
            )));
        }
        Ok(())
    }

    fn on_goaway(&mut self, g: GoAway) {
        let hello_refused = self.peer.is_some_and(|p| p.max_calls_in_flight == 0);
        if hello_refused {
            self.events.push_back(Event::Refused { code: g.code, message: g.message.clone() });
            self.fail(ConnectionError::GoAway { code: g.code, message: g.message }, false);
            return;
        }
        if self.state != State::Closed {
            self.state = State::Draining;
        }
        self.events.push_back(Event::GoAway { code: g.code, message: g.message.clone() });
        if self.side == Side::Client {
            // Calls the server never accepted will not be answered, nor pieced requests that
            // later calls overtook before they began: the server refuses what comes after its
            // goaway. What of them is still queued need not cross (a large request begun stops
            // at an abort marker).
            let mut unanswered: Vec<u64> = self.calls.ids().filter(|&id| id > g.last_id).collect();
            unanswered.extend(self.overtaken_unbegun(g.last_id));
            if let Some(seen) = g.last_pieced {
                // The server names the last request whose header reached it in pieces. Ours go
                // in id order, so those numbered above it had not begun to reach it: begun
                // since (the goaway crossed them), they are refused once whole, or lost if the
                // server closes first. Either way they never run.
                let calls = &self.calls;
                let overtaken = |&id: &u64| id > seen && id <= g.last_id && calls.get(id).is_some_and(|c| c.pieced);
                unanswered.extend(calls.ids().filter(overtaken));
                unanswered.sort_unstable();
                unanswered.dedup();
            }
            for id in unanswered {
                self.withdraw_or_cancel(id);
                self.finish(id, Err(CallError::ShuttingDown));
            }
        }
        if g.code != Code::OK {
            self.fail(ConnectionError::GoAway { code: g.code, message: g.message }, false);
        }
    }

    fn finish(&mut self, id: u64, result: Result<Body, CallError>) {
        // An answer for a call we no longer track (cancelled, expired) is dropped.
        if self.calls.remove(id).is_some() {
            self.events.push_back(Event::Finished { id, result });
        }
    }

    /// Closes with `err`; `tell_peer` queues a goaway that names the error first.
    fn fail(&mut self, err: ConnectionError, tell_peer: bool) {
        if self.state == State::Closed {
            return;
        }
        if err != ConnectionError::LocallyClosed {
            // Answers not yet written will never be wanted, and a peer that stopped reading
            // must not keep them alive: only the goaway below is still worth a try.
            // Our hello stays, if not yet taken: the goaway means nothing to a peer without it.
            self.seal_small_frames();
            let keep = usize::from(!self.hello_taken).min(self.transmits.len());
            for t in self.transmits.drain(keep..) {
                self.out_bytes -= t.len();
            }
            self.out_bytes -= self.drop_pieced();
        }
        if tell_peer {
            let code = match err {
                ConnectionError::KeepaliveTimeout(_) => Code::UNAVAILABLE,
                _ => Code::PROTOCOL,
            };
            let message = outgoing::short_text(&err.to_string());
            self.push_frame(Frame::GoAway(GoAway { last_id: self.last_accepted, last_pieced: None, code, message }));
        }
        self.state = State::Closed;
        self.held.clear();
        for id in self.calls.drain() {
            self.events.push_back(match self.side {
                Side::Client => Event::Finished { id, result: Err(CallError::Connection(err.clone())) },
                Side::Server => Event::Abort { id, reason: AbortReason::ConnectionClosed },
            });
        }
        self.events.push_back(Event::Closed(err));
    }

    fn push_frame(&mut self, frame: Frame) {
        // Control frames are tiny and always encode; a failure here is a bug, not input.
        match frame.encode() {
            Ok(t) => self.push_transmit(t),
            Err(e) => tracing::error!("control frame failed to encode: {e}"),
        }
    }

    fn push_transmit(&mut self, t: Transmit) {
        self.seal_small_frames();
        self.out_bytes += t.len();
        self.queue(t);
    }

    /// Queues call `id`'s stream message, which [`SmallFrames::fits`], behind the others.
    fn push_small_frame(&mut self, id: u64, message: &[u8]) {
        let (sealed, added) = self.small.push(id, message);
        self.out_bytes += added;
        if let Some(run) = sealed {
            self.queue(run);
        }
    }

    /// The run of small frames, if any, goes into the queue (already counted in `out_bytes`):
    /// before any other transmit is queued, and before the queue is read.
    fn seal_small_frames(&mut self) {
        if let Some(run) = self.small.seal() {
            self.queue(run);
        }
    }
}

/// Moves `frames` to the writer's `out`, counting their bytes `taken`, and noting where each
/// request awaiting a commit ends in the stream: its commit goes once the writer has written
/// that far.
#[inline(always)]
fn hand_out(taken: &mut u64, commits: &mut VecDeque<(u64, Option<u64>)>, frames: &mut Vec<Transmit>, out: &mut Vec<Transmit>) {
    if commits.iter().any(|(_, end)| end.is_none()) {
        for t in frames.iter() {
            *taken += t.len() as u64;
            if let Some(id) = request_id(t) {
                if let Some(entry) = commits.iter_mut().find(|(i, end)| *i == id && end.is_none()) {
                    entry.1 = Some(*taken);
                }
            }
        }
    } else {
        *taken += frames.iter().map(|t| t.len() as u64).sum::<u64>();
    }
    out.append(frames);
}

/// Takes call `id`'s frames that need not cross out of `queue`; returns their bytes. Client
/// (the caller gave up): its request (noting it in `lead_withdrawn`), stream frames (adding
/// the credit their data took to `credit`) and commit. Server (the client cancelled an answered
/// call): its response or error (noting it).
fn withdraw_from(queue: &mut Vec<Transmit>, id: u64, side: Side, lead_withdrawn: &mut bool, credit: &mut u64) -> usize {
    let mut freed = 0;
    queue.retain(|t| {
        match (side, header_of(t).filter(|h| h.id == id).map(|h| h.kind)) {
            (Side::Client, Some(FrameKind::Request)) | (Side::Server, Some(FrameKind::Response | FrameKind::Error)) => *lead_withdrawn = true,
            (Side::Client, Some(FrameKind::StreamData)) => *credit += flow::queued_cost(t),
            (Side::Client, Some(FrameKind::StreamEnd | FrameKind::Commit)) => {}
            _ => return true,
        }
        freed += t.len();
        false
    });
    freed
}

/// The protocol error for a frame of `kind` that the peer of `side` may not send.
fn not_allowed(side: Side, kind: FrameKind) -> ConnectionError {
    ConnectionError::Protocol(format!("{} frame is not allowed from a {}", kind.name(), if side == Side::Client { "server" } else { "client" }))
}

/// The call id of a transmit that is a request.
fn request_id(t: &Transmit) -> Option<u64> {
    header_of(t).filter(|h| h.kind == FrameKind::Request).map(|h| h.id)
}

/// True when a transmit is a frame of `kind`: the kind is a frame header's first byte (the
/// hello, which has none, starts with its magic instead). Credit grants, for one, stay the
/// writer's: a receiver grants credit as its application consumes messages, one grant after
/// another while a stream flows, and the writer gathers those.
fn is_kind(t: &Transmit, kind: FrameKind) -> bool {
    t.head.first() == Some(&(kind as u8))
}

/// The header of the frame a transmit carries (every transmit but the hello starts with one).
fn header_of(t: &Transmit) -> Option<FrameHeader> {
    FrameHeader::decode(t.head.get(..HEADER_LEN)?).ok()
}

/// Convenience for decode errors surfacing through the connection.
impl From<DecodeError> for CallError {
    fn from(e: DecodeError) -> Self {
        CallError::Connection(ConnectionError::Decode(e))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod meta_tests;
#[cfg(test)]
mod pieced_tests;
#[cfg(test)]
mod between_tests;
