//! `ResponseMetadata`: where a handler sets its call's response headers and trailers.

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::conn::MetadataKind;
use crate::driver::Shared;
use crate::server::{Responder, ServerSide};
use crate::metadata::{Metadata, MetadataError};

/// The response headers and trailers of one call, as its handler sets them: headers go to the
/// client with the first frame of the answer (the first stream message, or the only answer),
/// trailers with the last (the response, the error status, or the end of the stream). Cheap to
/// clone; every clone sets the same call's.
///
/// Each entry is checked as it is added: a key that is not printable ASCII, a block that would
/// be over the limit the client declared (`max_metadata_kib` in its hello), or a header added
/// after the headers went out is an error, and nothing is added. Once the call is over,
/// setting does nothing.
///
/// ```
/// use rpc_core::{Body, BoxFuture, ServerRequest, Service, Status};
///
/// struct Search;
/// impl Service for Search {
///     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
///         Box::pin(async move {
///             req.response.set_header("index-version", "7").map_err(|e| Status::invalid_argument(e.to_string()))?;
///             // ... the work ...
///             req.response.set_trailer("rows-scanned", "1200").map_err(|e| Status::invalid_argument(e.to_string()))?;
///             Ok(Body::message("results".into()))
///         })
///     }
/// }
/// ```
#[derive(Clone)]
pub struct ResponseMetadata {
    /// Where the entries go: the call's connection, or a [`Local`] store of the handle's own
    /// (a handle attached to no connection); `None` only for the placeholder the server binds
    /// before the handler runs.
    host: Option<Arc<dyn MetadataHost>>,
    /// The call's id on its connection.
    id: u64,
}

/// The store of a handle attached to no connection ([`crate::ServerRequest::new`], a default
/// context): what is set stays readable there.
#[derive(Default)]
struct Local(Mutex<(Metadata, Metadata)>);

impl MetadataHost for Local {
    fn set(&self, _id: u64, kind: MetadataKind, key: &str, value: Bytes) -> Result<(), MetadataError> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            MetadataKind::Headers => m.0.insert(key, value),
            MetadataKind::Trailers => m.1.insert(key, value),
        }
    }

    fn send_headers(&self, _id: u64) -> bool {
        false
    }

    fn get(&self, _id: u64, kind: MetadataKind) -> Metadata {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            MetadataKind::Headers => m.0.clone(),
            MetadataKind::Trailers => m.1.clone(),
        }
    }
}

/// A connection that holds calls' response metadata.
pub(crate) trait MetadataHost: Send + Sync + 'static {
    fn set(&self, id: u64, kind: MetadataKind, key: &str, value: Bytes) -> Result<(), MetadataError>;
    /// Sends the headers now, ahead of the answer; false when they do not go now.
    fn send_headers(&self, id: u64) -> bool;
    fn get(&self, id: u64, kind: MetadataKind) -> Metadata;
    /// The responder of call `id` ([`crate::ServerRequest::responder`]); none for a handle
    /// attached to no connection.
    fn responder(self: Arc<Self>, _id: u64) -> Option<Responder> {
        None
    }
}

impl MetadataHost for Shared<ServerSide> {
    fn set(&self, id: u64, kind: MetadataKind, key: &str, value: Bytes) -> Result<(), MetadataError> {
        // Nothing to dispatch: setting queues no frame and raises no event.
        self.lock().conn.set_response_metadata(id, kind, key, value)
    }

    fn send_headers(&self, id: u64) -> bool {
        // A frame to write: a step, which wakes the writer.
        self.step(|g| g.conn.send_response_headers(id))
    }

    fn get(&self, id: u64, kind: MetadataKind) -> Metadata {
        self.lock().conn.response_metadata(id, kind)
    }

    fn responder(self: Arc<Self>, id: u64) -> Option<Responder> {
        Responder::take(self, id)
    }
}

impl ResponseMetadata {
    /// The handle of call `id` on `host` (no allocation: the connection's `Arc` is cloned).
    pub(crate) fn bound(host: Arc<dyn MetadataHost>, id: u64) -> Self {
        ResponseMetadata { host: Some(host), id }
    }

    /// A placeholder, bound before the handler runs.
    pub(crate) fn unbound() -> Self {
        ResponseMetadata { host: None, id: 0 }
    }

    /// Adds a response header. Errors for an invalid key, headers over the client's limit, or
    /// headers that already went out (with the first message of a streaming answer).
    pub fn set_header(&self, key: &str, value: impl Into<Bytes>) -> Result<(), MetadataError> {
        self.set(MetadataKind::Headers, key, value.into())
    }

    /// Adds a trailer, sent at the end of the call: with the response, the error status, or
    /// the end of the stream. Errors for an invalid key or trailers over the client's limit.
    pub fn set_trailer(&self, key: &str, value: impl Into<Bytes>) -> Result<(), MetadataError> {
        self.set(MetadataKind::Trailers, key, value.into())
    }

    /// Sends the response headers set so far now, in a frame of their own, before the first
    /// message of the answer exists (empty headers when none were set): a client waiting in
    /// [`crate::StreamReceiver::response_headers`] learns that the call was taken, as a gRPC
    /// server sends its initial metadata. Later headers are refused
    /// ([`MetadataError::HeadersSent`]); trailers can still be set.
    ///
    /// True when they went now; false when they had gone already, the call is over, or the
    /// client is a peer that takes headers only with a message (they then go with the first
    /// frame of the answer, as without this call).
    ///
    /// ```
    /// use rpc_core::{Body, BoxFuture, ServerRequest, Service, Status};
    ///
    /// struct Subscribe;
    /// impl Service for Subscribe {
    ///     fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
    ///         Box::pin(async move {
    ///             let stream = req.stream.take().ok_or_else(|| Status::invalid_argument("a stream"))?;
    ///             req.response.set_header("subscription", "42").map_err(|e| Status::internal(e.to_string()))?;
    ///             req.response.send_headers(); // the client knows it is subscribed before any event
    ///             let (mut events, _) = stream.split();
    ///             // ... wait for the first event, then `events.send(..)` ...
    ///             # drop(&mut events);
    ///             Ok(Body::default())
    ///         })
    ///     }
    /// }
    /// ```
    pub fn send_headers(&self) -> bool {
        match &self.host {
            Some(host) => host.send_headers(self.id),
            None => false,
        }
    }

    /// The response headers set and not yet sent.
    pub fn headers(&self) -> Metadata {
        self.get(MetadataKind::Headers)
    }

    /// The trailers set and not yet sent.
    pub fn trailers(&self) -> Metadata {
        self.get(MetadataKind::Trailers)
    }

    fn set(&self, kind: MetadataKind, key: &str, value: Bytes) -> Result<(), MetadataError> {
        match &self.host {
            Some(host) => host.set(self.id, kind, key, value),
            None => Ok(()),
        }
    }

    /// The call's responder, if it is a call of a connection without one yet.
    pub(crate) fn responder(&self) -> Option<Responder> {
        self.host.clone()?.responder(self.id)
    }

    fn get(&self, kind: MetadataKind) -> Metadata {
        match &self.host {
            Some(host) => host.get(self.id, kind),
            None => Metadata::default(),
        }
    }
}

impl Default for ResponseMetadata {
    /// A handle of its own, attached to no call: what is set stays readable here.
    fn default() -> Self {
        ResponseMetadata { host: Some(Arc::new(Local::default())), id: 0 }
    }
}

impl fmt::Debug for ResponseMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseMetadata").field("call", &self.id).finish_non_exhaustive()
    }
}
