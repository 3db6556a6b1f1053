//! Quickstart: a server and a client in one process on 127.0.0.1, a few small calls, a few
//! large ones (up to 16 MiB), a download and an upload as streams of 1 MiB chunks, then a table
//! of what went through which send path.
//!
//! ```text
//! cargo run --release --example quickstart [-- --transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--addr 127.0.0.1:0|unix:PATH]
//! ```
//!
//! `--addr unix:/tmp/quickstart.sock` runs the same over a Unix socket.

use std::net::SocketAddr;
use std::time::Instant;

use rpc_core::{ClientConfig, Payload, Server, StatsSnapshot};
use zcrpc_examples::{connect_to, pattern, serve_at, Endpoint, EngineOptions, TransportChoice};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (transport, engine, endpoint) = parse_args()?;
    let (server, addr) = serve_at(&endpoint, transport, engine, Server::builder()).await?;
    match addr {
        Endpoint::Unix(_) => println!("zcrpc quickstart: server on {addr}"),
        Endpoint::Tcp(_) => println!("zcrpc quickstart: server on {addr} ({transport:?} transport, {engine:?})"),
    }
    let client = connect_to(&addr, transport, engine, ClientConfig::default()).await?;

    let start = Instant::now();
    let mut calls = 0u64;
    let mut bytes = 0u64;

    // Small calls: typed arguments only, encoded with postcard, no attachment.
    for i in 0..10u64 {
        let sum = client.add(i, 1000).await?;
        assert_eq!(sum, i + 1000);
        calls += 1;
    }

    // Large calls: the payload is an attachment, sent as it is and echoed back.
    for (i, size) in [64 << 10, 1 << 20, 4 << 20, 16 << 20].into_iter().enumerate() {
        let data = pattern(size, i as u64);
        let back = client.echo(Payload::from(data.clone())).await?;
        if back.to_bytes() != data {
            return Err(format!("echo of {size} bytes came back different").into());
        }
        calls += 1;
        bytes += 2 * size as u64;
    }

    // Streams: a download as 32 chunks of 1 MiB from the server (each sent when the client has
    // room for it: flow control), and an upload the other way, answered once it is finished.
    let mut chunks = client.download(32, 1 << 20).await?;
    while let Some(chunk) = chunks.recv_with().await {
        let (i, attachments) = chunk?;
        if attachments[0].to_bytes() != pattern(1 << 20, u64::from(i)) {
            return Err(format!("streamed chunk {i} came back different").into());
        }
        bytes += 1 << 20;
    }
    let (mut upload, total) = client.upload().await?;
    for i in 0..32u32 {
        upload.send_with(i, vec![Payload::from(pattern(1 << 20, u64::from(i)))]).await?;
        bytes += 1 << 20;
    }
    upload.finish();
    assert_eq!(total.await?, 32 << 20);
    calls += 2;
    let secs = start.elapsed().as_secs_f64();

    // Closing waits until the kernel is done with every zero-copy send: the counters below
    // then include every notification.
    client.client().close().await;
    let client_stats = client.client().stats();
    server.server().shutdown();
    let server_stats = server.server().stats();
    println!("{calls} calls (two of them streams), {:.1} MiB of payload in {:.3} s, every byte verified", bytes as f64 / (1 << 20) as f64, secs);
    println!();
    print_table(&[("client", &client_stats), ("server", &server_stats)]);
    println!();
    explain(&client_stats);
    server.shutdown().await;
    Ok(())
}

/// Says in words what the counters show.
fn explain(s: &StatsSnapshot) {
    #[cfg(target_os = "linux")]
    {
        let probe = transport_uring::probe();
        println!("backend probe: {} ({})", probe.backend, probe.reason);
    }
    if s.transport == "tcp" || s.transport == "unix" {
        println!("{}: every frame went out as one vectored write of the caller's segments; the kernel copied them.", s.transport);
        return;
    }
    println!(
        "copy path: {} sends, {} bytes (frames under the copy threshold, and any frame once the engine chose copy)",
        s.sends_copy, s.bytes_copy
    );
    if s.sends_zc > 0 {
        println!(
            "zero-copy: {} sends, {} bytes; {} notifications, {} of them saying the kernel copied after all (ZC_COPIED)",
            s.sends_zc, s.bytes_zc, s.notifications, s.notifications_copied
        );
    }
    if s.path_switches > 0 && s.notifications_copied > 0 {
        println!(
            "on loopback the kernel always copies, so the adaptive engine noticed and moved the connection to the copy path ({} switch); it probes zero-copy again now and then",
            s.path_switches
        );
    }
    if s.sends_coalesced > 0 {
        println!("{} sends had too many segments: {} small ones were coalesced", s.sends_coalesced, s.coalesced_segments);
    }
    println!(
        "receive: {} bytes, {} of them moved in user space (the start of a large frame, read before its size was known, moved into the buffer of its exact size)",
        s.recv_bytes, s.recv_copied_bytes
    );
    if s.align_copies > 0 {
        println!(
            "alignment: {} small frames arrived packed behind others where their attachments would not be 64-byte aligned; {} bytes copied to align them",
            s.align_copies, s.align_copy_bytes
        );
    }
    if s.recv_ring_chunks > 0 {
        println!(
            "receive ring: {} buffers filled by the multishot receive, small frames decoded where the kernel put them; the ring ran dry {} times",
            s.recv_ring_chunks, s.recv_ring_empty
        );
    }
}

fn parse_args() -> Result<(TransportChoice, EngineOptions, Endpoint), String> {
    const USAGE: &str = "usage: quickstart [--transport uring|msgzc|tcp] [--zc adaptive|always-zc|never-zc] [--recv read|uring|ring] [--addr 127.0.0.1:0|unix:PATH]";
    let (mut transport, mut engine) = (TransportChoice::default(), EngineOptions::default());
    let mut endpoint = Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        if flag == "--transport" {
            transport = value.parse()?;
        } else if flag == "--addr" {
            endpoint = value.parse()?;
        } else if !engine.set(&flag, &value)? {
            return Err(USAGE.into());
        }
    }
    Ok((transport, engine, endpoint))
}

fn print_table(rows: &[(&str, &StatsSnapshot)]) {
    println!("| side   | transport | sends copy | sends zero-copy | sends coalesced | bytes copy | bytes zero-copy | notifications (copied) | path switches |");
    println!("|--------|-----------|-----------:|----------------:|----------------:|-----------:|----------------:|-----------------------:|--------------:|");
    for (side, s) in rows {
        println!(
            "| {side:<6} | {:<9} | {:>10} | {:>15} | {:>15} | {:>10} | {:>15} | {:>14} ({:>5}) | {:>13} |",
            s.transport,
            s.sends_copy,
            s.sends_zc,
            s.sends_coalesced,
            s.bytes_copy,
            s.bytes_zc,
            s.notifications,
            s.notifications_copied,
            s.path_switches
        );
    }
}
