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

/// Which transport to use. `tcp` is the portable tokio transport; the Linux zero-copy engines
/// (`uring`, `msgzc`) plug in here as `transport-uring` lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportChoice {
    /// Portable tokio TCP.
    #[default]
    Tcp,
}

impl FromStr for TransportChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(TransportChoice::Tcp),
            "uring" | "msgzc" => Err(format!("transport {s:?} is not available in this build yet; use tcp")),
            other => Err(format!("unknown transport {other:?}: expected tcp")),
        }
    }
}

/// Binds `addr` and serves [`EchoImpl`] over the chosen transport.
pub async fn serve(addr: SocketAddr, transport: TransportChoice) -> std::io::Result<(ServerHandle, SocketAddr)> {
    let server = Server::builder().build(EchoServer::new(EchoImpl));
    match transport {
        TransportChoice::Tcp => {
            let acceptor = TcpAcceptor::bind(addr).await?;
            let local = acceptor.local_addr()?;
            Ok((server.serve(acceptor), local))
        }
    }
}

/// Connects an [`EchoClient`] over the chosen transport.
pub async fn connect(addr: SocketAddr, transport: TransportChoice) -> Result<EchoClient, ConnectError> {
    let client = match transport {
        TransportChoice::Tcp => Client::connect_tcp(addr, ClientConfig::default()).await?,
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
