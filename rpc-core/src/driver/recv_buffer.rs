//! The receive buffer: where frames land, and what their attachments are slices of.
//!
//! Small frames share 64 KiB blocks. A large frame gets a buffer of its exact size, so its
//! payload is received straight into one allocation. Those large buffers are kept once the
//! reader moves on and reused when every slice handed out of them has been dropped: a fresh
//! multi-megabyte allocation per frame would be page-faulted in again on every call.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::frame::HEADER_LEN;
use crate::stats::TransportStats;

/// Receive buffers are allocated in blocks of this size; received frames are slices of them.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Below this much spare room a fresh block is allocated before reading.
const MIN_SPARE: usize = 4 * 1024;
/// Large buffers kept for reuse, per connection.
const KEEP_BUFFERS: usize = 8;

#[derive(Debug)]
pub(crate) struct RecvBuffer {
    /// The buffer being read into.
    pub(crate) buf: BytesMut,
    /// One empty handle at the start of each large allocation made here (with its size). When
    /// every other handle — the reader's, every slice handed out — is gone, the anchor can
    /// reclaim the whole allocation.
    anchors: VecDeque<(BytesMut, usize)>,
    anchored_bytes: usize,
    /// Most bytes of large buffers kept ([`crate::conn::ConnConfig::recv_cache_bytes`]).
    keep_bytes: usize,
    /// The last frame was large: read the next header alone, so that the next large payload
    /// is not read into a small block first and then moved.
    header_first: bool,
}

impl RecvBuffer {
    pub(crate) fn new(keep_bytes: usize) -> Self {
        RecvBuffer {
            buf: BytesMut::with_capacity(READ_CHUNK),
            anchors: VecDeque::new(),
            anchored_bytes: 0,
            keep_bytes,
            header_first: false,
        }
    }

    /// Makes room for the next read, given the bytes the frame being received needs in all
    /// (from the front of the buffer). Only bytes already received of a frame are ever moved,
    /// at most once per frame, and counted in `recv_copied_bytes`.
    pub(crate) fn prepare(&mut self, needed: usize, stats: &TransportStats) {
        let spare = self.buf.capacity() - self.buf.len();
        let missing = needed.saturating_sub(self.buf.len());
        if self.buf.is_empty() && needed <= HEADER_LEN && self.header_first {
            // One small read for the header; the body then goes straight where it belongs.
            if spare != needed {
                self.buf = BytesMut::with_capacity(needed);
            }
            return;
        }
        self.header_first = needed > READ_CHUNK;
        let size = if missing > spare {
            needed.max(READ_CHUNK)
        } else if spare < MIN_SPARE && needed <= READ_CHUNK {
            READ_CHUNK
        } else {
            // The frame being received fits in the room there is.
            return;
        };
        let mut next = if size > READ_CHUNK { self.large(size) } else { BytesMut::with_capacity(size) };
        if !self.buf.is_empty() {
            TransportStats::add(&stats.recv_copied_bytes, self.buf.len() as u64);
            next.extend_from_slice(&self.buf);
        }
        self.buf = next;
    }

    /// A large buffer: a free one of ours if there is one, else a new one, anchored.
    fn large(&mut self, size: usize) -> BytesMut {
        for (anchor, _) in self.anchors.iter_mut() {
            if anchor.try_reclaim(size) {
                // Unique again: hand out the allocation, keep a new anchor at its start.
                let mut b = std::mem::take(anchor);
                *anchor = b.split_to(0);
                return b;
            }
        }
        let mut b = BytesMut::with_capacity(size);
        if size <= self.keep_bytes {
            self.anchors.push_back((b.split_to(0), size));
            self.anchored_bytes += size;
            while self.anchors.len() > KEEP_BUFFERS || self.anchored_bytes > self.keep_bytes {
                let Some((_, n)) = self.anchors.pop_front() else { break };
                self.anchored_bytes -= n;
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_is_reused_once_its_slices_are_dropped() {
        let stats = TransportStats::new("test");
        let mut r = RecvBuffer::new(160 << 20);
        r.prepare(1 << 20, &stats);
        let first = r.buf.as_ptr();
        r.buf.resize(1 << 20, 7);
        let frame = r.buf.split().freeze();
        // A second large frame while the first is still held: a new buffer.
        r.prepare(1 << 20, &stats);
        assert_ne!(r.buf.as_ptr(), first);
        r.buf.resize(1 << 20, 8);
        let second = r.buf.split().freeze();
        drop(frame);
        // The first buffer is free again: reused, not allocated.
        r.prepare(1 << 20, &stats);
        assert_eq!(r.buf.as_ptr(), first);
        assert_eq!(stats.snapshot().recv_copied_bytes, 0);
        drop(second);
    }

    #[test]
    fn partial_frame_bytes_move_once_and_are_counted() {
        let stats = TransportStats::new("test");
        let mut r = RecvBuffer::new(160 << 20);
        r.buf.extend_from_slice(&[1u8; 1000]);
        r.prepare(1 << 20, &stats);
        assert_eq!(&r.buf[..], &[1u8; 1000][..]);
        assert!(r.buf.capacity() >= 1 << 20);
        assert_eq!(stats.snapshot().recv_copied_bytes, 1000);
        // Room for the rest: nothing moves again.
        let p = r.buf.as_ptr();
        r.prepare(1 << 20, &stats);
        assert_eq!(r.buf.as_ptr(), p);
    }

    #[test]
    fn after_a_large_frame_the_next_header_is_read_alone() {
        let stats = TransportStats::new("test");
        let mut r = RecvBuffer::new(160 << 20);
        r.prepare(1 << 20, &stats);
        r.buf.resize(1 << 20, 1);
        drop(r.buf.split());
        r.prepare(HEADER_LEN, &stats);
        assert_eq!(r.buf.capacity(), HEADER_LEN, "a read must not run past the header");
        r.buf.resize(HEADER_LEN, 2);
        // The header says another large frame: its buffer gets the header, nothing more moved.
        r.prepare(2 << 20, &stats);
        assert!(r.buf.capacity() >= 2 << 20);
        assert_eq!(stats.snapshot().recv_copied_bytes, HEADER_LEN as u64);
        // A small frame turns it off again.
        r.buf.clear();
        r.prepare(100, &stats);
        r.buf.clear();
        r.prepare(HEADER_LEN, &stats);
        assert!(r.buf.capacity() > HEADER_LEN);
    }

    #[test]
    fn nothing_is_kept_when_the_cache_is_off() {
        let stats = TransportStats::new("test");
        let mut r = RecvBuffer::new(0);
        r.prepare(1 << 20, &stats);
        assert!(r.anchors.is_empty());
    }
}
