//! `tonic_over_zcrpc`: the `tonic` system's `.proto`, generated code, service and client
//! unchanged, over `rpc-tonic`'s level 2 (each gRPC call a zcrpc call, its bodies' chunks
//! stream messages, the 1 MiB blobs as attachments; no HTTP/2) on transport-uring with its default
//! configuration. Only the lines that make the channel and serve the service differ from
//! [`super::tonic`].

use std::net::SocketAddr;

use transport_uring::UringAcceptor;

use super::tonic::pb::bench_server::BenchServer;
use super::tonic::{measure_client, Echo, MAX_MESSAGE};
use super::NoResult;
use crate::meter::{Sample, Timing};
use crate::placement::{current_thread_runtime, run_pair, Placement};
use crate::scenario::{Shape, System};

/// Runs one measurement of tonic over zcrpc.
pub fn run(
    shape: Shape,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, NoResult> {
    let config = super::zcrpc::uring_config(System::ZcrpcUring);
    if let Some(why) = super::zcrpc::unavailable(config.backend) {
        return Err(NoResult::Unavailable(why));
    }
    let server_config = config.clone();
    run_pair(
        placement,
        move |addr_tx| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                let acceptor = UringAcceptor::bind("127.0.0.1:0", server_config)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = addr_tx.send(acceptor.local_addr().map_err(|e| e.to_string())?);
                let service = BenchServer::new(Echo::new(shape.response_len))
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                // Was: tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming)
                let _handle = rpc_tonic::Server::builder()
                    .add_service(service)
                    .serve(acceptor);
                std::future::pending::<Result<(), String>>().await
            })
        },
        move |addr: SocketAddr| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                // Was: Endpoint::from_shared(format!("http://{addr}"))?.connect().await?
                let transport = transport_uring::connect(addr, config)
                    .await
                    .map_err(|e| e.to_string())?;
                let client = rpc_core::Client::connect(transport, rpc_core::ClientConfig::default())
                    .await
                    .map_err(|e| format!("tonic over zcrpc connect: {e}"))?;
                let channel = rpc_tonic::Channel::from_client(client);
                measure_client(channel, shape, timing, record_latency).await
            })
        },
    )
    .map_err(NoResult::Failed)
}
