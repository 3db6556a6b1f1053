//! A TCP proxy on loopback that injects faults, for reliability tests and the soak program.
//!
//! The kernel here has no netem qdisc (see `DESIGN.md`), so faults go through user space:
//! [`FaultProxy`] listens on `127.0.0.1:0`, connects every accepted client to the target and
//! moves bytes both ways, chunk by chunk. At run time, for one connection ([`ProxyConn`]) or
//! for all of them ([`FaultProxy::apply_all`]), it can:
//!
//! - pass bytes through untouched ([`Fault::PassThrough`], which also lifts earlier faults);
//! - stop reading from one side ([`Fault::StopReading`]), so that side's writes back up once
//!   the socket buffers are full, as with a peer that stopped reading;
//! - delay every chunk ([`Fault::Delay`]);
//! - cut the connection after N more bytes in one direction ([`Fault::CutAfter`]): exactly N
//!   bytes pass, then both sockets are closed, typically mid-frame (a FIN each way, or an RST
//!   toward a peer whose unread bytes were still in the proxy's socket: Linux resets a socket
//!   closed with unread data);
//! - reset it ([`Fault::Reset`]): `SO_LINGER` 0 on both sockets, then close, so both peers get
//!   an RST; or reset it after N more bytes in one direction ([`Fault::ResetAfter`]), which
//!   lands inside a frame however fast the bytes flow.
//!
//! It counts the bytes it moved in each direction ([`Moved`]), per connection and in total.
//!
//! ```no_run
//! # async fn demo(server: std::net::SocketAddr) -> std::io::Result<()> {
//! use zcrpc_examples::fault_proxy::{Direction, Fault, FaultProxy};
//! let proxy = FaultProxy::start(server).await?;
//! // ... connect a client to proxy.local_addr() ...
//! let conn = proxy.connection(0).await;
//! conn.apply(Fault::StopReading(Direction::ServerToClient)); // the client "stops reading"
//! conn.apply(Fault::PassThrough);
//! conn.apply(Fault::CutAfter(Direction::ClientToServer, 1000));
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes are moved in chunks of at most this size; a delay applies per chunk.
const CHUNK: usize = 64 * 1024;

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client that connected to the proxy, to the target.
    ClientToServer,
    /// From the target back to the client.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// A fault to inject (or, for [`Fault::PassThrough`], to lift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Move bytes untouched: lifts every stop, delay and pending cut.
    PassThrough,
    /// Stop reading what flows in this direction (from the client for `ClientToServer`, from
    /// the server for `ServerToClient`); the sender's writes back up.
    StopReading(Direction),
    /// Hold every chunk flowing in this direction this long before passing it on.
    Delay(Direction, Duration),
    /// Pass exactly this many more bytes in this direction, then close both sockets (the
    /// sender may see an RST: the kernel resets a socket closed with unread data).
    CutAfter(Direction, u64),
    /// Close both sockets with an RST (`SO_LINGER` 0).
    Reset,
    /// Pass exactly this many more bytes in this direction, then close both sockets with an
    /// RST, as `Reset` does.
    ResetAfter(Direction, u64),
}

/// Bytes the proxy has written on, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Bytes from the client delivered to the target.
    pub client_to_server: u64,
    /// Bytes from the target delivered to the client.
    pub server_to_client: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DirFaults {
    stopped: bool,
    delay: Option<Duration>,
    /// Absolute count of moved bytes at which to end the connection, and how.
    cut_at: Option<(u64, Ending)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Close,
    Reset,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Control {
    dirs: [DirFaults; 2],
    end: Option<Ending>,
}

impl Control {
    fn apply(&mut self, fault: Fault, moved: [u64; 2]) {
        match fault {
            Fault::PassThrough => self.dirs = Default::default(),
            Fault::StopReading(d) => self.dirs[d.index()].stopped = true,
            Fault::Delay(d, t) => self.dirs[d.index()].delay = Some(t),
            Fault::CutAfter(d, n) => self.dirs[d.index()].cut_at = Some((moved[d.index()] + n, Ending::Close)),
            Fault::ResetAfter(d, n) => self.dirs[d.index()].cut_at = Some((moved[d.index()] + n, Ending::Reset)),
            Fault::Reset => {
                self.end.get_or_insert(Ending::Reset);
            }
        }
    }
}

#[derive(Debug)]
struct ConnShared {
    index: usize,
    ctl: watch::Sender<Control>,
    moved: [AtomicU64; 2],
    done: watch::Sender<bool>,
    totals: Arc<ProxyShared>,
}

impl ConnShared {
    fn moved_now(&self) -> [u64; 2] {
        [self.moved[0].load(Ordering::SeqCst), self.moved[1].load(Ordering::SeqCst)]
    }

    fn end(&self, how: Ending) {
        self.ctl.send_modify(|c| {
            c.end.get_or_insert(how);
        });
    }
}

/// One proxied connection: its controls and counters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProxyConn {
    shared: Arc<ConnShared>,
}

impl ProxyConn {
    /// Its position in accept order, from 0.
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// Injects `fault` into this connection (or lifts faults, for [`Fault::PassThrough`]).
    pub fn apply(&self, fault: Fault) {
        let moved = self.shared.moved_now();
        self.shared.ctl.send_modify(|c| c.apply(fault, moved));
    }

    /// Closes both sockets now (a FIN each way).
    pub fn close(&self) {
        self.shared.end(Ending::Close);
    }

    /// Bytes moved so far.
    pub fn moved(&self) -> Moved {
        let [a, b] = self.shared.moved_now();
        Moved { client_to_server: a, server_to_client: b }
    }

    /// Whether both sockets are closed.
    pub fn is_closed(&self) -> bool {
        *self.shared.done.borrow()
    }

    /// Waits until both sockets are closed.
    pub async fn closed(&self) {
        let mut rx = self.shared.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

#[derive(Debug, Default)]
struct ProxyShared {
    conns: Mutex<Vec<ProxyConn>>,
    /// Faults every new connection starts with.
    default: Mutex<Control>,
    moved: [AtomicU64; 2],
    open: AtomicUsize,
    accepted: watch::Sender<usize>,
}

/// The proxy: accepts on `127.0.0.1:0`, forwards to the target. Dropping it stops accepting and
/// closes every connection.
#[derive(Debug)]
pub struct FaultProxy {
    local: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `target` (on the current tokio runtime).
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(ProxyShared::default());
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Ok(FaultProxy { local, shared, accept })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The `index`-th accepted connection (from 0), waiting until it is accepted.
    pub async fn connection(&self, index: usize) -> ProxyConn {
        let mut rx = self.shared.accepted.subscribe();
        let _ = rx.wait_for(|n| *n > index).await;
        self.shared.conns.lock().unwrap()[index].clone()
    }

    /// Every connection accepted so far, closed ones included.
    pub fn connections(&self) -> Vec<ProxyConn> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// Connections whose sockets are not both closed yet.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Injects `fault` into every open connection and every connection accepted from now on
    /// ([`Fault::PassThrough`] lifts faults everywhere).
    pub fn apply_all(&self, fault: Fault) {
        self.shared.default.lock().unwrap().apply(fault, [0, 0]);
        for c in self.connections() {
            c.apply(fault);
        }
    }

    /// Bytes moved so far, all connections together.
    pub fn moved(&self) -> Moved {
        Moved {
            client_to_server: self.shared.moved[0].load(Ordering::SeqCst),
            server_to_client: self.shared.moved[1].load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.connections() {
            c.close();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<ProxyShared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // EMFILE and the like: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let conn = {
            let mut conns = shared.conns.lock().unwrap();
            let conn = ProxyConn {
                shared: Arc::new(ConnShared {
                    index: conns.len(),
                    ctl: watch::Sender::new(*shared.default.lock().unwrap()),
                    moved: Default::default(),
                    done: watch::Sender::new(false),
                    totals: shared.clone(),
                }),
            };
            conns.push(conn.clone());
            conn
        };
        shared.open.fetch_add(1, Ordering::SeqCst);
        shared.accepted.send_modify(|n| *n += 1);
        tokio::spawn(run_conn(client, target, conn.shared));
    }
}

async fn run_conn(client: TcpStream, target: SocketAddr, conn: Arc<ConnShared>) {
    if let Ok(server) = TcpStream::connect(target).await {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client, server) = (Arc::new(client), Arc::new(server));
        tokio::join!(
            pump(client.clone(), server.clone(), Direction::ClientToServer, conn.clone()),
            pump(server.clone(), client.clone(), Direction::ServerToClient, conn.clone()),
        );
        if conn.ctl.borrow().end == Some(Ending::Reset) {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    } else {
        // The target is gone: the client sees an RST, as it would without the proxy.
        let _ = client.set_zero_linger();
    }
    conn.totals.open.fetch_sub(1, Ordering::SeqCst);
    conn.done.send_replace(true);
}

/// Moves bytes from `src` to `dst` under the connection's controls until `src` ends (then
/// half-closes `dst`) or the connection is ended.
async fn pump(src: Arc<TcpStream>, dst: Arc<TcpStream>, dir: Direction, conn: Arc<ConnShared>) {
    let d = dir.index();
    let mut rx = conn.ctl.subscribe();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let ctl = *rx.borrow_and_update();
        if ctl.end.is_some() {
            return;
        }
        let f = ctl.dirs[d];
        let moved = conn.moved[d].load(Ordering::SeqCst);
        if let Some((at, ending)) = f.cut_at {
            if moved >= at {
                conn.end(ending);
                return;
            }
        }
        if f.stopped {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let room = f.cut_at.map_or(CHUNK, |(at, _)| CHUNK.min((at - moved) as usize));
        tokio::select! {
            r = src.readable() => if r.is_err() { conn.end(Ending::Reset); return; },
            r = rx.changed() => { if r.is_err() { return; } continue; }
        }
        let n = match src.try_read(&mut buf[..room]) {
            Ok(0) => {
                // The sender finished: pass the FIN on and let the other direction run on.
                let _ = socket2::SockRef::from(&*dst).shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                // The sender reset: so does the proxy, toward the other side.
                conn.end(Ending::Reset);
                return;
            }
        };
        if let Some(delay) = f.delay {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = rx.wait_for(|c| c.end.is_some()) => return,
            }
        }
        let mut off = 0;
        while off < n {
            tokio::select! {
                r = dst.writable() => if r.is_err() { conn.end(Ending::Reset); return; },
                _ = rx.wait_for(|c| c.end.is_some()) => return,
            }
            match dst.try_write(&buf[off..n]) {
                Ok(w) => {
                    off += w;
                    conn.moved[d].fetch_add(w as u64, Ordering::SeqCst);
                    conn.totals.moved[d].fetch_add(w as u64, Ordering::SeqCst);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    conn.end(Ending::Reset);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;
    use tokio::time::timeout;

    use super::*;
    use crate::pattern;

    /// A hang shows up as a failure after this, never as a stuck test.
    const HANG: Duration = Duration::from_secs(10);
    /// More than loopback's socket buffers on both sides of the proxy can hold (`tcp_wmem` and
    /// `tcp_rmem` top out at 4 and 6 MiB by default), so a stopped reader backs the writer up.
    const BIG: usize = 32 << 20;

    /// A target that sends back what it gets.
    async fn echo_target() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// What a sink target saw on one connection.
    struct Sunk {
        data: Vec<u8>,
        end: Result<(), io::ErrorKind>,
    }

    /// A target that reads everything; `count` is its running byte count (all connections),
    /// each connection's bytes and how it ended come out of the channel.
    async fn sink_target() -> (SocketAddr, Arc<AtomicU64>, mpsc::UnboundedReceiver<Sunk>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (tx, c) = (tx.clone(), c.clone());
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = vec![0u8; CHUNK];
                    let end = loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break Ok(()),
                            Ok(n) => {
                                data.extend_from_slice(&buf[..n]);
                                c.fetch_add(n as u64, Ordering::SeqCst);
                            }
                            Err(e) => break Err(e.kind()),
                        }
                    };
                    let _ = tx.send(Sunk { data, end });
                });
            }
        });
        (addr, count, rx)
    }

    /// A target that writes `len` pattern bytes to each connection, then sets `done`.
    async fn source_target(len: usize, done: Arc<AtomicBool>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let done = done.clone();
                tokio::spawn(async move {
                    if s.write_all(&pattern(len, 9)).await.is_ok() {
                        done.store(true, Ordering::SeqCst);
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn passes_bytes_exactly_both_ways_and_counts_them() {
        let proxy = FaultProxy::start(echo_target().await).await.unwrap();
        let data = pattern(3 << 20, 1);
        let (mut r, mut w) = TcpStream::connect(proxy.local_addr()).await.unwrap().into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        timeout(HANG, r.read_to_end(&mut back)).await.unwrap().unwrap();
        writer.await.unwrap();
        assert!(back == data[..], "echoed bytes differ");
        let conn = proxy.connection(0).await;
        timeout(HANG, conn.closed()).await.unwrap();
        let n = data.len() as u64;
        assert_eq!(conn.moved(), Moved { client_to_server: n, server_to_client: n });
        assert_eq!(proxy.moved(), conn.moved());
        assert_eq!(proxy.open_connections(), 0);
    }

    #[tokio::test]
    async fn stop_reading_from_the_client_backs_its_writes_up_until_lifted() {
        let (target, count, mut sunk) = sink_target().await;
        let proxy = FaultProxy::start(target).await.unwrap();
        proxy.apply_all(Fault::StopReading(Direction::ClientToServer));
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let data = pattern(BIG, 2);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            s.write_all(&sent).await.unwrap();
            s.shutdown().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Nothing got through, and the writer is stuck with most of its bytes.
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert!(!writer.is_finished(), "a write of {BIG} bytes finished with nobody reading");
        proxy.apply_all(Fault::PassThrough);
        timeout(HANG, writer).await.unwrap().unwrap();
        let got = timeout(HANG, sunk.recv()).await.unwrap().unwrap();
        assert_eq!(got.end, Ok(()));
        assert!(got.data == data[..], "bytes differ after the stop was lifted");
    }

    #[tokio::test]
    async fn stop_reading_from_the_server_backs_its_writes_up_until_lifted() {
        let done = Arc::new(AtomicBool::new(false));
        let proxy = FaultProxy::start(source_target(BIG, done.clone()).await).await.unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let conn = proxy.connection(0).await;
        conn.apply(Fault::StopReading(Direction::ServerToClient));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!done.load(Ordering::SeqCst), "the server wrote {BIG} bytes with nobody reading");
        assert!(conn.moved().server_to_client < BIG as u64);
        conn.apply(Fault::PassThrough);
        let mut got = vec![0u8; BIG];
        timeout(HANG, s.read_exact(&mut got)).await.unwrap().unwrap();
        assert!(got == pattern(BIG, 9)[..], "bytes differ after the stop was lifted");
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn delay_holds_every_chunk() {
        let proxy = FaultProxy::start(echo_target().await).await.unwrap();
        proxy.apply_all(Fault::Delay(Direction::ClientToServer, Duration::from_millis(200)));
        proxy.apply_all(Fault::Delay(Direction::ServerToClient, Duration::from_millis(100)));
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        for i in 0..3u8 {
            let start = tokio::time::Instant::now();
            s.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            timeout(HANG, s.read_exact(&mut b)).await.unwrap().unwrap();
            assert_eq!(b[0], i);
            // A lower bound only: the sleep guarantees it, however loaded the machine.
            assert!(start.elapsed() >= Duration::from_millis(300), "round trip {:?}", start.elapsed());
        }
    }

    #[tokio::test]
    async fn cut_after_passes_exactly_n_bytes_then_closes_both_sides() {
        let (target, _, mut sunk) = sink_target().await;
        let proxy = FaultProxy::start(target).await.unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        s.write_all(&pattern(500, 3)).await.unwrap();
        let conn = proxy.connection(0).await;
        // Wait until those 500 bytes are through, so the cut counts from there.
        timeout(HANG, async {
            while conn.moved().client_to_server < 500 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        conn.apply(Fault::CutAfter(Direction::ClientToServer, 1000));
        let data = pattern(10_000, 3);
        let _ = s.write_all(&data).await;
        let got = timeout(HANG, sunk.recv()).await.unwrap().unwrap();
        assert_eq!(got.end, Ok(()), "the target sees a FIN");
        assert_eq!(got.data.len(), 1500);
        assert!(got.data[..500] == pattern(500, 3)[..] && got.data[500..] == data[..1000]);
        // The client's unread bytes sat in the proxy's socket when it closed, so the kernel
        // answers with an RST rather than a FIN: either way the connection is over.
        let mut b = [0u8; 16];
        let r = timeout(HANG, s.read(&mut b)).await.unwrap().map_err(|e| e.kind());
        assert!(matches!(r, Ok(0) | Err(io::ErrorKind::ConnectionReset)), "{r:?}");
        timeout(HANG, conn.closed()).await.unwrap();
        assert_eq!(conn.moved().client_to_server, 1500);
    }

    #[tokio::test]
    async fn reset_sends_an_rst_both_ways() {
        let (target, count, mut sunk) = sink_target().await;
        let proxy = FaultProxy::start(target).await.unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        timeout(HANG, async {
            while count.load(Ordering::SeqCst) < 5 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        proxy.connection(0).await.apply(Fault::Reset);
        let got = timeout(HANG, sunk.recv()).await.unwrap().unwrap();
        assert_eq!(got.end, Err(io::ErrorKind::ConnectionReset));
        assert_eq!(got.data, b"hello");
        let mut b = [0u8; 16];
        let r = timeout(HANG, s.read(&mut b)).await.unwrap();
        assert_eq!(r.map_err(|e| e.kind()).err(), Some(io::ErrorKind::ConnectionReset));
    }

    #[tokio::test]
    async fn reset_after_passes_exactly_n_bytes_then_resets_both_sides() {
        let (target, _, mut sunk) = sink_target().await;
        let proxy = FaultProxy::start(target).await.unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let conn = proxy.connection(0).await;
        conn.apply(Fault::ResetAfter(Direction::ClientToServer, 1000));
        let data = pattern(10_000, 4);
        let _ = s.write_all(&data).await;
        let got = timeout(HANG, sunk.recv()).await.unwrap().unwrap();
        assert_eq!(got.end, Err(io::ErrorKind::ConnectionReset), "the target sees an RST");
        assert!(got.data == data[..1000], "{} bytes passed, 1000 wanted", got.data.len());
        let mut b = [0u8; 16];
        let r = timeout(HANG, s.read(&mut b)).await.unwrap();
        assert_eq!(r.map_err(|e| e.kind()).err(), Some(io::ErrorKind::ConnectionReset));
        timeout(HANG, conn.closed()).await.unwrap();
        assert_eq!(conn.moved().client_to_server, 1000);
    }

    #[tokio::test]
    async fn a_reset_from_one_peer_resets_the_other() {
        let (target, count, mut sunk) = sink_target().await;
        let proxy = FaultProxy::start(target).await.unwrap();
        let s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let mut s = s;
        s.write_all(b"x").await.unwrap();
        timeout(HANG, async {
            while count.load(Ordering::SeqCst) < 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
        let got = timeout(HANG, sunk.recv()).await.unwrap().unwrap();
        assert_eq!(got.end, Err(io::ErrorKind::ConnectionReset));
        timeout(HANG, proxy.connection(0).await.closed()).await.unwrap();
    }
}
