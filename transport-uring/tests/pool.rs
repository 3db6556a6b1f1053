//! Pool buffers: sent zero-copy from fixed buffers, read-only from submission to notification,
//! writable and back in the pool after it; a peer reset with sends in flight returns every
//! buffer, none before its notification; a write during the flight faults (child process).

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rpc_core::transport::{SendHalf, Transport};
use rpc_core::Transmit;
use tokio::io::AsyncReadExt;
use transport_uring::{Backend, BufferPool, UringConfig, ZcMode};

/// A listener whose accepted sockets have a small receive buffer, so a peer that does not read
/// leaves most of a large message queued on the sender's side (notification pending).
fn small_window_listener() -> std::net::TcpListener {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.set_recv_buffer_size(64 << 10).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(4).unwrap();
    l.into()
}

/// Permissions of the mapping that holds `addr`, from /proc/self/maps.
fn perms(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let range = it.next().unwrap();
        let p = it.next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            usize::from_str_radix(a, 16).unwrap(),
            usize::from_str_radix(b, 16).unwrap(),
        );
        if (a..b).contains(&addr) {
            return p.to_owned();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

fn zc_config() -> UringConfig {
    UringConfig {
        backend: Backend::Uring,
        mode: ZcMode::AlwaysZc,
        sndbuf: Some(8 << 20),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_buffer_is_read_only_in_flight_then_writable_and_returned() {
    init_tracing();
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pool = BufferPool::new(8 << 20, 1 << 20).unwrap();
        assert!(
            pool.is_registered(),
            "pool should be registered as fixed buffers"
        );
        let listener = small_window_listener();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (t, peer) = tokio::join!(
            transport_uring::connect(listener.local_addr().unwrap(), zc_config()),
            listener.accept()
        );
        let (t, mut peer) = (t.unwrap(), peer.unwrap().0);
        let stats = t.stats();
        let (_r, mut s) = t.split();

        let mut bufs = Vec::new();
        let mut expect = b"head".to_vec();
        let mut addrs = Vec::new();
        for i in 0..3u8 {
            let mut b = pool.take().unwrap();
            let data = pattern(1 << 20, 60 + i);
            b.fill_from(&data);
            expect.extend_from_slice(&data);
            addrs.push(b.as_ptr() as usize);
            bufs.push(b.into_segment());
        }
        assert_eq!(perms(addrs[0]).get(..2), Some("rw"));
        s.send(&mut vec![Transmit {
            head: bytes::Bytes::from_static(b"head"),
            segments: bufs,
        }])
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(stats.snapshot().notifications, 0);
        for &a in &addrs {
            assert!(
                perms(a).starts_with("r-"),
                "pool buffer not read-only in flight: {}",
                perms(a)
            );
        }
        assert_eq!(pool.available(), 5);

        let mut got = vec![0u8; expect.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert!(got == expect, "bytes differ");
        s.flush_notifications().await;
        for &a in &addrs {
            assert_eq!(
                perms(a).get(..2),
                Some("rw"),
                "pool buffer still protected after notification"
            );
        }
        assert_eq!(pool.available(), 8);
        // The same memory is writable through a fresh ZcBuf.
        let mut again: Vec<_> = (0..8).map(|_| pool.take().unwrap()).collect();
        for b in &mut again {
            b.fill_from(&[1u8; 4096]);
        }
        let st = stats.snapshot();
        println!("{st:?}");
        assert_eq!(st.write_protects, 3);
        // Head and pool buffers went in one fixed-buffer send (its head in the pool's arena):
        // one notification per submission, resubmissions of short sends included.
        assert_eq!(st.notifications, 1 + st.short_sends);
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_message_goes_in_one_send_with_its_head() {
    if !require(Backend::Uring) || !transport_uring::probe().vectored_fixed {
        eprintln!("SKIP: needs vectored fixed-buffer sends (6.15)");
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pool = BufferPool::new(16 << 20, 64 << 10).unwrap();
        // No cap on the pool bytes awaiting their notification: a reader slowed by a busy
        // machine would otherwise send some messages by copy (the cap's job, not this test's).
        let config = UringConfig { max_pool_bytes_in_flight: usize::MAX, ..zc_config() };
        let (t, peer) = pair(config).await;
        let stats = t.stats();
        let reader = tokio::spawn(read_all(peer));
        let (_r, mut s) = t.split();
        let mut expect = Vec::new();
        // More messages than a registration has head slots: slots must come back.
        for i in 0..300u32 {
            let mut b = pool.take_wait().await;
            let data = pattern(40_000 + i as usize, i as u8);
            b.fill_from(&data);
            let head = format!("head {i}").into_bytes();
            expect.extend_from_slice(&head);
            expect.extend_from_slice(&data);
            s.send(&mut vec![Transmit {
                head: bytes::Bytes::from(head),
                segments: vec![b.into_segment()],
            }])
            .await
            .unwrap();
        }
        s.flush_notifications().await;
        s.shutdown().await.unwrap();
        assert!(reader.await.unwrap() == expect, "bytes differ");
        let st = stats.snapshot();
        println!("{st:?}");
        assert_eq!(st.sends_zc, 300);
        assert_eq!(
            st.notifications,
            st.sends_zc + st.short_sends,
            "one submission per message (plus resubmissions of short sends)"
        );
        assert_eq!(pool.available(), pool.capacity());
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_reset_with_sends_in_flight_returns_every_buffer() {
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pool = BufferPool::new(8 << 20, 1 << 20).unwrap();
        let listener = small_window_listener();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let cfg = UringConfig {
            sndbuf: Some(256 << 10),
            ..zc_config()
        };
        let (t, peer) = tokio::join!(
            transport_uring::connect(listener.local_addr().unwrap(), cfg),
            listener.accept()
        );
        let (t, peer) = (t.unwrap(), peer.unwrap().0);
        let stats = t.stats();
        let (_r, mut s) = t.split();
        let p2 = pool.clone();
        let sender = tokio::spawn(async move {
            for i in 0..8u8 {
                let mut b = p2.take_wait().await;
                b.fill_from(&pattern(1 << 20, i));
                let t = Transmit {
                    head: bytes::Bytes::from_static(b"hdr"),
                    segments: vec![b.into_segment()],
                };
                if let Err(e) = s.send(&mut vec![t]).await {
                    return (e, s);
                }
            }
            panic!("all sends succeeded against a peer that never reads");
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Nothing was released: the peer has not read, so no notification.
        assert_eq!(stats.snapshot().notifications, 0);
        assert!(pool.available() < 8);
        // Reset: SO_LINGER 0 then close.
        let std_peer = peer.into_std().unwrap();
        socket2::SockRef::from(&std_peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(std_peer);
        let (err, s) = sender.await.unwrap();
        println!("send failed: {err}");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "unexpected error: {err:?}"
        );
        s.flush_notifications().await;
        let st = stats.snapshot();
        println!("{st:?}");
        assert_eq!(pool.available(), 8, "every buffer back in the pool");
        // Every submission notifies, the one that failed with the reset included.
        let submissions = st.sends_zc + st.short_sends;
        assert!(
            (submissions..=submissions + 1).contains(&st.notifications),
            "each zero-copy submission notified"
        );
        drop(s);
    })
    .await
    .expect("timed out");
}

const CHILD_ENV: &str = "ZCRPC_SNAPSHOT_CHILD";

/// The child: sends a 4 MiB pool buffer to a peer that does not read, then writes into it.
fn snapshot_child(addr: SocketAddr) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let pool = BufferPool::new(4 << 20, 4 << 20).unwrap();
        let t = transport_uring::connect(addr, zc_config()).await.unwrap();
        let stats = t.stats();
        let (_r, mut s) = t.split();
        let mut b = pool.take().unwrap();
        b.fill_from(&vec![0xAA; 4 << 20]);
        let ptr = b.as_mut_ptr() as usize;
        let send = tokio::spawn(async move {
            let t = Transmit {
                head: bytes::Bytes::new(),
                segments: vec![b.into_segment()],
            };
            s.send(&mut vec![t]).await.unwrap();
            s
        });
        while stats.snapshot().write_protects == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            stats.snapshot().notifications,
            0,
            "notification arrived: the test cannot show the fault"
        );
        eprintln!("CHILD: writing into the in-flight buffer");
        // SAFETY: deliberately writes through a pointer kept from before the send; the page is
        // read-only, so this must fault (SIGSEGV) rather than change bytes in flight.
        unsafe { std::ptr::write_volatile((ptr + (2 << 20)) as *mut u8, 0x55) };
        eprintln!("CHILD: write did not fault");
        drop(send);
        std::process::exit(3);
    })
}

#[test]
fn write_during_flight_faults_and_peer_gets_original_bytes() {
    if let Ok(addr) = std::env::var(CHILD_ENV) {
        snapshot_child(addr.parse().unwrap());
    }
    if !require(Backend::Uring) {
        return;
    }
    let listener = small_window_listener();
    let addr = listener.local_addr().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "write_during_flight_faults_and_peer_gets_original_bytes",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, addr.to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    // Do not read until the child is gone.
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("child did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    println!("child stderr:\n{err}\nstatus: {status:?}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        err.contains("CHILD: writing into the in-flight buffer"),
        "child did not reach the write"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "child should die of SIGSEGV"
    );
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    println!("peer received {} bytes after the child died", got.len());
    assert!(!got.is_empty());
    assert!(
        got.iter().all(|&b| b == 0xAA),
        "the peer saw bytes written during the flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_policies_ownership_and_always_copy() {
    use transport_uring::SnapshotPolicy;
    if !require(Backend::Uring) {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        for policy in [
            SnapshotPolicy::Ownership,
            SnapshotPolicy::AlwaysCopy,
            SnapshotPolicy::WriteProtect,
        ] {
            let pool = BufferPool::new(2 << 20, 1 << 20).unwrap();
            let (t, peer) = pair(UringConfig {
                snapshot: policy,
                ..zc_config()
            })
            .await;
            let stats = t.stats();
            let reader = tokio::spawn(read_all(peer));
            let (_r, mut s) = t.split();
            let mut b = pool.take().unwrap();
            let data = pattern(1 << 20, 77);
            b.fill_from(&data);
            s.send(&mut vec![Transmit {
                head: bytes::Bytes::from_static(b"p"),
                segments: vec![b.into_segment()],
            }])
            .await
            .unwrap();
            s.shutdown().await.unwrap();
            let got = reader.await.unwrap();
            assert_eq!(&got[..1], b"p");
            assert!(got[1..] == data[..]);
            let st = stats.snapshot();
            println!("{policy:?}: {st:?}");
            match policy {
                SnapshotPolicy::Ownership => assert_eq!((st.sends_zc, st.write_protects), (1, 0)),
                SnapshotPolicy::AlwaysCopy => {
                    assert_eq!((st.sends_copy, st.sends_zc, st.write_protects), (1, 0, 0))
                }
                _ => assert_eq!((st.sends_zc, st.write_protects), (1, 1)),
            }
            assert_eq!(pool.available(), pool.capacity());
        }
    })
    .await
    .expect("timed out");
}
