//! The raw ceilings: `raw_tcp_best`, the fastest request/response program over plain sockets we
//! could write for each scenario, and `raw_stream`, a one-way stream with no request/response.
//!
//! `raw_tcp_best` does the same work per call as every RPC system (the scenario's bytes each
//! way, the scenario's window of calls in flight on one connection, the same 8-byte length
//! header as [`super::raw`]) with everything a hand-tuned program would do:
//!
//! - non-blocking sockets and one edge-triggered epoll per side, so a thread that cannot send
//!   keeps receiving (and the reverse) and sleeps only when both directions are stuck;
//! - each read asks for the whole of what may be queued (a reused buffer of
//!   [`Tuning::read_buf`], at least a whole message and header), never a fixed small chunk: a
//!   short read means the queue is empty, so no read is spent on `EAGAIN`;
//! - every queued message goes out in one system call: large ones as a `writev` of iovecs that
//!   all point at the one encoded message, small ones as one `write` from a buffer of
//!   pre-encoded copies (no copy per call, no system call per message);
//! - a receiver about to sleep sets `SO_RCVLOWAT` to what is certain to come (the rest of the
//!   message in progress, for the client its whole window of responses), at most one read
//!   buffer, so the kernel wakes it once per read buffer instead of once per 64 KiB segment:
//!   on loopback the sender's thread pays for each wake-up (see `End::lowat`);
//! - socket buffer sizes from [`Tuning`], chosen by measurement per scenario (see the README).
//!
//! When everything a window sends fits in the socket buffers (the 64-byte scenarios) the
//! sockets stay blocking: a blocking `read` is the readiness wait, one system call fewer per
//! batch than epoll and then `read`.
//!
//! `raw_stream` is the physical ceiling of one loopback connection: the server `write`s the
//! scenario's payload from one buffer over and over, the client `read`s into a reused buffer
//! with `SO_RCVLOWAT` at the buffer's size, and every payload's worth of bytes counts as one
//! call. `sendfile` from a memfd (`ZCRPC_BENCH_RAW=send=sendfile`) saves the sending copy but
//! measured slower here: the receiver's copy out of the memfd's 4 KiB page-cache pages took
//! 1.6–1.9× the CPU per byte of its copy out of the 32 KiB chunks a `write` fills, and the
//! receiver is the slower side of a stream.

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use crate::meter::{Meter, Sample, Timing};
use crate::placement::{run_pair, Placement};
use crate::scenario::Shape;
use crate::sys;

const HEADER: usize = 8;
/// Iovecs per `writev` (`IOV_MAX` is 1024).
const MAX_IOV: usize = 1024;
/// Messages this small go out of one buffer holding many encoded copies, written from
/// whatever offset is due: one contiguous `write` instead of an iovec per message (the kernel
/// walks iovecs one by one, which at 72 bytes each costs more than the bytes), and no copy
/// per call because every message is the same.
const BATCH_BYTES: usize = 256 << 10;

/// The knobs, chosen per scenario by [`Tuning::for_shape`]; `ZCRPC_BENCH_RAW` overrides them
/// for sweeps (`rcvbuf=N,sndbuf=N,readbuf=N,wait=epoll|block,batch=N`, sizes in bytes, 0 = kernel
/// default with autotuning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// `SO_RCVBUF` of both sockets, `None` for the kernel's autotuning.
    pub rcvbuf: Option<usize>,
    /// `SO_SNDBUF` of both sockets, `None` for the kernel's autotuning.
    pub sndbuf: Option<usize>,
    /// Size of the reused receive buffer.
    pub read_buf: usize,
    /// Blocking sockets instead of non-blocking ones and epoll.
    pub blocking: bool,
    /// Most messages one `writev` asks the kernel to take.
    pub max_batch: usize,
    /// Largest `SO_RCVLOWAT` a receiver sets before it waits (see `End::lowat`), 0 for none;
    /// `None` for the default: the read buffer's size with non-blocking sockets and in the
    /// stream, none for blocking request/response (64-byte messages arrive in one segment).
    pub lowat_cap: Option<usize>,
    /// `raw_stream`: bytes of the source (buffer or memfd) sent over and over, 0 for the
    /// scenario's payload.
    pub stream_len: usize,
    /// `raw_stream`: `sendfile` from a memfd instead of `write` from a buffer.
    pub stream_sendfile: bool,
}

/// Environment variable overriding [`Tuning`] for sweeps.
pub const RAW_ENV: &str = "ZCRPC_BENCH_RAW";

impl Tuning {
    /// What measured fastest for this traffic on the 2-vCPU machine (README, "The raw
    /// ceilings"), unless [`RAW_ENV`] says otherwise.
    pub fn for_shape(shape: Shape, stream: bool) -> Result<Tuning, String> {
        let largest = HEADER + shape.request_len.max(shape.response_len);
        // The stream measured fastest with 4 MiB socket buffers (`rmem_max`/`wmem_max` here);
        // request/response showed no difference from autotuning within the machine's noise.
        let buffers = stream.then_some(4 << 20);
        let mut t = Tuning {
            rcvbuf: buffers,
            sndbuf: buffers,
            read_buf: largest.clamp(64 << 10, 4 << 20),
            // Everything a window sends fits in the socket buffers, so a blocking send cannot
            // wait on a peer that is itself blocked sending: a blocking `read` is the wait.
            blocking: stream || shape.window * largest <= (64 << 10),
            max_batch: MAX_IOV,
            lowat_cap: None,
            stream_len: 0,
            stream_sendfile: false,
        };
        if let Ok(spec) = std::env::var(RAW_ENV) {
            t.apply(&spec)?;
        }
        Ok(t)
    }

    fn apply(&mut self, spec: &str) -> Result<(), String> {
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or(format!("{RAW_ENV}: {part}: expected key=value"))?;
            let n = || {
                v.parse::<usize>()
                    .map_err(|_| format!("{RAW_ENV}: {k}: not a number"))
            };
            match k {
                "rcvbuf" => self.rcvbuf = Some(n()?).filter(|&n| n > 0),
                "sndbuf" => self.sndbuf = Some(n()?).filter(|&n| n > 0),
                "readbuf" => self.read_buf = n()?.max(HEADER),
                "wait" => self.blocking = v == "block",
                "batch" => self.max_batch = n()?.clamp(1, MAX_IOV),
                "lowat" => self.lowat_cap = Some(n()?),
                "len" => self.stream_len = n()?,
                "send" => self.stream_sendfile = v == "sendfile",
                _ => return Err(format!("{RAW_ENV}: unknown key {k}")),
            }
        }
        Ok(())
    }

    fn setup(&self, sock: &TcpStream) -> io::Result<()> {
        sock.set_nodelay(true)?;
        if let Some(n) = self.rcvbuf {
            sys::set_rcvbuf(sock, n)?;
        }
        if let Some(n) = self.sndbuf {
            sys::set_sndbuf(sock, n)?;
        }
        sock.set_nonblocking(!self.blocking)
    }
}

/// One encoded message, header included.
fn encoded(len: usize) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER + len);
    msg.extend_from_slice(&(len as u64).to_le_bytes());
    msg.resize(HEADER + len, 0xA5);
    msg
}

/// One end of the connection: messages queued to send, and the framing of what comes in.
struct End {
    sock: TcpStream,
    epoll: Option<sys::Epoll>,
    msg: Vec<u8>,
    /// `msg` repeated, when messages are small (see [`BATCH_BYTES`]); empty otherwise.
    batch: Vec<u8>,
    max_batch: usize,
    /// Whole messages still to send, the first of them `sent` bytes in.
    queued: usize,
    sent: usize,
    framer: super::raw::Framer,
    buf: Vec<u8>,
    /// Whole messages the peer is sure to send after the one in progress: the client's window
    /// of responses; 0 for the server, which cannot know when the next request comes.
    peer_window: usize,
    /// Length of each incoming message, header included.
    recv_msg: usize,
    lowat_cap: usize,
    /// The `SO_RCVLOWAT` in force.
    lowat: usize,
}

/// Bytes certain to arrive: `left` of the message in progress (0 at a boundary), then the rest
/// of a window of `peer_window` messages of `msg` bytes each, the one in progress included
/// (`peer_window` 0: nothing is known beyond the message in progress).
fn certain_bytes(left: usize, peer_window: usize, msg: usize) -> usize {
    match (peer_window, left) {
        (0, left) => left,
        (w, 0) => w * msg,
        (w, left) => left + (w - 1) * msg,
    }
}

/// What one pass over the socket did.
struct Pass {
    received: usize,
    /// Neither direction can move until the kernel says so.
    stuck: bool,
}

impl End {
    fn new(
        sock: TcpStream,
        tuning: Tuning,
        send_len: usize,
        window: usize,
        recv_len: usize,
        peer_window: usize,
    ) -> io::Result<End> {
        tuning.setup(&sock)?;
        let epoll = if tuning.blocking {
            None
        } else {
            Some(sys::Epoll::watch(&sock)?)
        };
        let msg = encoded(send_len);
        let copies = window.min(BATCH_BYTES / msg.len());
        let batch = if copies > 1 {
            msg.repeat(copies)
        } else {
            Vec::new()
        };
        Ok(End {
            sock,
            epoll,
            batch,
            max_batch: tuning.max_batch,
            msg,
            queued: 0,
            sent: 0,
            framer: super::raw::Framer::default(),
            buf: vec![0u8; tuning.read_buf],
            recv_msg: HEADER + recv_len,
            peer_window,
            lowat_cap: tuning.lowat_cap.unwrap_or(if tuning.blocking {
                0
            } else {
                tuning.read_buf
            }),
            lowat: 1,
        })
    }

    /// Before a wait: asks the kernel not to wake this side until as many bytes are queued as
    /// are certain to come (the rest of the message in progress, and for the client the rest
    /// of its window), at most [`Tuning::lowat_cap`]. On loopback the sender's thread runs
    /// the receiver's TCP input and wakes the receiver for each segment it queues while the
    /// receiver sleeps; a receiver that drains faster than its peer sends otherwise sleeps and
    /// is woken once per 64 KiB segment, each wake-up a cross-CPU interrupt that the sending
    /// side pays for. Never more than will certainly come, or the wait would never end.
    fn lowat(&mut self) -> io::Result<()> {
        if self.lowat_cap == 0 {
            return Ok(());
        }
        let certain = certain_bytes(
            self.framer.left_in_message(),
            self.peer_window,
            self.recv_msg,
        );
        let want = certain.clamp(1, self.lowat_cap);
        if want != self.lowat {
            sys::set_rcvlowat(&self.sock, want)?;
            self.lowat = want;
        }
        Ok(())
    }

    /// Writes queued messages until done or the socket is full; true when it is full.
    fn flush(&mut self) -> io::Result<bool> {
        while self.queued > 0 {
            let (asked, result) = if self.batch.is_empty() {
                let n_iov = self.queued.min(self.max_batch);
                let mut iov = Vec::with_capacity(n_iov);
                iov.push(IoSlice::new(&self.msg[self.sent..]));
                for _ in 1..n_iov {
                    iov.push(IoSlice::new(&self.msg));
                }
                let asked = self.msg.len() * n_iov - self.sent;
                (asked, self.sock.write_vectored(&iov))
            } else {
                let end = self.msg.len() * self.queued.min(self.batch.len() / self.msg.len());
                let slice = &self.batch[self.sent..end];
                (slice.len(), self.sock.write(slice))
            };
            let n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let done = self.sent + n;
            self.queued -= done / self.msg.len();
            self.sent = done % self.msg.len();
            if n < asked {
                return Ok(!self.sock_blocking());
            }
        }
        Ok(false)
    }

    fn sock_blocking(&self) -> bool {
        self.epoll.is_none()
    }

    /// Reads until the queue is empty; returns the whole messages that ended.
    fn drain(&mut self) -> io::Result<usize> {
        if self.sock_blocking() {
            // The read below is the wait.
            self.lowat()?;
        }
        let mut done = 0;
        loop {
            let n = match self.sock.read(&mut self.buf) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            done += self.framer.feed(&self.buf[..n]);
            // A short read emptied the queue; data arriving later raises a new edge. A
            // blocking socket returns after one read: the caller has work to do.
            if n < self.buf.len() || self.sock_blocking() {
                return Ok(done);
            }
        }
    }

    /// Sends what is queued, then receives what is there.
    fn pass(&mut self) -> io::Result<Pass> {
        let full = self.flush()?;
        let received = self.drain()?;
        Ok(Pass {
            received,
            stuck: received == 0 && (full || self.queued == 0),
        })
    }

    fn wait(&mut self) -> io::Result<()> {
        self.lowat()?;
        match &self.epoll {
            Some(e) => e.wait(),
            // Blocking: the next read is the wait.
            None => Ok(()),
        }
    }
}

fn serve(listener: TcpListener, shape: Shape, tuning: Tuning) -> io::Result<()> {
    let (sock, _) = listener.accept()?;
    // The server cannot know when the next request comes: only the rest of one is certain.
    let mut end = End::new(
        sock,
        tuning,
        shape.response_len,
        shape.window,
        shape.request_len,
        0,
    )?;
    loop {
        let pass = end.pass()?;
        end.queued += pass.received;
        if pass.stuck {
            end.wait()?;
        }
    }
}

fn client(
    sock: TcpStream,
    shape: Shape,
    tuning: Tuning,
    timing: Timing,
    record_latency: bool,
) -> io::Result<Sample> {
    let mut end = End::new(
        sock,
        tuning,
        shape.request_len,
        shape.window,
        shape.response_len,
        // Every request queued is answered: a whole window of responses is always coming.
        shape.window,
    )?;
    let mut started = std::collections::VecDeque::with_capacity(shape.window);
    let mut meter = Meter::new(timing, record_latency);
    let now = Instant::now();
    started.extend(std::iter::repeat_n(now, shape.window));
    end.queued = shape.window;
    loop {
        let pass = end.pass()?;
        if pass.received > 0 {
            for _ in 0..pass.received {
                let t = started.pop_front().expect("a response without a request");
                if !meter.complete(t) {
                    return Ok(meter.finish());
                }
            }
            let now = Instant::now();
            started.extend(std::iter::repeat_n(now, pass.received));
            end.queued += pass.received;
        } else if pass.stuck {
            end.wait()?;
        }
    }
}

/// Runs one measurement of `raw_tcp_best`.
pub fn run(
    shape: Shape,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, String> {
    let tuning = Tuning::for_shape(shape, false)?;
    run_pair(
        placement,
        move |addr_tx| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string())?);
            serve(listener, shape, tuning).map_err(|e| format!("raw_tcp_best server: {e}"))
        },
        move |addr| {
            let sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            client(sock, shape, tuning, timing, record_latency)
                .map_err(|e| format!("raw_tcp_best client: {e}"))
        },
    )
}

/// Runs one measurement of `raw_stream`: the server `write`s the scenario's payload (the larger
/// direction) over and over, the client counts each payload's worth of bytes as one call.
///
/// On a streaming scenario the stream carries records instead: each message of the scenario
/// behind the same 8-byte length header as every raw system, the source holding as many
/// copies as fit in `BATCH_BYTES` (at least one), and the client counts whole records with
/// the `raw::Framer`, a clock read per [`crate::meter::MESSAGES_PER_TICK`] of them as
/// for the RPC systems' streams.
pub fn run_stream(shape: Shape, placement: Placement, timing: Timing) -> Result<Sample, String> {
    let payload = shape.payload_per_call();
    let records = shape.server_stream;
    let tuning = Tuning::for_shape(shape, true)?;
    run_pair(
        placement,
        move |addr_tx| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string())?);
            let fail = |e: io::Error| format!("raw_stream server: {e}");
            let (sock, _) = listener.accept().map_err(fail)?;
            tuning.setup(&sock).map_err(fail)?;
            let data = if records {
                let record = encoded(payload);
                let bytes = if tuning.stream_len > 0 {
                    tuning.stream_len
                } else {
                    BATCH_BYTES
                };
                record.repeat((bytes / record.len()).max(1))
            } else {
                let len = if tuning.stream_len > 0 {
                    tuning.stream_len
                } else {
                    payload
                };
                vec![0xA5u8; len]
            };
            if !tuning.stream_sendfile {
                let mut sock = sock;
                loop {
                    sock.write_all(&data).map_err(fail)?;
                }
            }
            let len = data.len();
            let file = sys::memfd_with(&data).map_err(fail)?;
            let mut offset = 0u64;
            loop {
                let left = len - offset as usize;
                offset += sys::sendfile(&sock, &file, offset, left).map_err(fail)? as u64;
                if offset as usize == len {
                    offset = 0;
                }
            }
        },
        move |addr| {
            let fail = |e: io::Error| format!("raw_stream client: {e}");
            let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            tuning.setup(&sock).map_err(fail)?;
            let mut buf = vec![0u8; tuning.read_buf];
            let lowat = tuning.lowat_cap.unwrap_or(buf.len()).min(buf.len());
            if lowat > 0 {
                // The stream never ends: a whole buffer's worth is always coming.
                sys::set_rcvlowat(&sock, lowat).map_err(fail)?;
            }
            let meter = Meter::new(timing, false);
            if records {
                let mut framer = super::raw::Framer::default();
                let mut counter = crate::meter::StreamCounter::new(meter, payload);
                loop {
                    let n = sock.read(&mut buf).map_err(fail)?;
                    if n == 0 {
                        return Err("raw_stream: server closed".to_string());
                    }
                    if !counter.add(framer.feed(&buf[..n]) as u64) {
                        return Ok(counter.finish());
                    }
                }
            }
            let mut meter = meter;
            let mut into_call = 0usize;
            let mut call_started = Instant::now();
            loop {
                let n = sock.read(&mut buf).map_err(fail)?;
                if n == 0 {
                    return Err("raw_stream: server closed".to_string());
                }
                into_call += n;
                while into_call >= payload {
                    into_call -= payload;
                    if !meter.complete(call_started) {
                        return Ok(meter.finish());
                    }
                    call_started = Instant::now();
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_bytes_never_counts_what_may_not_come() {
        let msg = HEADER + (1 << 20);
        // The server knows only the rest of the request in progress.
        assert_eq!(certain_bytes(0, 0, msg), 0);
        assert_eq!(certain_bytes(5, 0, msg), 5);
        // The client: its whole window, less what it already has of the first response.
        assert_eq!(certain_bytes(0, 8, msg), 8 * msg);
        assert_eq!(certain_bytes(100, 8, msg), 100 + 7 * msg);
        assert_eq!(certain_bytes(100, 1, msg), 100);
    }

    #[test]
    fn tuning_keys_parse() {
        let shape = crate::scenario::Scenario::Download1m.shape();
        let mut t = Tuning::for_shape(shape, false).unwrap();
        t.apply("lowat=0,len=4096,send=sendfile").unwrap();
        assert_eq!(t.lowat_cap, Some(0));
        assert_eq!(t.stream_len, 4096);
        assert!(t.stream_sendfile);
        assert!(t.apply("nope=1").is_err());
    }
}
