//! The check of 64-byte-aligned attachments, shared by `rpc-core/tests/aligned_attachments.rs`
//! (mem, tcp) and `transport-uring/tests/aligned.rs` (every uring receive mode), each including
//! this file by path: a service that checks where every attachment it receives lies, and a
//! client run over every size, count, pipelining and a stream that checks the answers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rpc_core::{
    Body, BoxFuture, Bytes, CallMode, CallOptions, Client, Payload, ServerRequest, Service, StatsSnapshot, Status,
};

/// Sizes that sit on every side of the 64-byte grid, a page, and the 64 KiB line above which a
/// frame gets a receive buffer of its own.
pub const SIZES: [usize; 8] = [0, 1, 63, 64, 65, 4095, (1 << 20) + 3, 8 << 20];
pub const COUNTS: [usize; 3] = [1, 2, 7];

/// Echoes the body after checking where each attachment lies.
#[derive(Clone, Default)]
pub struct AlignCheck {
    checked: Arc<AtomicUsize>,
    misaligned: Arc<AtomicUsize>,
}

/// Method of the bidirectional stream that echoes each message.
pub const ECHO_STREAM: u32 = 7;

impl AlignCheck {
    fn check(&self, body: &Body) {
        for a in &body.attachments {
            self.checked.fetch_add(1, Ordering::Relaxed);
            if a.to_bytes().as_ptr() as usize % 64 != 0 {
                self.misaligned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Service for AlignCheck {
    fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
        self.check(&req.body);
        let Some(stream) = req.stream.take() else {
            return Box::pin(std::future::ready(Ok(req.body)));
        };
        let this = self.clone();
        Box::pin(async move {
            let (mut tx, mut rx) = stream.split();
            while let Some(msg) = rx.recv().await {
                let msg = msg.map_err(|e| Status::new(e.code(), e.to_string()))?;
                this.check(&msg);
                tx.send(msg).await.map_err(|e| Status::new(e.code(), e.to_string()))?;
            }
            Ok(Body::default())
        })
    }
}

/// Stream data frames carry attachments too: every size and count through one bidirectional
/// stream, the sender running ahead of the reader (frames packed behind each other).
pub async fn exercise_stream(client: &Client, what: &str) {
    let (mut tx, mut rx) =
        client.open(ECHO_STREAM, Body::default(), CallMode::BIDI, CallOptions::default()).await.unwrap().split();
    let mut bodies = Vec::new();
    for (salt, count) in COUNTS.into_iter().enumerate() {
        for (i, size) in SIZES.into_iter().enumerate() {
            bodies.push(body(size, count, i % 2 == 1, salt * 10 + i));
        }
    }
    let sent = bodies.clone();
    let sender = tokio::spawn(async move {
        for b in sent {
            tx.send(b).await.unwrap();
        }
    });
    for (k, b) in bodies.iter().enumerate() {
        let got = rx.recv().await.unwrap().unwrap();
        check_reply(b, &got, &format!("{what}: stream message {k}"));
    }
    sender.await.unwrap();
}

/// `count` attachments of `size` bytes (the first of a mix with the other sizes when `mix`),
/// each filled with its own byte, behind a message whose length shifts the payload's start.
pub fn body(size: usize, count: usize, mix: bool, salt: usize) -> Body {
    let attachments = (0..count)
        .map(|k| {
            let n = if mix && k > 0 { SIZES[(salt + k) % 6] } else { size };
            Payload::from(Bytes::from(vec![(salt * 7 + k) as u8; n]))
        })
        .collect();
    Body::new(Bytes::from(vec![b'm'; (salt * 13) % 90]), attachments)
}

pub fn check_reply(sent: &Body, got: &Body, what: &str) {
    assert_eq!(got.attachments.len(), sent.attachments.len(), "{what}");
    for (k, (s, g)) in sent.attachments.iter().zip(&got.attachments).enumerate() {
        let b = g.to_bytes();
        assert_eq!(b.as_ptr() as usize % 64, 0, "{what}: attachment {k} of {} bytes at {:p}", b.len(), b.as_ptr());
        assert!(*s == *g, "{what}: attachment {k} differs");
    }
}

/// Every size and count one call at a time, then the small sizes with many calls in flight.
pub async fn exercise(client: &Client, service: &AlignCheck, what: &str) -> StatsSnapshot {
    let mut salt = 0;
    for count in COUNTS {
        for size in SIZES {
            for mix in [false, true] {
                salt += 1;
                let sent = body(size, count, mix, salt);
                let got = client.call(1, sent.clone(), CallOptions::default()).await.unwrap();
                check_reply(&sent, &got, &format!("{what}: {count} x {size} (mix {mix})"));
            }
        }
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..64usize {
        let client = client.clone();
        let sent = body(SIZES[i % 6], COUNTS[i % 3], i % 2 == 1, i);
        calls.spawn(async move {
            let got = client.call(1, sent.clone(), CallOptions::default()).await.unwrap();
            (sent, got)
        });
    }
    while let Some(r) = calls.join_next().await {
        let (sent, got) = r.unwrap();
        check_reply(&sent, &got, &format!("{what}: pipelined"));
    }
    exercise_stream(client, what).await;
    assert!(service.checked.load(Ordering::Relaxed) > 0);
    assert_eq!(service.misaligned.load(Ordering::Relaxed), 0, "{what}: the handler saw misaligned attachments");
    let st = client.stats();
    eprintln!(
        "{what}: client align_copies {} ({} bytes), recv_copied_bytes {}, ring chunks {}",
        st.align_copies, st.align_copy_bytes, st.recv_copied_bytes, st.recv_ring_chunks
    );
    // A frame over a receive buffer is never copied to align it: each copy is of at most a read
    // block's (64 KiB) or a ring buffer's worth (small frames packed behind others).
    assert!(st.align_copy_bytes <= st.align_copies * (64 << 10), "{what}: {st:?}");
    st
}
