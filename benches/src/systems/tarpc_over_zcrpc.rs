//! `tarpc_over_zcrpc`: the `tarpc` system's service and client code unchanged, over
//! `rpc-tarpc` (small requests as messages of one zcrpc stream, large ones as zcrpc calls, on
//! rpc-core's tokio TCP transport, postcard) instead
//! of tarpc's serde transport. Only the two lines that make the transports differ from
//! [`super::tarpc`].

use std::net::SocketAddr;

use bytes::Bytes;
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};

use super::tarpc::{measure_client, BenchRequest, BenchResponse, Echo};
use crate::meter::{Sample, Timing};
use crate::placement::{current_thread_runtime, run_pair, Placement};
use crate::scenario::Shape;

/// Runs one measurement of tarpc over zcrpc.
pub fn run(
    shape: Shape,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, String> {
    use super::tarpc::Bench;
    run_pair(
        placement,
        move |addr_tx| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                let incoming = rpc_tarpc::listen::<BenchRequest, BenchResponse>("127.0.0.1:0")
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
                let transport = rpc_tarpc::connect(addr)
                    .await
                    .map_err(|e| format!("tarpc over zcrpc connect: {e}"))?;
                measure_client(transport, shape, timing, record_latency).await
            })
        },
    )
}
