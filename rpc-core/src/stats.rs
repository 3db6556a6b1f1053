//! Transport statistics: which path each send took, what the kernel said about it.
//!
//! Counters are atomics shared between the connection's tasks and whoever reads them;
//! [`TransportStats::snapshot`] gives a plain, serializable copy.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// The `tracing` target of [`StatsSnapshot::emit`].
pub const STATS_TARGET: &str = "zcrpc::stats";

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters of one connection's transport (or of a sum of them).
        #[derive(Debug, Default)]
        pub struct TransportStats {
            name: std::sync::OnceLock<&'static str>,
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`TransportStats`] at one moment. Field names are stable: tools parse
        /// them from `echo call --stats-json`.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
        pub struct StatsSnapshot {
            /// The transport (and backend) that produced the numbers: `tcp`, `mem`, `uring`, `msgzc`.
            pub transport: String,
            $($(#[$doc])* pub $name: u64,)*
        }

        impl TransportStats {
            /// A plain copy of every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    transport: self.name().to_owned(),
                    $($name: self.$name.load(Relaxed),)*
                }
            }
        }

        impl StatsSnapshot {
            /// Emits every counter as one `tracing` event (level debug, target
            /// [`STATS_TARGET`]), with `event` as its message. zcrpc emits one when a
            /// connection ends (`RUST_LOG=zcrpc::stats=debug` shows them).
            pub fn emit(&self, event: &str) {
                tracing::debug!(target: STATS_TARGET, transport = %self.transport, $($name = self.$name,)* "{event}");
            }

            /// Adds another snapshot's counters into this one (totals over connections).
            pub fn merge(&mut self, other: &StatsSnapshot) {
                if self.transport.is_empty() {
                    self.transport = other.transport.clone();
                }
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Frames sent by the copy path (the kernel copies them; for `tcp` every send).
    sends_copy,
    /// Frames sent zero-copy (a frame the kernel refused is counted here and in
    /// `enobufs_fallbacks`: its rest went by copy).
    sends_zc,
    /// Frames whose segments were partly coalesced into a copy buffer, rest zero-copy.
    sends_coalesced,
    /// Bytes sent by the copy path.
    bytes_copy,
    /// Bytes sent zero-copy.
    bytes_zc,
    /// Bytes sent in coalesced frames.
    bytes_coalesced,
    /// Segments copied into coalescing buffers.
    coalesced_segments,
    /// Zero-copy completion notifications received.
    notifications,
    /// Notifications saying the kernel copied after all (`ZC_COPIED`: loopback, veth).
    notifications_copied,
    /// Times the adaptive engine moved between zero-copy and copy.
    path_switches,
    /// Zero-copy sends the kernel refused for want of memory and resent by copy: `ENOBUFS`
    /// (optmem; `MSG_ZEROCOPY`'s locked-page charge) or `ENOMEM` (io_uring's charge of pinned
    /// pages to `RLIMIT_MEMLOCK`, without `CAP_IPC_LOCK`).
    enobufs_fallbacks,
    /// Sends the kernel took only partly, resubmitted for the rest.
    short_sends,
    /// Pool buffers write-protected for the flight of a send.
    write_protects,
    /// Bytes the kernel (or the in-memory peer) has taken from this side so far, counted as
    /// each write or send completion returns: the driver's write-stall timeout watches it move.
    sent_bytes,
    /// Bytes received.
    recv_bytes,
    /// Bytes copied on the receiving side (a partial payload moved into an exact-size buffer,
    /// a frame cut by the edge of a receive-ring buffer assembled).
    recv_copied_bytes,
    /// Frames whose attachments were copied to 64-byte-aligned memory on receipt: the frame lay
    /// packed behind others in a shared receive buffer (a read block, a ring buffer) where its
    /// payload was not aligned. A large frame gets a buffer of its own, aligned, and is never
    /// copied for this.
    align_copies,
    /// Bytes copied by those copies (not counted in `recv_copied_bytes`).
    align_copy_bytes,
    /// Buffers received from an io_uring provided-buffer ring (multishot receive).
    recv_ring_chunks,
    /// Times the reader paused because the connection, or the server as a whole, held as much
    /// as its memory budget (requests not yet answered, answers not yet written).
    budget_pauses,
    /// Connections closed because a write made no progress for the write-stall timeout.
    write_stalls,
    /// Times the receive ring had no free buffer (all held by live slices) and a read went to
    /// an ordinary buffer instead.
    recv_ring_empty,
}

impl TransportStats {
    /// New counters for a transport called `name`.
    pub fn new(name: &'static str) -> Self {
        let s = TransportStats::default();
        let _ = s.name.set(name);
        s
    }

    /// The transport's name.
    pub fn name(&self) -> &'static str {
        self.name.get().copied().unwrap_or("unknown")
    }

    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
