//! The experiment of issue 9, shared by the transports' tests: a 60 MiB put wrapped in a
//! `timeout` of 0 µs, 100 µs, 1 ms and 5 ms, three times each. Every time the caller gets
//! `Elapsed`; the server never runs a request it did not get whole (held for its commit, which
//! the cancel replaces), and after the cancel at most the two pieces the writer holds, and the
//! abort marker, still cross (`docs/wire.md`, "Pieces"). Then the connection carries on: a
//! small call, and a 60 MiB one not given up on, which runs.

use std::time::Duration;

use rpc_core::{Body, Bytes, CallOptions, Client, Payload};

/// Most bytes a client may send after giving up on a pieced request: two pieces with their
/// markers, the abort marker, and a small frame's slack.
pub const AFTER_CANCEL_MAX: u64 = 2 * ((1 << 20) + 8) + 8 + 4096;

/// What `client` sends from now until its writer is quiet (polled every 5 ms, for 1 s at most).
pub async fn sent_until_quiet(client: &Client) -> u64 {
    let start = client.stats().sent_bytes;
    let mut last = start;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = client.stats().sent_bytes;
        if now == last {
            break;
        }
        last = now;
    }
    last - start
}

/// Runs the experiment through `client` calling `echo` (a method answering with its request);
/// `started` counts the handler's runs.
pub async fn large_puts_given_up_on(client: &Client, echo: u32, started: impl Fn() -> usize, what: &str) {
    let blob = Payload::from(vec![3u8; 60 << 20]);
    // Calls whose whole request was written before the timer fired (late, on a loaded
    // machine): their commit may have gone too, and then the server rightly runs them.
    let mut whole_before_cancel = 0;
    for micros in [0, 100, 1_000, 5_000] {
        for _ in 0..3 {
            let before = client.stats().sent_bytes;
            let call = client.call(echo, Body::new(Bytes::new(), vec![blob.clone()]), CallOptions::default());
            let r = tokio::time::timeout(Duration::from_micros(micros), call).await;
            assert!(r.is_err(), "{what}: a 60 MiB echo finished within {micros} µs");
            // The call is dropped (cancelled) by now: count from here.
            if client.stats().sent_bytes - before >= 60 << 20 {
                whole_before_cancel += 1;
            }
            let after = sent_until_quiet(client).await;
            eprintln!("{what}, {micros} µs: {after} bytes crossed after the cancel");
            assert!(after <= AFTER_CANCEL_MAX, "{what}, {micros} µs: {after} bytes of a 60 MiB request crossed after its cancel");
        }
    }
    let limit = Duration::from_secs(60);
    let small = client.call(echo, Body::message(Bytes::from_static(b"after")), CallOptions::default());
    tokio::time::timeout(limit, small).await.expect("bounded").unwrap();
    let ran = started();
    assert!(
        (1..=1 + whole_before_cancel).contains(&ran),
        "{what}: {ran} handlers ran; a call given up on while its request was being written ran ({whole_before_cancel} were whole before their cancel)"
    );
    let back = client.call(echo, Body::new(Bytes::new(), vec![blob]), CallOptions::default());
    let back = tokio::time::timeout(limit, back).await.expect("bounded").unwrap();
    assert_eq!(back.attachments[0].len(), 60 << 20, "{what}");
}
