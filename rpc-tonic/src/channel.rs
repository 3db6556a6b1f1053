//! The client's side: [`Channel`], what a tonic-generated client calls through, carrying each
//! gRPC request as a zcrpc call.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use rpc_core::{Body, CallError, CallMode, CallOptions, Client, ClientConfig, ConnectError, StreamReceiver, StreamSender};
use tokio::sync::oneshot;

use crate::headers;
use crate::pace;
use crate::message::{chunk_body, chunk_of, Boundaries};

/// A boxed, sendable future.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A tonic channel over zcrpc: give it to a tonic-generated client in place of
/// `tonic::transport::Channel` (`EchoClient::new(channel)`); every call of the client then
/// travels as a zcrpc call on one zcrpc connection, with no HTTP/2 in between.
///
/// - the request's path (`/pkg.Service/Method`) names the call (its id is the path's
///   [`rpc_core::method_id`]; the path itself goes along as metadata, for the server's routing);
/// - its headers are the call's metadata, but for `grpc-timeout`, which is the call's deadline
///   (the server drops the handler when it passes), and those of HTTP/2 itself (`te`,
///   `content-type: application/grpc`);
/// - the request body's chunks, as tonic's encoder yields them (gRPC messages with their
///   length prefixes), go as zcrpc stream messages, cut at message boundaries into runs of
///   small messages of up to 4,000 bytes and each large message alone; from 4 KiB on, a
///   stream message's bytes travel as an attachment, sent from the buffer tonic encoded them
///   into (zero-copy where the transport does it);
/// - the answer comes back as an HTTP response whose body yields the server's chunks as they
///   came, then trailers with `grpc-status`, `grpc-message` and the server's trailer
///   metadata: what tonic's decoder would see from HTTP/2.
///
/// The server must be an [`crate::Server`] (zcrpc, not HTTP/2): an HTTP/2 server answers the
/// zcrpc hello with HTTP/2, and the connect fails at once saying so.
///
/// Cheap to clone: the clones share the connection. Dropping a call's response (or its
/// future) cancels the call on the server.
#[derive(Clone)]
pub struct Channel {
    client: Client,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("client", &self.client).finish()
    }
}

impl Channel {
    /// A channel over a connected zcrpc client: any transport (TCP, io_uring, a Unix socket,
    /// TLS), any [`ClientConfig`].
    pub fn from_client(client: Client) -> Self {
        Channel { client }
    }

    /// Connects over TCP to the zcrpc server at `addr` (an [`crate::Server`]), with the client
    /// defaults: a 10 s connect timeout, and a new connection whenever one is lost.
    ///
    /// # Errors
    ///
    /// When no zcrpc server answers at `addr` (the error names the address, and what the peer
    /// seems to speak when it is not zcrpc: an HTTP/2 server, say).
    pub async fn connect_tcp(addr: impl tokio::net::ToSocketAddrs) -> Result<Self, ConnectError> {
        Ok(Channel::from_client(Client::connect_tcp(addr, ClientConfig::default()).await?))
    }

    /// Connects over a Unix socket to the zcrpc server listening at `path`.
    ///
    /// # Errors
    ///
    /// As [`Channel::connect_tcp`].
    pub async fn connect_unix(path: impl AsRef<std::path::Path>) -> Result<Self, ConnectError> {
        Ok(Channel::from_client(Client::connect_unix(path, ClientConfig::default()).await?))
    }

    /// The zcrpc client underneath (its statistics, its close).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<ResponseBody>;
    type Error = tonic::Status;
    type Future = BoxFuture<Result<Self::Response, tonic::Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        // The connection queues calls beyond the server's limit itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(call(self.client.clone(), request))
    }
}

/// One gRPC call as a zcrpc call.
async fn call(client: Client, request: http::Request<tonic::body::Body>) -> Result<http::Response<ResponseBody>, tonic::Status> {
    let (parts, mut body) = request.into_parts();
    let path = parts.uri.path();
    if !path.strip_prefix('/').is_some_and(|p| p.contains('/')) {
        return Err(tonic::Status::invalid_argument(format!("{path:?} is not a gRPC path (/package.Service/Method)")));
    }
    let (path_bytes, method) = headers::path_and_id(path);
    let (metadata, timeout) = headers::request_metadata(path_bytes, &parts.headers)?;
    let limit = client.server_hello().max_metadata as usize;
    if metadata.encoded_len() > limit {
        return Err(tonic::Status::resource_exhausted(format!(
            "the request metadata of {path} ({} bytes encoded, {} entries) is over the server's limit of {limit} bytes",
            metadata.encoded_len(),
            metadata.len()
        )));
    }

    // What the request body has ready now, without waiting: one chunk and its end make a
    // call whose request is that chunk (no request stream); anything else streams. It is made
    // in the connection's turn (see `pace`), within the call's deadline, which then has what
    // is left of it.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut ended = false;
    let (turn, timeout) = match timeout.or(client.default_timeout()) {
        Some(t) => {
            let start = Instant::now();
            match tokio::time::timeout(t, client.writer_turn()).await {
                Ok(turn) => (turn, Some(t.saturating_sub(start.elapsed()))),
                Err(_) => return Err(headers::status_of(&CallError::DeadlineExceeded(t))),
            }
        }
        None => (client.writer_turn().await, None),
    };
    poll_fn(|cx| loop {
        if chunks.len() > 1 {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    chunks.extend((!data.is_empty()).then_some(data));
                }
            }
            Poll::Ready(Some(Err(status))) => return Poll::Ready(Err(status)),
            Poll::Ready(None) => {
                ended = true;
                return Poll::Ready(Ok(()));
            }
            Poll::Pending => return Poll::Ready(Ok(())),
        }
    })
    .await?;
    drop(turn);
    // A body of one chunk that is one piece (see `Boundaries::pieces`) is the call's request
    // (counted, not collected: no allocation per unary call). Any other is cut by the pump.
    let mut pieces = 0;
    if ended && chunks.len() == 1 {
        let mut boundaries = Boundaries::default();
        boundaries.pieces(&chunks[0], |_| pieces += 1);
        if boundaries.mid_message() {
            return Err(tonic::Status::internal("the request body ended inside a gRPC message"));
        }
    }
    let single = pieces == 1;
    let (mode, first) = match single {
        true => (CallMode::SERVER_STREAMING, chunk_body(chunks.pop().expect("one chunk"))),
        false => (CallMode::BIDI, Body::default()),
    };
    let options = CallOptions { timeout, metadata, ..CallOptions::default() };
    let stream = client.open(method, first, mode, options).await.map_err(|e| headers::status_of(&e))?;
    let (sender, receiver) = stream.split();

    let (failed, pump, idle) = match single {
        // The server's stream alone: the sender is kept, unused, with the response (no request
        // stream to end: dropping it now would step the connection for nothing).
        true => (None, None, Some(sender)),
        false => {
            let (failed_tx, failed) = oneshot::channel();
            let task = tokio::spawn(pump(sender, chunks, body, ended, failed_tx));
            (Some(failed), Some(AbortOnDrop(task.abort_handle())), None)
        }
    };
    let mut response = ResponseBody {
        receiver,
        first: None,
        failed,
        done: false,
        _pump: pump,
        _idle: idle,
    };

    // The response's headers: in a frame of their own when the server sends them ahead of any
    // message, else with its first message or its end, which is then taken here.
    let first = poll_fn(|cx| {
        if let Some(status) = response.poll_failed(cx) {
            return Poll::Ready(Some(Item::Failed(status)));
        }
        ready!(response.receiver.poll_response_headers(cx));
        Poll::Ready(match response.poll_item(cx) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        })
    })
    .await;
    // No `content-type: application/grpc` put back: tonic's client does not look at it (nor
    // show it), and a response without headers then costs no header map.
    let mut builder = http::Response::builder().status(http::StatusCode::OK);
    let h = builder.headers_mut().expect("a fresh builder");
    if let Some(m) = response.receiver.headers() {
        headers::add_headers(h, m, &[]).map_err(|why| tonic::Status::internal(format!("the server's response headers: {why}")))?;
    }
    match first {
        Some(Item::Chunk(c)) => response.first = Some(c),
        // The headers alone, or (from an older server) an empty message carrying them.
        None | Some(Item::Headers) => {}
        Some(Item::End(trailers)) => {
            // Trailers-only, as a server with nothing to send answers over HTTP/2.
            h.extend(trailers);
            response.done = true;
        }
        Some(Item::Failed(status)) => return Err(status),
    }
    Ok(builder.body(response).expect("valid parts"))
}

/// Sends the request body's chunks on the call's stream (`chunks` first), then ends it; a body
/// that fails makes the response fail with its status, and the call is cancelled when the
/// response goes.
async fn pump(
    mut sender: StreamSender,
    mut chunks: Vec<Bytes>,
    mut body: tonic::body::Body,
    mut ended: bool,
    failed: oneshot::Sender<tonic::Status>,
) {
    let mut boundaries = Boundaries::default();
    let status = 'pump: loop {
        for chunk in chunks.drain(..) {
            // Runs of small messages, each large one alone.
            let mut run = Vec::new();
            boundaries.pieces(&chunk, |p| run.push(chunk_body(p)));
            match sender.send_all(run).await {
                Ok(()) => {}
                // A message this side would not send (over the server's frame limit or its
                // attachments per frame): the call fails saying so, `RESOURCE_EXHAUSTED` as a
                // unary request over the limit does. Returning would drop the sender while the
                // response lives, which ends the request stream cleanly: the server would answer
                // the messages before it as if they were the whole request.
                Err(e @ (CallError::Codec(_) | CallError::TooLarge { .. })) => {
                    break 'pump tonic::Status::resource_exhausted(format!("a request message could not be sent: {e}"));
                }
                // The call is over; the response says why.
                Err(_) => return,
            }
        }
        if ended {
            if boundaries.mid_message() {
                break tonic::Status::internal("the request body ended inside a gRPC message");
            }
            sender.finish();
            return;
        }
        match pace::next_in_turn(sender.writer_turn(), &mut body).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    chunks.extend((!data.is_empty()).then_some(data));
                }
            }
            Some(Err(status)) => break status,
            None => ended = true,
        }
    };
    let _ = failed.send(status);
    // Holding the sender: when the response goes, this task is aborted, and the call cancelled
    // (the request stream must not look finished).
    std::future::pending::<()>().await;
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What comes next on a call.
enum Item {
    /// The next chunk of the server's messages.
    Chunk(Bytes),
    /// An empty message: from an older server, the response headers alone (now a frame of
    /// their own, which is no item).
    Headers,
    /// The call's end: its trailers, `grpc-status` among them.
    End(http::HeaderMap),
    /// The request body failed (with this status).
    Failed(tonic::Status),
}

/// The body of a response from a [`Channel`]: the server's messages with gRPC's length prefix,
/// in the chunks the server's tonic encoded them in, then its trailers with `grpc-status`.
/// Dropping it before its end cancels the call.
pub struct ResponseBody {
    receiver: StreamReceiver,
    /// The next chunk, received before the response was made.
    first: Option<Bytes>,
    /// Says when the request body failed.
    failed: Option<oneshot::Receiver<tonic::Status>>,
    done: bool,
    _pump: Option<AbortOnDrop>,
    /// The request stream's sender of a call with none (its one message went with the
    /// request). Declared after `receiver`, so dropped after it: the call's last handle, whose
    /// drop cancels the call unless the receiver took its end.
    _idle: Option<StreamSender>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").field("call", &self.receiver.id()).field("done", &self.done).finish()
    }
}

impl ResponseBody {
    /// The request body's failure, once the pump reports one.
    fn poll_failed(&mut self, cx: &mut Context<'_>) -> Option<tonic::Status> {
        let failed = self.failed.as_mut()?;
        match Pin::new(failed).poll(cx) {
            Poll::Ready(Ok(status)) => {
                self.done = true;
                Some(status)
            }
            // The request went in full.
            Poll::Ready(Err(_)) => {
                self.failed = None;
                None
            }
            Poll::Pending => None,
        }
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        if let Some(status) = self.poll_failed(cx) {
            return Poll::Ready(Item::Failed(status));
        }
        let status = match ready!(self.receiver.poll_recv(cx)) {
            Some(Ok(body)) => match chunk_of(body) {
                // The response headers alone.
                Ok(c) if c.is_empty() => return Poll::Ready(Item::Headers),
                Ok(c) => return Poll::Ready(Item::Chunk(c)),
                Err(why) => tonic::Status::internal(format!("the server's answer: {why}")),
            },
            Some(Err(e)) => headers::status_of(&e),
            None => tonic::Status::ok(""),
        };
        self.done = true;
        Poll::Ready(Item::End(headers::status_trailers(&status, self.receiver.trailers())))
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            return Poll::Ready(Some(match ready!(this.poll_item(cx)) {
                Item::Chunk(chunk) => Ok(Frame::data(chunk)),
                // Already given with the response.
                Item::Headers => continue,
                Item::End(trailers) => Ok(Frame::trailers(trailers)),
                Item::Failed(status) => Err(status),
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }
}
