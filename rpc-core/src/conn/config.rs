//! What a connection accepts and how it keeps itself alive.

use std::time::Duration;

use crate::frame::Limits;

/// Connection settings shared by client and server.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Largest frame this side accepts: the message (metadata included) plus every attachment,
    /// together; header, attachment table and padding not counted. Default 128 MiB.
    pub max_frame: u32,
    /// Largest metadata block (a call's headers, encoded) this side accepts; declared in the
    /// hello in KiB (rounded down; at most 64 MiB - 1 KiB). Default 16 KiB.
    pub max_metadata: u32,
    /// Bytes of stream data this side takes on each stream before the application consumes any
    /// (the credit each stream starts with, granted again as messages are consumed). A stream
    /// whose reader is slow holds at most this plus one frame. At least 4096. Default 4 MiB.
    pub stream_window: u32,
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
    /// Server: the longest a call may run, its streams included. A call whose caller set no
    /// deadline gets this one, a longer deadline is cut to it; when it passes the handler is
    /// dropped and the caller gets `DEADLINE_EXCEEDED` naming it, as for its own deadline.
    /// `None` (the default) leaves calls to the caller's deadline.
    pub max_call_duration: Option<Duration>,
    /// Bytes of large receive buffers a connection keeps for reuse once the frames in them are
    /// dropped (a fresh multi-megabyte buffer per frame is page-faulted in again every time;
    /// keeping them tripled 64 MiB call throughput here). This is memory a quiet connection may
    /// hold; 0 keeps none. Default 160 MiB: one frame of the default maximum and then some.
    /// Besides, unless 0, four 64 KiB blocks that small frames are read into are kept.
    pub recv_cache_bytes: usize,
    /// Server: bytes one connection may hold — requests received and not yet answered, plus
    /// answers produced and not yet written — before it stops reading from its peer
    /// (backpressure: reading resumes as the peer reads its answers). The frame being received
    /// and the receive buffers come on top: at most `max_frame` and `recv_cache_bytes`.
    /// Default 64 MiB.
    pub memory_budget: usize,
    /// Close the connection when a write makes no progress at all for this long (the peer stopped
    /// reading, or vanished without a reset). `None` never gives up. Default 30 s.
    pub write_stall_timeout: Option<Duration>,
    /// After the connection is closed, how long the last frames (a goaway, answers still queued)
    /// may take to be written before the writer is dropped. Default 5 s.
    pub drain_timeout: Duration,
    /// After our last frame is written and our side shut down, how long to keep reading (and
    /// discarding) until the peer closes too: closing a socket with unread input makes the kernel
    /// send a reset and throw away whatever of our output it had not sent yet. Default 2 s.
    pub linger: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            max_frame: 128 << 20,
            max_metadata: 16 << 10,
            stream_window: 4 << 20,
            max_attachments: 1024,
            max_calls_in_flight: 10_000,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            max_call_duration: None,
            recv_cache_bytes: 160 << 20,
            memory_budget: 64 << 20,
            write_stall_timeout: Some(Duration::from_secs(30)),
            drain_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(2),
        }
    }
}

impl ConnConfig {
    /// The metadata limit declared in the hello: the configured one in whole KiB.
    pub fn max_metadata(&self) -> u32 {
        (self.max_metadata / 1024).min(u32::from(u16::MAX)) * 1024
    }

    /// The stream window declared in the hello: the configured one, raised to the minimum.
    pub fn stream_window(&self) -> u32 {
        self.stream_window.max(crate::frame::MIN_MAX_FRAME)
    }

    /// The decoder limits these settings imply.
    pub fn limits(&self) -> Limits {
        Limits { max_frame: self.max_frame.max(crate::frame::MIN_MAX_FRAME), max_attachments: self.max_attachments }
    }
}
