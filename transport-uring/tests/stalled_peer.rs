//! Peers that never read (issue #8, item 13): after close, the kernel's hold on zero-copy
//! sends ends at the close deadline (the pool buffers and the descriptor come back), and while
//! open, such peers cannot take the whole pool from the other connections.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rpc_core::transport::{SendHalf, Transport};
use rpc_core::Transmit;
use tokio::net::TcpListener;
use transport_uring::{Backend, BufferPool, UringConfig, UringSend, ZcMode};

/// A listener whose accepted sockets have a small receive buffer, so that a peer that never
/// reads closes its window early. (Not smaller than 64 KiB: a tiny window shrinks the MSS to
/// 2 KiB, and the per-skb overhead then fills an 8 MiB send buffer with 3 MiB of data.)
fn small_rcvbuf_listener() -> TcpListener {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.set_recv_buffer_size(64 << 10).unwrap();
    l.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
    l.listen(4).unwrap();
    l.set_nonblocking(true).unwrap();
    TcpListener::from_std(l.into()).unwrap()
}

/// The inode of this process's TCP socket from `local` to `remote` (from /proc/net/tcp). Both
/// ends are matched, and entries without an inode skipped: a closed connection in TIME_WAIT
/// (inode 0) may hold the same local port towards another peer.
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (local, remote) else { return None };
    let parse = |field: &str| -> Option<SocketAddrV4> {
        let (ip, port) = field.split_once(':')?;
        let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes());
        Some(SocketAddrV4::new(ip, u16::from_str_radix(port, 16).ok()?))
    };
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let inode: u64 = f.get(9)?.parse().ok()?;
        (parse(f.get(1)?)? == local && parse(f.get(2)?)? == remote && inode != 0).then_some(inode)
    })
}

/// Whether a descriptor of this process refers to socket `inode`.
fn fd_open(inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|l| l.to_string_lossy() == want)
}

/// Sends one message made of one full pool buffer.
async fn send_pool_buffer(pool: &BufferPool, s: &mut UringSend, seed: u8) {
    let mut b = pool.take_wait().await;
    b.fill_from(&pattern(pool.buf_size(), seed));
    let t = Transmit { head: Bytes::from_static(b"H"), segments: vec![b.into_segment()] };
    s.send(&mut vec![t]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peer_releases_pool_and_fd_after_close_deadline() {
    tokio::time::timeout(LIMIT, async {
        for backend in [Backend::Uring, Backend::MsgZc] {
            if !require(backend) {
                continue;
            }
            let pool = BufferPool::new(8 << 20, 1 << 20).unwrap();
            let listener = small_rcvbuf_listener();
            let addr = listener.local_addr().unwrap();
            let cfg = UringConfig {
                backend,
                mode: ZcMode::AlwaysZc,
                sndbuf: Some(8 << 20),
                close_deadline: Duration::from_millis(300),
                // Only the close deadline may end the hold here.
                tcp_user_timeout: None,
                max_pool_bytes_in_flight: usize::MAX,
                ..Default::default()
            };
            let (t, peer) = tokio::join!(transport_uring::connect(addr, cfg), listener.accept());
            let (t, peer) = (t.unwrap(), peer.unwrap().0.into_std().unwrap());
            let inode = socket_inode(peer.peer_addr().unwrap(), addr).expect("client socket in /proc/net/tcp");
            assert!(fd_open(inode));
            let (r, mut s) = t.split();
            for seed in 0..4 {
                send_pool_buffer(&pool, &mut s, seed).await;
            }
            assert!(pool.available() < pool.capacity(), "{backend}: nothing held by the stalled peer");
            drop(s);
            drop(r);
            // Bounded by LIMIT: without the deadline, this waits forever.
            while pool.available() < pool.capacity() || fd_open(inode) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The peer was reset, not closed in order: its data never all arrived.
            let reset = tokio::task::spawn_blocking(move || {
                let mut peer = peer;
                peer.set_nonblocking(false).unwrap();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match peer.read(&mut buf) {
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(e) => return Some(e.kind()),
                    }
                }
            })
            .await
            .unwrap();
            assert_eq!(reset, Some(std::io::ErrorKind::ConnectionReset), "{backend}");
        }
    })
    .await
    .expect("pool buffers or the socket were still held long after the close deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_peers_do_not_starve_other_connections() {
    tokio::time::timeout(LIMIT, async {
        for backend in [Backend::Uring, Backend::MsgZc] {
            if !require(backend) {
                continue;
            }
            // 6 buffers of 256 KiB; the cap lets a connection hold 2 of them in zero-copy
            // sends awaiting their notification.
            let pool = BufferPool::new(6 << 18, 1 << 18).unwrap();
            let cfg = UringConfig {
                backend,
                mode: ZcMode::AlwaysZc,
                sndbuf: Some(8 << 20),
                max_pool_bytes_in_flight: 2 << 18,
                ..Default::default()
            };
            // Two peers that never read: each connection sends 3 buffers' worth, which its
            // send buffer (8 MiB) takes without the peer reading anything. Zero-copy, the 3
            // would stay out of the pool (6 in all: every buffer); with the cap, the third
            // goes by copy and comes back at once.
            let mut stalled = Vec::new();
            for _ in 0..2 {
                let listener = small_rcvbuf_listener();
                let addr = listener.local_addr().unwrap();
                let (t, peer) = tokio::join!(transport_uring::connect(addr, cfg.clone()), listener.accept());
                let (r, mut s) = t.unwrap().split();
                let pool = pool.clone();
                stalled.push(tokio::spawn(async move {
                    for seed in 0..3 {
                        send_pool_buffer(&pool, &mut s, seed).await;
                    }
                    (r, s, peer.unwrap().0)
                }));
            }
            // Without the cap, the second stalled connection waits here for a buffer forever.
            let mut keep = Vec::new();
            for h in stalled {
                keep.push(h.await.unwrap());
            }
            // A third connection, with a peer that reads, still gets buffers and sends.
            let (t, peer) = pair(cfg.clone()).await;
            let reader = tokio::spawn(read_all(peer));
            let (r, mut s) = t.split();
            for seed in 0..20 {
                send_pool_buffer(&pool, &mut s, seed).await;
            }
            s.flush_notifications().await;
            drop((r, s));
            assert_eq!(reader.await.unwrap().len(), 20 * (1 + pool.buf_size()), "{backend}");
            drop(keep);
        }
    })
    .await
    .expect("a connection starved of pool buffers by two peers that never read");
}

/// Answers every call with a payload of four pool buffers (1 MiB), taken from `pool`.
struct PoolReplies {
    pool: BufferPool,
}

impl rpc_core::Service for PoolReplies {
    fn call(&self, _req: rpc_core::ServerRequest) -> rpc_core::BoxFuture<'static, Result<rpc_core::Body, rpc_core::Status>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut payload = rpc_core::Payload::new();
            for i in 0..4u8 {
                let mut b = tokio::time::timeout(Duration::from_secs(30), pool.take_wait())
                    .await
                    .map_err(|_| rpc_core::Status::internal("no pool buffer"))?;
                b.fill_from(&pattern(pool.buf_size(), i));
                payload.push(b.into_segment());
            }
            Ok(rpc_core::Body::new(Bytes::new(), vec![payload]))
        })
    }
}

/// A raw client on `addr` that says hello and sends `calls` requests from a thread, and
/// never reads (its receive buffer small).
fn non_reading_client(addr: SocketAddr, calls: u64) -> std::thread::JoinHandle<std::net::TcpStream> {
    use rpc_core::frame::{Hello, Request, WIRE_VERSION};
    use std::io::Write;
    std::thread::spawn(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(64 << 10).unwrap();
        s.connect(&addr.into()).unwrap();
        let mut s: std::net::TcpStream = s.into();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 64 << 20, max_calls_in_flight: 100, max_attachments: 16, max_metadata: 0, stream_window: 0 };
        let _ = s.write_all(&hello.encode());
        for id in 1..=calls {
            let r = Request { id, method: 1, mode: Default::default(), await_commit: false, deadline: None, metadata: Bytes::new(), message: Bytes::new(), attachments: vec![] };
            if s.write_all(&r.encode().unwrap().to_vec()).is_err() {
                break;
            }
        }
        s
    })
}

/// A client that stops reading while a uring server answers it with sends of pool buffers,
/// zero-copy or by copy: the write-stall timeout ends the connection (zero-copy: the send
/// dropped inside a `SENDMSG_ZC` the kernel still holds), the close deadline aborts it, and
/// every pool buffer comes back, writable, once the kernel's notifications are in; the server
/// serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_client_stops_reading_zero_copy_answers_cuts_it_off_and_gets_every_buffer_back() {
    if !require(Backend::Uring) {
        return;
    }
    // Zero-copy, and by copy (the writer then waits for room in user space, holding the
    // answer's buffers until the send is dropped).
    for mode in [ZcMode::AlwaysZc, ZcMode::NeverZc] {
        cut_off_at_the_write_stall(mode).await;
    }
}

async fn cut_off_at_the_write_stall(mode: ZcMode) {
    tokio::time::timeout(LIMIT, async {
        let pool = BufferPool::new(16 << 18, 1 << 18).unwrap();
        let cfg = UringConfig {
            backend: Backend::Uring,
            mode,
            close_deadline: Duration::from_millis(300),
            tcp_user_timeout: None,
            ..Default::default()
        };
        let acceptor = transport_uring::UringAcceptor::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
        let addr = acceptor.local_addr().unwrap();
        let server = rpc_core::Server::builder()
            .write_stall_timeout(Some(Duration::from_millis(800)))
            .drain_timeout(Duration::from_millis(300))
            .build(PoolReplies { pool: pool.clone() });
        let handle = server.serve(acceptor);
        // 40 answers of 1 MiB: far more than the sockets hold.
        let peer = non_reading_client(addr, 40);
        let mut held_peak = 0;
        while server.connections() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while server.connections() > 0 {
            held_peak = held_peak.max(pool.capacity() - pool.available());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(held_peak > 0, "{mode:?}: the stalled connection held pool buffers");
        let stats = server.stats();
        assert_eq!(stats.write_stalls, 1, "{mode:?}: {stats:?}");
        // Every buffer comes back (bounded by LIMIT), writable.
        while pool.available() < pool.capacity() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut all = Vec::new();
        while let Some(mut b) = pool.take() {
            b.as_full_mut().fill(0xa5);
            all.push(b);
        }
        assert_eq!(all.len(), pool.capacity());
        drop(all);
        // The server serves on.
        let client = rpc_core::Client::connect(transport_uring::connect(addr, cfg).await.unwrap(), rpc_core::ClientConfig::default()).await.unwrap();
        let reply = client.call(1, rpc_core::Body::message(Bytes::new()), rpc_core::CallOptions::default()).await.unwrap();
        assert_eq!(reply.attachments[0].len(), 4 << 18);
        drop(client);
        handle.shutdown().await;
        drop(peer.join().unwrap());
    })
    .await
    .unwrap_or_else(|_| panic!("{mode:?}: the stalled connection was not cut off, or its buffers did not come back"));
}

/// The server shut down while a client that stops reading holds zero-copy answers in the
/// kernel (no write-stall timeout): the shutdown ends within its grace period and drain
/// bounds, and the pool buffers come back after the close deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shut_down_with_zero_copy_answers_held_by_a_stalled_client_ends_in_bounded_time() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pool = BufferPool::new(16 << 18, 1 << 18).unwrap();
        let cfg = UringConfig {
            backend: Backend::Uring,
            mode: ZcMode::AlwaysZc,
            close_deadline: Duration::from_millis(300),
            tcp_user_timeout: None,
            ..Default::default()
        };
        let acceptor = transport_uring::UringAcceptor::bind("127.0.0.1:0", cfg).await.unwrap();
        let addr = acceptor.local_addr().unwrap();
        let server = rpc_core::Server::builder()
            .write_stall_timeout(None)
            .grace_period(Duration::from_millis(500))
            .drain_timeout(Duration::from_millis(300))
            .build(PoolReplies { pool: pool.clone() });
        let handle = server.serve(acceptor);
        let peer = non_reading_client(addr, 40);
        // Wait until the stalled connection's sends hold buffers and no longer move.
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let held = pool.capacity() - pool.available();
            if held > 0 && held == last {
                break;
            }
            last = held;
        }
        assert_eq!(server.connections(), 1);
        tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
            .await
            .expect("the server's shutdown waited on a peer that does not read");
        while pool.available() < pool.capacity() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(peer.join().unwrap());
    })
    .await
    .expect("the pool buffers did not come back after the shutdown");
}
