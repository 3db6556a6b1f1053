//! The client's transport: each tarpc request becomes a zcrpc call; a cancel drops it.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures::stream::FuturesUnordered;
use futures::{Sink, Stream};
use rpc_core::{Body, BoxFuture, CallError, CallOptions, Client};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::{ClientMessage, Response, ServerError};

use crate::codec::{decode, yield_after_large, EncodeBuf, LARGE};
use crate::errors::to_server_error;
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

/// A `tarpc::Transport` for a tarpc client (`WorldClient::new(config, transport)`): each request
/// goes as one zcrpc call on `client` — its deadline as the call's deadline, its context
/// (deadline and trace context, as tarpc's serde transports send it) and message serialized
/// (postcard) into buffers the transport reuses — and a cancel (the caller dropped its future) cancels the call on the server.
///
/// A call that fails below tarpc comes back as tarpc's `RpcError::Server` with a
/// [`ServerError`] naming the cause: a request over the server's frame limit
/// (`InvalidInput`, "request of N bytes ... is over the peer's frame limit ..."), a lost
/// connection (`ConnectionAborted`; the zcrpc client re-dials for the next calls). A call past
/// its deadline is left to tarpc's own timer (`RpcError::DeadlineExceeded`, as over tarpc's
/// transports). The transport itself never fails: tarpc's other calls carry on.
pub struct ClientTransport<Req, Resp> {
    client: Client,
    buf: EncodeBuf,
    calls: FuturesUnordered<Call<Resp>>,
    /// The reader waiting while no call is in flight.
    idle: Option<Waker>,
    /// A large response was just handed out: let its caller run before decoding the next.
    yield_next: bool,
    closed: bool,
    _req: PhantomData<fn(Req)>,
}

impl<Req, Resp> std::fmt::Debug for ClientTransport<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTransport").field("client", &self.client).field("in_flight", &self.calls.len()).finish()
    }
}

impl<Req, Resp> ClientTransport<Req, Resp> {
    /// A transport whose requests go as calls on `client` (over any zcrpc transport: tcp,
    /// io_uring, TLS, a Unix socket).
    pub fn new(client: Client) -> Self {
        ClientTransport {
            client,
            buf: EncodeBuf::default(),
            calls: FuturesUnordered::new(),
            idle: None,
            yield_next: false,
            closed: false,
            _req: PhantomData,
        }
    }

    /// The zcrpc client underneath (its statistics, its close).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl<Req, Resp> Sink<ClientMessage<Req>> for ClientTransport<Req, Resp>
where
    Req: Serialize,
    Resp: DeserializeOwned + Send + 'static,
{
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Calls in flight are bounded by tarpc's own `max_in_flight_requests`.
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: ClientMessage<Req>) -> io::Result<()> {
        let this = self.get_mut();
        match item {
            ClientMessage::Request(request) => {
                let id = request.id;
                // The context (deadline, trace) goes first, as tarpc's serde transports send it.
                let fut = match this.buf.encode(&(&request.context, &request.message)) {
                    Ok(message) => {
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
                // Dropping the call's future cancels it on the server. A scan of the calls in
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

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.closed = true;
        if let Some(w) = this.idle.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

/// The reply to a tarpc request out of the call's result.
fn reply<Resp: DeserializeOwned>(result: Result<Body, CallError>) -> Result<Resp, ServerError> {
    let body = result.map_err(to_server_error)?;
    decode(&body.message).map_err(|e| ServerError::new(io::ErrorKind::InvalidData, format!("cannot decode the response: {e}")))
}

impl<Req, Resp> Stream for ClientTransport<Req, Resp> {
    type Item = io::Result<Response<Resp>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // After a large response, its caller runs first, as on the server: responses that
        // arrived together are not all decoded at once.
        if yield_after_large(&mut this.yield_next, cx) {
            return Poll::Pending;
        }
        loop {
            if this.calls.is_empty() {
                if this.closed {
                    return Poll::Ready(None);
                }
                this.idle = Some(cx.waker().clone());
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
