//! `ServerBuilder::authorize` on a plaintext transport: a hook that refuses calls by method path
//! and metadata (a token), across several services, for unary and streaming calls — the
//! refused handler never runs, and the caller gets the hook's status; and a connection served
//! with a service of its own (`Server::serve_connection_with`) goes through the same hook.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{CallInfo, CallOptions, Client, ClientConfig, Code, Server, Sink, Status};

#[rpc_core::service(package = "shop.v1")]
pub trait Catalog {
    async fn list(&self) -> Vec<String>;
    async fn watch(&self, out: Sink<String>);
}

#[rpc_core::service(package = "shop.v1")]
pub trait Admin {
    async fn reset(&self) -> u32;
}

#[derive(Clone, Default)]
struct Impl(Arc<AtomicUsize>);

impl Catalog for Impl {
    async fn list(&self) -> Vec<String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        vec!["tea".into()]
    }
    async fn watch(&self, mut out: Sink<String>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        let _ = out.send("tea".into()).await;
    }
}

impl Admin for Impl {
    async fn reset(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst);
        7
    }
}

/// Everything needs a token; `shop.v1.Admin/*` and `watch` need the admin one.
fn policy(call: &CallInfo<'_>) -> Result<(), Status> {
    let token = call.metadata.get("token").map(|v| v.as_ref());
    let admin_only = matches!(call.path, Some(p) if p.starts_with("shop.v1.Admin/") || p == CatalogClient::WATCH_PATH);
    match token {
        None => Err(Status::unauthenticated("no token")),
        Some(b"admin") => Ok(()),
        Some(_) if admin_only => Err(Status::permission_denied(format!("{} is for admins", call.path.unwrap_or("?")))),
        Some(_) => Ok(()),
    }
}

#[tokio::test]
async fn the_hook_refuses_by_path_and_token_before_any_handler_runs() {
    let ran = Impl::default();
    let server = Server::builder()
        .authorize(policy)
        .add_service(CatalogServer::new(ran.clone()))
        .add_service(AdminServer::new(ran.clone()))
        .try_build()
        .unwrap();
    let (a, b) = rpc_core::transport::mem::pair();
    tokio::spawn(server.serve_connection(b));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    let with = |token: &str| CallOptions::default().header("token", token.to_owned()).unwrap();

    let anonymous = CatalogClient::new(client.clone());
    let e = anonymous.list().await.unwrap_err();
    assert_eq!(e.code(), Code::UNAUTHENTICATED, "{e}");

    let user = CatalogClient::new(client.clone()).with_options(with("user"));
    assert_eq!(user.list().await.unwrap(), vec!["tea".to_string()]);
    let e = AdminClient::new(client.clone()).with_options(with("user")).reset().await.unwrap_err();
    assert_eq!(e.code(), Code::PERMISSION_DENIED, "{e}");
    assert!(e.to_string().contains("shop.v1.Admin/reset is for admins"), "{e}");

    // A streaming call is refused the same way: its stream ends with the status.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        match user.watch().await {
            Err(e) => e,
            Ok(mut items) => items.recv().await.expect("an error, not a clean end").unwrap_err(),
        }
    })
    .await
    .unwrap();
    assert_eq!(refused.code(), Code::PERMISSION_DENIED, "{refused}");
    assert_eq!(ran.0.load(Ordering::SeqCst), 1, "only the allowed call ran");

    let admin = AdminClient::new(client.clone()).with_options(with("admin"));
    assert_eq!(admin.reset().await.unwrap(), 7);
    let mut items = CatalogClient::new(client).with_options(with("admin")).watch().await.unwrap();
    assert_eq!(items.recv().await.unwrap().unwrap(), "tea");
    assert_eq!(ran.0.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_connection_served_with_its_own_service_goes_through_the_servers_hook_and_stops_alone() {
    let (own, other) = (Impl::default(), Impl::default());
    let server = Server::builder().authorize(policy).build(AdminServer::new(other.clone()));
    let (a, b) = rpc_core::transport::mem::pair();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.clone().serve_connection_with(b, AdminServer::new(own.clone()), async move {
        let _ = stopped.await;
    }));
    let client = Client::connect(a, ClientConfig::default()).await.unwrap();
    let with = |token: &str| CallOptions::default().header("token", token.to_owned()).unwrap();

    // The hook knows the connection's service's paths, and refuses before it runs.
    let e = AdminClient::new(client.clone()).with_options(with("user")).reset().await.unwrap_err();
    assert_eq!(e.code(), Code::PERMISSION_DENIED, "{e}");
    assert!(e.to_string().contains("shop.v1.Admin/reset is for admins"), "{e}");
    assert_eq!(AdminClient::new(client.clone()).with_options(with("admin")).reset().await.unwrap(), 7);
    assert_eq!((own.0.load(Ordering::SeqCst), other.0.load(Ordering::SeqCst)), (1, 0), "the connection's own service ran");

    // A second connection, served as usual, is not touched by the first one's stop.
    let (c, d) = rpc_core::transport::mem::pair();
    tokio::spawn(server.clone().serve_connection(d));
    let second = AdminClient::new(Client::connect(c, ClientConfig::default()).await.unwrap()).with_options(with("admin"));
    assert_eq!(server.connections(), 2);
    drop(stop);
    tokio::time::timeout(Duration::from_secs(10), serving).await.expect("the stopped connection still served").unwrap();
    assert_eq!(server.connections(), 1);
    assert_eq!(second.reset().await.unwrap(), 7);
    assert_eq!(other.0.load(Ordering::SeqCst), 1, "the server's service serves the other connection");
}
