//! Transport statistics: which path each send took, what the kernel said about it.
//!
//! Counters are atomics shared between the connection's tasks and whoever reads them;
//! [`TransportStats::snapshot`] gives a plain, serializable copy, which prints as a table
//! (its `Display`).

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

        /// A copy of [`TransportStats`] at one moment: what a client's connection
        /// ([`Client::stats`](crate::Client::stats)) or a server's connections
        /// ([`Server::stats`](crate::Server::stats) for the totals, `handle.server().stats()`
        /// from a [`ServerHandle`](crate::ServerHandle); [`Server::connection_stats`](crate::Server::connection_stats)
        /// for each live one) sent by which path, what the kernel said about it, and what
        /// receiving cost.
        ///
        /// Field names are stable: tools parse them from `echo call --stats-json` (it is
        /// `Serialize`). `Display` prints the counters as a table a person can read, with
        /// the lines that would say only zeros left out:
        ///
        /// ```
        /// let stats = rpc_core::StatsSnapshot {
        ///     transport: "uring".into(),
        ///     sends_copy: 193, bytes_copy: 202_375_168,
        ///     sends_zc: 8, bytes_zc: 8_388_608,
        ///     notifications: 8, notifications_copied: 8, path_switches: 1,
        ///     ..Default::default()
        /// };
        /// let table = stats.to_string();
        /// assert!(table.contains("| zero-copy |"));
        /// assert!(table.contains("8 notifications, 8 of them"));
        /// ```
        ///
        /// # Reading the counters
        ///
        /// Every frame goes out by one of four paths, and is counted in exactly one of
        /// `sends_copy`, `sends_zc`, `sends_coalesced` and `sends_file` (bytes alike): the
        /// copy path (the kernel copies the frame into its socket buffer; every send of `tcp`
        /// and `mem` without file regions), zero-copy (the kernel sends from the caller's
        /// memory and says when it is done with it), zero-copy with its smallest segments first
        /// coalesced into one copy buffer (a frame with more segments than the iovec limit),
        /// or the file path (a frame with file regions, whose pages the kernel moved from the
        /// page cache to the socket: `sendfile`, splice). A transport that cannot splice reads
        /// file regions into memory: those frames are copies, their region bytes also counted
        /// in `file_read_bytes`. A frame sent in pieces (a request or an answer of more than
        /// 2 MiB, `docs/pieces.md`) is counted once per piece, each a send of its own, its
        /// markers in the bytes; the marker ahead of other calls' frames sent between its pieces
        /// counts as one more.
        ///
        /// `notifications` counts the kernel's completion notifications of zero-copy
        /// submissions, one per submission, so it is not one per frame and **can exceed
        /// `sends_zc`**: a short send (the kernel took part of the frame; `short_sends`) is
        /// resubmitted for the rest, and the resubmission gets a notification of its own; a
        /// coalesced frame (`sends_coalesced`, not in `sends_zc`) is sent zero-copy too; and a
        /// zero-copy probe of the adaptive engine is one more zero-copy send like any other.
        /// Read after the connection closed (`Client::close` waits for the kernel), every
        /// zero-copy submission has its notification.
        ///
        /// `notifications_copied` are those in which the kernel says it copied after all
        /// (`ZC_COPIED`: loopback, veth, a NIC without scatter-gather). Seeing them, the
        /// adaptive engine moves the connection to the copy path (`path_switches`) and
        /// re-probes zero-copy now and then, each probe a zero-copy send and a notification.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct StatsSnapshot {
            /// The transport (and backend) that produced the numbers: `tcp`, `mem`, `uring`, `msgzc`;
            /// `tls` (tcp with TLS), `uring+tls` (a uring backend with TLS records sealed in its
            /// buffers).
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
    /// Of the copy path's frames, those written whole by the task that queued them, not by the
    /// connection's writer task, while the writer is idle (tcp, Unix sockets and io_uring,
    /// without TLS): the direct path, taken by a lone call's small request or response, and
    /// the early flush, a burst's first small requests or answers. A frame such a write cut
    /// short counts once, in `sends_copy` only, when the writer sends its rest.
    sends_direct,
    /// Bytes sent zero-copy.
    bytes_zc,
    /// Bytes sent in coalesced frames.
    bytes_coalesced,
    /// Segments copied into coalescing buffers.
    coalesced_segments,
    /// Frames carrying file regions whose pages went from the page cache to the socket in the
    /// kernel (`sendfile`, io_uring `SPLICE`), never through user space.
    sends_file,
    /// Bytes of those frames (their file regions, and the heads and memory segments between).
    bytes_file,
    /// Bytes of file regions that this transport could not splice (`mem`, TLS) and read into
    /// user space to send by copy: those frames are counted in `sends_copy`.
    file_read_bytes,
    /// Zero-copy completion notifications received: one per zero-copy submission, so short
    /// sends (resubmitted) and coalesced frames make it exceed `sends_zc`.
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
    /// Bytes TLS moved in user space beyond the cipher's own pass. Over tcp (`tls`, rustls's
    /// buffered connection): twice every byte received (rustls copies each record's plaintext
    /// out of its buffer, and the read copies it into the frame's). Over io_uring (`uring+tls`,
    /// records sealed and opened in the transport's own buffers), sending copies nothing else:
    /// the plaintext is copied into the send buffer and sealed there. Receiving decrypts each
    /// record where it landed in the frame's buffer; what is counted here is a record that could
    /// not land there (one that runs past the buffer's end, and the header read ahead of it;
    /// the records read with the handshake), decrypted aside or moved, and copied in.
    tls_bytes_copied,
    /// TLS key updates, sent and followed (io_uring's TLS: a key is updated before it has
    /// sealed 15/16 of the 2^24 records AES-GCM allows, and the peer's updates are followed).
    tls_key_updates,
    /// io_uring's TLS: buffers of records sealed in ordinary memory because the ciphertext pool
    /// was empty (the other connections held every buffer); sent by copy, freed once sent. Many
    /// mean the pool is too small for the connections sharing it
    /// (`UringTlsAcceptor::with_pool`).
    tls_heap_buffers,
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

/// Bytes in a column of their own: digits grouped by thousands, so sizes read at a glance.
struct Grouped(u64);

impl std::fmt::Display for Grouped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.0.to_string();
        let mut s = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                s.push(',');
            }
            s.push(c);
        }
        f.pad(&s)
    }
}

/// A table of which path the sends took (frames and bytes), then a line for each other group
/// of counters that is not all zero: notifications, receiving, backpressure.
impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = if self.transport.is_empty() { "unknown" } else { &self.transport };
        writeln!(f, "transport: {transport}")?;
        // Columns wide enough for 999,999,999 frames and 999 TB: a long run stays a table.
        writeln!(f, "| send path |      frames |               bytes |")?;
        writeln!(f, "|-----------|------------:|--------------------:|")?;
        for (path, frames, bytes) in [
            ("copy", self.sends_copy, self.bytes_copy),
            ("zero-copy", self.sends_zc, self.bytes_zc),
            ("coalesced", self.sends_coalesced, self.bytes_coalesced),
            ("file", self.sends_file, self.bytes_file),
        ] {
            writeln!(f, "| {path:<9} | {:>11} | {:>19} |", Grouped(frames), Grouped(bytes))?;
        }
        if self.sends_direct > 0 {
            writeln!(f, "copy: {} frames written by the task that queued them (one call at a time)", Grouped(self.sends_direct))?;
        }
        if self.sends_coalesced > 0 {
            writeln!(f, "coalesced: {} small segments copied together", Grouped(self.coalesced_segments))?;
        }
        if self.file_read_bytes > 0 {
            writeln!(f, "file regions read into memory (no splice here), sent by copy: {} bytes", Grouped(self.file_read_bytes))?;
        }
        if self.notifications > 0 || self.path_switches > 0 {
            writeln!(
                f,
                "zero-copy: {} notifications, {} of them saying the kernel copied (ZC_COPIED); {} path switches; {} short sends",
                Grouped(self.notifications),
                Grouped(self.notifications_copied),
                self.path_switches,
                Grouped(self.short_sends)
            )?;
        }
        if self.enobufs_fallbacks > 0 {
            writeln!(f, "refused zero-copy for want of memory, sent by copy: {}", Grouped(self.enobufs_fallbacks))?;
        }
        writeln!(
            f,
            "received: {} bytes, {} copied into an exact-size buffer, {} frames ({} bytes) copied to align their attachments",
            Grouped(self.recv_bytes),
            Grouped(self.recv_copied_bytes),
            Grouped(self.align_copies),
            Grouped(self.align_copy_bytes)
        )?;
        if self.recv_ring_chunks > 0 || self.recv_ring_empty > 0 {
            writeln!(
                f,
                "receive ring: {} buffers filled, ran dry {} times",
                Grouped(self.recv_ring_chunks),
                Grouped(self.recv_ring_empty)
            )?;
        }
        if self.transport.ends_with("tls") || self.tls_bytes_copied > 0 {
            writeln!(
                f,
                "tls: {}; {} bytes copied in user space beyond the cipher; {} key updates",
                tls_path(),
                Grouped(self.tls_bytes_copied),
                Grouped(self.tls_key_updates)
            )?;
            if self.tls_heap_buffers > 0 {
                writeln!(f, "tls: {} buffers of records sealed in ordinary memory, the ciphertext pool empty", Grouped(self.tls_heap_buffers))?;
            }
        }
        if self.budget_pauses > 0 || self.write_stalls > 0 {
            writeln!(
                f,
                "backpressure: reading paused {} times at the memory budget; {} connections closed for a stalled write",
                Grouped(self.budget_pauses),
                self.write_stalls
            )?;
        }
        Ok(())
    }
}

/// Which TLS path this process uses, in words (kernel TLS probed, never used yet).
fn tls_path() -> &'static str {
    #[cfg(feature = "tls")]
    return crate::transport::tls_session::path_description();
    #[cfg(not(feature = "tls"))]
    "TLS not built (feature `tls` off)"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_a_table_of_the_send_paths_and_leaves_out_zero_groups() {
        let s = StatsSnapshot {
            transport: "uring".into(),
            sends_copy: 193,
            bytes_copy: 202_375_168,
            sends_zc: 8,
            bytes_zc: 8_388_608,
            notifications: 9,
            notifications_copied: 9,
            short_sends: 1,
            path_switches: 1,
            recv_bytes: 1_000,
            ..Default::default()
        };
        let text = s.to_string();
        assert!(text.starts_with("transport: uring\n"), "{text}");
        assert!(text.contains("| copy      |         193 |         202,375,168 |"), "{text}");
        assert!(text.contains("| zero-copy |           8 |           8,388,608 |"), "{text}");
        assert!(text.contains("| file      |           0 |                   0 |"), "{text}");
        assert!(!text.contains("file regions read"), "{text}");
        // A long run's counts keep the columns aligned.
        let long = StatsSnapshot { sends_copy: 123_456_789, bytes_copy: 123_456_789_012_345, ..Default::default() };
        let widths: Vec<usize> = long.to_string().lines().filter(|l| l.starts_with('|')).map(str::len).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{long}");
        assert!(text.contains("9 notifications, 9 of them"), "{text}");
        assert!(text.contains("received: 1,000 bytes"), "{text}");
        assert!(!text.contains("receive ring") && !text.contains("backpressure"), "{text}");
        assert!(!text.contains("tls:"), "{text}");
        let tls = StatsSnapshot { transport: "uring+tls".into(), tls_bytes_copied: 16_384, ..Default::default() };
        let tls = tls.to_string();
        assert!(tls.contains("tls: rustls user-space records (kernel TLS "), "{tls}");
        assert!(tls.contains("16,384 bytes copied in user space beyond the cipher"), "{tls}");
        assert!(!tls.contains("ordinary memory"), "{tls}");
        let heap = StatsSnapshot { transport: "uring+tls".into(), tls_heap_buffers: 1_200, ..Default::default() }.to_string();
        assert!(heap.contains("tls: 1,200 buffers of records sealed in ordinary memory"), "{heap}");
        let tcp = StatsSnapshot { transport: "tcp".into(), sends_copy: 2, bytes_copy: 10, ..Default::default() };
        assert!(!tcp.to_string().contains("notifications"), "{tcp}");
        assert!(!tcp.to_string().contains("written by the task"), "{tcp}");
        let direct = StatsSnapshot { sends_copy: 2, sends_direct: 1_500, ..Default::default() }.to_string();
        assert!(direct.contains("copy: 1,500 frames written by the task that queued them"), "{direct}");
    }

    #[test]
    fn grouped_digits() {
        assert_eq!(Grouped(0).to_string(), "0");
        assert_eq!(Grouped(999).to_string(), "999");
        assert_eq!(Grouped(1_000).to_string(), "1,000");
        assert_eq!(Grouped(12_345_678).to_string(), "12,345,678");
        assert_eq!(format!("{:>6}", Grouped(1_000)), " 1,000");
    }
}
