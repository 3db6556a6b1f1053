//! The four zcrpc systems: the raw [`rpc_core::Service`] trait on the server (no macro, no
//! codec: the benchmark moves bytes), [`rpc_core::Client::call`] on the client. Messages up
//! to `ATTACH_FROM` bytes travel as the call's message, larger ones as one attachment
//! (a [`Payload`] of the scenario's segment count), as an application would send them.
//!
//! The streaming scenarios open one server-streaming call ([`Client::open`] with
//! [`CallMode::SERVER_STREAMING`]); the handler sends the same response body into the call's
//! [`rpc_core::StreamSender`] for as long as the client reads (`send_all` of an endless
//! iterator: one connection step per 256 messages), each message waiting for credit
//! as flow control says (the default 4 MiB window), and the client reads with
//! [`rpc_core::StreamReceiver::recv`].

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use rpc_core::transport::{tcp, Acceptor, Transport};
use rpc_core::{
    Body, BoxFuture, CallMode, CallOptions, Client, ClientConfig, FileRegion, MessageRef, Payload, Server,
    ServerRequest, Service, Status,
};

use transport_uring::{Backend, RecvMode, UringAcceptor, UringConfig, ZcMode};

use crate::meter::{closed_loop, Meter, Sample, StreamCounter, Timing};
use crate::placement::{current_thread_runtime, in_task, run_pair, Placement};
use crate::scenario::{Scenario, Shape, System};
use crate::systems::NoResult;

/// Bodies from this size on go as an attachment rather than inline in the message.
const ATTACH_FROM: usize = 4096;
const METHOD: u32 = 1;
/// The server-streaming method of the streaming scenarios (the service answers any id).
const STREAM_METHOD: u32 = 2;

/// A body of `len` bytes cut into `segments` pieces.
fn body(len: usize, segments: usize) -> Body {
    let data = Bytes::from(vec![0xA5u8; len]);
    if len < ATTACH_FROM {
        return Body::message(data);
    }
    let segments = segments.max(1);
    let step = len.div_ceil(segments);
    let payload: Payload = (0..len)
        .step_by(step)
        .map(|at| data.slice(at..(at + step).min(len)))
        .collect();
    Body::new(Bytes::new(), vec![payload])
}

/// Both ends' transport counters after a run.
#[derive(Debug, serde::Serialize)]
pub(crate) struct TransportReport {
    pub(crate) client: rpc_core::StatsSnapshot,
    pub(crate) server: rpc_core::StatsSnapshot,
}

/// Answers every unary call with the same response body, and every streaming call with that
/// body over and over until the call is over; with a `file`, every streaming call with its
/// regions of the response's length, start to end, over and over (`file_1g`).
#[derive(Debug)]
struct Echo {
    response: Body,
    file: Option<FileRegion>,
}

impl Service for Echo {
    fn call(&self, mut request: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        let stream = request.stream.take();
        drop(request);
        let response = self.response.clone();
        let file = self.file.clone();
        match stream {
            Some(stream) if file.is_some() => Box::pin(async move {
                let (mut sender, _receiver) = stream.split();
                let Some(file) = file else { return Ok(Body::default()) };
                let chunk = response.len() as usize;
                let chunks = file.len() / chunk;
                let regions = (0..).map_while(move |i| {
                    let region = file.slice((i % chunks.max(1)) * chunk, chunk)?;
                    Some(Body::new(Bytes::new(), vec![Payload::from(region)]))
                });
                let _ = sender.send_all(regions).await;
                Ok(Body::default())
            }),
            None => Box::pin(async move { Ok(response) }),
            Some(stream) => Box::pin(async move {
                let (mut sender, _receiver) = stream.split();
                // Ends when the client goes (the child process exits after the measurement).
                // `send_all_lent` of an endless iterator: one connection step per 256 messages,
                // as tonic's handler returns an always-ready stream; the handler lends the body
                // it keeps, where tonic's API takes each message owned (a clone of its `Bytes`).
                let _ = sender.send_all_lent(std::iter::repeat(&response)).await;
                Ok(Body::default())
            }),
        }
    }

    fn name(&self) -> &'static str {
        "bench.Echo"
    }
}

/// The first byte of a message, from its encoded part or else its first attachment.
fn first_byte(message: MessageRef<'_>) -> Option<u8> {
    match message.message.first() {
        Some(&b) => Some(b),
        None => message.attachments.first()?.chunks().next()?.first().copied(),
    }
}

/// Opens one server-streaming call and reads it, checking each message's length and first byte,
/// until the meter says stop.
async fn read_stream(client: &Client, shape: Shape, meter: Meter) -> Result<Sample, String> {
    let call = client
        .open(
            STREAM_METHOD,
            body(shape.request_len, 1),
            CallMode::SERVER_STREAMING,
            CallOptions::default(),
        )
        .await
        .map_err(|e| format!("zcrpc open: {e}"))?;
    // The sender stays alive with the call: the request side is not ended early.
    let (_sender, mut receiver) = call.split();
    let mut counter = StreamCounter::new(meter, shape.response_len);
    loop {
        // Lent: a small message is read where it lies in its batch (no `Bytes` of its own).
        let message = match receiver.recv_ref().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(format!("zcrpc stream: {e}")),
            None => return Err("zcrpc stream ended".to_string()),
        };
        if message.len() != shape.response_len as u64 || first_byte(message) != Some(0xA5) {
            return Err(format!("zcrpc stream: a message of {} bytes", message.len()));
        }
        if !counter.add(1) {
            return Ok(counter.finish());
        }
    }
}

/// Runs one measurement of a zcrpc system.
pub fn run(
    system: System,
    scenario: Scenario,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, NoResult> {
    let shape = scenario.shape();
    let file = match scenario {
        Scenario::File1g => Some(
            crate::systems::file::generated_file()
                .and_then(|p| FileRegion::open(&p).map_err(|e| format!("{}: {e}", p.display())))
                .map_err(NoResult::Failed)?,
        ),
        _ => None,
    };
    match system {
        System::ZcrpcTcp => measure(
            shape,
            file,
            placement,
            timing,
            record_latency,
            || async {
                tcp::TcpAcceptor::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| e.to_string())
            },
            |a: &tcp::TcpAcceptor| a.local_addr().map_err(|e| e.to_string()),
            |addr| async move { tcp::connect(addr).await.map_err(|e| e.to_string()) },
        )
        .map_err(NoResult::Failed),
        System::ZcrpcTcpTls => {
            use rpc_core::transport::tls::{self, TlsAcceptor};
            let (server, client) = tls_configs()?;
            let client = client
                .rustls()
                .map_err(|e| NoResult::Failed(e.to_string()))?;
            measure(
                shape,
                file,
                placement,
                timing,
                record_latency,
                move || async move {
                    let tcp = tcp::TcpAcceptor::bind("127.0.0.1:0")
                        .await
                        .map_err(|e| e.to_string())?;
                    TlsAcceptor::new(tcp, server).map_err(|e| e.to_string())
                },
                |a: &TlsAcceptor| a.local_addr().map_err(|e| e.to_string()),
                move |addr| async move {
                    tls::connect(addr, super::tls::SERVER_NAME, client)
                        .await
                        .map_err(|e| e.to_string())
                },
            )
            .map_err(NoResult::Failed)
        }
        System::ZcrpcUringTls => {
            use transport_uring::tls::{UringTlsAcceptor, UringTlsConnector};
            if let Some(why) = unavailable(Backend::Uring) {
                return Err(NoResult::Unavailable(why));
            }
            let (server, client) = tls_configs()?;
            let config = uring_config(System::ZcrpcUring);
            let server_config = config.clone();
            measure(
                shape,
                file,
                placement,
                timing,
                record_latency,
                move || async move {
                    UringTlsAcceptor::bind("127.0.0.1:0", server, server_config)
                        .await
                        .map_err(|e| e.to_string())
                },
                |a: &UringTlsAcceptor| a.local_addr().map_err(|e| e.to_string()),
                move |addr| async move {
                    UringTlsConnector::new(&client, config)
                        .map_err(|e| e.to_string())?
                        .connect(addr, super::tls::SERVER_NAME)
                        .await
                        .map_err(|e| e.to_string())
                },
            )
            .map_err(NoResult::Failed)
        }
        System::ZcrpcUring | System::ZcrpcUringZc | System::ZcrpcMsgzc => {
            let config = uring_config(system);
            let wanted = config.backend;
            // The transport falls back (and logs) when the kernel refuses a backend; a
            // fallen-back run would be another system's number under this one's name.
            if let Some(why) = unavailable(wanted) {
                return Err(NoResult::Unavailable(why));
            }
            let server_config = config.clone();
            measure(
                shape,
                file,
                placement,
                timing,
                record_latency,
                move || async move {
                    UringAcceptor::bind("127.0.0.1:0", server_config)
                        .await
                        .map_err(|e| e.to_string())
                },
                |a: &UringAcceptor| a.local_addr().map_err(|e| e.to_string()),
                move |addr| async move {
                    let t = transport_uring::connect(addr, config)
                        .await
                        .map_err(|e| e.to_string())?;
                    if t.backend() != wanted {
                        return Err(format!(
                            "asked for {wanted}, the transport chose {}",
                            t.backend()
                        ));
                    }
                    Ok(t)
                },
            )
            .map_err(NoResult::Failed)
        }
        other => Err(NoResult::Failed(format!("{other} is not a zcrpc system"))),
    }
}

/// The TLS systems' configurations: a server certificate made now, and a client trusting its CA.
fn tls_configs() -> Result<
    (
        rpc_core::transport::tls::TlsServerConfig,
        rpc_core::transport::tls::TlsClientConfig,
    ),
    NoResult,
> {
    use rpc_core::transport::tls::{TlsClientConfig, TlsServerConfig};
    let certs = super::tls::Certs::generate().map_err(NoResult::Failed)?;
    let bad = |e: rpc_core::transport::tls::TlsConfigError| NoResult::Failed(e.to_string());
    let server =
        TlsServerConfig::from_pem(certs.cert.as_bytes(), certs.key.as_bytes()).map_err(bad)?;
    let client = TlsClientConfig::from_pem(certs.ca.as_bytes()).map_err(bad)?;
    Ok((server, client))
}

/// Environment variable naming the receive mode of the io_uring systems (`read`, the default;
/// `uring`; `ring`), for comparing receive paths with `compare`.
pub const RECV_ENV: &str = "ZCRPC_BENCH_RECV";

/// Environment variable turning the io_uring systems' receive low-water mark off (`0`), for
/// comparing with and without it ([`UringConfig::recv_lowat`]).
pub const LOWAT_ENV: &str = "ZCRPC_BENCH_LOWAT";

/// The transport configuration of each io_uring system; everything else at its default (the
/// receive mode from [`RECV_ENV`] when set).
pub(crate) fn uring_config(system: System) -> UringConfig {
    let (backend, mode) = match system {
        System::ZcrpcUringZc => (Backend::Uring, ZcMode::AlwaysZc),
        System::ZcrpcMsgzc => (Backend::MsgZc, ZcMode::Adaptive),
        _ => (Backend::Uring, ZcMode::Adaptive),
    };
    let recv = match std::env::var(RECV_ENV) {
        Ok(v) => v.parse().unwrap_or_else(|e| panic!("{RECV_ENV}: {e}")),
        Err(_) => RecvMode::default(),
    };
    UringConfig {
        backend,
        mode,
        recv,
        recv_lowat: std::env::var(LOWAT_ENV).map_or(true, |v| v != "0"),
        ..UringConfig::default()
    }
}

/// Why `backend` cannot run on this kernel, if it cannot.
pub(crate) fn unavailable(backend: Backend) -> Option<String> {
    let probe = transport_uring::probe();
    let ok = match backend {
        Backend::Uring => probe.io_uring && probe.sendmsg_zc,
        Backend::MsgZc => probe.msg_zerocopy,
        _ => true,
    };
    (!ok).then(|| format!("{backend} refused by this kernel ({})", probe.reason))
}

/// The measurement, generic over the transport: server on one thread, client on the other.
#[allow(clippy::too_many_arguments)]
fn measure<A, T, Bind, BindFut, Addr, Conn, ConnFut>(
    shape: Shape,
    file: Option<FileRegion>,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
    bind: Bind,
    local_addr: Addr,
    connect: Conn,
) -> Result<Sample, String>
where
    A: Acceptor,
    T: Transport,
    Bind: FnOnce() -> BindFut + Send + 'static,
    BindFut: Future<Output = Result<A, String>>,
    Addr: FnOnce(&A) -> Result<SocketAddr, String> + Send + 'static,
    Conn: FnOnce(SocketAddr) -> ConnFut + Send + 'static,
    ConnFut: Future<Output = Result<T, String>>,
{
    run_pair(
        placement,
        move |addr_tx| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                let acceptor = bind().await?;
                let addr = local_addr(&acceptor)?;
                let server = Server::builder().build(Echo {
                    response: body(shape.response_len, 1),
                    file,
                });
                let _handle = server.serve(acceptor);
                let _ = addr_tx.send((addr, server));
                std::future::pending::<Result<(), String>>().await
            })
        },
        move |(addr, server): (SocketAddr, Server)| {
            let rt = current_thread_runtime()?;
            rt.block_on(async move {
                let transport = connect(addr).await?;
                let client = Client::connect(transport, ClientConfig::default())
                    .await
                    .map_err(|e| format!("zcrpc connect: {e}"))?;
                // The calls run as a task, as an application's do ([`in_task`]).
                in_task(async move {
                    let request = body(shape.request_len, shape.request_segments);
                    let meter = Meter::new(timing, record_latency);
                    let mut sample = if shape.server_stream {
                        read_stream(&client, shape, meter).await?
                    } else {
                        let beside = if shape.beside_len > 0 { body(shape.beside_len, 1) } else { request.clone() };
                        closed_loop(shape, meter, |call| {
                            let client = client.clone();
                            let request = call.pick(&request, &beside);
                            async move {
                                let response =
                                    client.call(METHOD, request, CallOptions::default()).await?;
                                drop(response);
                                Ok::<(), rpc_core::CallError>(())
                            }
                        })
                        .await?
                    };
                    // Which send path the engine took on each side, for the report.
                    sample.transport_stats = serde_json::to_value(TransportReport {
                        client: client.stats(),
                        server: server.stats(),
                    })
                    .ok();
                    Ok(sample)
                })
                .await
            })
        },
    )
}
