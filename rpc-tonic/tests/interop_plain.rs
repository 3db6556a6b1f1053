//! The gRPC interoperability cases over plain tonic (h2 over TCP on loopback, both sides
//! tonic's own transport): proves the suite itself (`rpc_tonic::interop`) before it judges
//! the other levels.

use rpc_tonic::interop::{self, InteropChannel, InteropService, Skip};
use tokio_stream::wrappers::TcpListenerStream;

/// Serves with `tonic::transport::Server` on a loopback port, connects a
/// `tonic::transport::Channel`.
async fn plain(service: InteropService) -> Result<InteropChannel, Skip> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Ok(interop::channel(channel))
}

rpc_tonic::interop_tests!(plain);
