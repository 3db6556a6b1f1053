//! A profiling loop for level 2's per-call path: an unchanged tonic echo service and client over
//! [`rpc_tonic::Server`] and [`rpc_tonic::Channel`] on loopback TCP, each side on its own thread
//! (a single-threaded runtime each), 128 unary calls of 64 bytes in flight, as the benchmark's
//! `qps_64b` does them. Run it under a profiler:
//!
//! ```text
//! cargo build --release -p rpc-tonic --example per_call
//! valgrind --tool=callgrind --separate-threads=yes target/release/examples/per_call 20000
//! ```

use std::time::Instant;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rpc_core::transport::tcp::TcpAcceptor;
use tonic::{Request, Response, Status, Streaming};

mod pb {
    tonic::include_proto!("zcrpc.echo");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::Blob;

struct Imp;

type Empty = futures::stream::Empty<Result<Blob, Status>>;

#[tonic::async_trait]
impl Echo for Imp {
    async fn unary(&self, r: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(r.into_inner()))
    }
    type ServerStreamStream = Empty;
    async fn server_stream(&self, _: Request<Blob>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn client_stream(&self, _: Request<Streaming<Blob>>) -> Result<Response<Blob>, Status> {
        Err(Status::unimplemented(""))
    }
    type BidiStream = Empty;
    async fn bidi(&self, _: Request<Streaming<Blob>>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(""))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

fn main() {
    let calls: usize = std::env::args().nth(1).map(|a| a.parse().expect("a number of calls")).unwrap_or(100_000);
    let window = 128;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.expect("bind");
            addr_tx.send(acceptor.local_addr().expect("an address")).expect("the client waits");
            let _server = rpc_tonic::Server::builder().add_service(EchoServer::new(Imp)).serve(acceptor);
            std::future::pending::<()>().await
        })
    });
    let addr = addr_rx.recv().expect("the server's address");
    let client = std::thread::spawn(move || {
        runtime().block_on(async move {
            let client = EchoClient::new(rpc_tonic::Channel::connect_tcp(addr).await.expect("connect"));
            let data = Bytes::from(vec![0xA5; 64]);
            let start = Instant::now();
            let mut in_flight = FuturesUnordered::new();
            let mut sent = 0;
            while sent < calls || !in_flight.is_empty() {
                while sent < calls && in_flight.len() < window {
                    let mut c = client.clone();
                    let data = data.clone();
                    in_flight.push(async move { c.unary(Blob { data }).await });
                    sent += 1;
                }
                let reply = in_flight.next().await.expect("a call in flight");
                assert_eq!(reply.expect("an echo").into_inner().data.len(), 64);
            }
            start.elapsed()
        })
    });
    let elapsed = client.join().expect("the client");
    println!("{calls} calls in {elapsed:?}: {:.0} calls/s", calls as f64 / elapsed.as_secs_f64());
}
