//! Heap allocations per unary 64-byte call, client and server together, counted by a counting
//! global allocator. Printed for the record (`cargo test --test allocations -- --nocapture`), and
//! held under a ceiling so that a change that adds allocations to every call is noticed.

mod common;

use std::alloc::System;

use common::*;
use rpc_core::transport::tcp::TcpAcceptor;
use rpc_core::{Body, Bytes, CallOptions, Client, ClientConfig, Server};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The ceiling: what was measured, with room for tokio's own bookkeeping. 2026-12-01: 10.0
/// allocations and about 1.5 KB per call over tcp, client and server together; after the
/// streaming redesign 8.0 and about 2.2 KB (frames without attachments no longer allocate a
/// segment list; the call's futures are larger). Lower it as per-call allocations are pooled
/// away.
const CEILING_PER_CALL: f64 = 9.5;

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
    let region = Region::new(GLOBAL);
    for _ in 0..calls {
        call().await.unwrap();
    }
    let change = region.change();
    let (allocs, bytes) = ((change.allocations + change.reallocations) as u64, change.bytes_allocated as u64);
    let per_call = allocs as f64 / calls as f64;
    eprintln!("unary 64-byte call over tcp (client + server): {per_call:.1} allocations, {} bytes allocated per call", bytes / calls);
    assert!(per_call <= CEILING_PER_CALL, "{per_call:.1} allocations per call (ceiling {CEILING_PER_CALL})");
    handle.shutdown().await;
}
