//! Issue 8, reliability: one connection must not starve another, a server that dies fails the
//! calls in flight at once, and a client that dies mid-upload leaves nothing behind on the
//! server. Over tcp and, on Linux, the io_uring transport; loopback only.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_core::{CallError, ClientConfig, Payload};
use zcrpc_examples::fault_proxy::{Direction, Fault, FaultProxy};
use zcrpc_examples::{connect, connect_with_config, pattern, serve, EngineOptions, TransportChoice};

use common::{eventually, spawn_server, within, HANG};

// ---------------------------------------------------------------------------------------------
// Fairness

/// Echoes the flooding connection keeps in flight: 64 × 256 KiB = 16 MiB, a bulk client
/// pipelining uploads as fast as it can.
const FLOOD_IN_FLIGHT: usize = 64;
const FLOOD_SIZE: usize = 256 << 10;
/// Small calls the quiet connection makes, one at a time, while the flood runs.
const QUIET_CALLS: u64 = 20;
/// A quiet call that takes longer than this while the flood runs was starved (an unloaded
/// call takes well under a millisecond here; the defect made it take over 10 s).
const QUIET_BOUND: Duration = Duration::from_secs(2);

async fn quiet_calls_stay_fast_while_another_connection_floods(t: TransportChoice) {
    let server = spawn_server(t);
    let addr = server.addr();
    let flood = connect(addr, t, EngineOptions::default()).await.unwrap();
    let quiet = connect(addr, t, EngineOptions::default()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let data = pattern(FLOOD_SIZE, 1);
    let mut workers = Vec::new();
    for _ in 0..FLOOD_IN_FLIGHT {
        let (flood, stop, flooded, data) = (flood.clone(), stop.clone(), flooded.clone(), data.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let back = flood.echo(Payload::from(data.clone())).await.expect("flood echo");
                assert_eq!(back.len(), data.len());
                flooded.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    assert!(eventually(HANG, || flooded.load(Ordering::Relaxed) >= 1).await, "the flood never got an answer");
    let mut slowest = Duration::ZERO;
    for i in 0..QUIET_CALLS {
        let start = Instant::now();
        let r = tokio::time::timeout(QUIET_BOUND, quiet.add(i, 1)).await;
        let took = start.elapsed();
        let flood_so_far = flooded.load(Ordering::Relaxed);
        match r {
            Ok(r) => assert_eq!(r.unwrap(), i + 1),
            Err(_) => panic!("quiet call {i} got no answer within {QUIET_BOUND:?} while the flood ran ({flood_so_far} flood echoes done)"),
        }
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = flooded.load(Ordering::Relaxed);
    assert!(eventually(HANG, || flooded.load(Ordering::Relaxed) > before).await, "the flood stopped making progress");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        within("a flood worker to stop", w).await.unwrap();
    }
    eprintln!("fairness {}: slowest quiet call {slowest:?}, {} flood echoes", common::name(t), flooded.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fairness_tcp() {
    quiet_calls_stay_fast_while_another_connection_floods(TransportChoice::Tcp).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fairness_uring() {
    quiet_calls_stay_fast_while_another_connection_floods(TransportChoice::Uring).await;
}

// ---------------------------------------------------------------------------------------------
// The server killed mid-load

/// Connections and echoes in flight on each when the server dies: 4 × 16 × 1 MiB.
const KILL_CONNS: usize = 4;
const KILL_IN_FLIGHT: usize = 16;
const KILL_SIZE: usize = 1 << 20;

async fn pending_calls_fail_promptly_when_the_server_is_killed(t: TransportChoice) {
    let mut server = spawn_server(t);
    let ok = Arc::new(AtomicU64::new(0));
    let data = pattern(KILL_SIZE, 2);
    let mut workers = Vec::new();
    for _ in 0..KILL_CONNS {
        // Calls made after the kill fail at once instead of waiting for the server to return.
        let mut config = ClientConfig::default();
        config.reconnect.wait_for_connection = false;
        let client = connect_with_config(server.addr(), t, EngineOptions::default(), config).await.unwrap();
        for _ in 0..KILL_IN_FLIGHT {
            let (client, ok, data) = (client.clone(), ok.clone(), data.clone());
            workers.push(tokio::spawn(async move {
                // Calls until one fails; returns that failure.
                loop {
                    match client.echo(Payload::from(data.clone())).await {
                        Ok(back) => {
                            assert!(back.to_bytes() == data, "echo differs");
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return e,
                    }
                }
            }));
        }
    }
    assert!(eventually(HANG, || ok.load(Ordering::Relaxed) >= 32).await, "no load before the kill");
    server.kill();
    let killed = Instant::now();
    for w in workers {
        let e = within("a call in flight when the server was killed", w).await.unwrap();
        assert!(matches!(e, CallError::Connection(_) | CallError::ShuttingDown | CallError::Unavailable(_)), "unexpected failure: {e:?}");
    }
    eprintln!("server killed ({}): {} echoes before, all pending calls failed within {:?}", common::name(t), ok.load(Ordering::Relaxed), killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_load_tcp() {
    pending_calls_fail_promptly_when_the_server_is_killed(TransportChoice::Tcp).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_load_uring() {
    pending_calls_fail_promptly_when_the_server_is_killed(TransportChoice::Uring).await;
}

// ---------------------------------------------------------------------------------------------
// An upload cut mid-frame or reset by the network

/// An upload large enough that the cut lands inside its frame: 32 MiB, cut after 5 MiB.
const UPLOAD: usize = 32 << 20;
const CUT_AT: u64 = 5 << 20;

async fn an_upload_broken_mid_frame_frees_the_server_connection(t: TransportChoice, fault: Fault) {
    let (server, addr) = serve("127.0.0.1:0".parse().unwrap(), t, EngineOptions::default()).await.unwrap();
    let proxy = FaultProxy::start(addr).await.unwrap();
    let client = connect(proxy.local_addr(), t, EngineOptions::default()).await.unwrap();
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    assert_eq!(server.server().connections(), 1);
    let conn = proxy.connection(0).await;
    // The proxy ends the connection after CUT_AT more bytes itself: a test that watched the
    // bytes move and then reset missed the frame's middle now and then (32 MiB crossed
    // loopback between two of its looks, 20 ms apart).
    conn.apply(fault);
    let upload = {
        let client = client.clone();
        tokio::spawn(async move { client.echo(Payload::from(pattern(UPLOAD, 3))).await })
    };
    let r = within("the broken upload", upload).await.unwrap();
    assert!(matches!(r, Err(CallError::Connection(_))), "{:?}", r.map(|p| p.len()));
    assert!(conn.moved().client_to_server < UPLOAD as u64, "the fault came too late to be mid-frame");
    // The client re-dials after the fault; gone, it leaves the server nothing to serve.
    drop(client);
    assert!(eventually(HANG, || server.server().connections() == 0).await, "the server still serves {} connections", server.server().connections());
    assert!(server.server().connection_stats().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cut_mid_frame_tcp() {
    an_upload_broken_mid_frame_frees_the_server_connection(TransportChoice::Tcp, Fault::CutAfter(Direction::ClientToServer, CUT_AT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_reset_mid_frame_tcp() {
    an_upload_broken_mid_frame_frees_the_server_connection(TransportChoice::Tcp, Fault::ResetAfter(Direction::ClientToServer, CUT_AT)).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cut_mid_frame_uring() {
    an_upload_broken_mid_frame_frees_the_server_connection(TransportChoice::Uring, Fault::CutAfter(Direction::ClientToServer, CUT_AT)).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_reset_mid_frame_uring() {
    an_upload_broken_mid_frame_frees_the_server_connection(TransportChoice::Uring, Fault::ResetAfter(Direction::ClientToServer, CUT_AT)).await;
}

// ---------------------------------------------------------------------------------------------
// A connection stalled and delayed, then released

/// Echoes in flight while the connection is stalled: 8 × 1 MiB.
const STALL_CALLS: usize = 8;
const STALL_SIZE: usize = 1 << 20;

async fn calls_survive_a_stall_and_a_delay(t: TransportChoice) {
    let (server, addr) = serve("127.0.0.1:0".parse().unwrap(), t, EngineOptions::default()).await.unwrap();
    let proxy = FaultProxy::start(addr).await.unwrap();
    let client = connect(proxy.local_addr(), t, EngineOptions::default()).await.unwrap();
    let conn = proxy.connection(0).await;
    for (round, faults) in [
        [Fault::StopReading(Direction::ClientToServer), Fault::StopReading(Direction::ServerToClient)],
        [Fault::Delay(Direction::ClientToServer, Duration::from_millis(5)), Fault::Delay(Direction::ServerToClient, Duration::from_millis(5))],
    ]
    .into_iter()
    .enumerate()
    {
        for f in faults {
            conn.apply(f);
        }
        let calls: Vec<_> = (0..STALL_CALLS)
            .map(|i| {
                let client = client.clone();
                let data = pattern(STALL_SIZE, (round * STALL_CALLS + i) as u64);
                tokio::spawn(async move { (client.echo(Payload::from(data.clone())).await, data) })
            })
            .collect();
        if round == 0 {
            // Stalled: nothing can come back. Then released.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(calls.iter().all(|c| !c.is_finished()), "a call finished through a stalled connection");
            conn.apply(Fault::PassThrough);
        }
        for c in calls {
            let (r, data) = within("a call after the fault was lifted", c).await.unwrap();
            assert!(r.unwrap().to_bytes() == data, "echo differs after {:?}", faults[0]);
        }
        conn.apply(Fault::PassThrough);
    }
    assert_eq!(client.add(2, 2).await.unwrap(), 4);
    assert_eq!(server.server().connections(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_and_delay_then_release_tcp() {
    calls_survive_a_stall_and_a_delay(TransportChoice::Tcp).await;
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_and_delay_then_release_uring() {
    calls_survive_a_stall_and_a_delay(TransportChoice::Uring).await;
}
