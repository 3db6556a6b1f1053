//! The TLS options the example programs share (`echo`, `file_server`): the server's
//! certificate, key and client CA; the client's trusted CA, server name and certificate; and
//! serving or connecting with them over the chosen transport (tcp: rustls over tokio; uring
//! and msgzc: records sealed in the engine's pool buffers, `transport_uring::tls`).

use std::net::SocketAddr;
use std::path::PathBuf;

use rpc_core::transport::tls::{TlsAcceptor, TlsClientConfig, TlsServerConfig};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig, Server, ServerHandle};

use crate::{EngineOptions, TransportChoice};

/// A server's TLS options: flatten into a command's arguments with `#[command(flatten)]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeTlsArgs {
    /// Serve TLS 1.3 (over --transport tcp, uring or msgzc) with this certificate chain (PEM);
    /// needs --tls-key. On uring and msgzc, records are received on readiness (--recv is not used).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require client certificates signed by a CA of this PEM file.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: refuse client certificates these revocation lists (PEM `X509 CRL` blocks
    /// of the --tls-ca CAs) revoke. Repeat for several files.
    #[arg(long, value_name = "PEM", requires = "tls_ca")]
    pub tls_crl: Vec<PathBuf>,
}

impl ServeTlsArgs {
    /// The configuration these options name; `None` without `--tls-cert`. Errors name the file.
    pub fn config(&self) -> Result<Option<TlsServerConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let mut tls = TlsServerConfig::from_pem_files(cert, key).map_err(|e| e.to_string())?;
        if let Some(ca) = &self.tls_ca {
            tls = tls.with_client_ca(ca).map_err(|e| e.to_string())?;
        }
        for crl in &self.tls_crl {
            tls = tls.with_client_crl(crl).map_err(|e| e.to_string())?;
        }
        Ok(Some(tls))
    }
}

/// Binds `addr` and serves `server` over TLS on `transport`; the address bound.
pub async fn serve_tls(
    server: Server,
    addr: SocketAddr,
    tls: TlsServerConfig,
    transport: TransportChoice,
    engine: EngineOptions,
) -> Result<(ServerHandle, SocketAddr), String> {
    let _ = engine;
    match transport {
        TransportChoice::Tcp => {
            let tcp = TcpAcceptor::bind(addr).await.map_err(|e| format!("binding {addr}: {e}"))?;
            let local = tcp.local_addr().map_err(|e| e.to_string())?;
            let acceptor = TlsAcceptor::new(tcp, tls).map_err(|e| e.to_string())?;
            Ok((server.serve(acceptor), local))
        }
        // uring, msgzc: records sealed into the engine's pool buffers.
        #[cfg(target_os = "linux")]
        _ => {
            let config = crate::uring_config(transport, engine);
            let acceptor = transport_uring::tls::UringTlsAcceptor::bind(addr, tls, config)
                .await
                .map_err(|e| format!("binding {addr}: {e}"))?;
            let local = acceptor.local_addr().map_err(|e| e.to_string())?;
            Ok((server.serve(acceptor), local))
        }
    }
}

/// A client's TLS options: flatten into a command's arguments with `#[command(flatten)]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CallTlsArgs {
    /// Call over TLS 1.3, trusting the CAs of this PEM file for the server's certificate.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// The name the server's certificate must be valid for.
    #[arg(long, value_name = "NAME", default_value = "localhost", requires = "tls_ca")]
    pub tls_name: String,
    /// Mutual TLS: this client's certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse a server certificate these revocation lists (PEM `X509 CRL` blocks of the
    /// --tls-ca CAs) revoke. Repeat for several files.
    #[arg(long, value_name = "PEM", requires = "tls_ca")]
    pub tls_crl: Vec<PathBuf>,
}

impl CallTlsArgs {
    /// The configuration these options name; `None` without `--tls-ca`. Errors name the file.
    pub fn config(&self) -> Result<Option<TlsClientConfig>, String> {
        let Some(ca) = &self.tls_ca else { return Ok(None) };
        let mut tls = TlsClientConfig::from_pem_file(ca).map_err(|e| e.to_string())?;
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.with_identity(cert, key).map_err(|e| e.to_string())?;
        }
        for crl in &self.tls_crl {
            tls = tls.with_crl(crl).map_err(|e| e.to_string())?;
        }
        Ok(Some(tls))
    }
}

/// A client that dials `addr` over TLS on `transport` (and re-dials when the connection is
/// lost), checking the server's certificate for `name`.
pub async fn connect_tls(
    addr: SocketAddr,
    name: &str,
    tls: TlsClientConfig,
    transport: TransportChoice,
    engine: EngineOptions,
    config: ClientConfig,
) -> Result<Client, String> {
    let _ = engine;
    let client = match transport {
        TransportChoice::Tcp => Client::connect_tls(addr, name, tls, config).await,
        #[cfg(target_os = "linux")]
        _ => transport_uring::tls::client(addr, name, tls, crate::uring_config(transport, engine), config).await,
    };
    client.map_err(|e| e.to_string())
}
