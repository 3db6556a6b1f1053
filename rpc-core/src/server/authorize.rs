//! Per-method authorization: a hook that sees each call's method, peer and metadata before its
//! handler runs, and may refuse it with a status ([`crate::ServerBuilder::authorize`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::body::Body;
use crate::error::Status;
use crate::metadata::Metadata;
use crate::service::{BoxFuture, Peer, ServerRequest, Service};

/// What an authorization hook knows of a call: everything but its arguments.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CallInfo<'a> {
    /// The method id.
    pub method: u32,
    /// The method's path (`"Store/put"`), when the served services list it
    /// ([`Service::methods`]; `#[service]` does); `None` for a method no service has (it is
    /// answered `UNIMPLEMENTED` if the hook lets it through).
    pub path: Option<&'static str>,
    /// Who called: the address and, over TLS, the verified certificate ([`Peer::tls`]).
    pub peer: &'a Peer,
    /// The call's headers (a token, a tenant).
    pub metadata: &'a Metadata,
}

/// The hook's type.
pub(crate) type Hook = Arc<dyn Fn(&CallInfo<'_>) -> Result<(), Status> + Send + Sync>;

/// The served service behind the hook: a refused call never reaches it.
pub(crate) struct Authorized {
    inner: Arc<dyn Service>,
    hook: Hook,
    paths: HashMap<u32, &'static str>,
}

impl Authorized {
    pub(crate) fn new(inner: Arc<dyn Service>, hook: Hook, methods: &[(&'static str, u32)]) -> Self {
        let paths = methods.iter().map(|&(path, id)| (id, path)).collect();
        Authorized { inner, hook, paths }
    }
}

impl Service for Authorized {
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let info = CallInfo {
            method: request.method,
            path: self.paths.get(&request.method).copied(),
            peer: &request.peer,
            metadata: &request.metadata,
        };
        match (self.hook)(&info) {
            Ok(()) => self.inner.call(request),
            Err(status) => {
                tracing::debug!(peer = %request.peer, method = info.path.unwrap_or("?"), "call refused: {status}");
                Box::pin(std::future::ready(Err(status)))
            }
        }
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn methods(&self) -> &'static [(&'static str, u32)] {
        self.inner.methods()
    }
}
