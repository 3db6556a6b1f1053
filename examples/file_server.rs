//! A file server whose bytes go from the page cache to the socket without entering the process
//! (file regions: `sendfile` on tcp, io_uring `SPLICE` on uring), and its download client.
//!
//! ```text
//! cargo run --release --example file_server -- serve --root DIR --addr 127.0.0.1:PORT [--transport uring|msgzc|tcp]
//! cargo run --release --example file_server -- get --addr 127.0.0.1:PORT PATH --out FILE [--offset N --len N] [--resume]
//! cargo run --release --example file_server -- list --addr 127.0.0.1:PORT [DIR]
//! cargo run --release --example file_server -- --help        # every option, its default, examples
//! ```
//!
//! Over TLS 1.3 (`serve --tls-cert PEM --tls-key PEM`, `get --tls-ca PEM`), file regions are
//! read and encrypted (the kernel cannot encrypt for us here: no kernel TLS), so the report's
//! path is `read+copy`.
//!
//! `serve` serves the files under DIR (paths that lead out of it — `..`, absolute paths,
//! symlinks pointing outside — are refused) until SIGINT or SIGTERM. `get` streams a file or a
//! range of it in chunks (server streaming, each chunk a file region: memory stays bounded
//! whatever the size), writes it to `FILE.part`, verifies the SHA-256 the server sends (cached
//! per file and range), and renames to FILE only when complete; `--resume` goes on from what
//! `FILE.part` holds. It prints the size, seconds, GB/s, the path the bytes took on the
//! server (sendfile/splice or copy) and both sides' peak memory (`VmHWM`).

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use clap::{Args, Parser, Subcommand};
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Client, ClientConfig, FileReceiver, FileRegion, Payload, Server, Sink};
use serde::{Deserialize, Serialize};
use zcrpc_examples::{procfs, CallTlsArgs, ServeTlsArgs, TransportArgs, TransportChoice};

/// Bytes per streamed chunk: one file region per message.
const CHUNK: u64 = 2 << 20;

/// The client's stream window: the bytes the server may send ahead of what the client wrote
/// out, so the most of a download it ever holds in memory, whatever the file's size.
const WINDOW: u32 = 16 << 20;

/// What went wrong, as the client sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FileError {
    /// No such file or directory under the root.
    NotFound(String),
    /// The path leads out of the served root (`..`, an absolute path, a symlink).
    OutsideRoot(String),
    /// A range past the end of the file, a directory where a file is wanted, ...
    InvalidArgument(String),
    /// The file changed while being sent (it shrank).
    Changed(String),
    /// Any other I/O error on the server.
    Io(String),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::NotFound(m) => write!(f, "not found: {m}"),
            FileError::OutsideRoot(m) => write!(f, "permission denied: {m}"),
            FileError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            FileError::Changed(m) => write!(f, "file changed: {m}"),
            FileError::Io(m) => write!(f, "server I/O error: {m}"),
        }
    }
}

impl std::error::Error for FileError {}

/// One entry of a directory listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
}

/// One message of a download.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Piece {
    /// First: the file's size and the range that follows.
    Start { file_size: u64, offset: u64, len: u64 },
    /// Bytes from `offset` (of the file), in the message's attachment.
    Data { offset: u64 },
    /// Last: the SHA-256 of the whole requested range (the skipped part of a resumed download
    /// included), and what the server saw.
    Done { sha256: [u8; 32], server: ServerReport },
}

/// The server's side of a download, for the client's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerReport {
    /// The server's transport.
    pub transport: String,
    /// Bytes this server sent by `sendfile`/splice so far (all connections).
    pub bytes_file: u64,
    /// Bytes of file regions it had to read into memory (a transport without splice).
    pub file_read_bytes: u64,
    /// The server's peak resident memory, KiB.
    pub peak_kib: u64,
}

#[rpc_core::service(package = "files.v1")]
pub trait Files {
    /// Bytes `offset + skip ..` of the range `offset .. offset + len` (to the end of the file
    /// when `len` is `None`) of `path`, in chunks, with the SHA-256 of the whole range last.
    async fn get(&self, path: String, offset: u64, len: Option<u64>, skip: u64, out: Sink<Piece>) -> Result<(), FileError>;
    /// The entries of a directory under the root.
    async fn list(&self, dir: String) -> Result<Vec<Entry>, FileError>;
}

/// A range of a file as it was: path, size, modification time, offset, length. A file that
/// changed gets a new key, so a cached checksum never outlives its bytes.
type SumKey = (PathBuf, u64, SystemTime, u64, u64);

/// The server: a root, a checksum cache and its own counters.
#[derive(Clone)]
struct FileService {
    root: PathBuf,
    /// SHA-256 of each range asked for: computed once, by reading it.
    sums: Arc<Mutex<HashMap<SumKey, [u8; 32]>>>,
    server: Arc<OnceLock<Server>>,
}

impl FileService {
    /// The path under the root that `rel` names, refusing what leads out of it.
    fn resolve(&self, rel: &str) -> Result<PathBuf, FileError> {
        let p = Path::new(rel);
        if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            return Err(FileError::OutsideRoot(format!("{rel:?} is not a relative path inside the root")));
        }
        let full = self.root.join(p);
        let real = full.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FileError::NotFound(rel.to_owned()),
            _ => FileError::Io(format!("{rel}: {e}")),
        })?;
        if !real.starts_with(&self.root) {
            return Err(FileError::OutsideRoot(format!("{rel:?} leads out of the root (a symlink)")));
        }
        Ok(real)
    }

    fn report(&self) -> ServerReport {
        let stats = self.server.get().map(Server::stats).unwrap_or_default();
        ServerReport {
            transport: stats.transport,
            bytes_file: stats.bytes_file,
            file_read_bytes: stats.file_read_bytes,
            peak_kib: procfs::read_self().map_or(0, |r| r.hwm_kib),
        }
    }

    /// The SHA-256 of `offset .. offset + len` of `path`, from the cache or read once.
    async fn checksum(&self, path: &Path, meta: &std::fs::Metadata, offset: u64, len: u64) -> Result<[u8; 32], FileError> {
        let key = (path.to_owned(), meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), offset, len);
        if let Some(sum) = self.sums.lock().unwrap().get(&key) {
            return Ok(*sum);
        }
        let file = std::fs::File::open(path).map_err(|e| FileError::Io(e.to_string()))?;
        let sum = tokio::task::spawn_blocking(move || sha256_range(&file, offset, len))
            .await
            .map_err(|e| FileError::Io(e.to_string()))?
            .map_err(|e| FileError::Io(e.to_string()))?;
        self.sums.lock().unwrap().insert(key, sum);
        Ok(sum)
    }
}

/// SHA-256 of `len` bytes of `file` from `offset`, read in blocks.
fn sha256_range(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], offset + at)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank"));
        }
        ctx.update(&buf[..n]);
        at += n as u64;
    }
    Ok(digest_bytes(ctx.finish()))
}

fn digest_bytes(d: ring::digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn io_error(path: &str, e: std::io::Error) -> FileError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FileError::NotFound(path.to_owned()),
        _ => FileError::Io(format!("{path}: {e}")),
    }
}

impl Files for FileService {
    async fn get(&self, path: String, offset: u64, len: Option<u64>, skip: u64, mut out: Sink<Piece>) -> Result<(), FileError> {
        let real = self.resolve(&path)?;
        let file = Arc::new(std::fs::File::open(&real).map_err(|e| io_error(&path, e))?);
        let meta = file.metadata().map_err(|e| io_error(&path, e))?;
        if meta.is_dir() {
            return Err(FileError::InvalidArgument(format!("{path} is a directory")));
        }
        let size = meta.len();
        let len = match len {
            Some(len) => len,
            None => size.saturating_sub(offset),
        };
        let end = offset.checked_add(len).filter(|&end| offset <= size && end <= size).ok_or_else(|| {
            FileError::InvalidArgument(format!("range {offset}+{len} lies past the end of {path} ({size} bytes)"))
        })?;
        if skip > len {
            return Err(FileError::InvalidArgument(format!("resume point {skip} lies past the range's {len} bytes")));
        }
        let sha256 = self.checksum(&real, &meta, offset, len).await?;
        if out.send(Piece::Start { file_size: size, offset, len }).await.is_err() {
            return Ok(());
        }
        let mut at = offset + skip;
        while at < end {
            let n = (end - at).min(CHUNK) as usize;
            // Checked against the file's size now: a file that shrank between chunks ends the
            // call with an error here; one that shrinks during a chunk's splice ends the
            // connection (the frame cannot be completed) and the client sees it cut short.
            let region = FileRegion::new(file.clone(), at, n)
                .map_err(|e| FileError::Changed(format!("{path}: {e}")))?;
            if out.send_with(Piece::Data { offset: at }, vec![Payload::from(region)]).await.is_err() {
                return Ok(()); // the client went away
            }
            at += n as u64;
        }
        let _ = out.send(Piece::Done { sha256, server: self.report() }).await;
        Ok(())
    }

    async fn list(&self, dir: String) -> Result<Vec<Entry>, FileError> {
        let real = if dir.is_empty() || dir == "." { self.root.clone() } else { self.resolve(&dir)? };
        let mut out = Vec::new();
        for e in std::fs::read_dir(&real).map_err(|e| io_error(&dir, e))? {
            let e = e.map_err(|e| io_error(&dir, e))?;
            let meta = e.metadata().map_err(|e| io_error(&dir, e))?;
            out.push(Entry { name: e.file_name().to_string_lossy().into_owned(), size: meta.len(), is_dir: meta.is_dir() });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// A file server and its download client.
#[derive(Debug, Parser)]
#[command(
    name = "file_server",
    after_help = "Commands (`file_server COMMAND --help` explains each):\n  \
        file_server serve --root DIR --addr HOST:PORT [--transport uring|msgzc|tcp] [--tls-cert PEM --tls-key PEM [--tls-ca PEM]]\n  \
        file_server get --addr HOST:PORT PATH --out FILE [--offset N] [--len N] [--resume] [--transport uring|msgzc|tcp] [--tls-ca PEM [--tls-name NAME]]\n  \
        file_server list --addr HOST:PORT [DIR]\n\n\
        Examples:\n  \
        file_server serve --root /data --addr 127.0.0.1:7420 &\n  \
        file_server list --addr 127.0.0.1:7420\n  \
        file_server get --addr 127.0.0.1:7420 genomes/hg38.fa --out hg38.fa\n  \
        file_server get --addr 127.0.0.1:7420 genomes/hg38.fa --out hg38.fa --resume   # after an interruption\n  \
        file_server get --addr 127.0.0.1:7420 genomes/hg38.fa --out part.fa --offset 1048576 --len 4096"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the files under --root until SIGINT or SIGTERM.
    #[command(after_help = "Prints `file_server: root DIR, serving on ADDR` on stderr once it listens.\n\n\
        Examples:\n  \
        file_server serve --root /data --addr 127.0.0.1:7420\n  \
        file_server serve --root . --addr 0.0.0.0:0 --transport tcp   # any free port, sendfile")]
    Serve(ServeArgs),
    /// Download a file (or a range of it) into --out, verified, renamed into place when complete.
    #[command(after_help = "Writes FILE.part and renames it to FILE only once every byte arrived and \
        the SHA-256 matches; an interrupted download leaves FILE.part for --resume. Prints one line: \
        `ok bytes=N secs=S gbps=G path=TRANSPORT:splice|sendfile|read+copy resumed_from=N client_peak_kib=K \
        server_peak_kib=K`; on a terminal a large download shows a progress bar on stderr.\n\n\
        Examples:\n  \
        file_server get --addr 127.0.0.1:7420 genomes/hg38.fa --out hg38.fa\n  \
        file_server get --addr 127.0.0.1:7420 genomes/hg38.fa --out hg38.fa --resume\n  \
        file_server get --addr 127.0.0.1:7420 genomes/hg38.fa --out head.fa --offset 0 --len 1048576")]
    Get(GetArgs),
    /// List a directory under the server's root.
    #[command(after_help = "Prints one line per entry: size and name (a directory with a trailing /).\n\n\
        Examples:\n  \
        file_server list --addr 127.0.0.1:7420\n  \
        file_server list --addr 127.0.0.1:7420 genomes")]
    List(ListArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The directory whose files are served.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Address to listen on (port 0 takes any free port; the one chosen is printed).
    #[arg(long, value_name = "HOST:PORT")]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(flatten)]
    tls: ServeTlsArgs,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// The server's address.
    #[arg(long, value_name = "HOST:PORT")]
    addr: std::net::SocketAddr,
    /// The file, relative to the server's root.
    path: String,
    /// Where to write it (FILE.part until complete).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// First byte of the range to download.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Bytes to download (default: to the end of the file).
    #[arg(long)]
    len: Option<u64>,
    /// Go on from what FILE.part already holds.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(flatten)]
    tls: CallTlsArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The server's address.
    #[arg(long, value_name = "HOST:PORT")]
    addr: std::net::SocketAddr,
    /// A directory relative to the root (default: the root).
    #[arg(default_value = ".")]
    dir: String,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(flatten)]
    tls: CallTlsArgs,
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let root = args.root.canonicalize().map_err(|e| format!("--root {}: {e}", args.root.display()))?;
    if !root.is_dir() {
        return Err(format!("--root {} is not a directory", root.display()));
    }
    let (transport, engine) = args.transport.choice()?;
    let service = FileService { root: root.clone(), sums: Arc::default(), server: Arc::default() };
    let server = Server::builder().build(FilesServer::new(service.clone()));
    let _ = service.server.set(server.clone());
    let _ = engine;
    let (handle, local) = match (args.tls.config()?, transport) {
        // TLS: file regions are read and encrypted (no sendfile or splice of plaintext).
        (Some(tls), _) => zcrpc_examples::serve_tls(server, args.addr, tls, transport, engine).await?,
        (None, TransportChoice::Tcp) => {
            let acceptor = TcpAcceptor::bind(args.addr).await.map_err(|e| format!("bind {}: {e}", args.addr))?;
            let local = acceptor.local_addr().map_err(|e| e.to_string())?;
            (server.serve(acceptor), local)
        }
        #[cfg(target_os = "linux")]
        (None, TransportChoice::Uring | TransportChoice::MsgZc) => {
            let acceptor = transport_uring::UringAcceptor::bind(args.addr, zcrpc_examples::uring_config(transport, engine))
                .await
                .map_err(|e| format!("bind {}: {e}", args.addr))?;
            let local = acceptor.local_addr().map_err(|e| e.to_string())?;
            (server.serve(acceptor), local)
        }
    };
    eprintln!("file_server: root {}, serving on {local}", root.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    handle.shutdown().await;
    Ok(())
}

async fn connect(addr: std::net::SocketAddr, args: &TransportArgs, tls: &CallTlsArgs) -> Result<FilesClient, String> {
    let (transport, engine) = args.choice()?;
    let _ = engine;
    // A stream window of several chunks keeps the server sending while the client writes;
    // it is also what bounds the client's memory.
    let mut config = ClientConfig::default();
    config.conn.stream_window = WINDOW;
    if let Some(trust) = tls.config()? {
        let client = zcrpc_examples::connect_tls(addr, &tls.tls_name, trust, transport, engine, config).await;
        return client.map(FilesClient::new).map_err(|e| format!("connect {addr}: {e}"));
    }
    let client = match transport {
        TransportChoice::Tcp => Client::connect_tcp(addr, config).await,
        #[cfg(target_os = "linux")]
        TransportChoice::Uring | TransportChoice::MsgZc => {
            let t = transport_uring::connect(addr, zcrpc_examples::uring_config(transport, engine)).await.map_err(|e| format!("connect {addr}: {e}"))?;
            Client::connect(t, config).await
        }
    };
    client.map(FilesClient::new).map_err(|e| format!("connect {addr}: {e}"))
}

/// A failed call as the user should read it: the server's [`FileError`] when it sent one.
fn call_error(e: rpc_core::CallError) -> String {
    use rpc_core::codec::{Decode, Postcard};
    match &e {
        rpc_core::CallError::Status(st) if st.code == rpc_core::Code::APPLICATION => {
            match <Postcard as Decode<FileError>>::decode(st.details.clone()) {
                Ok(fe) => fe.to_string(),
                Err(_) => e.to_string(),
            }
        }
        _ => e.to_string(),
    }
}

/// `FILE.part`: where a download is written until it is complete.
fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

/// A progress line on stderr, when stderr is a terminal.
struct Progress {
    on: bool,
    total: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let now = Instant::now();
        Progress { on: std::io::stderr().is_terminal() && total >= 16 << 20, total, started: now, last: now }
    }

    fn update(&mut self, done: u64) {
        if !self.on || self.last.elapsed().as_millis() < 100 {
            return;
        }
        self.last = Instant::now();
        let frac = done as f64 / self.total.max(1) as f64;
        let bar = (frac * 30.0) as usize;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9) / 1e9;
        eprint!("\r[{}{}] {:5.1}% {:.2} GB/s ", "#".repeat(bar), " ".repeat(30 - bar.min(30)), frac * 100.0, rate);
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}

async fn get(args: GetArgs) -> Result<(), String> {
    let client = connect(args.addr, &args.transport, &args.tls).await?;
    let part = part_path(&args.out);
    // The bytes already in FILE.part (with --resume), hashed before the rest arrives.
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let have = if args.resume { hash_part(&part, &mut sha)? } else { 0 };
    let mut pieces = client.get(args.path.clone(), args.offset, args.len, have).await.map_err(|e| format!("get {}: {}", args.path, call_error(e)))?;
    // Opened once the server accepted the request: a refused one leaves no file behind.
    let mut sink: Option<FileReceiver> = None;
    let mut started = Instant::now();
    let mut expect = None;
    let mut progress = Progress::new(0);
    let mut received = 0u64;
    let done = loop {
        let (piece, attachments) = match pieces.recv_with().await {
            None => return Err(format!("get {}: the server ended the download before its checksum", args.path)),
            Some(Err(e)) => return Err(format!("get {}: {}", args.path, call_error(e))),
            Some(Ok(x)) => x,
        };
        match piece {
            Piece::Start { offset, len, .. } => {
                expect = Some(offset + have);
                progress = Progress::new(len);
                let file = if have > 0 {
                    std::fs::OpenOptions::new().write(true).open(&part)
                } else {
                    std::fs::File::create(&part)
                };
                sink = Some(FileReceiver::new(file.map_err(|e| format!("{}: {e}", part.display()))?, have));
                started = Instant::now();
            }
            Piece::Data { offset } => {
                let (Some(next), Some(sink)) = (expect, sink.as_mut()) else {
                    return Err("data before the start of the download".into());
                };
                if offset != next {
                    return Err(format!("chunk at {offset}, expected {next}"));
                }
                let mut wrote = 0;
                for a in attachments {
                    for chunk in a.chunks() {
                        sha.update(chunk);
                    }
                    wrote += a.len() as u64;
                    // Written from the receive buffer and dropped: nothing accumulates.
                    sink.write(a).await.map_err(|e| format!("{}: {e}", part.display()))?;
                }
                expect = Some(next + wrote);
                received += wrote;
                progress.update(have + received);
            }
            Piece::Done { sha256, server } => break (sha256, server),
        }
    };
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    let (sha256, server) = done;
    if digest_bytes(sha.finish()) != sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(format!("get {}: the SHA-256 does not match the server's; {} removed", args.path, part.display()));
    }
    if let Some(sink) = &sink {
        sink.sync_all().await.map_err(|e| format!("{}: {e}", part.display()))?;
    }
    std::fs::rename(&part, &args.out).map_err(|e| format!("rename {} to {}: {e}", part.display(), args.out.display()))?;
    let path = if server.file_read_bytes > 0 {
        format!("{}:read+copy", server.transport)
    } else if server.bytes_file > 0 {
        format!("{}:{}", server.transport, if server.transport == "uring" { "splice" } else { "sendfile" })
    } else {
        format!("{}:copy", server.transport)
    };
    let client_peak = procfs::read_self().map_or(0, |r| r.hwm_kib);
    println!(
        "ok bytes={} secs={secs:.3} gbps={:.3} path={path} resumed_from={have} client_peak_kib={client_peak} server_peak_kib={}",
        have + received,
        received as f64 / secs.max(1e-9) / 1e9,
        server.peak_kib
    );
    Ok(())
}

/// Hashes what `part` holds into `sha` and returns its length (0 when there is no such file).
fn hash_part(part: &Path, sha: &mut ring::digest::Context) -> Result<u64, String> {
    let mut f = match std::fs::File::open(part) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", part.display())),
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", part.display()))?;
        if n == 0 {
            return Ok(have);
        }
        sha.update(&buf[..n]);
        have += n as u64;
    }
}

async fn list(args: ListArgs) -> Result<(), String> {
    let client = connect(args.addr, &args.transport, &args.tls).await?;
    let entries = client.list(args.dir.clone()).await.map_err(|e| format!("list {}: {}", args.dir, call_error(e)))?;
    let entries = entries.map_err(|e| format!("list {}: {e}", args.dir))?;
    for e in entries {
        println!("{:>15} {}{}", e.size, e.name, if e.is_dir { "/" } else { "" });
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Get(a) => get(a).await,
        Command::List(a) => list(a).await,
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file_server: {e}");
            ExitCode::FAILURE
        }
    }
}
