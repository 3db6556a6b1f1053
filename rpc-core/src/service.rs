//! The `Service` trait: what a server runs for each call. `#[service]` implements it; so can
//! you, by hand.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::body::Body;
use crate::error::Status;
use crate::metadata::Metadata;
use crate::stream::CallStream;
pub use crate::response_metadata::ResponseMetadata;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One call as the server receives it.
#[derive(Debug)]
pub struct ServerRequest {
    /// Method id.
    pub method: u32,
    /// The encoded arguments and attachments (slices of the receive buffer).
    pub body: Body,
    /// When the handler will be dropped, if the caller set a deadline.
    pub deadline: Option<Instant>,
    /// The call's metadata (headers), as the client set them in its `CallOptions`.
    pub metadata: Metadata,
    /// Who made the call.
    pub peer: Peer,
    /// A streaming call's two ends: the client's messages after the request (if it streams),
    /// and the sender of this side's stream (if the server streams; the stream ends when the
    /// handler returns: with an empty body cleanly, with a body as the last message, or with
    /// an error status). `None` for a unary call.
    pub stream: Option<CallStream>,
    /// The call's response headers and trailers: set them here (see [`ResponseMetadata`]).
    pub response: ResponseMetadata,
}

impl ServerRequest {
    /// A unary request for `method` with `body`, no deadline, no metadata, no peer: for calling a
    /// `Service` directly (tests, adapters). The response metadata the service sets stays in
    /// [`ServerRequest::response`] (clone it first to read it afterwards).
    pub fn new(method: u32, body: Body) -> Self {
        ServerRequest {
            method,
            body,
            deadline: None,
            metadata: Metadata::default(),
            peer: Peer::default(),
            stream: None,
            response: ResponseMetadata::default(),
        }
    }

    /// Takes the call's answer out of its handler: the call is answered by the returned
    /// [`crate::Responder`] (from any task, at any time) and the handler's output is ignored;
    /// a handler still pending after its first poll is not polled again, only dropped when the
    /// call ends. `None` for a request of no connection ([`ServerRequest::new`]), a call that
    /// is over, or one whose responder was taken already.
    pub fn responder(&self) -> Option<crate::Responder> {
        self.response.responder()
    }
}

/// What a `#[service]` method may know about its call beyond its arguments — the metadata the
/// client sent, who the client is, the deadline — and where it sets the call's response headers
/// and trailers. A method gets it by taking an argument of type `CallContext` (anywhere in its
/// argument list; the client does not pass it).
///
/// ```
/// # use rpc_core::CallContext;
/// # async fn example(ctx: CallContext) -> Result<String, String> {
/// // In a `#[service]` method:
/// ctx.set_header("server-version", "2.1").map_err(|e| e.to_string())?;
/// let answer = "done".to_owned();
/// ctx.set_trailer("rows-scanned", "1200").map_err(|e| e.to_string())?;
/// Ok(answer)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallContext {
    /// The call's metadata (headers).
    pub metadata: Metadata,
    /// Who made the call.
    pub peer: Peer,
    /// When the method will be dropped, if the caller set a deadline.
    pub deadline: Option<Instant>,
    /// The call's response headers and trailers (what [`CallContext::set_header`] and
    /// [`CallContext::set_trailer`] set).
    pub response: ResponseMetadata,
}

impl CallContext {
    /// A context of these parts (generated servers make it from the request).
    pub fn new(metadata: Metadata, peer: Peer, deadline: Option<Instant>) -> Self {
        CallContext { metadata, peer, deadline, response: ResponseMetadata::default() }
    }

    /// The context with the call's response metadata handle (generated servers pass
    /// [`ServerRequest::response`]).
    pub fn with_response(mut self, response: ResponseMetadata) -> Self {
        self.response = response;
        self
    }

    /// Adds a response header (see [`ResponseMetadata::set_header`]).
    pub fn set_header(&self, key: &str, value: impl Into<bytes::Bytes>) -> Result<(), crate::MetadataError> {
        self.response.set_header(key, value)
    }

    /// Adds a trailer (see [`ResponseMetadata::set_trailer`]).
    pub fn set_trailer(&self, key: &str, value: impl Into<bytes::Bytes>) -> Result<(), crate::MetadataError> {
        self.response.set_trailer(key, value)
    }

    /// Sends the response headers now, ahead of the first message (see
    /// [`ResponseMetadata::send_headers`]).
    pub fn send_headers(&self) -> bool {
        self.response.send_headers()
    }
}

/// Who is at the other end of a call's connection. Displays as its address (`127.0.0.1:5000`),
/// `unix:PATH` for a Unix-socket peer, or `unknown`, followed by the certificate's subject for a
/// TLS peer that presented one (`127.0.0.1:5000 (CN=client-a)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// The peer's address, where the transport has one (TCP, io_uring; not the in-memory pipe).
    pub addr: Option<std::net::SocketAddr>,
    /// For a Unix-socket connection, the socket's path: the peer's own if it bound one, else
    /// the listening socket's (a client's socket is usually unnamed); empty when neither has a
    /// name (a socket pair). Shared, so that each call's copy costs no allocation.
    pub unix: Option<std::sync::Arc<std::path::Path>>,
    /// For a TLS connection (`transport::tls`), what the peer proved in the handshake:
    /// its certificate's subject and names, verified against the server's client root store
    /// (mutual TLS). `None` for a plaintext connection. Shared by every call of the connection.
    pub tls: Option<std::sync::Arc<crate::identity::TlsIdentity>>,
}

impl Peer {
    /// A peer at `addr`.
    pub fn at(addr: Option<std::net::SocketAddr>) -> Self {
        Peer { addr, unix: None, tls: None }
    }

    /// A peer over a Unix socket, named by `path` (see [`Peer::unix`]).
    pub fn unix(path: std::sync::Arc<std::path::Path>) -> Self {
        Peer { addr: None, unix: Some(path), tls: None }
    }

    /// This peer with the identity its TLS handshake proved (see [`Peer::tls`]).
    pub fn with_tls(mut self, identity: std::sync::Arc<crate::identity::TlsIdentity>) -> Self {
        self.tls = Some(identity);
        self
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.addr, &self.unix) {
            (Some(addr), _) => write!(f, "{addr}"),
            (None, Some(path)) if path.as_os_str().is_empty() => f.write_str("unix"),
            (None, Some(path)) => write!(f, "unix:{}", path.display()),
            (None, None) => f.write_str("unknown"),
        }?;
        match &self.tls {
            Some(id) if id.is_authenticated() => write!(f, " ({})", id.subject),
            _ => Ok(()),
        }
    }
}

/// Serves calls. Each call runs as its own task; the future is dropped when the caller
/// cancels, the deadline passes, or the connection ends.
pub trait Service: Send + Sync + 'static {
    /// Handles one call. Unknown methods answer [`Status::unimplemented`].
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>>;

    /// The service's name, for logs and errors (`#[service]`: the trait's name, with its
    /// package if it has one: `"store.v1.Store"`).
    fn name(&self) -> &'static str {
        "service"
    }

    /// Every method the service answers, as `(path, id)`: what routes a call to this service
    /// when a server has several ([`crate::ServerBuilder::add_service`]). `#[service]` lists
    /// them; the default lists none, which is enough for a service served alone.
    fn methods(&self) -> &'static [(&'static str, u32)] {
        &[]
    }
}

impl<S: Service + ?Sized> Service for std::sync::Arc<S> {
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        (**self).call(request)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn methods(&self) -> &'static [(&'static str, u32)] {
        (**self).methods()
    }
}
