//! The direct path: a lone call's small request or response written by the task that queued
//! it (the caller, or the server's reader that ran the handler), instead of waking the
//! connection's writer task to write it. One call at a time, that saves a task hop and a pass of
//! the writer loop on each side of a round trip. With more calls in flight (or input that found
//! more, or brought several messages: [`Locked::lone_call`]) the writer gathers frames into one
//! write and this path stays out of the way: measured on `qps_64b`, writing the first of a burst
//! of requests directly and the rest by the writer cost 15-25% more CPU per call. A stream's
//! messages take it at most once per message received (a request and its answer, one at a time);
//! a sender that queues them faster than that leaves them to the writer.
//!
//! The early flush is the same write for a burst: when a task has queued [`EARLY_FRAMES`]
//! small call frames (requests, answers: not stream messages, whose senders batch for the
//! writer) while the writer is parked, it writes them at once. A client whose read brought
//! the answers of 128 calls in flight queues their 128 successors in one pass, and a server
//! given 128 requests in one read answers them in one pass; gathered into one write at the
//! end of it, each side idled while the other worked, and the two CPUs took turns. Written 32 at
//! a time, the peer starts on the first while the rest are queued (measured on `qps_64b`,
//! client and server on two CPUs: 1.6-1.8x the calls per second at the same CPU per call).
//!
//! Order on the stream holds because the path only runs under the connection's lock, while the
//! writer is parked with nothing of its own to write, and the writer takes whatever this path
//! could not finish ([`Locked::handover`]) before anything else.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;

use super::{Locked, Shared, SideHandler};
use crate::stats::TransportStats;
use crate::transport::DirectWrite;
use crate::Transmit;

/// A lone call's frames up to this many bytes in all may go by the direct path, and a burst's
/// frames each under it by the early flush; larger ones are the writer's (a transport may send
/// those zero-copy).
const DIRECT_MAX: usize = 16 << 10;

/// Pieces (heads and segments) one direct write takes at most; the rest go by the writer.
const DIRECT_PIECES: usize = 64;

/// A burst's frames written early, as soon as this many are queued.
pub(crate) const EARLY_FRAMES: usize = 32;

impl<H: SideHandler> Shared<H> {
    /// Writes what the machine queued, now, from this task, if it is a lone call's few small
    /// frames and the writer is idle. True when it wrote them all; false when the writer has
    /// work (what this path did not take, or did not finish).
    pub(super) fn write_direct(&self, g: &mut Locked<H>) -> bool {
        if !g.writer_parked || !g.lone_call || !g.handover.is_empty() || !g.conn.is_open() {
            return false;
        }
        let Some(direct) = g.direct.take() else { return false };
        let fits = g.conn.wants_direct_write(DIRECT_MAX.min(direct.limit().saturating_sub(1)));
        // Once per message received (see `lone_call`).
        g.lone_call &= !fits;
        self.write_queued(g, direct, fits)
    }

    /// The early flush: a burst's first [`EARLY_FRAMES`] small frames written at once by the
    /// task that queued them, while the writer is parked, so that the peer works on them while
    /// this side queues the rest; the writer gathers whatever follows. True when it wrote them
    /// all.
    ///
    /// Tried after [`Shared::write_direct`] and whatever `lone_call` says: a lone call's
    /// direct path that took the queue leaves nothing here (or a handover), and one that did
    /// not take it (a burst started with another call in flight: a stream whose last message
    /// came alone) keeps `lone_call` set, which must not keep the burst from leaving early.
    pub(super) fn write_early(&self, g: &mut Locked<H>) -> bool {
        if !g.writer_parked || !g.handover.is_empty() || !g.conn.is_open() {
            return false;
        }
        let Some(direct) = g.direct.take() else { return false };
        let fits = g.conn.wants_early_write(EARLY_FRAMES, DIRECT_MAX.min(direct.limit()));
        self.write_queued(g, direct, fits)
    }

    /// Writes every queued transmit now with one non-blocking write when `go` (the caller
    /// checked they qualify), handing what the socket did not take to the writer; puts the
    /// transport's direct write back either way.
    fn write_queued(&self, g: &mut Locked<H>, direct: Arc<dyn DirectWrite>, go: bool) -> bool {
        if !go {
            g.direct = Some(direct);
            return false;
        }
        let mut batch = std::mem::take(&mut g.direct_batch);
        g.conn.take_transmits(&mut batch);
        let total: usize = batch.iter().map(Transmit::len).sum();
        let written = {
            let mut slices = [IoSlice::new(&[]); DIRECT_PIECES];
            let mut used = 0;
            let pieces = batch
                .iter()
                .flat_map(|t| std::iter::once(&t.head[..]).chain(t.segments.iter().map(|s| s.memory().unwrap_or_default())))
                .filter(|p| !p.is_empty());
            // More pieces than one write takes: the first ones go, the writer the rest.
            for (slot, piece) in slices.iter_mut().zip(pieces) {
                *slot = IoSlice::new(piece);
                used += 1;
            }
            // Any failure (the socket full, or an error the writer will meet and report in its
            // own send) hands the frames to the writer.
            match direct.try_write(&slices[..used]) {
                Ok(n) => n.min(total),
                Err(_) => 0,
            }
        };
        g.direct = Some(direct);
        let stats = &self.stats;
        let whole = hand_over_rest(&mut batch, written, &mut g.handover);
        if written > 0 {
            TransportStats::add(&stats.sent_bytes, written as u64);
            TransportStats::add(&stats.bytes_copy, written as u64);
            TransportStats::add(&stats.sends_copy, whole as u64);
            TransportStats::add(&stats.sends_direct, whole as u64);
            if written == total {
                super::report_written(&mut g.conn, written);
            } else {
                // A ping in the batch may be in the rest: its timeout starts once the writer
                // has written that (a slow reader must not look dead for our own backlog).
                g.conn.handle_written_part(written);
            }
            g.wake_writer_waiters();
        }
        batch.clear();
        g.direct_batch = batch;
        written == total
    }
}

/// Moves what of `batch` the first `written` bytes did not cover into `handover` (a frame cut
/// part-way as a copy of its rest), and says how many frames were written whole.
fn hand_over_rest(batch: &mut Vec<Transmit>, written: usize, handover: &mut Vec<Transmit>) -> usize {
    let mut left = written;
    let mut whole = 0;
    for t in batch.drain(..) {
        let len = t.len();
        if left >= len {
            left -= len;
            whole += 1;
        } else if left > 0 {
            let rest = Bytes::from(t.to_vec().split_off(left));
            left = 0;
            handover.push(Transmit { head: rest, segments: Vec::new() });
        } else {
            handover.push(t);
        }
    }
    whole
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    fn frame(head: &[u8], seg: &[u8]) -> Transmit {
        Transmit { head: Bytes::copy_from_slice(head), segments: vec![Segment::Bytes(Bytes::copy_from_slice(seg))] }
    }

    fn bytes(ts: &[Transmit]) -> Vec<u8> {
        ts.iter().flat_map(Transmit::to_vec).collect()
    }

    #[test]
    fn the_rest_of_a_cut_batch_goes_to_the_writer_in_order() {
        let all = vec![frame(b"aa", b"bbb"), frame(b"cc", b"ddd"), frame(b"ee", b"f")];
        let wire = bytes(&all);
        for written in 0..=wire.len() {
            let mut batch = all.clone();
            let mut handover = Vec::new();
            let whole = hand_over_rest(&mut batch, written, &mut handover);
            assert!(batch.is_empty());
            assert_eq!(bytes(&handover), wire[written..], "written {written}");
            let expect_whole = match written {
                0..=4 => 0,
                5..=9 => 1,
                10..=12 => 2,
                _ => 3,
            };
            assert_eq!(whole, expect_whole, "written {written}");
        }
    }
}
