//! Typed streams whose small items are encoded back to back into one shared buffer
//! (`EncodeBuffer`, or `send_all`'s packed run, copied by the connection from where each item
//! lies, and decoded on the other side where it lies in its batch): many items of sizes around
//! the small-frame limit (512 B), the shared buffer's limit (4 KiB) and past a chunk (64 KiB),
//! with and without attachments, some kept by the receiver while later ones arrive, over the
//! in-memory pipe and TCP. Every byte of every item is checked, including those of items kept
//! until the end. A run cut short (an item that does not encode, a `send_all` dropped while it
//! waits for credit) sends a prefix of its items and leaves the sink usable; items that do not
//! decode are errors, the ones after them arrive.

mod common;

use common::pattern;
use rpc_core::codec::Prost;
use rpc_core::{Payload, Server, Sink, Source};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub n: u32,
    pub data: Vec<u8>,
}

#[rpc_core::service(package = "bufs.v1")]
pub trait Bufs {
    /// Server streaming: an item of each size (its data a pattern seeded by its index), with an
    /// attachment of `attach` bytes on every third item when `attach` is not zero.
    async fn make(&self, sizes: Vec<u32>, attach: u32, out: Sink<Item>);
    /// Bidirectional: each item back as it came, its attachments too.
    async fn echo(&self, input: Source<Item>, output: Sink<Item>);
    /// Bidirectional with prost: each message back as it came.
    async fn echo_prost(&self, input: Source<Vec<u8>, Prost>, output: Sink<Vec<u8>, Prost>);
    /// Client streaming: the numbers of the items received, in order.
    async fn numbers(&self, input: Source<Picky>) -> Vec<u32>;
    /// Client streaming: each item's number, or -1 for one that did not decode.
    async fn flaky(&self, input: Source<Flaky>) -> Vec<i64>;
}

/// An item that does not decode when its number is 3 more than a multiple of 7.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flaky {
    pub n: u32,
}

impl<'de> Deserialize<'de> for Flaky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 7 == 3 {
            return Err(serde::de::Error::custom("flaky"));
        }
        Ok(Flaky { n })
    }
}

/// An item that cannot be encoded when `fails` is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Picky {
    pub n: u32,
    pub fails: bool,
}

impl Serialize for Picky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.fails {
            return Err(serde::ser::Error::custom(format!("item {} refuses to be encoded", self.n)));
        }
        (self.n, self.fails).serialize(s)
    }
}

struct BufsImpl;

fn item(n: u32, len: usize) -> Item {
    Item { n, data: pattern(len, n as u8).to_vec() }
}

impl Bufs for BufsImpl {
    async fn make(&self, sizes: Vec<u32>, attach: u32, mut out: Sink<Item>) {
        for (i, len) in sizes.into_iter().enumerate() {
            let attachments = if attach > 0 && i % 3 == 0 { vec![Payload::from(pattern(attach as usize, !(i as u8)))] } else { Vec::new() };
            if out.send_with(item(i as u32, len as usize), attachments).await.is_err() {
                return;
            }
        }
    }

    async fn echo(&self, mut input: Source<Item>, mut output: Sink<Item>) {
        while let Some(Ok((item, attachments))) = input.recv_with().await {
            if output.send_with(item, attachments).await.is_err() {
                return;
            }
        }
    }

    async fn echo_prost(&self, mut input: Source<Vec<u8>, Prost>, mut output: Sink<Vec<u8>, Prost>) {
        while let Some(Ok(m)) = input.recv().await {
            if output.send(m).await.is_err() {
                return;
            }
        }
    }

    async fn numbers(&self, input: Source<Picky>) -> Vec<u32> {
        input.collect().await.unwrap_or_default().into_iter().map(|p| p.n).collect()
    }

    async fn flaky(&self, mut input: Source<Flaky>) -> Vec<i64> {
        let mut got = Vec::new();
        while let Some(item) = input.recv().await {
            got.push(item.map_or(-1, |f| i64::from(f.n)));
        }
        got
    }
}

async fn client(transport: &str) -> BufsClient {
    let server = Server::builder().build(BufsServer::new(BufsImpl));
    let client = common::client_over(server, transport).await;
    BufsClient::new(client)
}

/// Sizes around every limit, repeated, so that items cross the shared buffer's chunks at
/// every offset.
fn sizes() -> Vec<u32> {
    let edges = [0u32, 1, 60, 500, 505, 506, 507, 508, 512, 513, 600, 2000, 4088, 4089, 4090, 4091, 4092, 4093, 4095, 4096, 4097, 5000, 65530, 65536, 70000];
    (0..1500).map(|i| edges[(i * 7 + i / 25) % edges.len()]).collect()
}

async fn timed<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), f).await.expect("the test took over 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_streams_items_around_every_size_limit_intact_and_kept_items_stay_intact() {
    timed(async {
        for t in ["mem", "tcp"] {
            for attach in [0u32, 1, 700, 5000] {
                let client = client(t).await;
                let sizes = sizes();
                let mut items = client.make(sizes.clone(), attach).await.unwrap();
                let mut kept = Vec::new();
                let mut i = 0usize;
                while let Some(got) = items.recv_with().await {
                    let (got, attachments) = got.unwrap();
                    assert_eq!(got, item(i as u32, sizes[i] as usize), "{t}, attach {attach}: item {i}");
                    if attach > 0 && i % 3 == 0 {
                        assert_eq!(attachments.len(), 1, "{t}: item {i}");
                        assert_eq!(attachments[0].to_bytes(), pattern(attach as usize, !(i as u8)), "{t}: item {i}'s attachment");
                    } else {
                        assert!(attachments.is_empty(), "{t}: item {i}");
                    }
                    if i % 5 == 0 {
                        kept.push((i, got, attachments));
                    }
                    i += 1;
                }
                assert_eq!(i, sizes.len(), "{t}, attach {attach}");
                for (i, got, attachments) in kept {
                    assert_eq!(got, item(i as u32, sizes[i] as usize), "{t}: kept item {i}");
                    if attach > 0 && i % 3 == 0 {
                        assert_eq!(attachments[0].to_bytes(), pattern(attach as usize, !(i as u8)), "{t}: kept item {i}'s attachment");
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_echoed_both_ways_through_shared_buffers_come_back_intact_in_order() {
    timed(async {
        for t in ["mem", "tcp"] {
            let client = client(t).await;
            let sizes = sizes();
            let (mut out, mut back) = client.echo().await.unwrap();
            let expected = sizes.clone();
            let reader = tokio::spawn(async move {
                let mut n = 0usize;
                while let Some(got) = back.recv_with().await {
                    let (got, attachments) = got.unwrap();
                    assert_eq!(got, item(n as u32, expected[n] as usize), "item {n}");
                    if n % 4 == 1 {
                        assert_eq!(attachments.len(), 2, "item {n}");
                        assert_eq!(attachments[0].to_bytes(), pattern(n % 5000, 3), "item {n}");
                        assert!(attachments[1].is_empty(), "item {n}");
                    } else {
                        assert!(attachments.is_empty(), "item {n}");
                    }
                    n += 1;
                }
                n
            });
            // send_with one at a time and send_all in runs, alternately.
            let mut i = 0;
            while i < sizes.len() {
                if i % 100 < 50 {
                    let attachments = if i % 4 == 1 { vec![Payload::from(pattern(i % 5000, 3)), Payload::new()] } else { Vec::new() };
                    out.send_with(item(i as u32, sizes[i] as usize), attachments).await.unwrap();
                    i += 1;
                } else {
                    // Only items that carry no attachments go by send_all.
                    let end = (i + 50).min(sizes.len());
                    let run: Vec<usize> = (i..end).take_while(|j| j % 4 != 1).collect();
                    if run.is_empty() {
                        out.send_with(item(i as u32, sizes[i] as usize), vec![Payload::from(pattern(i % 5000, 3)), Payload::new()]).await.unwrap();
                        i += 1;
                        continue;
                    }
                    i += run.len();
                    out.send_all(run.into_iter().map(|j| item(j as u32, sizes[j] as usize))).await.unwrap();
                }
            }
            out.finish();
            assert_eq!(reader.await.unwrap(), sizes.len(), "{t}");
        }
    })
    .await
}

/// Reads the echoed prost items, each checked against its size and pattern as it comes and
/// every third again at the end (kept while later ones arrived); returns how many came.
async fn read_prost_items(mut back: Source<Vec<u8>, Prost>, sizes: Vec<u32>) -> usize {
    let mut kept = Vec::new();
    let mut n = 0usize;
    while let Some(got) = back.recv().await {
        let got = got.unwrap();
        assert_eq!(got, pattern(sizes[n] as usize, n as u8).to_vec(), "item {n}");
        if n % 3 == 0 {
            kept.push((n, got));
        }
        n += 1;
    }
    for (n, got) in kept {
        assert_eq!(got, pattern(sizes[n] as usize, n as u8).to_vec(), "kept item {n}");
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prost_items_around_every_size_limit_come_back_intact_sent_one_by_one_or_in_runs() {
    timed(async {
        for t in ["mem", "tcp"] {
            for in_runs in [false, true] {
                let client = client(t).await;
                let sizes = sizes();
                let (mut out, back) = client.echo_prost().await.unwrap();
                let reader = tokio::spawn(read_prost_items(back, sizes.clone()));
                let item = |j: usize| pattern(sizes[j] as usize, j as u8).to_vec();
                // In runs of 1 to 700 items: within one packed run, and across several (256
                // items), the small ones packed and the others whole.
                let (mut i, mut run) = (0, 1);
                while i < sizes.len() {
                    let end = if in_runs { (i + run).min(sizes.len()) } else { i + 1 };
                    match in_runs {
                        true => out.send_all((i..end).map(item)).await.unwrap(),
                        false => out.send(item(i)).await.unwrap(),
                    }
                    i = end;
                    run = run * 3 % 701;
                }
                out.finish();
                assert_eq!(reader.await.unwrap(), sizes.len(), "{t}, in runs: {in_runs}");
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_does_not_encode_ends_send_all_after_the_items_before_it_and_the_sink_goes_on_until_finished() {
    timed(async {
        for t in ["mem", "tcp"] {
            let client = client(t).await;
            let (mut out, answer) = client.numbers().await.unwrap();
            // The 300th item fails: past the first run of 256, in the second.
            let items = (0..400).map(|n| Picky { n, fails: n == 299 });
            let e = out.send_all(items).await.unwrap_err().to_string();
            // (postcard keeps no text of a custom serde error.)
            assert!(e.contains("cannot encode a stream item"), "{t}: {e}");
            // The sink still works, and the receiver saw nothing of the failed run past it.
            out.send_all((1000..1003).map(|n| Picky { n, fails: false })).await.unwrap();
            out.finish();
            // Once finished, nothing more: not even a run of no items.
            let e = out.send_all(std::iter::empty()).await.unwrap_err().to_string();
            assert!(e.contains("send after the stream was finished"), "{t}: {e}");
            let got = answer.await.unwrap();
            let want: Vec<u32> = (0..299).chain(1000..1003).collect();
            assert_eq!(got, want, "{t}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_all_dropped_mid_run_sends_a_prefix_and_the_sink_goes_on() {
    timed(async {
        for t in ["mem", "tcp"] {
            let client = client(t).await;
            let (mut out, mut back) = client.echo_prost().await.unwrap();
            // Small items packed and larger ones owned, each numbered in its first bytes.
            let item = |i: u32| {
                let mut v = pattern(if i % 5 == 0 { 700 } else { 40 }, i as u8).to_vec();
                v[..4].copy_from_slice(&i.to_le_bytes());
                v
            };
            // Nobody reads: the echo stops, then this run, mid-way, and is dropped there.
            let r = tokio::time::timeout(std::time::Duration::from_millis(300), out.send_all((0..2_000_000u32).map(item))).await;
            assert!(r.is_err(), "{t}: send_all did not wait for credit");
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(m) = back.recv().await {
                    got.push(u32::from_le_bytes(m.unwrap()[..4].try_into().unwrap()));
                }
                got
            });
            out.send_all((10_000_000..10_001_000u32).map(item)).await.unwrap();
            out.finish();
            let got = reader.await.unwrap();
            let split = got.iter().position(|n| *n >= 10_000_000).expect("the second run came");
            assert!(split > 0, "{t}: nothing of the first run came");
            assert_eq!(got[..split], (0..split as u32).collect::<Vec<_>>()[..], "{t}: the first run's items are not a prefix");
            assert_eq!(got[split..], (10_000_000..10_001_000u32).collect::<Vec<_>>()[..], "{t}: the second run");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_items_that_do_not_decode_are_errors_and_the_next_items_and_credit_go_on() {
    timed(async {
        for t in ["mem", "tcp"] {
            let client = client(t).await;
            let (mut items, answer) = client.flaky().await.unwrap();
            // Many windows' worth, in batches, then a few one at a time.
            let count = 300_000u32;
            items.send_all((0..count).map(|n| Flaky { n })).await.unwrap();
            for n in count..count + 10 {
                items.send(Flaky { n }).await.unwrap();
            }
            items.finish();
            let got = answer.await.unwrap();
            let want: Vec<i64> = (0..count + 10).map(|n| if n % 7 == 3 { -1 } else { i64::from(n) }).collect();
            assert_eq!(got.len(), want.len(), "{t}");
            assert!(got == want, "{t}: first difference at {:?}", got.iter().zip(&want).position(|(a, b)| a != b));
        }
    })
    .await
}
