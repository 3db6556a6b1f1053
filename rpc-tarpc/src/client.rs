//! The client's transport: small tarpc requests go as messages of one `tarpc/stream` call,
//! the others as zcrpc calls; a cancel goes on the stream, or drops the call.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{Sink, Stream};
use rpc_core::{Body, BoxFuture, CallError, CallMode, CallOptions, CallStream, Client, StreamReceiver, StreamSender};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::{ClientMessage, Response, ServerError};

use crate::codec::{decode, yield_after_large, EncodeBuf, LARGE};
use crate::errors::to_server_error;
use crate::ids::IdMap;
use crate::wire::{call_message_at, read_from_server, ToServerRef};
use crate::CALL;

/// One call in flight: its request id, its response (none when its deadline passed), and
/// whether the response was large.
type InFlight<Resp> = BoxFuture<'static, (u64, Option<Response<Resp>>, bool)>;

/// A call in the transport's set: its zcrpc call until cancelled (dropping it cancels the call
/// on the server), then nothing, and the set lets it go at its next poll. No allocation or
/// map entry of its own: a cancel finds it in the set.
struct Call<Resp> {
    id: u64,
    call: Option<InFlight<Resp>>,
    /// The waker of its last poll: a cancel wakes it, so that it leaves the set.
    waker: Option<Waker>,
}

impl<Resp> Future for Call<Resp> {
    /// `None`: cancelled.
    type Output = Option<(u64, Option<Response<Resp>>, bool)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(call) = &mut this.call else { return Poll::Ready(None) };
        match call.as_mut().poll(cx) {
            Poll::Ready(done) => Poll::Ready(Some(done)),
            Poll::Pending => {
                if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// A `tarpc::Transport` for a tarpc client (`WorldClient::new(config, transport)`).
///
/// Small requests (under 64 KiB encoded) go as messages of one long-lived bidirectional zcrpc
/// call, `tarpc/stream` ([`crate::STREAM`]), opened at the first request; their responses come
/// back on it, and a cancel (the caller dropped its future) goes on it as a cancel message.
/// Until the stream is open (and on a server that does not know it), and for larger requests,
/// each request goes as one zcrpc call, `tarpc/call` — its deadline as the call's deadline,
/// and a cancel cancels the call on the server. Messages are serialized (postcard) into
/// buffers the transport reuses. Stream messages wait in a queue of at most 64 and go as the
/// server's credit allows: `poll_ready` is pending while the queue is full.
///
/// When the server closes the connection gracefully (its shutdown, or the maximum age of its
/// connections: a goaway), the stream is finished and read until the server has answered what
/// went on it, and the next requests go on a stream of the next connection (the zcrpc client
/// re-dials at the goaway): the old connection closes as soon as it is answered, and no request
/// fails for it. A retiring stream is let go (its call cancelled, so its connection closes)
/// once none of its requests is left to wait for, answered or past its deadline; and at most
/// 8 are read at once: a ninth goaway lets the oldest go, its requests failed.
///
/// A call that fails below tarpc comes back as tarpc's `RpcError::Server` with a
/// [`ServerError`] naming the cause: a request over the server's frame limit
/// (`InvalidInput`, "request of N bytes ... is over the peer's frame limit ..."), a lost
/// connection or stream (`ConnectionAborted`; the zcrpc client re-dials, and the transport
/// opens a new stream, for the next requests). A call past
/// its deadline is left to tarpc's own timer (`RpcError::DeadlineExceeded`, as over tarpc's
/// transports). The transport itself never fails: tarpc's other calls carry on.
pub struct ClientTransport<Req, Resp> {
    client: Client,
    buf: EncodeBuf,
    calls: FuturesUnordered<Call<Resp>>,
    /// The `tarpc/stream` call, in whatever state it is.
    stream: StreamState,
    /// Stream messages not yet sent (at most [`OUT_QUEUE`]).
    out: VecDeque<Body>,
    /// Requests smaller than this go on the stream: [`SMALL`], or the server's frame limit
    /// if lower (a request over it goes as a call, which fails alone saying so).
    small: usize,
    /// Requests in flight on the stream, with their deadlines: a response for one not here
    /// (cancelled, past its deadline) is dropped.
    on_stream: IdMap<Instant>,
    /// Streams of connections that are draining, read until answered.
    retiring: Vec<Retiring>,
    /// `on_stream`'s size at which requests past their deadline are swept out of it (tarpc
    /// sends no cancel for those).
    sweep_at: usize,
    /// Requests of a stream that broke, failed one per `poll_next` with `broken_why`.
    broken: Vec<u64>,
    broken_why: String,
    /// The reader waiting while no call is in flight.
    idle: Option<Waker>,
    /// A large response was just handed out: let its caller run before decoding the next.
    yield_next: bool,
    /// How long the last refusal of a stream rests the next open: doubled at each refusal in a
    /// row, from [`STREAM_REST_FIRST`] up to [`STREAM_REST_MAX`]; none once a stream opened.
    rest: Duration,
    closed: bool,
    _req: PhantomData<fn(Req)>,
}

/// The `tarpc/stream` call of a client transport.
enum StreamState {
    /// None; one is opened at the next request.
    Idle,
    /// Being opened; requests go as calls meanwhile.
    Opening(BoxFuture<'static, Result<CallStream, CallError>>),
    /// Opened, waiting for the server to accept it (its response headers).
    Accepting(StreamSender, StreamReceiver),
    /// Carrying requests.
    Open(StreamSender, StreamReceiver),
    /// The server does not know `tarpc/stream`: requests go as calls for good.
    Unsupported,
    /// The server refused it (at its limit of streams per connection, short of memory,
    /// shutting down): requests go as calls until then, when the next one opens another.
    Resting(Instant),
}

/// A `tarpc/stream` call whose connection is draining (its server sent a goaway: a shutdown,
/// the connection's maximum age): finished on this side, so that the server answers what went
/// on it and ends it, and read until it has; new requests go on a stream of the next
/// connection meanwhile.
struct Retiring {
    rx: StreamReceiver,
    /// Its requests still in flight, with their deadlines.
    ids: IdMap<Instant>,
}

/// Most streams of draining connections a client transport reads at once (see
/// [`ClientTransport`]).
const MAX_RETIRING: usize = 8;

/// Most stream messages a client transport queues before `poll_ready` waits for them to go.
const OUT_QUEUE: usize = 64;

/// After a server refused the stream, requests go as calls for this long before the next
/// one tries again; twice as long after each refusal in a row, up to [`STREAM_REST_MAX`].
pub const STREAM_REST_FIRST: Duration = Duration::from_secs(1);

/// The longest rest after refusals of the stream.
pub const STREAM_REST_MAX: Duration = Duration::from_secs(30);

/// Requests of this size and up (encoded) go as zcrpc calls, not on the stream: a large one
/// would hold the small ones behind it, and a call is as cheap as a stream message for it.
pub(crate) const SMALL: usize = LARGE;

/// `on_stream` (and the server's map of stream requests) is swept at this size at least.
pub(crate) const SWEEP_AT: usize = 1024;

impl<Req, Resp> std::fmt::Debug for ClientTransport<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTransport")
            .field("client", &self.client)
            .field("calls_in_flight", &self.calls.len())
            .field("stream_requests_in_flight", &self.on_stream.len())
            .field("retiring_streams", &self.retiring.len())
            .finish()
    }
}

impl<Req, Resp> ClientTransport<Req, Resp> {
    /// A transport whose requests go on `client` (over any zcrpc transport: tcp,
    /// io_uring, TLS, a Unix socket).
    pub fn new(client: Client) -> Self {
        ClientTransport {
            client,
            buf: EncodeBuf::default(),
            calls: FuturesUnordered::new(),
            stream: StreamState::Idle,
            out: VecDeque::new(),
            small: SMALL,
            on_stream: IdMap::default(),
            retiring: Vec::new(),
            sweep_at: SWEEP_AT,
            broken: Vec::new(),
            broken_why: String::new(),
            idle: None,
            yield_next: false,
            rest: Duration::ZERO,
            closed: false,
            _req: PhantomData,
        }
    }

    /// The zcrpc client underneath (its statistics, its close).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// True while small requests go on the `tarpc/stream` call (it is open and the server
    /// accepted it).
    pub fn is_streaming(&self) -> bool {
        matches!(self.stream, StreamState::Open(..))
    }

    /// Moves the stream along: its open, the server's acceptance, its retirement once its
    /// connection drains. Registers `cx` where it waits.
    fn drive_stream(&mut self, cx: &mut Context<'_>) {
        // Retired once everything queued for it went (what the queue holds is on its way there).
        if self.out.is_empty() && matches!(&self.stream, StreamState::Open(tx, _) if tx.connection_draining()) {
            self.retire_stream();
            // Whichever of the sink's or the stream's polls got here, the reader must poll the
            // retiring stream next (it may not be waiting on it).
            cx.waker().wake_by_ref();
        }
        loop {
            match &mut self.stream {
                StreamState::Opening(open) => match open.as_mut().poll(cx) {
                    Poll::Pending => return,
                    Poll::Ready(Ok(call)) => {
                        let (tx, rx) = call.split();
                        self.stream = StreamState::Accepting(tx, rx.for_method(crate::STREAM_PATH));
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("tarpc over zcrpc: the stream did not open: {e}");
                        self.stream = StreamState::Idle;
                        return;
                    }
                },
                StreamState::Accepting(_, rx) => {
                    if rx.poll_response_headers(cx).is_pending() {
                        return;
                    }
                    let StreamState::Accepting(tx, mut rx) = std::mem::replace(&mut self.stream, StreamState::Idle) else {
                        unreachable!("matched above")
                    };
                    if rx.headers().is_some() {
                        self.small = SMALL.min(self.client.server_hello().max_frame as usize);
                        self.stream = StreamState::Open(tx, rx);
                        self.rest = Duration::ZERO;
                        continue;
                    }
                    // Refused or ended before it began: what the receiver says next is why.
                    let why = match rx.poll_recv(cx) {
                        Poll::Ready(Some(Err(e))) => e,
                        _ => CallError::Status(rpc_core::Status::new(rpc_core::Code::CANCELLED, "the stream ended")),
                    };
                    if why.code() == rpc_core::Code::UNIMPLEMENTED {
                        self.stream = StreamState::Unsupported;
                    } else {
                        // Not at each request: a refusal costs the server a call, and a server
                        // at its limit stays there a while.
                        self.rest = (self.rest * 2).clamp(STREAM_REST_FIRST, STREAM_REST_MAX);
                        self.stream = StreamState::Resting(Instant::now() + self.rest);
                    }
                    tracing::debug!("tarpc over zcrpc: the server did not take the stream: {why}; requests go as calls");
                    return;
                }
                StreamState::Idle | StreamState::Open(..) | StreamState::Unsupported | StreamState::Resting(_) => return,
            }
        }
    }

    /// Sends what the queue holds, as credit allows. Ready once it is empty.
    fn flush_stream(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let StreamState::Open(tx, _) = &mut self.stream else {
            self.out.clear();
            return Poll::Ready(());
        };
        match tx.poll_send_queue(cx, &mut self.out) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                self.break_stream(format!("{e}"));
                Poll::Ready(())
            }
        }
    }

    /// The stream is lost: its requests in flight fail (one per `poll_next`), the next request
    /// opens another.
    fn break_stream(&mut self, why: String) {
        tracing::debug!("tarpc over zcrpc: the stream broke: {why}");
        self.stream = StreamState::Idle;
        self.out.clear();
        let lost = std::mem::take(&mut self.on_stream);
        self.lose(lost, why);
        if let Some(w) = self.idle.take() {
            w.wake();
        }
    }

    /// Requests `ids` went on a stream that is lost: each fails (one per `poll_next`) saying
    /// `why`.
    fn lose(&mut self, ids: IdMap<Instant>, why: String) {
        if !ids.is_empty() {
            self.broken.extend(ids.into_keys());
            self.broken_why = why;
        }
    }

    /// The stream's connection is draining: the stream is finished on this side and read until
    /// the server answered its requests; the next request opens a stream on the next
    /// connection (the zcrpc client re-dials at the goaway), and goes as a call meanwhile.
    fn retire_stream(&mut self) {
        let StreamState::Open(mut tx, rx) = std::mem::replace(&mut self.stream, StreamState::Idle) else { return };
        tx.finish();
        tracing::debug!("tarpc over zcrpc: the stream's connection is draining; the next requests go on a new stream");
        if self.retiring.len() >= MAX_RETIRING {
            // A server that sends goaways faster than it answers: the oldest goes, and its
            // requests fail, rather than a connection kept per goaway.
            let oldest = self.retiring.remove(0);
            self.lose(oldest.ids, format!("{MAX_RETIRING} more connections began draining before it answered"));
        }
        self.retiring.push(Retiring { rx, ids: std::mem::take(&mut self.on_stream) });
        self.sweep_at = SWEEP_AT;
    }

    /// The next response of a retiring stream, if one has come; a retiring stream that ended is
    /// let go, its requests still in flight failed (one per `poll_next`).
    fn poll_retiring(&mut self, cx: &mut Context<'_>) -> Option<Response<Resp>>
    where
        Resp: DeserializeOwned,
    {
        let mut now = None;
        let mut i = 0;
        while i < self.retiring.len() {
            let r = &mut self.retiring[i];
            let why = match next_answer::<Resp>(&mut r.rx, &mut r.ids, cx) {
                Poll::Pending => {
                    // Nothing left to wait for on it (its requests were answered, cancelled, or
                    // are past their deadlines, which tarpc answered itself): it goes, which
                    // cancels the call, and its connection closes however long its server would
                    // have kept the stream (a request it never answers, a grace period that
                    // never ends).
                    let now = *now.get_or_insert_with(Instant::now);
                    r.ids.retain(|_, deadline| *deadline > now);
                    if r.ids.is_empty() {
                        self.retiring.swap_remove(i);
                    } else {
                        i += 1;
                    }
                    continue;
                }
                Poll::Ready(Ok((response, large))) => {
                    self.yield_next = large;
                    return Some(response);
                }
                Poll::Ready(Err(why)) => why.unwrap_or_else(|| "the server ended it before answering".into()),
            };
            let r = self.retiring.swap_remove(i);
            self.lose(r.ids, why);
        }
        None
    }

    /// A request of `id` is on the stream until `deadline`; past it, tarpc forgets it without a
    /// cancel, so the entries past theirs are swept out once the map doubled.
    fn track(&mut self, id: u64, deadline: Instant) {
        self.on_stream.insert(id, deadline);
        if self.on_stream.len() >= self.sweep_at {
            let now = Instant::now();
            self.on_stream.retain(|_, d| *d > now);
            self.sweep_at = (self.on_stream.len() * 2).max(SWEEP_AT);
        }
    }
}

impl<Req, Resp> Sink<ClientMessage<Req>> for ClientTransport<Req, Resp>
where
    Req: Serialize,
    Resp: DeserializeOwned + Send + 'static,
{
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Calls in flight are bounded by tarpc's own `max_in_flight_requests`; stream messages
        // by the queue, which waits for the server's credit.
        let this = self.get_mut();
        this.drive_stream(cx);
        if this.out.len() >= OUT_QUEUE && this.flush_stream(cx).is_pending() && this.out.len() >= OUT_QUEUE {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: ClientMessage<Req>) -> io::Result<()> {
        let this = self.get_mut();
        match item {
            ClientMessage::Request(request) => {
                let id = request.id;
                if matches!(this.stream, StreamState::Resting(until) if Instant::now() >= until) {
                    this.stream = StreamState::Idle;
                }
                if matches!(this.stream, StreamState::Idle) && !this.closed {
                    let client = this.client.clone();
                    // No deadline: the stream lives as long as the connection (`Duration::MAX`
                    // is none, whatever the client's default timeout).
                    let options = CallOptions { timeout: Some(Duration::MAX), ..CallOptions::default() };
                    this.stream = StreamState::Opening(Box::pin(async move {
                        client.open(crate::STREAM, Body::default(), CallMode::BIDI, options).await
                    }));
                }
                // Not on a stream whose connection is draining: it is retired once what is
                // queued for it went.
                let streaming = matches!(&this.stream, StreamState::Open(tx, _) if !tx.connection_draining());
                // One encoding for both ways: a call's message is the stream message's tail.
                let message = this.buf.encode(&ToServerRef::Request(id, &request.context, &request.message));
                let fut = match message {
                    Ok(message) if streaming && message.len() < this.small => {
                        this.out.push_back(Body::message(message));
                        this.track(id, request.context.deadline);
                        return Ok(());
                    }
                    Ok(message) => {
                        let message = message.slice(call_message_at(id)..);
                        let options = CallOptions {
                            timeout: Some(request.context.deadline.saturating_duration_since(Instant::now())),
                            ..CallOptions::default()
                        };
                        let client = this.client.clone();
                        Box::pin(async move {
                            let result = client.call(CALL, Body::message(message), options).await;
                            // Past its deadline: tarpc's own timer (the same deadline) answers
                            // `RpcError::DeadlineExceeded`, as over its own transports.
                            if let Err(CallError::DeadlineExceeded(_)) = result {
                                return (id, None, false);
                            }
                            let large = result.as_ref().is_ok_and(|body| body.message.len() >= LARGE);
                            (id, Some(Response { request_id: id, message: reply::<Resp>(result) }), large)
                        }) as InFlight<Resp>
                    }
                    Err(e) => {
                        let error = ServerError::new(io::ErrorKind::InvalidInput, format!("cannot encode the request: {e}"));
                        Box::pin(std::future::ready((id, Some(Response { request_id: id, message: Err(error) }), false)))
                    }
                };
                this.calls.push(Call { id, call: Some(fut), waker: None });
                if let Some(w) = this.idle.take() {
                    w.wake();
                }
            }
            ClientMessage::Cancel { request_id, .. } => {
                if this.on_stream.remove(&request_id).is_some() {
                    // On the stream: a cancel message after it (the server drops its handler).
                    if let Ok(message) = this.buf.encode(&ToServerRef::<Req>::Cancel(request_id)) {
                        this.out.push_back(Body::message(message));
                    }
                    return Ok(());
                }
                // On a retiring stream: forgotten (its answer is dropped); the stream is
                // finished, so the handler runs on.
                if this.retiring.iter_mut().any(|r| r.ids.remove(&request_id).is_some()) {
                    return Ok(());
                }
                // A call: dropping its future cancels it on the server. A scan of the calls in
                // flight (bounded by tarpc's `max_in_flight_requests`): cancels are rare, and
                // a map from id to call would cost every call an entry.
                if let Some(call) = this.calls.iter_mut().find(|c| c.id == request_id && c.call.is_some()) {
                    call.call = None;
                    if let Some(w) = call.waker.take() {
                        w.wake();
                    }
                }
            }
            // Kinds a later tarpc may add: nothing to carry.
            _ => {}
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.drive_stream(cx);
        this.flush_stream(cx).map(Ok)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What is queued goes if credit allows; the close does not wait for it (every request
        // is answered or given up by now).
        let _ = this.flush_stream(cx);
        this.closed = true;
        if let Some(w) = this.idle.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

/// An answer off a `tarpc/stream` call, and whether it was large (its caller runs before the
/// next is decoded).
type StreamAnswer<Resp> = (Response<Resp>, bool);

/// The next answer on a `tarpc/stream` call to a request in `ids` (taken out of it), with
/// whether it was large; or why the stream is over (`None`: the server ended it). Answers to
/// requests not in `ids` (cancelled, past their deadline: tarpc has forgotten them) are
/// skipped.
fn next_answer<Resp: DeserializeOwned>(
    rx: &mut StreamReceiver,
    ids: &mut IdMap<Instant>,
    cx: &mut Context<'_>,
) -> Poll<Result<StreamAnswer<Resp>, Option<String>>> {
    loop {
        let body = match rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(body))) => body,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Some(e.to_string()))),
            Poll::Ready(None) => return Poll::Ready(Err(None)),
        };
        match read_from_server::<Resp>(&body.message) {
            Ok((id, message)) if ids.remove(&id).is_some() => {
                return Poll::Ready(Ok((Response { request_id: id, message }, body.message.len() >= LARGE)))
            }
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Some(format!("a message of the server's stream does not decode: {e}")))),
        }
    }
}

/// The reply to a tarpc request out of the call's result.
fn reply<Resp: DeserializeOwned>(result: Result<Body, CallError>) -> Result<Resp, ServerError> {
    let body = result.map_err(to_server_error)?;
    decode(&body.message).map_err(|e| ServerError::new(io::ErrorKind::InvalidData, format!("cannot decode the response: {e}")))
}

impl<Req, Resp: DeserializeOwned> Stream for ClientTransport<Req, Resp> {
    type Item = io::Result<Response<Resp>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // After a large response, its caller runs first, as on the server: responses that
        // arrived together are not all decoded at once.
        if yield_after_large(&mut this.yield_next, cx) {
            return Poll::Pending;
        }
        loop {
            if let Some(id) = this.broken.pop() {
                let error = ServerError::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("zcrpc: the tarpc stream the request went on was lost: {}", this.broken_why),
                );
                return Poll::Ready(Some(Ok(Response { request_id: id, message: Err(error) })));
            }
            if !this.retiring.is_empty() {
                if let Some(response) = this.poll_retiring(cx) {
                    return Poll::Ready(Some(Ok(response)));
                }
                if !this.broken.is_empty() {
                    continue;
                }
            }
            this.drive_stream(cx);
            if let StreamState::Open(_, rx) = &mut this.stream {
                match next_answer::<Resp>(rx, &mut this.on_stream, cx) {
                    Poll::Ready(Ok((response, large))) => {
                        this.yield_next = large;
                        return Poll::Ready(Some(Ok(response)));
                    }
                    Poll::Ready(Err(why)) => {
                        this.break_stream(why.unwrap_or_else(|| "the server ended it".into()));
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if this.calls.is_empty() {
                if this.closed && this.on_stream.is_empty() && this.retiring.is_empty() {
                    return Poll::Ready(None);
                }
                if !this.idle.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    this.idle = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            match Pin::new(&mut this.calls).poll_next(cx) {
                Poll::Ready(Some(Some((_, response, large)))) => {
                    // None: past its deadline; tarpc times it out itself.
                    if let Some(response) = response {
                        this.yield_next = large;
                        return Poll::Ready(Some(Ok(response)));
                    }
                }
                // Cancelled: tarpc has forgotten it already.
                Poll::Ready(Some(None)) => {}
                Poll::Ready(None) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
