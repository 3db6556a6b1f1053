//! Shared pieces of the examples: the `Echo` service and transport selection.
//!
//! The runnable programs are this package's examples: `quickstart` and `echo`.

use std::net::SocketAddr;
use std::str::FromStr;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig, ConnectError, Payload, Server, ServerHandle};

/// The service both examples serve.
#[rpc_core::service]
pub trait Echo {
    /// Sends the payload back as it came.
    async fn echo(&self, data: Payload) -> Payload;
    /// Adds two numbers (a small call: no attachment).
    async fn add(&self, a: u64, b: u64) -> u64;
}

/// The implementation: no copies, the received slice goes straight back out.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, data: Payload) -> Payload {
        data
    }

    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// Which transport to use: `tcp` everywhere; on Linux also `uring` (the io_uring zero-copy
/// engine, the default there) and `msgzc` (the `MSG_ZEROCOPY` engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// Portable tokio TCP.
    Tcp,
    /// io_uring zero-copy engine.
    #[cfg(target_os = "linux")]
    Uring,
    /// `MSG_ZEROCOPY` engine.
    #[cfg(target_os = "linux")]
    MsgZc,
}

impl Default for TransportChoice {
    fn default() -> Self {
        #[cfg(target_os = "linux")]
        return TransportChoice::Uring;
        #[cfg(not(target_os = "linux"))]
        return TransportChoice::Tcp;
    }
}

impl FromStr for TransportChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(TransportChoice::Tcp),
            #[cfg(target_os = "linux")]
            "uring" => Ok(TransportChoice::Uring),
            #[cfg(target_os = "linux")]
            "msgzc" => Ok(TransportChoice::MsgZc),
            other => Err(format!("unknown transport {other:?}: expected tcp, uring or msgzc (the last two on Linux)")),
        }
    }
}

/// How the Linux engines use zero-copy: `adaptive` (default), `always-zc`, `never-zc`.
/// Ignored by `tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZcChoice(
    /// The engine's mode.
    #[cfg(target_os = "linux")]
    pub transport_uring::ZcMode,
);

impl FromStr for ZcChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        #[cfg(target_os = "linux")]
        return s.parse::<transport_uring::ZcMode>().map(ZcChoice).map_err(|e| e.to_string());
        #[cfg(not(target_os = "linux"))]
        return Err(format!("zero-copy mode {s:?} needs Linux"));
    }
}

#[cfg(target_os = "linux")]
fn uring_config(transport: TransportChoice, zc: ZcChoice) -> transport_uring::UringConfig {
    let backend = match transport {
        TransportChoice::MsgZc => transport_uring::Backend::MsgZc,
        _ => transport_uring::Backend::Uring,
    };
    transport_uring::UringConfig { backend, mode: zc.0, ..transport_uring::UringConfig::default() }
}

/// Binds `addr` and serves [`EchoImpl`] over the chosen transport.
pub async fn serve(
    addr: SocketAddr,
    transport: TransportChoice,
    zc: ZcChoice,
) -> std::io::Result<(ServerHandle, SocketAddr)> {
    let server = Server::builder().build(EchoServer::new(EchoImpl));
    let _ = zc;
    match transport {
        TransportChoice::Tcp => {
            let acceptor = TcpAcceptor::bind(addr).await?;
            let local = acceptor.local_addr()?;
            Ok((server.serve(acceptor), local))
        }
        #[cfg(target_os = "linux")]
        TransportChoice::Uring | TransportChoice::MsgZc => {
            let acceptor = transport_uring::UringAcceptor::bind(addr, uring_config(transport, zc)).await?;
            let local = acceptor.local_addr()?;
            Ok((server.serve(acceptor), local))
        }
    }
}

/// Connects an [`EchoClient`] over the chosen transport.
pub async fn connect(addr: SocketAddr, transport: TransportChoice, zc: ZcChoice) -> Result<EchoClient, ConnectError> {
    let _ = zc;
    let client = match transport {
        TransportChoice::Tcp => Client::connect_tcp(addr, ClientConfig::default()).await?,
        #[cfg(target_os = "linux")]
        TransportChoice::Uring | TransportChoice::MsgZc => {
            let t = transport_uring::connect(addr, uring_config(transport, zc)).await?;
            Client::connect(t, ClientConfig::default()).await?
        }
    };
    Ok(EchoClient::new(client))
}

/// A deterministic byte pattern (seeded), so a misplaced byte shows.
pub fn pattern(len: usize, seed: u64) -> bytes::Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (len - v.len()).min(8);
        v.extend_from_slice(&x.to_le_bytes()[..n]);
    }
    v.into()
}
