//! Shared pieces of the examples: the `Echo` service and transport selection (as functions, and
//! as the command-line options [`TransportArgs`]), for `echo`, `soak`, the tests and the
//! benchmarks.
//!
//! The runnable programs are this package's examples: `quickstart` (one file to copy: it uses
//! none of this), `echo`, `subscription`, `chat`, `tls`, `file_server`, `blob_store` (a service
//! from a `.proto` file), `tarpc_dropin` and `soak`.
//! [`fault_proxy`], [`child`] and [`procfs`] serve the reliability tests and the soak program.

/// The README's Rust snippets, compiled and run as this crate's doctests (`cargo test -p
/// zcrpc-examples --doc`), so that what a newcomer copies compiles. Linux only: one snippet
/// uses the io_uring transport.
#[cfg(all(doctest, target_os = "linux"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeSnippets;

pub mod child;
pub mod fault_proxy;
pub mod procfs;
mod tls_args;

pub use tls_args::{connect_tls, serve_tls, CallTlsArgs, ServeTlsArgs};

use std::net::SocketAddr;
use std::str::FromStr;

use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig, ConnectError, Payload, Server, ServerBuilder, ServerHandle, Sink, Source};

/// The service the examples serve.
#[rpc_core::service]
pub trait Echo {
    /// Sends the payload back as it came.
    async fn echo(&self, data: Payload) -> Payload;
    /// Adds two numbers (a small call: no attachment).
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Server streaming: `count` chunks of `size` bytes, chunk `i` carrying its index and the
    /// pattern seeded `i` as an attachment.
    async fn download(&self, count: u32, size: u32, out: Sink<u32>);
    /// Client streaming: the total attachment bytes of the chunks received.
    async fn upload(&self, chunks: Source<u32>) -> u64;
    /// Bidirectional: every chunk back as it came, attachments included.
    async fn chat(&self, input: Source<u32>, output: Sink<u32>);
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

    async fn download(&self, count: u32, size: u32, mut out: Sink<u32>) {
        for i in 0..count {
            let chunk = Payload::from(pattern(size as usize, u64::from(i)));
            // Fails only when the caller went away: then there is nobody to send to.
            if out.send_with(i, vec![chunk]).await.is_err() {
                return;
            }
        }
    }

    async fn upload(&self, mut chunks: Source<u32>) -> u64 {
        let mut total = 0;
        while let Some(Ok((_, attachments))) = chunks.recv_with().await {
            total += attachments.iter().map(|a| a.len() as u64).sum::<u64>();
        }
        total
    }

    async fn chat(&self, mut input: Source<u32>, mut output: Sink<u32>) {
        while let Some(Ok((i, attachments))) = input.recv_with().await {
            if output.send_with(i, attachments).await.is_err() {
                return;
            }
        }
    }
}

/// Which transport to use: `tcp` everywhere; on Linux also `uring` (the io_uring zero-copy
/// engine, the default there) and `msgzc` (the `MSG_ZEROCOPY` engine).
///
/// `Display` prints the name [`FromStr`] reads back (`--transport`'s value).
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

impl TransportChoice {
    /// The name `--transport` takes (what [`FromStr`] reads back).
    pub fn name(self) -> &'static str {
        match self {
            TransportChoice::Tcp => "tcp",
            #[cfg(target_os = "linux")]
            TransportChoice::Uring => "uring",
            #[cfg(target_os = "linux")]
            TransportChoice::MsgZc => "msgzc",
        }
    }
}

impl std::fmt::Display for TransportChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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

/// How the Linux engines send and receive (ignored by `tcp`): the zero-copy mode (`--zc
/// adaptive|always-zc|never-zc`, default adaptive) and the receive mode (`--recv
/// read|uring|ring`, default read; `ring` is a multishot receive into a provided-buffer ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineOptions {
    /// The engine's zero-copy mode.
    #[cfg(target_os = "linux")]
    pub zc: transport_uring::ZcMode,
    /// How the io_uring engine receives.
    #[cfg(target_os = "linux")]
    pub recv: transport_uring::RecvMode,
}

impl EngineOptions {
    /// Sets an option from its command-line flag (`--zc`, `--recv`); `Ok(false)` for a flag
    /// that is not an engine option.
    pub fn set(&mut self, flag: &str, value: &str) -> Result<bool, String> {
        #[cfg(target_os = "linux")]
        match flag {
            "--zc" => self.zc = value.parse().map_err(|e: transport_uring::ParseError| e.to_string())?,
            "--recv" => self.recv = value.parse().map_err(|e: transport_uring::ParseError| e.to_string())?,
            _ => return Ok(false),
        }
        #[cfg(not(target_os = "linux"))]
        if flag == "--zc" || flag == "--recv" {
            return Err(format!("{flag} {value:?} needs Linux"));
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// The transport options the example programs share (`--transport`, `--zc`, `--recv`), as
/// `clap` arguments: flatten them into a command's arguments with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// The transport: `tcp` (tokio), `uring` (io_uring zero-copy engine) or `msgzc` (the
    /// `MSG_ZEROCOPY` engine); the last two on Linux only.
    #[arg(long, value_name = "TRANSPORT", default_value_t = TransportChoice::default())]
    pub transport: TransportChoice,
    /// Zero-copy mode of the Linux engines: `adaptive` moves a connection to the copy path
    /// while the kernel reports that it copied anyway (loopback) and probes again now and then.
    /// Ignored by `tcp`.
    #[arg(long, value_name = "MODE", default_value = "adaptive", value_parser = ["adaptive", "always-zc", "never-zc"])]
    pub zc: String,
    /// How the io_uring engine receives: `read` (readiness + read), `uring` (one io_uring
    /// RECV per read) or `ring` (multishot receive into a provided-buffer ring). Ignored by
    /// `tcp`.
    #[arg(long, value_name = "MODE", default_value = "read", value_parser = ["read", "uring", "ring"])]
    pub recv: String,
}

impl TransportArgs {
    /// The transport and the engine options these arguments name.
    pub fn choice(&self) -> Result<(TransportChoice, EngineOptions), String> {
        let mut engine = EngineOptions::default();
        // The defaults are what `EngineOptions::default()` has: setting them is a no-op, and
        // not setting them keeps `tcp` working where the engines do not exist.
        if self.zc != "adaptive" {
            engine.set("--zc", &self.zc)?;
        }
        if self.recv != "read" {
            engine.set("--recv", &self.recv)?;
        }
        Ok((self.transport, engine))
    }
}

#[cfg(target_os = "linux")]
/// The engine's configuration for `transport` (uring or msgzc) and the engine options.
pub fn uring_config(transport: TransportChoice, engine: EngineOptions) -> transport_uring::UringConfig {
    let backend = match transport {
        TransportChoice::MsgZc => transport_uring::Backend::MsgZc,
        _ => transport_uring::Backend::Uring,
    };
    transport_uring::UringConfig { backend, mode: engine.zc, recv: engine.recv, ..transport_uring::UringConfig::default() }
}

/// Binds `addr` and serves [`EchoImpl`] over the chosen transport.
pub async fn serve(
    addr: SocketAddr,
    transport: TransportChoice,
    engine: EngineOptions,
) -> std::io::Result<(ServerHandle, SocketAddr)> {
    serve_with(addr, transport, engine, Server::builder()).await
}

/// [`serve`], with the server's limits taken from `builder`.
pub async fn serve_with(
    addr: SocketAddr,
    transport: TransportChoice,
    engine: EngineOptions,
    builder: ServerBuilder,
) -> std::io::Result<(ServerHandle, SocketAddr)> {
    let server = builder.build(EchoServer::new(EchoImpl));
    let _ = engine;
    match transport {
        TransportChoice::Tcp => {
            let acceptor = TcpAcceptor::bind(addr).await?;
            let local = acceptor.local_addr()?;
            Ok((server.serve(acceptor), local))
        }
        #[cfg(target_os = "linux")]
        TransportChoice::Uring | TransportChoice::MsgZc => {
            let acceptor = transport_uring::UringAcceptor::bind(addr, uring_config(transport, engine)).await?;
            let local = acceptor.local_addr()?;
            Ok((server.serve(acceptor), local))
        }
    }
}

/// Where a server listens or a client connects: `HOST:PORT` (TCP, or the Linux engines), or
/// `unix:PATH` (a Unix-domain socket, for peers on the same host).
///
/// ```
/// use zcrpc_examples::Endpoint;
/// assert_eq!("127.0.0.1:7411".parse::<Endpoint>().unwrap(), Endpoint::Tcp(([127, 0, 0, 1], 7411).into()));
/// assert_eq!("unix:/tmp/echo.sock".parse::<Endpoint>().unwrap(), Endpoint::Unix("/tmp/echo.sock".into()));
/// assert_eq!(Endpoint::Unix("/tmp/echo.sock".into()).to_string(), "unix:/tmp/echo.sock");
/// // A host name is resolved when parsed:
/// assert!(matches!("localhost:7411".parse::<Endpoint>().unwrap(), Endpoint::Tcp(a) if a.ip().is_loopback() && a.port() == 7411));
/// assert!("localhost".parse::<Endpoint>().unwrap_err().contains("expected HOST:PORT"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An IP address and port (a host name is resolved when parsed).
    Tcp(SocketAddr),
    /// The path of a Unix-domain socket.
    Unix(std::path::PathBuf),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, as in unix:/tmp/echo.sock".into());
            }
            return Ok(Endpoint::Unix(path.into()));
        }
        if let Ok(addr) = s.parse() {
            return Ok(Endpoint::Tcp(addr));
        }
        // A host name: resolved once, here; the first address it has is the one used.
        let bad = |why: String| format!("address {s:?}: {why}: expected HOST:PORT (127.0.0.1:7411, localhost:7411) or unix:PATH (unix:/tmp/echo.sock)");
        let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(s).map_err(|e| bad(e.to_string()))?;
        addrs.next().map(Endpoint::Tcp).ok_or_else(|| bad("the name has no address".into()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Serves [`EchoImpl`] at `endpoint`: over the chosen transport at an IP address, over a Unix
/// socket at `unix:PATH` (where `transport` and `engine` do not apply). Returns where it
/// serves (the port chosen, for port 0).
pub async fn serve_at(
    endpoint: &Endpoint,
    transport: TransportChoice,
    engine: EngineOptions,
    builder: ServerBuilder,
) -> std::io::Result<(ServerHandle, Endpoint)> {
    match endpoint {
        Endpoint::Tcp(addr) => serve_with(*addr, transport, engine, builder).await.map(|(h, a)| (h, Endpoint::Tcp(a))),
        #[cfg(unix)]
        Endpoint::Unix(path) => {
            let acceptor = rpc_core::transport::unix::UnixAcceptor::bind(path).await?;
            Ok((builder.build(EchoServer::new(EchoImpl)).serve(acceptor), endpoint.clone()))
        }
        #[cfg(not(unix))]
        Endpoint::Unix(_) => Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "Unix sockets need a Unix system")),
    }
}

/// Connects an [`EchoClient`] to `endpoint` (see [`serve_at`]), re-dialing when the connection
/// is lost.
pub async fn connect_to(
    endpoint: &Endpoint,
    transport: TransportChoice,
    engine: EngineOptions,
    config: ClientConfig,
) -> Result<EchoClient, ConnectError> {
    match endpoint {
        Endpoint::Tcp(addr) => connect_with_config(*addr, transport, engine, config).await,
        #[cfg(unix)]
        Endpoint::Unix(path) => Ok(EchoClient::new(Client::connect_unix(path, config).await?)),
        #[cfg(not(unix))]
        Endpoint::Unix(_) => Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "Unix sockets need a Unix system").into()),
    }
}

/// Connects an [`EchoClient`] over the chosen transport.
pub async fn connect(addr: SocketAddr, transport: TransportChoice, engine: EngineOptions) -> Result<EchoClient, ConnectError> {
    connect_with_config(addr, transport, engine, ClientConfig::default()).await
}

/// [`connect`] with client settings of its own (re-dialing, timeouts).
pub async fn connect_with_config(
    addr: SocketAddr,
    transport: TransportChoice,
    engine: EngineOptions,
    config: ClientConfig,
) -> Result<EchoClient, ConnectError> {
    let _ = engine;
    let client = match transport {
        TransportChoice::Tcp => Client::connect_tcp(addr, config).await?,
        #[cfg(target_os = "linux")]
        TransportChoice::Uring | TransportChoice::MsgZc => {
            // Made from an address, like `connect_tcp`: it re-dials when the connection is lost.
            let uring = uring_config(transport, engine);
            Client::connect_with(move || transport_uring::connect(addr, uring.clone()), config)
                .await
                .map_err(|e| e.with_target(addr.to_string()))?
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
