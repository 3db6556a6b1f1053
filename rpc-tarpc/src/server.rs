//! The server's side: zcrpc connections accepted, each one a tarpc transport whose requests
//! are the connection's `tarpc/call` calls and the messages of its `tarpc/stream` calls.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Sink, Stream};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::transport::Acceptor;
use rpc_core::{Body, BoxFuture, CallError, Responder, Server, ServerBuilder, ServerRequest, Status, StreamReceiver, StreamSender};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::{ClientMessage, Request, Response, ServerError};
use tokio::sync::{mpsc, Semaphore};

use crate::codec::{decode, yield_after_large, EncodeBuf, LARGE};
use crate::errors::server_error_status;
use crate::client::SWEEP_AT;
use crate::ids::IdMap;
use crate::wire::{read_from_client, FromServerRef, ToServer, WireContext};
use crate::{CALL, CALL_PATH, STREAM, STREAM_PATH};

/// How long a transport's own handshake (TLS) may take before the connection is dropped (the
/// zcrpc hello after it has the builder's `handshake_timeout`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections waiting for the application to take them from [`Incoming`].
const ACCEPT_QUEUE: usize = 16;

/// What a connection's zcrpc service hands its tarpc channel: a call, still encoded (it is
/// decoded when the channel takes it, in the channel's task, as tarpc's own transports do) with
/// the responder its answer goes to, or the end of one that was not answered.
enum Delivery {
    Call { id: u64, message: Arc<CallMessage>, responder: Responder },
    Cancel { id: u64 },
    /// A `tarpc/stream` call: its two ends (boxed: a stream is rare, a call is not), and the
    /// responder that ends it.
    Stream { ends: Box<(StreamSender, StreamReceiver)>, responder: Responder },
    /// A `tarpc/stream` call is over for zcrpc (cancelled, past its deadline, its connection
    /// gone, or answered): its requests still in flight end. Its receiver cannot say so once
    /// the client has finished sending (it then reads as ended for ever).
    StreamGone { call: u64 },
}

/// A `tarpc/call` call's message until the channel takes it, or until the call ends first: then
/// its handler's drop lets go of it, and the channel skips the call (a channel that is not
/// reading does not hold the messages of calls that are over, nor runs them once it reads).
struct CallMessage(std::sync::Mutex<Option<Bytes>>);

impl CallMessage {
    fn take(&self) -> Option<Bytes> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Most deliveries (calls, streams) a connection's service queues for a channel that does not
/// take them: past it, calls are refused `RESOURCE_EXHAUSTED`. zcrpc bounds the calls in flight
/// (10 000 by default); this bounds the ones that ended meanwhile, which it no longer counts.
const MAX_WAITING: usize = 65_536;

/// Most stream requests in flight on one connection (all its streams together): past it, the
/// transport stops reading its streams (so the client's credit runs out) until answers or
/// deadlines bring the count down. As many as zcrpc's default calls in flight.
const MAX_STREAM_REQUESTS: usize = 10_000;

/// Most responses queued on one stream before `poll_ready` waits for them to go.
const OUT_QUEUE: usize = 64;

/// Most `tarpc/stream` calls open at once on one connection: past it, another is refused
/// `RESOURCE_EXHAUSTED` (the client transport's requests then go as calls). A client
/// transport opens one at a time, and several sharing one zcrpc client one each; but every
/// read of the channel polls each open stream, so a peer holding thousands open and idle
/// (zcrpc's own limit is its calls in flight, 10 000) would make each request cost as many
/// polls.
const MAX_STREAMS: usize = 64;

/// A request handed to the channel, by the id the channel knows it by: how its answer goes.
enum Pending {
    /// A `tarpc/call` call, answered through its responder.
    Call(Responder),
    /// A message of stream `slot`, answered on that stream under the client's id `wire`; the
    /// entry is swept out after `deadline` (tarpc drops such a request without an answer).
    Stream { slot: usize, wire: u64, deadline: Instant },
}

/// One `tarpc/stream` call of the connection.
struct Tunnel {
    sender: StreamSender,
    receiver: StreamReceiver,
    /// Ends the call (when the channel is dropped, or the stream is bad).
    responder: Option<Responder>,
    /// The client's ids of the requests in flight on it, to the channel's.
    ids: IdMap<u64>,
    /// Responses not yet sent, and the client's ids they answer with their sizes (the same
    /// order).
    out: VecDeque<Body>,
    out_ids: VecDeque<(u64, usize)>,
    /// The client still sends (its side of the stream has not ended).
    reading: bool,
}

impl Tunnel {
    /// Queues `result` as the response to the client's request `wire`.
    fn queue_response<T: Serialize>(
        &mut self,
        buf: &mut EncodeBuf,
        wire: u64,
        result: &Result<T, ServerError>,
    ) -> Result<(), postcard::Error> {
        let message = buf.encode(&FromServerRef::response(wire, result))?;
        self.out_ids.push_back((wire, message.len()));
        self.out.push_back(Body::message(message));
        Ok(())
    }

    /// Queues an error of `kind` as the response to `wire` (small, and its bytes the same whatever
    /// the response type: if it does not encode, nothing will).
    fn queue_error(&mut self, buf: &mut EncodeBuf, wire: u64, kind: io::ErrorKind, detail: String) {
        let error: Result<(), ServerError> = Err(ServerError::new(kind, detail));
        let _ = self.queue_response(buf, wire, &error);
    }
}

/// How a connection's zcrpc service reaches its tarpc transport. The transport holds only
/// `answering`: the channel ends when the connection's service and handlers are gone.
struct Link {
    requests: mpsc::UnboundedSender<Delivery>,
    /// Calls and streams in `requests`, not yet taken by the transport.
    waiting: Arc<AtomicUsize>,
    /// `tarpc/stream` calls open (their handlers, [`StreamGone`], not yet dropped).
    streams: AtomicUsize,
    /// The request whose response the transport is giving right now (`u64::MAX`: none). Its
    /// call's handler future is dropped within that answer ([`Responder::respond`]): that drop
    /// is no cancel, and tells the channel nothing.
    answering: Arc<AtomicU64>,
}

/// The status of a call whose tarpc channel is gone (dropped, or its connection's transport
/// never taken).
fn channel_gone() -> Status {
    Status::new(rpc_core::Code::UNAVAILABLE, "the tarpc channel dropped the request")
}

/// A `tarpc::Transport` for a tarpc server (`BaseChannel::with_defaults(transport)`): one zcrpc
/// connection, whose `tarpc/call` calls and the request messages of whose `tarpc/stream` calls
/// come out as tarpc requests (with the client's context: deadline and trace), and whose
/// cancelled calls (the client dropped them, or their deadline passed), cancel messages and
/// lost streams' requests come out as tarpc cancels. A call's response answers the call; a
/// stream request's goes back on its stream, queued (at most 64 per stream, `poll_ready`
/// waits past that) until the client's credit lets it go. At most 10 000 stream requests are
/// in flight per connection: past that the streams are not read (the clients' credit runs
/// out) until answers come; and at most 64 streams are open on it (more are refused
/// `RESOURCE_EXHAUSTED`). Dropped (the channel ended, or was refused by a limit such as
/// tarpc's `max_channels_per_key`), it closes its connection gracefully, as tarpc's own
/// transports close their socket: a goaway, after which the client re-dials. Made by
/// [`Incoming`].
pub struct ServerTransport<Req, Resp> {
    requests: mpsc::UnboundedReceiver<Delivery>,
    /// [`Link::answering`].
    answering: Arc<AtomicU64>,
    /// [`Link::waiting`].
    waiting: Arc<AtomicUsize>,
    /// The requests waiting for the channel's answer, by request id. Only this transport
    /// touches it (tarpc's channel both reads requests and writes responses through it).
    /// Calls have even ids (the connection's service counts them), stream requests odd ones.
    pending: IdMap<Pending>,
    /// The connection's `tarpc/stream` calls, by slot.
    tunnels: Vec<Option<Tunnel>>,
    /// The next id of a stream request (odd).
    next_stream_id: u64,
    /// Stream requests in `pending`, and the count at which the ones past their deadline are
    /// swept out.
    stream_requests: usize,
    sweep_at: usize,
    /// Requests of a stream that ended, to hand the channel as cancels.
    cancels: Vec<u64>,
    /// Where responses are serialized.
    buf: EncodeBuf,
    /// A large request was just handed out: let its handler run before decoding the next.
    yield_next: bool,
    peer: Option<SocketAddr>,
    _types: PhantomData<fn(Resp) -> Req>,
}

impl<Req, Resp> std::fmt::Debug for ServerTransport<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTransport").field("peer", &self.peer).field("in_flight", &self.pending.len()).finish()
    }
}

impl<Req, Resp> Drop for ServerTransport<Req, Resp> {
    fn drop(&mut self) {
        // The channel is gone: its calls, taken or still queued, fail as such (a responder
        // dropped unanswered would say less).
        for (_, pending) in self.pending.drain() {
            if let Pending::Call(responder) = pending {
                responder.respond(Err(channel_gone()));
            }
        }
        for tunnel in self.tunnels.iter_mut().filter_map(Option::take) {
            if let Some(responder) = tunnel.responder {
                responder.respond(Err(channel_gone()));
            }
        }
        self.requests.close();
        while let Ok(delivery) = self.requests.try_recv() {
            match delivery {
                Delivery::Call { message, responder, .. } => {
                    if message.take().is_some() {
                        responder.respond(Err(channel_gone()));
                    }
                }
                Delivery::Stream { responder, .. } => {
                    responder.respond(Err(channel_gone()));
                }
                Delivery::Cancel { .. } | Delivery::StreamGone { .. } => {}
            }
        }
    }
}

impl<Req, Resp> ServerTransport<Req, Resp> {
    /// The client's address, as tarpc's own transport has it (`channel.transport().peer_addr()`);
    /// an error for a transport without addresses (a Unix socket, the in-memory pipe).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.peer.ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "this zcrpc transport has no peer address"))
    }
}

impl<Req, Resp> ServerTransport<Req, Resp> {
    /// A transport fed by `requests` (what [`accept_loop`] makes).
    fn new(
        requests: mpsc::UnboundedReceiver<Delivery>,
        answering: Arc<AtomicU64>,
        waiting: Arc<AtomicUsize>,
        peer: Option<SocketAddr>,
    ) -> Self {
        ServerTransport {
            requests,
            answering,
            waiting,
            pending: IdMap::default(),
            tunnels: Vec::new(),
            next_stream_id: 1,
            stream_requests: 0,
            sweep_at: SWEEP_AT,
            cancels: Vec::new(),
            buf: EncodeBuf::default(),
            yield_next: false,
            peer,
            _types: PhantomData,
        }
    }

    /// Takes stream `slot` out: its requests in flight become cancels for the channel, and the
    /// call ends with `end` (none: it is over already).
    fn close_tunnel(&mut self, slot: usize, end: Option<Result<Body, Status>>) {
        let Some(tunnel) = self.tunnels.get_mut(slot).and_then(Option::take) else { return };
        for (_, id) in tunnel.ids {
            if self.pending.remove(&id).is_some() {
                self.stream_requests -= 1;
                self.cancels.push(id);
            }
        }
        if let (Some(responder), Some(end)) = (tunnel.responder, end) {
            responder.respond(end);
        }
    }

    /// A stream request's entry goes; the stream ends cleanly once the client has finished
    /// sending and nothing is left to answer on it.
    fn forget_stream_request(&mut self) {
        self.stream_requests -= 1;
    }

    /// Sweeps out the stream requests past their deadline (tarpc dropped them unanswered) once
    /// their count doubled since the last sweep.
    fn sweep(&mut self) {
        if self.stream_requests < self.sweep_at {
            return;
        }
        let now = Instant::now();
        let tunnels = &mut self.tunnels;
        let mut swept = 0;
        self.pending.retain(|_, p| match p {
            Pending::Stream { slot, wire, deadline } if *deadline <= now => {
                if let Some(t) = tunnels.get_mut(*slot).and_then(Option::as_mut) {
                    t.ids.remove(wire);
                }
                swept += 1;
                false
            }
            _ => true,
        });
        self.stream_requests -= swept;
        self.sweep_at = (self.stream_requests * 2).max(SWEEP_AT);
    }

    /// Sends what stream `slot` has queued, as credit allows: ready once it is empty (or the
    /// stream is gone).
    fn flush_tunnel(&mut self, slot: usize, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(t) = self.tunnels.get_mut(slot).and_then(Option::as_mut) else { return Poll::Ready(()) };
            let before = t.out.len();
            let result = t.sender.poll_send_queue(cx, &mut t.out);
            let gone = before - t.out.len();
            // The message a failed send consumed last is the one that failed.
            let failed = match result {
                Poll::Ready(Err(_)) => gone.checked_sub(1).and_then(|i| t.out_ids.get(i)).copied(),
                _ => None,
            };
            t.out_ids.drain(..gone);
            match result {
                Poll::Ready(Ok(())) => {
                    if !t.reading && t.ids.is_empty() {
                        // The client finished and everything is answered: the call ends.
                        self.close_tunnel(slot, Some(Ok(Body::default())));
                    }
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
                // A response the client cannot take (over its frame limit, which is at least
                // `MIN_MAX_FRAME`): an error instead (small: it cannot fail so again).
                Poll::Ready(Err(CallError::Codec(why)))
                    if failed.is_some_and(|(_, len)| len > rpc_core::frame::MIN_MAX_FRAME as usize) =>
                {
                    let (wire, _) = failed.expect("checked");
                    t.queue_error(&mut self.buf, wire, io::ErrorKind::InvalidInput, format!("zcrpc: {why}"));
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!("tarpc over zcrpc: a stream from {:?} ended: {e}", self.peer);
                    self.close_tunnel(slot, None);
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl<Req: DeserializeOwned, Resp> Stream for ServerTransport<Req, Resp> {
    type Item = io::Result<ClientMessage<Req>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // After a large request, the handlers tarpc has spawned run first: each large
        // request is decoded, handled and dropped before the next is decoded.
        if yield_after_large(&mut this.yield_next, cx) {
            return Poll::Pending;
        }
        loop {
            if let Some(id) = this.cancels.pop() {
                return Poll::Ready(Some(Ok(ClientMessage::Cancel { trace_context: Default::default(), request_id: id })));
            }
            // The streams' requests first: they are most of them.
            if let Some(message) = this.poll_tunnels(cx) {
                return Poll::Ready(Some(Ok(message)));
            }
            if !this.cancels.is_empty() {
                continue;
            }
            let delivery = match this.requests.poll_recv(cx) {
                Poll::Ready(Some(d)) => d,
                // The connection's service is gone; its streams with it.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            if !matches!(delivery, Delivery::Cancel { .. } | Delivery::StreamGone { .. }) {
                this.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            match delivery {
                Delivery::Call { id, message, responder } => {
                    // Over before it was taken: nothing to do (its handler let go of the message).
                    let Some(message) = message.take() else { continue };
                    // The client's context (its deadline relative to now, its trace), then the message.
                    match decode::<(WireContext, Req)>(&message) {
                        Ok((context, request)) => {
                            let context = context.into_context();
                            this.pending.insert(id, Pending::Call(responder));
                            this.yield_next = message.len() >= LARGE;
                            return Poll::Ready(Some(Ok(ClientMessage::Request(Request { context, id, message: request }))));
                        }
                        // The call fails alone; tarpc never sees it.
                        Err(e) => {
                            responder.respond(Err(Status::invalid_argument(format!("{CALL_PATH}: cannot decode the request: {e}"))));
                        }
                    }
                }
                Delivery::Cancel { id } => {
                    // Delivered after its call (one queue): a cancel for a call tarpc never
                    // saw (it did not decode) has nothing to cancel.
                    if matches!(this.pending.remove(&id), Some(Pending::Call(_))) {
                        return Poll::Ready(Some(Ok(ClientMessage::Cancel { trace_context: Default::default(), request_id: id })));
                    }
                }
                Delivery::StreamGone { call } => {
                    let open = this.tunnels.iter().position(|t| t.as_ref().is_some_and(|t| t.receiver.id() == call));
                    if let Some(slot) = open {
                        tracing::debug!("tarpc over zcrpc: a stream from {:?} ended early", this.peer);
                        this.close_tunnel(slot, None);
                    }
                }
                Delivery::Stream { ends, responder } => {
                    let (sender, receiver) = *ends;
                    let tunnel = Tunnel {
                        sender,
                        receiver: receiver.for_method(STREAM_PATH),
                        responder: Some(responder),
                        ids: IdMap::default(),
                        out: VecDeque::new(),
                        out_ids: VecDeque::new(),
                        reading: true,
                    };
                    match this.tunnels.iter().position(Option::is_none) {
                        Some(free) => this.tunnels[free] = Some(tunnel),
                        None => this.tunnels.push(Some(tunnel)),
                    }
                }
            }
        }
    }
}

impl<Req: DeserializeOwned, Resp> ServerTransport<Req, Resp> {
    /// The next request or cancel of the connection's streams, if one is in; a stream that
    /// ended or sent what does not decode is closed (its requests become `cancels`).
    fn poll_tunnels(&mut self, cx: &mut Context<'_>) -> Option<ClientMessage<Req>> {
        if self.stream_requests >= MAX_STREAM_REQUESTS {
            self.sweep();
            if self.stream_requests >= MAX_STREAM_REQUESTS {
                // Read on once answers come (the channel's next poll after a send).
                return None;
            }
        }
        for slot in 0..self.tunnels.len() {
            while let Some(t) = self.tunnels[slot].as_mut().filter(|t| t.reading) {
                if t.out.len() >= OUT_QUEUE {
                    // Its queue of responses is full (the errors for requests that do not decode
                    // go there too): read on once some are sent.
                    let _ = self.flush_tunnel(slot, cx);
                    if self.tunnels[slot].as_ref().is_none_or(|t| t.out.len() >= OUT_QUEUE) {
                        break;
                    }
                    continue;
                }
                let body = match t.receiver.poll_recv(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(body))) => body,
                    // The client finished its side: answer what is in flight, then end.
                    Poll::Ready(None) => {
                        t.reading = false;
                        if t.ids.is_empty() && t.out.is_empty() {
                            self.close_tunnel(slot, Some(Ok(Body::default())));
                        }
                        break;
                    }
                    // Cancelled, or the connection is gone.
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!("tarpc over zcrpc: a stream from {:?} ended: {e}", self.peer);
                        self.close_tunnel(slot, None);
                        break;
                    }
                };
                match read_from_client::<Req>(&body.message) {
                    Ok(ToServer::Request(wire, decoded)) => {
                        if t.ids.contains_key(&wire) {
                            let why = format!("{STREAM_PATH}: request id {wire} is in flight already");
                            self.close_tunnel(slot, Some(Err(Status::invalid_argument(why))));
                            break;
                        }
                        let (context, request) = match decoded {
                            Ok(decoded) => decoded,
                            Err(e) => {
                                // Answered here, tarpc never sees it: an error in its place.
                                let why = format!("zcrpc: {STREAM_PATH}: cannot decode the request: {e}");
                                t.queue_error(&mut self.buf, wire, io::ErrorKind::InvalidInput, why);
                                continue;
                            }
                        };
                        let id = self.next_stream_id;
                        t.ids.insert(wire, id);
                        self.next_stream_id += 2;
                        self.pending.insert(id, Pending::Stream { slot, wire, deadline: context.deadline });
                        self.stream_requests += 1;
                        self.sweep();
                        self.yield_next = body.message.len() >= LARGE;
                        return Some(ClientMessage::Request(Request { context, id, message: request }));
                    }
                    Ok(ToServer::Cancel(wire)) => {
                        // Answered already, or past its deadline: nothing to cancel.
                        let Some(id) = t.ids.remove(&wire) else { continue };
                        if self.pending.remove(&id).is_some() {
                            self.forget_stream_request();
                            return Some(ClientMessage::Cancel { trace_context: Default::default(), request_id: id });
                        }
                    }
                    Err(e) => {
                        let why = format!("{STREAM_PATH}: a message does not decode: {e}");
                        self.close_tunnel(slot, Some(Err(Status::invalid_argument(why))));
                        break;
                    }
                }
            }
        }
        while self.tunnels.last().is_some_and(Option::is_none) {
            self.tunnels.pop();
        }
        None
    }
}

impl<Req, Resp: Serialize> Sink<Response<Resp>> for ServerTransport<Req, Resp> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Calls are answered at once; a stream's responses wait in its queue, which waits for
        // the client's credit.
        let this = self.get_mut();
        for slot in 0..this.tunnels.len() {
            if this.tunnels[slot].as_ref().is_some_and(|t| t.out.len() >= OUT_QUEUE) {
                let _ = this.flush_tunnel(slot, cx);
                if this.tunnels[slot].as_ref().is_some_and(|t| t.out.len() >= OUT_QUEUE) {
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, response: Response<Resp>) -> io::Result<()> {
        let this = self.get_mut();
        // No waiter: the request was cancelled meanwhile; nobody wants the answer.
        match this.pending.remove(&response.request_id) {
            None => {}
            Some(Pending::Call(responder)) => {
                let result = match response.message {
                    Ok(resp) => this
                        .buf
                        .encode(&resp)
                        .map(Body::message)
                        .map_err(|e| Status::new(rpc_core::Code::INTERNAL, format!("cannot encode the response: {e}"))),
                    Err(server_error) => Err(server_error_status(&server_error)),
                };
                this.answering.store(response.request_id, Ordering::Relaxed);
                responder.respond(result);
                this.answering.store(u64::MAX, Ordering::Relaxed);
            }
            Some(Pending::Stream { slot, wire, .. }) => {
                this.forget_stream_request();
                let Some(t) = this.tunnels.get_mut(slot).and_then(Option::as_mut) else { return Ok(()) };
                t.ids.remove(&wire);
                if let Err(e) = t.queue_response(&mut this.buf, wire, &response.message) {
                    t.queue_error(&mut this.buf, wire, io::ErrorKind::InvalidData, format!("cannot encode the response: {e}"));
                }
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut ready = true;
        for slot in 0..this.tunnels.len() {
            ready &= this.flush_tunnel(slot, cx).is_ready();
        }
        if ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// The zcrpc service of one connection: hands each call, with its responder, to the
/// connection's tarpc channel, which answers it through the responder (no task per call).
struct Bridge {
    link: Arc<Link>,
    /// The next id of a call (even: stream requests have the odd ones).
    next_id: AtomicU64,
}

/// A call's handler: pending until dropped (the responder answers the call). Dropped other
/// than within its own answer, it tells the tarpc channel that the call ended unanswered
/// (cancelled, deadline, connection gone), or, if the channel has not taken the call yet, lets
/// go of its message so that the channel skips it.
struct CancelOnDrop {
    link: Arc<Link>,
    id: u64,
    message: Arc<CallMessage>,
}

impl Future for CancelOnDrop {
    type Output = Result<Body, Status>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Polled once only: after that zcrpc keeps it unpolled until the call ends.
        Poll::Pending
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.link.answering.load(Ordering::Relaxed) != self.id && self.message.take().is_none() {
            let _ = self.link.requests.send(Delivery::Cancel { id: self.id });
        }
    }
}

impl rpc_core::Service for Bridge {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        if req.method == STREAM {
            return self.stream(req);
        }
        if req.method != CALL {
            return Box::pin(std::future::ready(Err(Status::unimplemented(req.method))));
        }
        // Before the responder is taken: once it is, the handler's output answers nothing.
        if let Err(status) = self.link.reserve() {
            return Box::pin(std::future::ready(Err(status)));
        }
        // Every call of a connection has one.
        let Some(responder) = req.responder() else {
            self.link.waiting.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(Status::internal("a tarpc call must come from a zcrpc connection"))));
        };
        let id = self.next_id.fetch_add(2, Ordering::Relaxed);
        let message = Arc::new(CallMessage(std::sync::Mutex::new(Some(req.body.message))));
        if let Err(mpsc::error::SendError(delivery)) =
            self.link.requests.send(Delivery::Call { id, message: message.clone(), responder })
        {
            if let Delivery::Call { responder, .. } = delivery {
                responder.respond(Err(channel_gone()));
            }
            return Box::pin(std::future::pending());
        }
        Box::pin(CancelOnDrop { link: self.link.clone(), id, message })
    }

    fn name(&self) -> &'static str {
        "tarpc"
    }

    fn methods(&self) -> &'static [(&'static str, u32)] {
        &[(CALL_PATH, CALL), (STREAM_PATH, STREAM)]
    }
}

impl Link {
    /// Counts one more delivery waiting for the transport, unless [`MAX_WAITING`] are.
    fn reserve(&self) -> Result<(), Status> {
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed);
        if waiting >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "the tarpc channel is not taking requests: {waiting} wait for it"
            )));
        }
        Ok(())
    }
}

impl Bridge {
    /// A `tarpc/stream` call: accepted at once (its response headers go ahead of any message:
    /// the client then knows it may send requests on it), and handed to the tarpc channel,
    /// which reads it, answers on it and ends it.
    fn stream(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        // Before the responder is taken: once it is, the handler's output answers nothing.
        if let Err(status) = self.link.reserve() {
            return Box::pin(std::future::ready(Err(status)));
        }
        if self.link.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
            self.link.streams.fetch_sub(1, Ordering::Relaxed);
            self.link.waiting.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(Status::resource_exhausted(format!(
                "{MAX_STREAMS} {STREAM_PATH} calls are open on this connection already"
            )))));
        }
        // The stream first: the responder is taken only for a streaming call (a unary call to
        // this method is then answered by the error below).
        let Some((call, responder)) = req.stream.take().and_then(|call| Some((call, req.responder()?))) else {
            self.link.streams.fetch_sub(1, Ordering::Relaxed);
            self.link.waiting.fetch_sub(1, Ordering::Relaxed);
            return Box::pin(std::future::ready(Err(Status::invalid_argument(format!(
                "{STREAM_PATH} is a bidirectional streaming call of a connection"
            )))));
        };
        let (sender, receiver) = call.split();
        let gone = StreamGone { link: self.link.clone(), call: receiver.id() };
        let _ = req.response.set_header("tarpc-stream", "1");
        req.response.send_headers();
        if let Err(mpsc::error::SendError(Delivery::Stream { responder, .. })) =
            self.link.requests.send(Delivery::Stream { ends: Box::new((sender, receiver)), responder })
        {
            responder.respond(Err(channel_gone()));
        }
        // Pending for ever: the responder ends the call. Dropped, it tells the transport.
        Box::pin(gone)
    }
}

/// A `tarpc/stream` call's handler: pending until dropped, which tells the transport the call
/// is over (a client that finished sending and then cancelled would otherwise leave its
/// requests running on the server until their deadlines).
struct StreamGone {
    link: Arc<Link>,
    call: u64,
}

impl Future for StreamGone {
    type Output = Result<Body, Status>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

impl Drop for StreamGone {
    fn drop(&mut self) {
        self.link.streams.fetch_sub(1, Ordering::Relaxed);
        // After the transport is gone there is nothing to tell.
        let _ = self.link.requests.send(Delivery::StreamGone { call: self.call });
    }
}

/// The connections of a zcrpc listener, each as a tarpc [`ServerTransport`]: what
/// `tarpc::serde_transport::tcp::listen` returns for tarpc's own transport, so the code that
/// serves its items does not change. Stops accepting when dropped.
pub struct Incoming<Req, Resp> {
    transports: mpsc::Receiver<io::Result<ServerTransport<Req, Resp>>>,
    server: Server,
    local_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for Incoming<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("local_addr", &self.local_addr).finish()
    }
}

impl<Req, Resp> Drop for Incoming<Req, Resp> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<Req, Resp> Incoming<Req, Resp>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    /// Accepts zcrpc connections from `acceptor` (tcp, io_uring, TLS, Unix), at most
    /// `max_connections` at once (one more waits until one ends). They are served by one zcrpc
    /// server built from `builder`, so they share its limits (frame size, calls in flight,
    /// timeouts), its memory budget and receive cache, its counters and its shutdown (see
    /// [`Incoming::server`]); its `max_connections` refuses connections past it. Its layers
    /// (`ServerBuilder::layer`) wrap each connection's service apart: a concurrency limit
    /// there bounds each connection, not all of them together.
    pub fn new<A: Acceptor>(acceptor: A, builder: ServerBuilder, max_connections: usize) -> Self {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        // Each connection is served with a service of its own (its link to its transport);
        // this one, the server's, is never reached.
        let server = builder.build(Unlinked);
        let task = tokio::spawn(accept_loop(acceptor, server.clone(), max_connections.max(1), tx));
        Incoming { transports: rx, server, local_addr: None, task, _types: PhantomData }
    }

    /// The zcrpc server of every connection: its counters ([`Server::stats`]), the memory its
    /// connections hold together ([`Server::memory_held`]), and a graceful shutdown of them all
    /// ([`Server::shutdown`]; connections that arrive after it are refused).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The address it listens on, for a listener made by [`listen`] (or
    /// [`crate::uring::listen`]).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The same, listening on `local` (for [`Incoming::local_addr`]).
    pub(crate) fn at(mut self, local: SocketAddr) -> Self {
        self.local_addr = Some(local);
        self
    }
}

impl<Req, Resp> Stream for Incoming<Req, Resp> {
    type Item = io::Result<ServerTransport<Req, Resp>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.transports.poll_recv(cx)
    }
}

/// Listens on `addr` over TCP (zcrpc's portable transport) with the server defaults (128 MiB
/// frames, 10 000 calls in flight per connection), at most 1024 connections at once.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn listen<Req, Resp>(addr: impl tokio::net::ToSocketAddrs) -> io::Result<Incoming<Req, Resp>>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let acceptor = TcpAcceptor::bind(addr).await?;
    let local = acceptor.local_addr()?;
    Ok(Incoming::new(acceptor, Server::builder(), 1024).at(local))
}

/// The service of a server whose every connection brings its own ([`Bridge`]).
struct Unlinked;

impl rpc_core::Service for Unlinked {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(std::future::ready(Err(Status::unimplemented(req.method))))
    }
}

async fn accept_loop<A, Req, Resp>(
    mut acceptor: A,
    server: Server,
    max_connections: usize,
    tx: mpsc::Sender<io::Result<ServerTransport<Req, Resp>>>,
) where
    A: Acceptor,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    // A handshake of the transport's own (TLS) is bounded as `Server::serve` bounds it by default.
    acceptor.set_handshake_timeout(HANDSHAKE_TIMEOUT);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            _ = tx.closed() => return,
        };
        let accepted = tokio::select! {
            r = acceptor.accept() => r,
            _ = tx.closed() => return,
        };
        let transport = match accepted {
            Ok(t) => t,
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                // Out of descriptors and the like: a pause, then on.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = rpc_core::transport::Transport::peer(&transport).addr;
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        let answering = Arc::new(AtomicU64::new(u64::MAX));
        let waiting = Arc::new(AtomicUsize::new(0));
        // Dropped, the transport closes its receiver: the connection ends then, as a tarpc
        // transport's socket closes with it (a graceful close: goaway, what is in flight was
        // answered by the transport's drop). Open, every call would be refused "unavailable".
        let transport_gone = requests_tx.clone();
        let link = Arc::new(Link { requests: requests_tx, answering: answering.clone(), waiting: waiting.clone(), streams: AtomicUsize::new(0) });
        let bridge = Bridge { link, next_id: AtomicU64::new(0) };
        let serving = server.clone().serve_connection_with(transport, bridge, async move { transport_gone.closed().await });
        tokio::spawn(async move {
            let _slot = slot;
            let why = serving.await;
            tracing::debug!("tarpc over zcrpc: connection from {peer:?} ended: {why}");
        });
        if tx.send(Ok(ServerTransport::new(requests_rx, answering, waiting, peer))).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `poll_next` gives, in short: the id of a request, `None` for pending.
    fn next(t: &mut ServerTransport<Vec<u8>, ()>) -> Option<u64> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match Pin::new(t).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(ClientMessage::Request(r)))) => Some(r.id),
            Poll::Pending => None,
            other => panic!("{:?}", other.map(|m| m.map(|m| m.map(|_| ())))),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_that_end_before_the_channel_takes_them_never_reach_it() {
        // A channel that is not reading (its task busy elsewhere) while its client's large
        // calls end (cancelled, past their deadline, their connection gone): their messages
        // must not wait in the transport's queue until it reads, nor be handed to tarpc then.
        let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
        let addr = acceptor.local_addr().unwrap();
        // One connection at a time: the next is served once the first one's task is over.
        let mut incoming = Incoming::<Vec<u8>, ()>::new(acceptor, Server::builder(), 1);
        let client = rpc_core::Client::connect_tcp(addr, Default::default()).await.unwrap();
        let mut t = futures::StreamExt::next(&mut incoming).await.unwrap().unwrap();
        let mut enc = EncodeBuf::default();
        for i in 0..8 {
            let message = enc.encode(&(tarpc::context::current(), vec![7u8; 1 << 20])).unwrap();
            let c = client.clone();
            tokio::spawn(async move { c.call(CALL, Body::message(message), Default::default()).await });
            while t.requests.len() <= i {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // The calls end with their connection; once a second connection is served, the first
        // one's task is over, its calls' handlers dropped.
        client.close().await;
        let second = tokio::spawn(rpc_core::Client::connect_tcp(addr, rpc_core::ClientConfig::default()));
        let _t2 = tokio::time::timeout(Duration::from_secs(20), futures::StreamExt::next(&mut incoming)).await.unwrap();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut seen = Vec::new();
        // Two pending polls in a row: the queue is empty (one follows each large request).
        let mut pending = 0;
        while pending < 2 {
            pending += 1;
            match Pin::new(&mut t).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(ClientMessage::Request(r)))) => seen.push(format!("request {}", r.id)),
                Poll::Ready(Some(Ok(ClientMessage::Cancel { request_id, .. }))) => seen.push(format!("cancel {request_id}")),
                Poll::Ready(None) => break,
                Poll::Pending => continue,
                other => panic!("{:?}", other.map(|m| m.map(|m| m.map(|_| ())))),
            }
            pending = 0;
        }
        assert!(seen.is_empty(), "the channel was handed calls that were over: {seen:?}");
        drop(second);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_large_request_the_channel_yields_before_decoding_the_next() {
        let mut incoming = listen::<Vec<u8>, ()>("127.0.0.1:0").await.unwrap();
        let client = rpc_core::Client::connect_tcp(incoming.local_addr().unwrap(), Default::default()).await.unwrap();
        let mut t = futures::StreamExt::next(&mut incoming).await.unwrap().unwrap();
        let mut enc = EncodeBuf::default();
        let mut calls = Vec::new();
        for len in [1 << 20, 1 << 20, 10, 10] {
            let message = enc.encode(&(tarpc::context::current(), vec![7u8; len])).unwrap();
            // One after the other, so that they are queued in this order.
            let c = client.clone();
            calls.push(tokio::spawn(async move { c.call(CALL, Body::message(message), Default::default()).await }));
            while t.requests.len() < calls.len() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // All four are queued: each large one is followed by a pending poll (the tasks that
        // take it run then); small ones come one after the other.
        let seen: Vec<Option<u64>> = (0..6).map(|_| next(&mut t)).collect();
        assert_eq!(seen, [Some(0), None, Some(2), None, Some(4), Some(6)], "calls have the even ids");
        assert_eq!(t.pending.len(), 4, "every handed-out request waits for its answer");
        // The channel is dropped unanswered: every call fails as such.
        drop(t);
        for call in calls {
            let status = match call.await.unwrap() {
                Err(rpc_core::CallError::Status(s)) => s,
                other => panic!("{other:?}"),
            };
            assert_eq!(status.code, rpc_core::Code::UNAVAILABLE, "{status:?}");
        }
    }
}
