//! `raw_tcp_simple` and `raw_uring_zc`: the plainest loops over a socket (the ceilings are in
//! [`super::raw_best`]).
//!
//! Messages are an 8-byte little-endian length followed by that many bytes. The server answers
//! every request with one response of the scenario's size; the client keeps the scenario's
//! window of requests outstanding. Both sides are one blocking thread with a `std::net`
//! socket. Reads go through a 256 KiB buffer and the bytes are only counted, never copied
//! out; small messages are batched into one `write`, as any hand-written server would.
//! `raw_uring_zc` sends the large direction with [`SendZcLoop`] instead of `write`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use crate::meter::{Meter, Sample, Timing};
use crate::placement::{run_pair, Placement};
use crate::scenario::Shape;
use transport_uring::baseline::SendZcLoop;

const HEADER: usize = 8;
const READ_BUF: usize = 256 * 1024;
/// Messages up to this size are gathered into one buffer and sent with one `write`.
const BATCH_LIMIT: usize = 64 * 1024;

/// Which send path the large direction takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPath {
    /// `write(2)` on a blocking socket.
    Write,
    /// io_uring `SEND_ZC` for messages larger than `BATCH_LIMIT`.
    UringZc,
}

/// One encoded message, header included, sent as it is for every call.
fn encoded(len: usize) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER + len);
    msg.extend_from_slice(&(len as u64).to_le_bytes());
    msg.resize(HEADER + len, 0xA5);
    msg
}

/// Counts whole messages in a byte stream without keeping their bodies.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    header: [u8; HEADER],
    header_fill: usize,
    body_left: u64,
}

impl Framer {
    /// Bytes still to come before the message in progress ends, as far as they are known: the
    /// rest of the body once its header is in, the rest of the header before that, 0 at a
    /// message boundary.
    pub(crate) fn left_in_message(&self) -> usize {
        if self.body_left > 0 {
            self.body_left as usize
        } else if self.header_fill > 0 {
            HEADER - self.header_fill
        } else {
            0
        }
    }

    /// Consumes `bytes`, returns how many messages ended in them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut done = 0;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = (self.body_left as usize).min(bytes.len());
                self.body_left -= take as u64;
                bytes = &bytes[take..];
                if self.body_left == 0 {
                    done += 1;
                }
                continue;
            }
            let take = (HEADER - self.header_fill).min(bytes.len());
            self.header[self.header_fill..self.header_fill + take].copy_from_slice(&bytes[..take]);
            self.header_fill += take;
            bytes = &bytes[take..];
            if self.header_fill == HEADER {
                self.header_fill = 0;
                self.body_left = u64::from_le_bytes(self.header);
                if self.body_left == 0 {
                    done += 1;
                }
            }
        }
        done
    }
}

/// Sends `count` copies of one encoded message.
struct MessageSender {
    /// Owns its own copy of the message for the kernel to read until its notifications.
    zc: Option<SendZcLoop>,
    msg: Vec<u8>,
    batch: Vec<u8>,
}

impl MessageSender {
    fn new(len: usize, path: SendPath, sock: &TcpStream) -> io::Result<MessageSender> {
        let msg = encoded(len);
        let zc = if path == SendPath::UringZc && msg.len() > BATCH_LIMIT {
            Some(SendZcLoop::new(sock, bytes::Bytes::from(msg.clone()))?)
        } else {
            None
        };
        Ok(MessageSender {
            zc,
            msg,
            batch: Vec::new(),
        })
    }

    fn send(&mut self, sock: &mut TcpStream, count: usize) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        if let Some(zc) = &mut self.zc {
            for _ in 0..count {
                zc.send()?;
            }
            return Ok(());
        }
        if self.msg.len() <= BATCH_LIMIT && count > 1 {
            self.batch.clear();
            for _ in 0..count {
                self.batch.extend_from_slice(&self.msg);
            }
            return sock.write_all(&self.batch);
        }
        for _ in 0..count {
            sock.write_all(&self.msg)?;
        }
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        match self.zc {
            Some(zc) => zc.finish(),
            None => Ok(()),
        }
    }
}

fn serve(listener: TcpListener, shape: Shape, path: SendPath) -> io::Result<()> {
    let (mut sock, _) = listener.accept()?;
    sock.set_nodelay(true)?;
    let mut sender = MessageSender::new(shape.response_len, path, &sock)?;
    let mut framer = Framer::default();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let requests = framer.feed(&buf[..n]);
        sender.send(&mut sock, requests)?;
    }
    sender.finish()
}

fn client(
    mut sock: TcpStream,
    shape: Shape,
    path: SendPath,
    timing: Timing,
    record_latency: bool,
) -> io::Result<Sample> {
    sock.set_nodelay(true)?;
    let mut sender = MessageSender::new(shape.request_len, path, &sock)?;
    let mut framer = Framer::default();
    let mut buf = vec![0u8; READ_BUF];
    // Requests are answered in order, so the start times form a queue.
    let mut started = std::collections::VecDeque::with_capacity(shape.window);
    let mut meter = Meter::new(timing, record_latency);
    for _ in 0..shape.window {
        started.push_back(Instant::now());
    }
    sender.send(&mut sock, shape.window)?;
    'run: loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        let responses = framer.feed(&buf[..n]);
        for _ in 0..responses {
            let t = started.pop_front().expect("a response without a request");
            if !meter.complete(t) {
                break 'run;
            }
        }
        let now = Instant::now();
        for _ in 0..responses {
            started.push_back(now);
        }
        sender.send(&mut sock, responses)?;
    }
    sender.finish()?;
    Ok(meter.finish())
}

/// Runs one measurement of a raw system.
pub fn run(
    shape: Shape,
    path: SendPath,
    placement: Placement,
    timing: Timing,
    record_latency: bool,
) -> Result<Sample, String> {
    run_pair(
        placement,
        move |addr_tx| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string())?);
            serve(listener, shape, path).map_err(|e| format!("raw server: {e}"))
        },
        move |addr| {
            let sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            client(sock, shape, path, timing, record_latency)
                .map_err(|e| format!("raw client: {e}"))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_counts_messages_split_anywhere() {
        let mut stream = Vec::new();
        for len in [0usize, 3, 64, 1000] {
            stream.extend_from_slice(&encoded(len));
        }
        for chunk in [1, 2, 7, 9, 100, stream.len()] {
            let mut framer = Framer::default();
            let total: usize = stream.chunks(chunk).map(|c| framer.feed(c)).sum();
            assert_eq!(total, 4, "chunk size {chunk}");
        }
    }

    #[test]
    fn framer_knows_what_is_left_of_a_message() {
        let msg = encoded(1000);
        let mut framer = Framer::default();
        assert_eq!(framer.left_in_message(), 0);
        framer.feed(&msg[..3]);
        assert_eq!(framer.left_in_message(), HEADER - 3);
        framer.feed(&msg[3..HEADER + 10]);
        assert_eq!(framer.left_in_message(), 990);
        framer.feed(&msg[HEADER + 10..]);
        assert_eq!(framer.left_in_message(), 0);
    }
}
