//! `file_1g`: a generated 1 GiB file downloaded over one loopback connection, three ways in
//! one run: `raw_tcp_simple` reads it into a buffer and writes that to the socket (the
//! read+write copy), `raw_stream` sends it with plain `sendfile(2)` on a raw socket, and the
//! zcrpc systems stream it as file regions (one server-streaming call, a region of
//! [`FILE_CHUNK`] per message; `sendfile` on tcp, io_uring `SPLICE` on uring). The server sends
//! the file from start to end over and over; the client reads into a reused buffer (raw) or
//! drops each message (zcrpc); every [`FILE_CHUNK`] received counts as one "call".
//!
//! The file lives in the temporary directory (`zcrpc-bench-file-1g.bin`, kept between runs and
//! rewritten when its size is wrong), read once before the measurement so that it is in the
//! page cache: the row compares send paths, not disks.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;

use crate::meter::{Meter, Sample, StreamCounter, Timing};
use crate::placement::{run_pair, Placement};
use crate::sys;

/// The file's size.
pub const FILE_LEN: usize = 1 << 30;
/// Bytes per zcrpc message (one file region each), and per counted "call" of every system.
pub const FILE_CHUNK: usize = 4 << 20;
/// The read buffer of the read+write copy and of the raw client.
const READ_BUF: usize = 256 << 10;

/// How the raw server sends the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFile {
    /// `read` into a buffer, `write` to the socket.
    ReadWrite,
    /// `sendfile(2)` from the file to the socket.
    Sendfile,
}

/// The generated file (made on first use, filled with 0xA5 as every other payload here) and
/// its pages warmed into the page cache.
pub fn generated_file() -> Result<PathBuf, String> {
    static FILE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join("zcrpc-bench-file-1g.bin");
        let fail = |e: io::Error| format!("{}: {e}", path.display());
        let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() == FILE_LEN as u64);
        if !ok {
            let mut f = File::create(&path).map_err(fail)?;
            let block = vec![0xA5u8; 1 << 20];
            for _ in 0..FILE_LEN / block.len() {
                f.write_all(&block).map_err(fail)?;
            }
        }
        // Into the page cache (24 GiB of memory here): the row measures the send path.
        let mut f = File::open(&path).map_err(fail)?;
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).map_err(fail)? > 0 {}
        Ok(path)
    })
    .clone()
}

fn serve_raw(listener: TcpListener, how: RawFile, path: PathBuf) -> io::Result<()> {
    let (mut sock, _) = listener.accept()?;
    let file = File::open(&path)?;
    let mut buf = vec![0u8; READ_BUF];
    // Until the client closes: a write error (EPIPE, ECONNRESET) ends the server.
    loop {
        match how {
            RawFile::ReadWrite => {
                let mut f = &file;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if sock.write_all(&buf[..n]).is_err() {
                        return Ok(());
                    }
                }
            }
            RawFile::Sendfile => {
                let mut offset = 0u64;
                while (offset as usize) < FILE_LEN {
                    match sys::sendfile(&sock, &file, offset, FILE_LEN - offset as usize) {
                        Ok(0) => return Err(io::Error::other("the file ended early")),
                        Ok(n) => offset += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
}

/// Reads the stream into a reused buffer and counts it in chunks of [`FILE_CHUNK`].
fn read_raw(mut sock: TcpStream, timing: Timing) -> io::Result<Sample> {
    let mut buf = vec![0u8; READ_BUF];
    let mut counter = StreamCounter::new(Meter::new(timing, false), FILE_CHUNK);
    let mut pending = 0usize;
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"));
        }
        pending += n;
        let chunks = pending / FILE_CHUNK;
        pending %= FILE_CHUNK;
        if chunks > 0 && !counter.add(chunks as u64) {
            return Ok(counter.finish());
        }
    }
}

/// One measurement of a raw file download.
pub fn run_raw(how: RawFile, placement: Placement, timing: Timing) -> Result<Sample, String> {
    let path = generated_file()?;
    run_pair(
        placement,
        move |addr_tx| {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string())?);
            serve_raw(listener, how, path).map_err(|e| format!("file server: {e}"))
        },
        move |addr| {
            let sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            read_raw(sock, timing).map_err(|e| format!("file client: {e}"))
        },
    )
}
