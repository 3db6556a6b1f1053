//! `tarpc_over_zcrpc`: the `tarpc` system's service and client code unchanged, over
//! `rpc-tarpc` (small requests as messages of one zcrpc stream, large ones as zcrpc calls,
//! postcard) on transport-uring with its default configuration (`rpc_tarpc::uring`), as
//! `tonic_over_zcrpc` runs, instead of tarpc's serde transport. Only the two lines that make
//! the transports differ from [`super::tarpc`]. (`rpc_tarpc::listen` and `connect` use
//! rpc-core's tokio TCP transport instead; the engine's receiver wakes once per megabyte of a
//! large frame rather than per segment, which on loopback spares the sender the wake-ups:
//! `download_1m` about 25% faster.)

use std::net::SocketAddr;

use bytes::Bytes;
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};

use super::tarpc::{measure_client, BenchRequest, BenchResponse, Echo};
use super::NoResult;
use crate::meter::{Sample, Timing};
use crate::placement::{current_thread_runtime, run_pair, Placement};
use crate::scenario::{Shape, System};

/// Runs one measurement of tarpc over zcrpc.
pub fn run(
    shape: Shape,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, NoResult> {
    use super::tarpc::Bench;
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
                // Was: tarpc::serde_transport::tcp::listen(addr, Bincode::default)
                let incoming = rpc_tarpc::uring::listen::<BenchRequest, BenchResponse>("127.0.0.1:0", server_config)
                    .await
                    .map_err(|e| e.to_string())?;
                let addr = incoming.local_addr().ok_or("no local address")?;
                let _ = addr_tx.send(addr);
                let echo = Echo {
                    response: Bytes::from(vec![0xA5; shape.response_len]),
                };
                incoming
                    .filter_map(|r| async { r.ok() })
                    .for_each(|transport| {
                        let echo = echo.clone();
                        async move {
                            tokio::spawn(
                                BaseChannel::with_defaults(transport)
                                    .execute(echo.serve())
                                    .for_each(|response| async move {
                                        tokio::spawn(response);
                                    }),
                            );
                        }
                    })
                    .await;
                Ok(())
            })
        },
        move |addr: SocketAddr| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                // Was: tarpc::serde_transport::tcp::connect(addr, Bincode::default)
                let transport = rpc_tarpc::uring::connect(addr, config)
                    .await
                    .map_err(|e| format!("tarpc over zcrpc connect: {e}"))?;
                measure_client(transport, shape, timing, record_latency).await
            })
        },
    )
    .map_err(NoResult::Failed)
}
