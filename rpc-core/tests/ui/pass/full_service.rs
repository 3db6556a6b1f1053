//! Everything a service may use, compiled with warnings and missing docs denied: the
//! generated code must not add lints of its own to the user's crate.
#![deny(warnings, missing_docs, missing_debug_implementations)]

use rpc_core::{Payload, Sink, Source};
use serde::{Deserialize, Serialize};

/// The user's own type named `S`: must not clash with the server's type parameter.
#[derive(Debug, Serialize, Deserialize)]
pub struct S(pub u8);

/// An error.
#[derive(Debug, Serialize, Deserialize)]
pub struct E;

/// A one-argument alias of `Result`.
pub type Answer<T> = Result<T, E>;

/// A trait with a supertrait of its own.
pub trait Named {}

/// Docs on the trait are kept.
#[rpc_core::service]
pub trait Everything: Named {
    /// Attachment arguments around values.
    async fn put(&self, a: Payload, key: String, b: rpc_core::Payload, n: u64) -> Result<u64, E>;
    /// A user type named `S`, and argument names the generated code also uses.
    async fn user(&self, s: S, inner: u8, options: u8, request: u8, client: u8) -> S;
    /// Unit in a `Result`.
    async fn unit(&self) -> Result<(), E>;
    /// An attachment in a `Result`.
    async fn blob(&self) -> Result<Payload, E>;
    /// A one-argument `Result` alias is a plain, serialized value.
    async fn alias(&self) -> Answer<u8>;
    /// A raw identifier.
    async fn r#type(&self) -> u32;
    /// A pinned id.
    #[method(id = 0)]
    async fn zero(&self);
    /// No return type.
    async fn ping(&self);
    /// Server streaming, a user type named `S` as the item.
    async fn feed(&self, from: u64, out: rpc_core::Sink<S>) -> Result<(), E>;
    /// Client streaming, answering an attachment.
    async fn gather(&self, tag: Payload, items: Source<u8>) -> Payload;
    /// Bidirectional, the codec named, the stream ends first.
    async fn talk(&self, output: Sink<u8, rpc_core::codec::Postcard>, input: Source<S, rpc_core::codec::Postcard>, n: u8);
}

/// An implementation.
#[derive(Debug)]
pub struct Impl;

impl Named for Impl {}

impl Everything for Impl {
    async fn put(&self, a: Payload, _key: String, b: Payload, n: u64) -> Result<u64, E> {
        Ok((a.len() + b.len()) as u64 + n)
    }
    async fn user(&self, s: S, inner: u8, options: u8, request: u8, client: u8) -> S {
        S(s.0 + inner + options + request + client)
    }
    async fn unit(&self) -> Result<(), E> {
        Err(E)
    }
    async fn blob(&self) -> Result<Payload, E> {
        Ok(Payload::new())
    }
    async fn alias(&self) -> Answer<u8> {
        Ok(1)
    }
    async fn r#type(&self) -> u32 {
        1
    }
    async fn zero(&self) {}
    async fn ping(&self) {}
    async fn feed(&self, from: u64, mut out: Sink<S>) -> Result<(), E> {
        out.send(S(from as u8)).await.map_err(|_| E)
    }
    async fn gather(&self, tag: Payload, mut items: Source<u8>) -> Payload {
        while items.recv().await.is_some() {}
        tag
    }
    async fn talk(&self, _output: Sink<u8>, _input: Source<S>, _n: u8) {}
}

/// A service in a package.
#[rpc_core::service(package = "pkg.v1", codec = rpc_core::codec::Postcard)]
pub trait Packaged {
    /// A method.
    async fn ping(&self);
}

/// A private service in a function body.
fn local() {
    #[rpc_core::service]
    trait Local {
        async fn ping(&self);
    }
    let _ = LocalClient::PING;
}

/// An empty service is allowed.
#[rpc_core::service]
pub trait Empty {}

fn main() {
    local();
    assert_eq!(EverythingClient::ZERO, 0);
    assert_eq!(EverythingClient::TYPE, rpc_core_fnv("Everything/type"));
    assert_eq!(EmptyClient::METHODS.len(), 0);
    assert_eq!(EmptyClient::PATHS.len(), 0);
    assert_eq!(EmptyClient::path_of(0), None);
    assert_eq!(PackagedClient::PING, rpc_core_fnv("pkg.v1.Packaged/ping"));
    assert_eq!(PackagedClient::PING_PATH, "pkg.v1.Packaged/ping");
    assert_eq!(EverythingClient::FEED_PATH, "Everything/feed");
    assert_eq!(EverythingServer::<Impl>::path_of(EverythingClient::FEED), Some("Everything/feed"));
    let server = EverythingServer::new(Impl);
    let _clone = server.clone();
    let _ = format!("{server:?}");
    let _ = EmptyServer::from_arc(std::sync::Arc::new(EmptyImpl));
}

/// Client futures are `Send` (they can be spawned on a multi-threaded runtime), and the
/// server is a `Service`.
#[allow(dead_code)]
fn send_and_service(client: &EverythingClient) {
    fn assert_send<T: Send>(_: T) {}
    fn assert_service<T: rpc_core::Service + Clone + std::fmt::Debug>() {}
    assert_send(client.put(Payload::new(), String::new(), Payload::new(), 1));
    assert_send(client.blob());
    assert_send(client.ping());
    assert_send(client.feed(1));
    assert_send(client.gather(Payload::new()));
    assert_send(client.talk(1));
    assert_send(async {
        let (_items, answer) = client.gather(Payload::new()).await.unwrap();
        answer.await
    });
    assert_send(client.clone());
    assert_service::<EverythingServer<Impl>>();
}

/// An `Empty` implementation.
#[derive(Debug)]
pub struct EmptyImpl;
impl Empty for EmptyImpl {}

fn rpc_core_fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
