//! Several services on one server: each request goes to the service that owns its method id,
//! looked up in a map built once, when the server is built.

use std::collections::HashMap;
use std::sync::Arc;

use crate::body::Body;
use crate::code::Code;
use crate::error::Status;
use crate::service::{BoxFuture, ServerRequest, Service};

/// Why the services given to [`crate::ServerBuilder::add_service`] cannot share a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// Two services answer the same method id: the same path in both (one service added
    /// twice, or two traits of one name and package), or two paths whose ids collide (a pinned
    /// `#[method(id = N)]`, or an FNV-1a collision).
    #[error(
        "services {first_service} and {second_service} both claim method id {id:#010x} \
         ({first_path:?} and {second_path:?}): each method must belong to one service; \
         give one of the traits a package (#[service(package = \"...\")]) or another id"
    )]
    Duplicate {
        /// The contested id.
        id: u32,
        /// The service that claimed it first (its [`Service::name`]).
        first_service: &'static str,
        /// Its path there.
        first_path: &'static str,
        /// The service that claimed it again.
        second_service: &'static str,
        /// Its path there.
        second_path: &'static str,
    },
    /// A service among several lists no methods ([`Service::methods`]), so no call can be
    /// routed to it.
    #[error(
        "service {0} lists no methods (Service::methods), so no call can be routed to it among \
         several services: serve it alone, or implement Service::methods"
    )]
    NoMethods(&'static str),
    /// The builder was given no service.
    #[error("no service to serve: add one with ServerBuilder::add_service")]
    Empty,
}

/// The services of one server and which one owns each method id.
pub(crate) struct Router {
    services: Vec<Arc<dyn Service>>,
    owner: HashMap<u32, usize>,
    /// The services' names, for the "unknown method" answer.
    serves: String,
}

impl Router {
    /// Maps every method of `services` to its service, refusing two claims on one id.
    pub(crate) fn new(services: Vec<Arc<dyn Service>>) -> Result<Router, RouteError> {
        let mut owner: HashMap<u32, usize> = HashMap::new();
        for (i, service) in services.iter().enumerate() {
            let methods = service.methods();
            if methods.is_empty() {
                return Err(RouteError::NoMethods(service.name()));
            }
            for &(path, id) in methods {
                if let Some(&first) = owner.get(&id) {
                    let first_path =
                        services[first].methods().iter().find(|(_, fid)| *fid == id).map_or("?", |(p, _)| *p);
                    return Err(RouteError::Duplicate {
                        id,
                        first_service: services[first].name(),
                        first_path,
                        second_service: service.name(),
                        second_path: path,
                    });
                }
                owner.insert(id, i);
            }
        }
        let serves = services.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ");
        Ok(Router { services, owner, serves })
    }
}

impl Service for Router {
    fn call(&self, request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        match self.owner.get(&request.method) {
            Some(&i) => self.services[i].call(request),
            None => {
                // Requests carry the id alone; the client's generated code puts the path it
                // asked for (and so the missing service's name) in front of this message.
                let message =
                    format!("unknown method id {:#010x}: no service here has it (this server serves {})", request.method, self.serves);
                Box::pin(std::future::ready(Err(Status::new(Code::UNIMPLEMENTED, message))))
            }
        }
    }

    fn name(&self) -> &'static str {
        "several services"
    }
}
