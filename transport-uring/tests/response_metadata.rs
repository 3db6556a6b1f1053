//! Response headers and trailers over io_uring, both ends: beside a unary reply, around a
//! server stream with large attachments, and with an error status.

mod common;

use bytes::Bytes;
use common::*;
use rpc_core::{
    Body, BoxFuture, CallMode, CallOptions, Client, ClientConfig, Code, Payload, Server, ServerRequest, Service, Status,
};
use transport_uring::{Backend, UringAcceptor, UringConfig};

/// 1: echo with a header and a trailer; 2: three 1 MiB messages between them; 3: an error
/// with a trailer.
struct Tagged;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::new(Code::INTERNAL, e.to_string())
}

impl Service for Tagged {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        Box::pin(async move {
            let r = req.response.clone();
            r.set_header("server", "uring").map_err(internal)?;
            match req.method {
                1 => {
                    r.set_trailer("n", "1").map_err(internal)?;
                    Ok(req.body)
                }
                2 => {
                    let (mut tx, _rx) = req.stream.take().expect("streaming").split();
                    for i in 0..3u8 {
                        let data = Payload::from(Bytes::from(pattern(1 << 20, i)));
                        tx.send(Body::new(Bytes::from(vec![i]), vec![data])).await.map_err(internal)?;
                    }
                    r.set_trailer("n", "3").map_err(internal)?;
                    Ok(Body::default())
                }
                _ => {
                    r.set_trailer("why", "asked to fail").map_err(internal)?;
                    Err(Status::new(Code::INVALID_ARGUMENT, "failing"))
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_metadata_over_io_uring() {
    init_tracing();
    if !require(Backend::Uring) {
        return;
    }
    let cfg = UringConfig { backend: Backend::Uring, ..UringConfig::default() };
    let acceptor = UringAcceptor::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(Tagged).serve(acceptor);
    let client = Client::connect(transport_uring::connect(addr, cfg).await.unwrap(), ClientConfig::default()).await.unwrap();

    let reply = client.call_with_metadata(1, Body::message("hi".into()), CallOptions::default()).await;
    assert_eq!(&reply.result.unwrap().message[..], b"hi");
    assert_eq!((reply.headers.get_str("server"), reply.trailers.get_str("n")), (Some("uring"), Some("1")));

    let (_, mut rx) = client.open(2, Body::default(), CallMode::SERVER_STREAMING, CallOptions::default()).await.unwrap().split();
    let mut i = 0u8;
    while let Some(m) = rx.recv().await {
        let m = m.unwrap();
        assert_eq!(m.attachments[0].to_bytes(), pattern(1 << 20, i), "message {i} intact after the headers");
        assert_eq!(rx.headers().and_then(|h| h.get_str("server")), Some("uring"));
        i += 1;
    }
    assert_eq!((i, rx.trailers().and_then(|t| t.get_str("n"))), (3, Some("3")));

    let reply = client.call_with_metadata(3, Body::default(), CallOptions::default()).await;
    assert_eq!(reply.result.unwrap_err().code(), Code::INVALID_ARGUMENT);
    assert_eq!(reply.trailers.get_str("why"), Some("asked to fail"));
    handle.shutdown().await;
}
