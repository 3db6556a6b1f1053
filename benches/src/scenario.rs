//! The names the comparison is keyed by: systems, scenarios, metrics, and the shape of the
//! traffic each scenario sends. The string names are the ones in the JSON (issue 4).

use std::fmt;

/// One implementation under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// One-way stream: `write` from one buffer, `read` into a reused buffer woken a whole
    /// buffer at a time (`SO_RCVLOWAT`); no request and no response. The most one loopback
    /// connection carries (the 1 MiB and 64 MiB scenarios; on the streaming scenarios, of
    /// length-prefixed records).
    RawStream,
    /// The fastest request/response program over plain sockets (non-blocking, epoll, whole
    /// reads, a receive low-water mark so a receiver wakes once per read buffer, one `writev`
    /// per batch, measured socket buffers); every ratio is taken against it.
    RawTcpBest,
    /// Blocking `std::net` sockets, `read`/`write` with 256 KiB reads: the plain loop.
    RawTcpSimple,
    /// A plain io_uring `SEND_ZC` loop on the sending side, blocking reads on the other.
    RawUringZc,
    /// zcrpc over rpc-core's portable tokio TCP transport.
    ZcrpcTcp,
    /// zcrpc over transport-uring, adaptive send engine (the default).
    ZcrpcUring,
    /// zcrpc over transport-uring, zero-copy forced on every send.
    ZcrpcUringZc,
    /// zcrpc over transport-uring's `MSG_ZEROCOPY` backend.
    ZcrpcMsgzc,
    /// tonic 0.14 with prost, `bytes` fields generated as `Bytes`.
    Tonic,
    /// tarpc 0.38 over its TCP serde transport with bincode.
    Tarpc,
    /// The same tarpc service and client over `rpc-tarpc`: each request a zcrpc call.
    TarpcOverZcrpc,
}

impl System {
    /// Every system, in the order of the table's columns.
    pub const ALL: [System; 11] = [
        System::RawStream,
        System::RawTcpBest,
        System::RawTcpSimple,
        System::RawUringZc,
        System::ZcrpcTcp,
        System::ZcrpcUring,
        System::ZcrpcUringZc,
        System::ZcrpcMsgzc,
        System::Tonic,
        System::Tarpc,
        System::TarpcOverZcrpc,
    ];

    /// The name used in the JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            System::RawStream => "raw_stream",
            System::RawTcpBest => "raw_tcp_best",
            System::RawTcpSimple => "raw_tcp_simple",
            System::RawUringZc => "raw_uring_zc",
            System::ZcrpcTcp => "zcrpc_tcp",
            System::ZcrpcUring => "zcrpc_uring",
            System::ZcrpcUringZc => "zcrpc_uring_zc",
            System::ZcrpcMsgzc => "zcrpc_msgzc",
            System::Tonic => "tonic",
            System::Tarpc => "tarpc",
            System::TarpcOverZcrpc => "tarpc_over_zcrpc",
        }
    }

    /// One line for the legend under the table.
    pub fn describe(self) -> &'static str {
        match self {
            System::RawStream => "the physical ceiling: a one-way stream, write from one buffer, read into a reused buffer woken a whole buffer at a time (SO_RCVLOWAT); no request/response; on the stream_ scenarios, length-prefixed records of the message size, counted by parsing their headers",
            System::RawTcpBest => "the request/response ceiling: non-blocking sockets + edge-triggered epoll (blocking when a window fits the socket buffers: the 64-byte scenarios), whole-message reads into a reused buffer, woken once per read buffer (SO_RCVLOWAT) on the large messages, one system call per batch",
            System::RawTcpSimple => "blocking std sockets, 256 KiB reads, write per message, small messages batched per write",
            System::RawUringZc => "raw_tcp_simple with the large direction sent by a bare io_uring SEND_ZC loop",
            System::ZcrpcTcp => "zcrpc over rpc-core's tokio TCP transport; bodies of 4 KiB and more as attachments",
            System::ZcrpcUring => "zcrpc over transport-uring, backend uring, mode adaptive (the default)",
            System::ZcrpcUringZc => "zcrpc over transport-uring, backend uring, mode always-zc",
            System::ZcrpcMsgzc => "zcrpc over transport-uring, backend msgzc (MSG_ZEROCOPY), mode adaptive",
            System::Tonic => "tonic 0.14 + prost, bytes fields as Bytes, default HTTP/2 settings, 128 MiB message limit",
            System::Tarpc => "tarpc 0.38 serde transport over TCP, bincode, 128 MiB frame limit",
            System::TarpcOverZcrpc => "the tarpc service and client unchanged, over rpc-tarpc: each request a zcrpc call on the tokio TCP transport, postcard, 128 MiB frame limit",
        }
    }

    /// Parses a name as printed by [`System::name`].
    pub fn from_name(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    /// True for the plain-socket programs (no RPC framework).
    pub fn is_raw(self) -> bool {
        matches!(
            self,
            System::RawStream | System::RawTcpBest | System::RawTcpSimple | System::RawUringZc
        )
    }

    /// True for the four zcrpc systems.
    pub fn is_zcrpc(self) -> bool {
        matches!(
            self,
            System::ZcrpcTcp | System::ZcrpcUring | System::ZcrpcUringZc | System::ZcrpcMsgzc
        )
    }

    /// Why this system does not run this scenario, or `None` when it does.
    pub fn not_applicable(self, scenario: Scenario) -> Option<&'static str> {
        match (self, scenario) {
            (
                System::RawTcpSimple | System::RawStream | System::ZcrpcTcp | System::ZcrpcUring,
                Scenario::File1g,
            ) => None,
            (_, Scenario::File1g) => Some(
                "a file download is compared as read+write (raw_tcp_simple), sendfile (raw_stream) and file regions (zcrpc_tcp, zcrpc_uring)",
            ),
            (System::Tarpc | System::TarpcOverZcrpc, s) if s.is_server_stream() => {
                Some("tarpc has no streaming calls")
            }
            (System::RawTcpBest | System::RawTcpSimple | System::RawUringZc, s)
                if s.is_server_stream() =>
            {
                Some("a request/response program; raw_stream is the one-way ceiling")
            }
            (System::RawUringZc, s) if !s.is_bulk() => {
                Some("a SEND_ZC loop measures bulk transfers only")
            }
            (System::RawStream, s) if !s.is_bulk() && !s.is_server_stream() => {
                Some("a one-way stream stands in for bulk transfers and streams only")
            }
            (s, Scenario::Segments4k) if !s.is_zcrpc() => {
                Some("scatter-gather payloads are a zcrpc feature")
            }
            _ => None,
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a scenario reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Median call latency, microseconds.
    P50Us,
    /// 99th percentile call latency, microseconds.
    P99Us,
    /// Completed calls per second.
    CallsPerS,
    /// Payload bytes per second, in units of 10^9.
    GbPerS,
    /// CPU seconds (client + server, user + system) per 10^9 payload bytes.
    CpuSPerGb,
    /// CPU microseconds (client + server, user + system) per call.
    CpuUsPerCall,
    /// Stream messages received per second.
    MsgsPerS,
    /// CPU microseconds (client + server, user + system) per stream message.
    CpuUsPerMsg,
}

impl Metric {
    /// The name used in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::P50Us => "p50_us",
            Metric::P99Us => "p99_us",
            Metric::CallsPerS => "calls_per_s",
            Metric::GbPerS => "gb_per_s",
            Metric::CpuSPerGb => "cpu_s_per_gb",
            Metric::CpuUsPerCall => "cpu_us_per_call",
            Metric::MsgsPerS => "msgs_per_s",
            Metric::CpuUsPerMsg => "cpu_us_per_msg",
        }
    }

    /// Parses a name as printed by [`Metric::name`].
    pub fn from_name(name: &str) -> Option<Metric> {
        [
            Metric::P50Us,
            Metric::P99Us,
            Metric::CallsPerS,
            Metric::GbPerS,
            Metric::CpuSPerGb,
            Metric::CpuUsPerCall,
            Metric::MsgsPerS,
            Metric::CpuUsPerMsg,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    /// Latencies are better low, rates better high.
    pub fn lower_is_better(self) -> bool {
        matches!(
            self,
            Metric::P50Us
                | Metric::P99Us
                | Metric::CpuSPerGb
                | Metric::CpuUsPerCall
                | Metric::CpuUsPerMsg
        )
    }

    /// True for the CPU-cost metrics (which also carry a per-side split).
    pub fn is_cpu(self) -> bool {
        matches!(
            self,
            Metric::CpuSPerGb | Metric::CpuUsPerCall | Metric::CpuUsPerMsg
        )
    }
}

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// One 64-byte call at a time, whole process on one CPU.
    Latency64bPinned,
    /// One 64-byte call at a time, client and server on different CPUs.
    Latency64b,
    /// 64-byte calls, 128 in flight on one connection.
    Qps64b,
    /// 1 MiB requests, 8-byte responses, 8 in flight.
    Upload1m,
    /// 8-byte requests, 1 MiB responses, 8 in flight.
    Download1m,
    /// One 64 MiB request at a time, 8-byte responses.
    Call64m,
    /// A 1 MiB request in 4096 segments of 256 bytes, 8 in flight.
    Segments4k,
    /// A generated 1 GiB file downloaded over and over, in 4 MiB pieces.
    File1g,
    /// One server-streaming call answering with 64-byte messages for ever.
    Stream64b,
    /// One server-streaming call answering with 1 MiB messages for ever.
    Stream1m,
}

/// Payload size of the 1 MiB scenarios.
pub const MIB: usize = 1 << 20;
/// The small side of an upload or a download: an acknowledgement.
pub const ACK_LEN: usize = 8;

impl Scenario {
    /// Every scenario, in the order of the table's rows.
    pub const ALL: [Scenario; 10] = [
        Scenario::Latency64bPinned,
        Scenario::Latency64b,
        Scenario::Qps64b,
        Scenario::Upload1m,
        Scenario::Download1m,
        Scenario::Call64m,
        Scenario::Segments4k,
        Scenario::File1g,
        Scenario::Stream64b,
        Scenario::Stream1m,
    ];

    /// The name used in the JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Latency64bPinned => "latency_64b_pinned",
            Scenario::Latency64b => "latency_64b",
            Scenario::Qps64b => "qps_64b",
            Scenario::Upload1m => "upload_1m",
            Scenario::Download1m => "download_1m",
            Scenario::Call64m => "call_64m",
            Scenario::Segments4k => "segments_4k",
            Scenario::File1g => "file_1g",
            Scenario::Stream64b => "stream_64b",
            Scenario::Stream1m => "stream_1m",
        }
    }

    /// Parses a name as printed by [`Scenario::name`].
    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One line for the legend under the table.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Latency64bPinned => {
                "one call at a time, 64-byte request and response, whole process on CPU 0"
            }
            Scenario::Latency64b => {
                "one call at a time, 64-byte request and response, client and server on different CPUs"
            }
            Scenario::Qps64b => "64-byte request and response, 128 calls in flight on one connection",
            Scenario::Upload1m => "1 MiB request, 8-byte response, 8 calls in flight",
            Scenario::Download1m => "8-byte request, 1 MiB response, 8 calls in flight",
            Scenario::Call64m => "64 MiB request, 8-byte response, one call at a time",
            Scenario::Segments4k => {
                "1 MiB request as one attachment of 4096 segments of 256 bytes, 8 in flight"
            }
            Scenario::File1g => {
                "a 1 GiB file (in the page cache) downloaded: read+write, sendfile, or zcrpc file regions of 4 MiB in one server stream"
            }
            Scenario::Stream64b => {
                "one server-streaming call, 64-byte messages, counted in messages per second"
            }
            Scenario::Stream1m => "one server-streaming call, 1 MiB messages",
        }
    }

    /// What the scenario reports, in table order.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Scenario::Latency64bPinned | Scenario::Latency64b => {
                &[Metric::P50Us, Metric::P99Us, Metric::CpuUsPerCall]
            }
            Scenario::Qps64b => &[Metric::CallsPerS, Metric::CpuUsPerCall],
            Scenario::Stream64b => &[Metric::MsgsPerS, Metric::CpuUsPerMsg],
            _ => &[Metric::GbPerS, Metric::CpuSPerGb],
        }
    }

    /// Bulk-transfer request/response scenarios, the ones a bare `SEND_ZC` loop can stand in
    /// for.
    pub fn is_bulk(self) -> bool {
        matches!(
            self,
            Scenario::Upload1m | Scenario::Download1m | Scenario::Call64m
        )
    }

    /// One server-streaming call instead of request/response calls.
    pub fn is_server_stream(self) -> bool {
        self.shape().server_stream
    }

    /// True when the whole process runs on one CPU.
    pub fn pinned(self) -> bool {
        self == Scenario::Latency64bPinned
    }

    /// The traffic of one call.
    pub fn shape(self) -> Shape {
        let small = |window| Shape {
            window,
            request_len: 64,
            request_segments: 1,
            response_len: 64,
            server_stream: false,
        };
        let upload = |len, window, segments| Shape {
            window,
            request_len: len,
            request_segments: segments,
            response_len: ACK_LEN,
            server_stream: false,
        };
        let stream = |len| Shape {
            window: 1,
            request_len: ACK_LEN,
            request_segments: 1,
            response_len: len,
            server_stream: true,
        };
        match self {
            Scenario::Latency64bPinned | Scenario::Latency64b => small(1),
            Scenario::Qps64b => small(128),
            Scenario::Upload1m => upload(MIB, 8, 1),
            Scenario::Download1m => Shape {
                window: 8,
                request_len: ACK_LEN,
                request_segments: 1,
                response_len: MIB,
                server_stream: false,
            },
            Scenario::Call64m => upload(64 * MIB, 1, 1),
            Scenario::Segments4k => upload(MIB, 8, 4096),
            Scenario::File1g => stream(crate::systems::file::FILE_CHUNK),
            Scenario::Stream64b => stream(64),
            Scenario::Stream1m => stream(MIB),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The traffic of one call of a scenario; for a server stream, of its one call and each of its
/// messages (every message counts as a "call" in [`crate::meter::Meter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Calls kept in flight on the one connection (1 for a stream).
    pub window: usize,
    /// Request payload bytes.
    pub request_len: usize,
    /// Segments the request payload is split into (zcrpc attachments only).
    pub request_segments: usize,
    /// Response payload bytes; for a server stream, the bytes of each message.
    pub response_len: usize,
    /// One server-streaming call: the request opens it, the server sends messages of
    /// `response_len` bytes for as long as the client reads.
    pub server_stream: bool,
}

impl Shape {
    /// The bytes a GB/s figure counts per call: the larger direction's payload.
    pub fn payload_per_call(&self) -> usize {
        self.request_len.max(self.response_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        for m in [Metric::MsgsPerS, Metric::CpuUsPerMsg] {
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
    }

    #[test]
    fn streams_run_where_a_stream_exists() {
        for s in [Scenario::Stream64b, Scenario::Stream1m] {
            assert!(s.is_server_stream() && !s.is_bulk());
            assert_eq!(s.shape().window, 1);
            for system in System::ALL {
                let runs = system.not_applicable(s).is_none();
                let expected =
                    system.is_zcrpc() || matches!(system, System::Tonic | System::RawStream);
                assert_eq!(runs, expected, "{system} on {s}");
            }
        }
        assert_eq!(
            Scenario::Stream64b.metrics(),
            &[Metric::MsgsPerS, Metric::CpuUsPerMsg]
        );
        assert_eq!(Scenario::Stream1m.shape().payload_per_call(), MIB);
        // The request/response scenarios are unchanged.
        assert!(System::RawStream.not_applicable(Scenario::Qps64b).is_some());
        assert!(System::RawStream
            .not_applicable(Scenario::Download1m)
            .is_none());
        assert!(!Scenario::Download1m.is_server_stream());
    }
}
