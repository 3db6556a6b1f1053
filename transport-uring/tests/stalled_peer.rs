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
