//! Level 2 (message level, `rpc_tonic::Channel` and `rpc_tonic::Server`: no HTTP/2): every
//! gRPC interop case, over rpc-core's TCP transport and over the io_uring transport (skipped,
//! saying why, where the kernel refuses io_uring).

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig};
use rpc_tonic::interop::{self, InteropChannel, InteropService, Skip};
use rpc_tonic::{Channel, Server};
use transport_uring::{Backend, UringAcceptor, UringConfig};

/// The level-2 server of the interop service.
fn server(service: InteropService) -> Server {
    Server::builder().add_service(service)
}

/// Keeps the server serving until the test's runtime ends (dropping the handle stops it).
fn keep(handle: rpc_core::ServerHandle) {
    tokio::spawn(async move {
        let _handle = handle;
        std::future::pending::<()>().await
    });
}

/// Both sides over rpc-core's TCP transport.
async fn tcp(service: InteropService) -> Result<InteropChannel, Skip> {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.expect("bind");
    let addr = acceptor.local_addr().expect("local_addr");
    keep(server(service).serve(acceptor));
    Ok(interop::channel(Channel::connect_tcp(addr).await.expect("connect")))
}

/// Both sides over the io_uring transport.
async fn uring(service: InteropService) -> Result<InteropChannel, Skip> {
    let p = transport_uring::probe();
    if p.backend != Backend::Uring {
        return Err(Skip(format!("io_uring unavailable: {}", p.reason)));
    }
    let acceptor = UringAcceptor::bind("127.0.0.1:0", UringConfig::default()).await.expect("bind");
    let addr = acceptor.local_addr().expect("local_addr");
    keep(server(service).serve(acceptor));
    let client = Client::connect_with(move || transport_uring::connect(addr, UringConfig::default()), ClientConfig::default())
        .await
        .expect("connect");
    Ok(interop::channel(Channel::from_client(client)))
}

mod level2_tcp {
    rpc_tonic::interop_tests!(super::tcp);
}

mod level2_uring {
    rpc_tonic::interop_tests!(super::uring);
}
