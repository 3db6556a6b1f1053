//! The server's side: tonic-generated services (tower services of `http::Request`) served as
//! one zcrpc [`rpc_core::Service`], each call routed by its gRPC path.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::uri::PathAndQuery;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use rpc_core::transport::Acceptor;
use rpc_core::{Body, CallError, Code, ResponseMetadata, ServerBuilder, ServerHandle, ServerRequest, Status, StreamReceiver, StreamSender, WriterTurn};
use tonic::server::NamedService;

use crate::headers::{self, GRPC_CONTENT_TYPE, GRPC_MESSAGE, GRPC_STATUS, GRPC_TIMEOUT, OLD_PATH_KEY, PATH_KEY};
use crate::message::{chunk_body, chunk_of, owned_chunk_body, Boundaries};

/// A boxed, sendable future.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One tonic service, behind a trait object: the whole call, from the request tonic's service
/// takes to the zcrpc answer (one future, one allocation, per call).
type Handler = Box<dyn Fn(http::Request<tonic::body::Body>, Reply) -> BoxFuture<Result<Body, Status>> + Send + Sync>;

/// Where a call's answer goes: its stream (when the client opened one), its response metadata,
/// and its path (for errors).
struct Reply {
    sender: Option<StreamSender>,
    response: ResponseMetadata,
    path: PathAndQuery,
}

/// Serves tonic-generated services over zcrpc: in place of `tonic::transport::Server`,
///
/// ```text
/// tonic::transport::Server::builder().add_service(EchoServer::new(imp)).serve(addr).await?;
/// rpc_tonic::Server::builder().add_service(EchoServer::new(imp)).serve(TcpAcceptor::bind(addr).await?);
/// ```
///
/// Each zcrpc call becomes the `http::Request` tonic's service expects: its path, its metadata
/// as headers (the deadline as `grpc-timeout`, the peer's address where tonic's
/// `Request::remote_addr` finds it), a body yielding the client's messages with gRPC's length
/// prefix, in the chunks the client's tonic encoded them in. The service's response goes back
/// as the call's answer: its headers as the response headers, the chunks of its body as
/// stream messages (runs of small messages, each large one alone; from 4 KiB on as an
/// attachment, sent from the buffer tonic encoded it into), its trailers as the call's
/// trailers and `grpc-status`/`grpc-message` as the call's status.
///
/// A path whose service is not here is answered `UNIMPLEMENTED`, naming the path; a call whose
/// path is not the one its method id names, `INVALID_ARGUMENT` (an [`rpc_core::ServerBuilder`]'s
/// authorization hook and layers see the id, so the two must agree). The zcrpc
/// limits (frame size, calls in flight, metadata, memory) are those of the
/// [`rpc_core::ServerBuilder`] given to [`Server::with`]. An HTTP/2 client that connects gets
/// its connection closed at once: the zcrpc hello it receives is no HTTP/2, and the server
/// logs what the client seems to speak.
pub struct Server {
    builder: ServerBuilder,
    routes: Routes,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("services", &self.routes.names()).finish()
    }
}

impl Server {
    /// A server with zcrpc's default limits.
    pub fn builder() -> Server {
        Server::with(rpc_core::Server::builder())
    }

    /// A server with the limits of `builder`.
    pub fn with(builder: ServerBuilder) -> Server {
        Server { builder, routes: Routes::default() }
    }

    /// Adds a tonic-generated service (`EchoServer::new(imp)`, with its interceptors and
    /// settings): it answers the paths under its name (`/pkg.Echo/...`). A second service of
    /// the same name replaces the first.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add(S::NAME, service);
        self
    }

    /// The services as one zcrpc service (to serve beside others, or with an
    /// [`rpc_core::Server`] made otherwise).
    pub fn into_service(self) -> Routes {
        self.routes
    }

    /// The zcrpc server.
    pub fn build(self) -> rpc_core::Server {
        self.builder.build(self.routes)
    }

    /// Serves connections from `acceptor` (TCP, io_uring, Unix, TLS) until the handle's
    /// shutdown. Needs a tokio runtime.
    pub fn serve<A: Acceptor>(self, acceptor: A) -> ServerHandle {
        self.build().serve(acceptor)
    }
}

/// Tonic services by name: a zcrpc [`rpc_core::Service`] that routes each call by its gRPC path.
#[derive(Default)]
pub struct Routes {
    services: BTreeMap<&'static str, Handler>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes").field("services", &self.names()).finish()
    }
}

impl Routes {
    fn add<S>(&mut self, name: &'static str, service: S)
    where
        S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let handler: Handler = Box::new(move |request, reply: Reply| {
            let mut service = service.clone();
            Box::pin(async move {
                // Generated services are always ready; a layered one may not be.
                let ready = poll_fn(|cx| service.poll_ready(cx)).await;
                let call = match ready {
                    Ok(()) => service.call(request),
                    Err(never) => match never {},
                };
                let answer = match call.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                respond(answer, reply.sender, reply.response, reply.path.as_str()).await
            })
        });
        self.services.insert(name, handler);
    }

    fn names(&self) -> Vec<&'static str> {
        self.services.keys().copied().collect()
    }
}

impl rpc_core::Service for Routes {
    fn call(&self, mut request: ServerRequest) -> rpc_core::BoxFuture<'static, Result<Body, Status>> {
        let path = request.metadata.get(PATH_KEY).and_then(|p| Some((p.clone(), std::str::from_utf8(p).ok()?)));
        let Some((path, text)) = path else {
            if request.metadata.get(OLD_PATH_KEY).is_some() {
                return Box::pin(std::future::ready(Err(Status::new(
                    Code::FAILED_PRECONDITION,
                    "this client is an rpc_tonic::Channel of before 2026-12-04, which sent each gRPC message on its own; \
                     this server takes the chunks of gRPC bodies (the mapping of 2026-12-04): update the client's rpc-tonic"
                        .to_owned(),
                ))));
            }
            return Box::pin(std::future::ready(Err(Status::new(
                Code::UNIMPLEMENTED,
                format!(
                    "method id {:#010x}: this server serves tonic services, called by path (metadata {PATH_KEY:?}, as an rpc_tonic::Channel sends it)",
                    request.method
                ),
            ))));
        };
        // The call runs what its path names, while the server's authorization hook and layers
        // see its method id: the two must agree, or a hook that refuses a method by id would
        // be passed with another method's id and this one's path.
        if rpc_core::method_id(text.strip_prefix('/').unwrap_or(text)) != request.method {
            return Box::pin(std::future::ready(Err(Status::invalid_argument(format!(
                "{text}: the call's method id {:#010x} is not this path's (an rpc_tonic::Channel sends both)",
                request.method
            )))));
        }
        let service = text.strip_prefix('/').and_then(|p| p.split_once('/')).map(|(s, _)| s).unwrap_or("");
        let Some(handler) = self.services.get(service) else {
            return Box::pin(std::future::ready(Err(Status::new(
                Code::UNIMPLEMENTED,
                format!("{text}: no service {service:?} here (this server has {:?})", self.names()),
            ))));
        };
        // The path as the request's URI, without a copy of it.
        let path = match PathAndQuery::from_maybe_shared(path) {
            Ok(p) => p,
            Err(e) => {
                return Box::pin(std::future::ready(Err(Status::invalid_argument(format!("{text:?} is not a valid gRPC path: {e}")))))
            }
        };
        let (sender, receiver) = match request.stream.take() {
            Some(s) => {
                let (t, r) = s.split();
                (Some(t), Some(r))
            }
            None => (None, None),
        };
        let http_request = match http_request(path.clone(), &mut request, receiver) {
            Ok(r) => r,
            Err(status) => return Box::pin(std::future::ready(Err(status))),
        };
        handler(http_request, Reply { sender, response: request.response, path })
    }

    fn name(&self) -> &'static str {
        "rpc-tonic"
    }
}

/// The HTTP request a tonic service expects for this call (its body taken from `request`).
fn http_request(
    path: PathAndQuery,
    request: &mut ServerRequest,
    receiver: Option<StreamReceiver>,
) -> Result<http::Request<tonic::body::Body>, Status> {
    let first = chunk_of(std::mem::take(&mut request.body)).map_err(Status::invalid_argument)?;
    let first = (!first.is_empty()).then_some(first);
    let mut h = HeaderMap::with_capacity(2 + request.metadata.len());
    h.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    h.insert(TE, HeaderValue::from_static("trailers"));
    if let Some(deadline) = request.deadline {
        h.insert(GRPC_TIMEOUT, headers::format_timeout(deadline.saturating_duration_since(Instant::now())));
    }
    if request.metadata.len() > 1 {
        headers::add_headers(&mut h, &request.metadata, &[PATH_KEY, GRPC_TIMEOUT])
            .map_err(|why| Status::invalid_argument(format!("{}: {why}", path.as_str())))?;
    }
    let body = RequestBody { first, receiver, done: false };
    let mut r = http::Request::new(tonic::body::Body::new(body));
    *r.method_mut() = http::Method::POST;
    *r.uri_mut() = http::Uri::from(path);
    *r.version_mut() = http::Version::HTTP_2;
    *r.headers_mut() = h;
    r.extensions_mut().insert(tonic::transport::server::TcpConnectInfo { local_addr: None, remote_addr: request.peer.addr });
    Ok(r)
}

/// The service's response as the call's answer.
async fn respond(
    answer: http::Response<tonic::body::Body>,
    mut sender: Option<StreamSender>,
    response: ResponseMetadata,
    path: &str,
) -> Result<Body, Status> {
    let (parts, mut body) = answer.into_parts();
    if parts.headers.contains_key(&GRPC_STATUS) {
        // Trailers-only: the status, and no message.
        return finish(&parts.headers, None, &mut sender, &response, path).await;
    }
    for (name, value) in headers::metadata_of(&parts.headers) {
        response
            .set_header(name.as_str(), Bytes::copy_from_slice(value.as_bytes()))
            .map_err(|e| Status::resource_exhausted(format!("{path}: the response headers: {e}")))?;
    }
    let mut boundaries = Boundaries::default();
    // The last chunk so far, held back so that it goes with the call's end (one frame for a
    // unary answer) when the end comes right after it.
    let mut held: Option<Body> = None;
    let mut sent = false;
    // What the body has ready is made in the connection's turn (see `pace`), held until the
    // next wait that is not for the body: a unary answer is made and ended in one turn. (A
    // plain zcrpc call has no stream, and its one answer no turn.)
    let mut turn: Option<WriterTurn> = None;
    loop {
        if let (None, Some(s)) = (&turn, &sender) {
            turn = Some(s.writer_turn().await);
        }
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                turn = None;
                // Nothing more now: what is held goes (the client may wait for it), or the
                // headers alone (the client's call returns once it has them). A unary zcrpc
                // call (not from a `Channel`) waits: its one answer carries both.
                if sender.is_some() {
                    if let Some(b) = held.take() {
                        send(&mut sender, vec![b]).await?;
                    } else if !sent {
                        send_headers(&mut sender, &response).await?;
                    }
                    sent = true;
                }
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                let status = tonic::Status::from_error(e.into());
                return Err(Status::new(rpc_code(status.code()), status.message().to_owned()));
            }
            None => return Err(Status::internal(format!("{path}: the service's response ended without trailers (no grpc-status)"))),
        };
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                // What was held goes, then the chunk's pieces (runs of small messages, each large
                // one alone) but the last, which is held. (No allocation for a unary answer's one
                // piece.)
                let mut run: Vec<Body> = held.take().into_iter().collect();
                let mut last = None;
                boundaries.pieces(&data, |p| {
                    if let Some(before) = last.replace(p) {
                        run.push(chunk_body(before));
                    }
                });
                held = last.map(owned_chunk_body);
                if !run.is_empty() {
                    turn = None;
                    send(&mut sender, run).await?;
                    sent = true;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    if boundaries.mid_message() {
                        return Err(Status::internal(format!("{path}: the service's response ended inside a gRPC message")));
                    }
                    drop(turn);
                    return finish(&trailers, held, &mut sender, &response, path).await;
                }
            }
        }
    }
}

/// The call's end from the service's trailers: their metadata as the call's trailers, their
/// status as its status; the last message goes with it.
async fn finish(
    trailers: &http::HeaderMap,
    last: Option<Body>,
    sender: &mut Option<StreamSender>,
    response: &ResponseMetadata,
    path: &str,
) -> Result<Body, Status> {
    for (name, value) in headers::metadata_of(trailers) {
        if matches!(name.as_str(), "grpc-status" | "grpc-message") {
            continue;
        }
        response
            .set_trailer(name.as_str(), Bytes::copy_from_slice(value.as_bytes()))
            .map_err(|e| Status::resource_exhausted(format!("{path}: the response trailers: {e}")))?;
    }
    let (code, message) = match trailers.get(&GRPC_STATUS).map(|v| tonic::Code::from_bytes(v.as_bytes())) {
        Some(code) => {
            let message = trailers.get(&GRPC_MESSAGE).map(|v| percent_decode(v.as_bytes())).unwrap_or_default();
            (code, message)
        }
        None => (tonic::Code::Internal, "the service's trailers have no grpc-status".to_owned()),
    };
    if code == tonic::Code::Ok {
        return Ok(last.unwrap_or_default());
    }
    if let Some(b) = last {
        send(sender, vec![b]).await?;
    }
    let message = match message.is_empty() && code == tonic::Code::Unimplemented {
        true => format!("{path}: the service has no such method"),
        false => message,
    };
    Err(Status::new(rpc_code(code), message))
}

/// Sends the response headers ahead of any message, in a frame of their own; to a client that
/// takes headers only with a message (an `rpc_tonic::Channel` of before that frame existed),
/// as an empty message, which such a client takes for the headers alone.
async fn send_headers(sender: &mut Option<StreamSender>, response: &ResponseMetadata) -> Result<(), Status> {
    if response.send_headers() {
        return Ok(());
    }
    send(sender, vec![Body::default()]).await
}

/// Sends messages on the call's stream.
async fn send(sender: &mut Option<StreamSender>, run: Vec<Body>) -> Result<(), Status> {
    match sender {
        Some(s) if run.len() == 1 => s.send(run.into_iter().next().expect("one")).await,
        Some(s) => s.send_all(run).await,
        None => return Err(Status::internal("a unary zcrpc call carries one answer; this gRPC method streams (call it through an rpc_tonic::Channel)")),
    }
    .map_err(|e| match e {
        // A message over the client's limits: `RESOURCE_EXHAUSTED`, as a unary answer over them is.
        CallError::Codec(_) | CallError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        e => Status::new(e.code(), e.to_string()),
    })
}

/// The zcrpc code of a gRPC code (the same number).
fn rpc_code(code: tonic::Code) -> Code {
    Code(code as u32)
}

/// Decodes gRPC's percent-encoded `grpc-message`.
fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (v[i], v.get(i + 1).copied().and_then(hex), v.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of the request a tonic service gets: the client's messages with gRPC's length
/// prefix, in the chunks the client sent.
struct RequestBody {
    first: Option<Bytes>,
    receiver: Option<StreamReceiver>,
    done: bool,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.first.take() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            let Some(receiver) = this.receiver.as_mut().filter(|_| !this.done) else {
                this.done = true;
                return Poll::Ready(None);
            };
            match ready!(receiver.poll_recv(cx)) {
                Some(Ok(body)) => match chunk_of(body) {
                    Ok(chunk) => this.first = (!chunk.is_empty()).then_some(chunk),
                    Err(why) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(tonic::Status::invalid_argument(why))));
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(headers::status_of(&e))));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.done || self.receiver.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode(b"a%20b%25c%zz%4"), "a b%c%zz%4");
    }
}
