//! What a connection accepts and how it keeps itself alive.

use std::time::Duration;

use crate::frame::Limits;

/// Connection settings shared by client and server.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Largest frame (message + payload) this side accepts. Default 128 MiB.
    pub max_frame: u32,
    /// Most attachments in one frame this side accepts. Default 1024.
    pub max_attachments: u32,
    /// Most calls this side serves at once on one connection (server); the client uses the
    /// server's value to queue calls. Default 10 000.
    pub max_calls_in_flight: u32,
    /// Send a ping after this long without receiving anything. `None` turns keepalive off.
    /// Default 30 s.
    pub keepalive_interval: Option<Duration>,
    /// Close the connection when a ping is not answered within this. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Close the connection when the peer's hello has not arrived within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// Bytes of large receive buffers a connection keeps for reuse once the frames in them are
    /// dropped (a fresh multi-megabyte buffer per frame is page-faulted in again every time;
    /// keeping them tripled 64 MiB call throughput here). This is memory a quiet connection may
    /// hold; 0 keeps none. Default 160 MiB: one frame of the default maximum and then some.
    pub recv_cache_bytes: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            max_frame: 128 << 20,
            max_attachments: 1024,
            max_calls_in_flight: 10_000,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            recv_cache_bytes: 160 << 20,
        }
    }
}

impl ConnConfig {
    /// The decoder limits these settings imply.
    pub fn limits(&self) -> Limits {
        Limits { max_frame: self.max_frame, max_attachments: self.max_attachments }
    }
}
