//! The client as a `tower::Service` of raw calls: [`Call`] in, the reply's [`Body`] out.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::body::Body;
use crate::client::{CallOptions, Client};
use crate::error::CallError;
use crate::metadata::MetadataError;
use crate::method::method_id;
use crate::service::BoxFuture;

/// One unary call as a tower request: the method (its id, and its path when it was named by
/// one), the body (encoded message and attachments), and the [`CallOptions`] — metadata,
/// timeout (the deadline the server sees), and whether it may be sent twice.
///
/// ```
/// use std::time::Duration;
/// use rpc_core::tower::Call;
/// use rpc_core::Body;
///
/// let call = Call::path("Store/get", Body::message("weights".into()))
///     .timeout(Duration::from_secs(1))
///     .idempotent()
///     .header("tenant", "a")
///     .unwrap();
/// assert_eq!(call.method, rpc_core::method_id("Store/get"));
/// assert_eq!(call.path, Some("Store/get"));
/// assert!(call.options.idempotent);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Call {
    /// The method's wire id ([`method_id`] of its path).
    pub method: u32,
    /// The method's path, when the call was made with [`Call::path`]: errors name it.
    pub path: Option<&'static str>,
    /// The request.
    pub body: Body,
    /// Timeout, metadata, idempotence.
    pub options: CallOptions,
}

impl Call {
    /// A call of the method with wire id `method`.
    pub fn new(method: u32, body: Body) -> Self {
        Call { method, path: None, body, options: CallOptions::default() }
    }

    /// A call of the method at `path` (`"store.v1.Store/get"`), whose id is [`method_id`]`(path)`.
    pub fn path(path: &'static str, body: Body) -> Self {
        Call { method: method_id(path), path: Some(path), body, options: CallOptions::default() }
    }

    /// The call with these options.
    pub fn with_options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }

    /// The call with a timeout: the server drops the handler when it passes, and the caller
    /// gets [`CallError::DeadlineExceeded`] (see [`CallOptions::timeout`]). Each attempt of a
    /// retried call gets the whole timeout; a `tower::timeout` layer above the retries bounds
    /// them all.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Marks the call safe to send twice: [`RetryPolicy`](super::RetryPolicy) retries it also
    /// when its connection was lost while it was in flight.
    pub fn idempotent(mut self) -> Self {
        self.options.idempotent = true;
        self
    }

    /// Adds a header (see [`CallOptions::header`]).
    pub fn header(mut self, key: &str, value: impl Into<Bytes>) -> Result<Self, MetadataError> {
        self.options.metadata.insert(key, value)?;
        Ok(self)
    }
}

/// A [`Client`] is a `tower::Service` of [`Call`]s, so that tower's layers (timeouts,
/// concurrency limits, retries, load shedding) wrap it. It is always ready: a call waits for
/// the connection (or a free slot of the server's in-flight limit) itself, within its timeout.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use rpc_core::tower::Call;
/// use rpc_core::{Body, BoxFuture, Client, ClientConfig, Server, ServerRequest, Status};
///
/// struct Echo;
/// impl rpc_core::Service for Echo {
///     fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
///         Box::pin(async move { Ok(req.body) })
///     }
/// }
///
/// let (a, b) = rpc_core::transport::mem::pair();
/// tokio::spawn(Server::builder().build(Echo).serve_connection(b));
/// let client = Client::connect(a, ClientConfig::default()).await.unwrap();
///
/// let mut svc = ServiceBuilder::new()
///     .timeout(Duration::from_secs(5))
///     .concurrency_limit(64)
///     .service(client);
/// let reply = svc.ready().await.unwrap().call(Call::path("Echo/echo", Body::message("hi".into()))).await.unwrap();
/// assert_eq!(&reply.message[..], b"hi");
/// # });
/// ```
impl ::tower::Service<Call> for Client {
    type Response = Body;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<Body, CallError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let client = self.clone();
        Box::pin(async move {
            let result = client.call(call.method, call.body, call.options).await;
            match call.path {
                Some(path) => result.map_err(|e| e.for_method(path)),
                None => result,
            }
        })
    }
}
