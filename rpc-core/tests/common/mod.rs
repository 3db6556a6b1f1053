//! Services and helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{Body, BoxFuture, Bytes, Code, ServerRequest, Service, Status};

/// Method ids of [`TestService`].
pub const ECHO: u32 = 1;
pub const SLEEP_MS: u32 = 2;
pub const PANIC: u32 = 3;
pub const FAIL: u32 = 4;

/// Counts handlers that started and handlers whose future was dropped unfinished.
#[derive(Default, Debug)]
pub struct Probe {
    pub started: AtomicUsize,
    pub dropped_unfinished: AtomicUsize,
    pub finished: AtomicUsize,
}

/// Echo, sleep, panic and fail: enough to exercise the framework.
#[derive(Clone, Default)]
pub struct TestService {
    pub probe: Arc<Probe>,
}

struct DropFlag {
    probe: Arc<Probe>,
    done: bool,
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.done {
            self.probe.dropped_unfinished.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service for TestService {
    fn call(&self, req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let probe = self.probe.clone();
        Box::pin(async move {
            probe.started.fetch_add(1, Ordering::SeqCst);
            let mut flag = DropFlag { probe: probe.clone(), done: false };
            let r = match req.method {
                ECHO => Ok(req.body),
                SLEEP_MS => {
                    let ms = u64::from_le_bytes(req.body.message[..8].try_into().unwrap());
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Body::message(Bytes::from_static(b"slept")))
                }
                PANIC => panic!("handler exploded"),
                FAIL => Err(Status::new(Code::INVALID_ARGUMENT, "bad thing")),
                m => Err(Status::unimplemented(m)),
            };
            flag.done = true;
            probe.finished.fetch_add(1, Ordering::SeqCst);
            r
        })
    }
}

pub fn sleep_body(ms: u64) -> Body {
    Body::message(Bytes::copy_from_slice(&ms.to_le_bytes()))
}

/// A deterministic, non-repeating-looking pattern so misplaced bytes are caught.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed).collect::<Vec<u8>>().into()
}

/// Waits until `f` holds, up to 5 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

/// A client of `server` over `transport`: "mem" (an in-memory pair, the server on a task of its
/// own) or "tcp" (loopback; the server runs for the rest of the test process).
pub async fn client_over(server: rpc_core::Server, transport: &str) -> rpc_core::Client {
    use rpc_core::transport::{mem, tcp::TcpAcceptor};
    use rpc_core::{Client, ClientConfig};
    match transport {
        "mem" => {
            let (a, b) = mem::pair();
            tokio::spawn(server.serve_connection(b));
            Client::connect(a, ClientConfig::default()).await.unwrap()
        }
        _ => {
            let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            std::mem::forget(server.serve(acceptor));
            Client::connect_tcp(addr, ClientConfig::default()).await.unwrap()
        }
    }
}
