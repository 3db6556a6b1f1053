//! `tarpc`: tarpc 0.38 over its serde transport on TCP (length-delimited frames, bincode),
//! built from a `TcpStream` with `TCP_NODELAY` set, which `tarpc::serde_transport::tcp` does
//! not do. Only the frame length limit is raised, so that `call_64m` fits (default 8 MiB).

use std::net::SocketAddr;

use bytes::Bytes;
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tarpc::{client, context};
use tokio::net::TcpStream;

use crate::meter::{closed_loop, Meter, Sample, Timing};
use crate::placement::{current_thread_runtime, in_task, run_pair, Placement};
use crate::scenario::Shape;

const MAX_FRAME: usize = 128 << 20;

/// The benchmark service: a blob in, a blob out.
#[tarpc::service]
pub trait Bench {
    /// Answers every request with the server's response blob.
    async fn call(data: Bytes) -> Bytes;
}

#[derive(Clone, Debug)]
pub(crate) struct Echo {
    pub(crate) response: Bytes,
}

impl Bench for Echo {
    async fn call(self, _: context::Context, data: Bytes) -> Bytes {
        drop(data);
        self.response.clone()
    }
}

/// The framing `tarpc::serde_transport::tcp` uses, with the larger frame limit.
fn framed(stream: TcpStream) -> Framed<TcpStream, LengthDelimitedCodec> {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_framed(stream)
}

/// Runs one measurement of tarpc.
pub fn run(
    shape: Shape,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, String> {
    run_pair(
        placement,
        move |addr_tx| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string())?);
                let echo = Echo {
                    response: Bytes::from(vec![0xA5; shape.response_len]),
                };
                loop {
                    let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
                    let echo = echo.clone();
                    tokio::spawn(
                        BaseChannel::with_defaults(transport)
                            .execute(echo.serve())
                            .for_each(|response| async move {
                                tokio::spawn(response);
                            }),
                    );
                }
            })
        },
        move |addr: SocketAddr| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("tarpc connect: {e}"))?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let transport = tarpc::serde_transport::new(framed(stream), Bincode::default());
                measure_client(transport, shape, timing, record_latency).await
            })
        },
    )
}

/// The client side of a tarpc measurement over `transport`: the scenario's window of calls
/// in flight, each sending the request blob and dropping the answer.
pub(crate) async fn measure_client<T>(
    transport: T,
    shape: Shape,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, String>
where
    T: tarpc::Transport<tarpc::ClientMessage<BenchRequest>, tarpc::Response<BenchResponse>>
        + Send
        + 'static,
{
    // The calls run as a task, as an application's do ([`in_task`]).
    in_task(async move {
        let client = BenchClient::new(client::Config::default(), transport).spawn();
        let request = Bytes::from(vec![0xA5; shape.request_len]);
        let meter = Meter::new(timing, record_latency);
        let beside = Bytes::from(vec![0xA5; shape.beside_len]);
        closed_loop(shape, meter, |call| {
            let client = client.clone();
            let data = call.pick(&request, &beside);
            async move {
                let response = client.call(context::current(), data).await?;
                drop(response);
                Ok::<(), tarpc::client::RpcError>(())
            }
        })
        .await
    })
    .await
}
