//! Heap allocations per unary 64-byte call, client and server together, counted by a counting
//! global allocator. Printed for the record (`cargo test --test allocations -- --nocapture`), and
//! held under a ceiling so that a change that adds allocations to every call is noticed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Body, Bytes, CallOptions, Client, ClientConfig, Server};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The ceiling: what was measured when this test was written (2026-12-01: 11.0 allocations and
/// about 1.5 KB per call over tcp, client and server together), with room for tokio's own
/// bookkeeping. Lower it as per-call allocations are pooled away.
const CEILING_PER_CALL: f64 = 14.0;

#[tokio::test(flavor = "current_thread")]
async fn a_unary_64_byte_call_allocates_a_bounded_number_of_times() {
    let acceptor = TcpAcceptor::bind("127.0.0.1:0").await.unwrap();
    let addr = acceptor.local_addr().unwrap();
    let handle = Server::builder().build(TestService::default()).serve(acceptor);
    let client = Client::connect_tcp(addr, ClientConfig::default()).await.unwrap();
    let msg = Bytes::from(vec![7u8; 64]);
    let call = || client.call(ECHO, Body::message(msg.clone()), CallOptions::default());
    for _ in 0..500 {
        call().await.unwrap();
    }
    let calls = 5000u64;
    let (a0, b0) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    for _ in 0..calls {
        call().await.unwrap();
    }
    let (allocs, bytes) = (ALLOCS.load(Ordering::Relaxed) - a0, BYTES.load(Ordering::Relaxed) - b0);
    let per_call = allocs as f64 / calls as f64;
    eprintln!("unary 64-byte call over tcp (client + server): {per_call:.1} allocations, {} bytes allocated per call", bytes / calls);
    assert!(per_call <= CEILING_PER_CALL, "{per_call:.1} allocations per call (ceiling {CEILING_PER_CALL})");
    handle.shutdown().await;
}
