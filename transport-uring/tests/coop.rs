//! A connection that always has data does not keep its tokio worker to itself: receives take
//! from tokio's cooperative budget (issue #8, fairness check).

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use common::*;
use rpc_core::transport::{Chunk, RecvHalf, Transport};
use transport_uring::{Backend, RecvMode, UringConfig};

const DATA: usize = 1 << 20;

/// Receives `DATA` bytes queued in the socket before the first receive; returns whether a task
/// spawned just before could run while bytes were still left.
async fn other_task_runs_during(mode: RecvMode) -> bool {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Room for every byte, so all of them are queued before the receiving starts.
    sock.set_recv_buffer_size(4 << 20).unwrap();
    sock.connect(&listener.local_addr().unwrap().into()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.write_all(&pattern(DATA, 5)).unwrap();
    drop(peer);
    sock.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    // Small ring buffers: many more receives than tokio's budget (128) per turn.
    let cfg = UringConfig { backend: Backend::Uring, recv: mode, recv_ring_buf_size: 1024, ..Default::default() };
    let (mut r, _s) = transport_uring::from_tcp(stream, cfg).unwrap().split();
    assert_eq!(r.mode(), mode);

    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
    let mut got = 0;
    let mut ran_with_data_left = false;
    loop {
        ran_with_data_left |= ran.load(Ordering::SeqCst) && got < DATA;
        let n = match r.recv_chunk().await.unwrap() {
            Chunk::Data(b) => b.len(),
            Chunk::Eof => 0,
            _ => r.recv(BytesMut::with_capacity(4096)).await.0.unwrap(),
        };
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, DATA);
    ran_with_data_left
}

#[test]
fn receives_yield_to_other_tasks() {
    if !require(Backend::Uring) {
        return;
    }
    // One thread: the spawned task runs only when the receiving task returns Pending.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for mode in [RecvMode::Uring, RecvMode::BufferRing] {
        let ran = rt.block_on(async { tokio::time::timeout(LIMIT, other_task_runs_during(mode)).await.unwrap() });
        assert!(ran, "{mode}: receives completed back to back without yielding to tokio");
    }
}
