//! [`EncodeBuffer`]: where a stream's small messages are encoded, back to back, so that they
//! share allocations instead of costing one each.

use bytes::{Bytes, BytesMut};

/// The room a buffer takes at a time: one allocation for about a thousand 64-byte messages.
const CHUNK: usize = 64 << 10;

/// Messages up to this size are encoded into the buffer; a larger one gets an allocation of
/// its own (see [`Encode::encode_body_in`](super::Encode::encode_body_in)), so that it neither
/// waits for a chunk's other messages to be freed nor keeps them alive.
pub const SHARED_MAX: usize = 4 << 10;

/// A buffer that messages are encoded into one after another, each split off as `Bytes` that
/// share the buffer's allocation. A typed stream's [`Sink`](crate::Sink) keeps one: a stream of
/// small messages then makes one allocation per 64 KiB of them, not one (and one free) per
/// message. An allocation is taken again once every message in it has been dropped (the
/// connection copies a small message into its run of frames as it is sent); until then a
/// message kept by the application keeps its chunk alive.
#[derive(Debug, Default)]
pub struct EncodeBuffer {
    buf: BytesMut,
    /// The size of the last allocation made: 0 before the first, then [`FIRST`], doubling up
    /// to [`CHUNK`] each time the last allocation was still held by messages when it ran out,
    /// so that a stream whose messages leave as they come (a Sink kept open, mostly idle)
    /// holds a small allocation, not a whole chunk, for its life.
    size: usize,
}

/// A buffer's first allocation: room for a few messages, at least one of [`SHARED_MAX`].
const FIRST: usize = 8 << 10;

impl EncodeBuffer {
    /// An empty buffer; it allocates on first use.
    pub fn new() -> Self {
        EncodeBuffer::default()
    }

    /// The buffer, with room for at least `len` more bytes (meant for at most [`SHARED_MAX`]:
    /// a larger message is better given an allocation of its own) at its end, for a codec to
    /// write one message into; [`EncodeBuffer::split`] then takes it. A codec that learns a
    /// message's size only by writing it asks for `SHARED_MAX` and writes at most that.
    pub fn room(&mut self, len: usize) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < len {
            // Whatever was written and not split off is dropped. The allocation is taken back
            // whole when no message holds it any more (a stream whose messages leave as fast
            // as they come keeps its size, however long it runs); else a new one is made,
            // twice the last up to a whole chunk (a stream whose messages wait to be sent).
            self.buf.clear();
            if !self.buf.try_reclaim(self.size.max(len)) {
                self.size = if self.size == 0 { FIRST } else { (2 * self.size).min(CHUNK) };
                self.buf = BytesMut::with_capacity(self.size.max(len));
            }
        }
        &mut self.buf
    }

    /// What was written since the last split, as one message.
    pub fn split(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Forgets what was written since the last split (a message that did not fit).
    pub fn discard(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn messages_share_one_allocation_and_a_held_one_is_never_written_over() {
        let mut buf = EncodeBuffer::new();
        buf.room(3).put_slice(b"one");
        let first = buf.split();
        buf.room(3).put_slice(b"two");
        let second = buf.split();
        assert_eq!(second.as_ptr(), first.as_ptr().wrapping_add(3), "back to back in one allocation");
        // Past the chunk's end while both are held: a new allocation, theirs untouched.
        let later: Vec<Bytes> = (0..2 * CHUNK / SHARED_MAX)
            .map(|i| {
                buf.room(SHARED_MAX).put_bytes(i as u8, SHARED_MAX);
                buf.split()
            })
            .collect();
        let last = later.last().expect("messages were written");
        let in_first_chunk = (first.as_ptr() as usize..first.as_ptr() as usize + CHUNK).contains(&(last.as_ptr() as usize));
        assert!(!in_first_chunk, "the held chunk was written into again");
        assert_eq!((&first[..], &second[..]), (&b"one"[..], &b"two"[..]));
    }

    #[test]
    fn a_chunk_whose_messages_were_all_dropped_is_taken_again() {
        let mut buf = EncodeBuffer::new();
        // Past the first, smaller allocations (held while the next is made): whole chunks.
        let mut held = Vec::new();
        while buf.size < CHUNK {
            buf.room(SHARED_MAX).put_bytes(7, SHARED_MAX);
            held.push(buf.split());
        }
        drop(held);
        buf.room(1).put_u8(1);
        let start = buf.split().as_ptr();
        // Each message dropped at once: once the chunk is used up, the next starts it over.
        let mut again = false;
        for _ in 0..2 * CHUNK / SHARED_MAX {
            buf.room(SHARED_MAX).put_bytes(7, SHARED_MAX);
            again |= buf.split().as_ptr() == start;
        }
        assert!(again, "a free chunk was not taken again");
    }

    #[test]
    fn a_stream_that_sent_a_few_small_messages_holds_a_small_allocation() {
        // A Sink keeps its buffer for the stream's life: an idle stream that sent one small
        // item must not hold a whole 64 KiB chunk (10,000 such streams: 640 MiB).
        let mut buf = EncodeBuffer::new();
        for _ in 0..3 {
            buf.room(64).put_bytes(1, 64);
            drop(buf.split());
        }
        assert!(buf.buf.capacity() <= 8 << 10, "an idle buffer holds {} bytes of room", buf.buf.capacity());
        // However long it runs, while each message is gone before the next (sent as it comes).
        for _ in 0..20_000 {
            buf.room(100).put_bytes(2, 100);
            drop(buf.split());
        }
        assert_eq!(buf.size, FIRST, "a stream whose messages never wait grew its allocation");
        assert!(buf.buf.capacity() <= 8 << 10);
    }

    #[test]
    fn a_stream_whose_messages_wait_grows_to_whole_chunks() {
        let mut buf = EncodeBuffer::new();
        let held: Vec<Bytes> = (0..40)
            .map(|_| {
                buf.room(SHARED_MAX).put_bytes(3, SHARED_MAX);
                buf.split()
            })
            .collect();
        assert_eq!(buf.size, CHUNK);
        assert!(held.iter().all(|m| m[..] == [3u8; SHARED_MAX][..]));
    }

    #[test]
    fn room_for_more_than_shared_max_is_given_without_a_panic() {
        let mut buf = EncodeBuffer::new();
        buf.room(SHARED_MAX + 1).put_bytes(9, SHARED_MAX + 1);
        assert_eq!(buf.split().len(), SHARED_MAX + 1);
    }

    #[test]
    fn a_discarded_message_leaves_nothing_behind() {
        let mut buf = EncodeBuffer::new();
        buf.room(5).put_slice(b"half-");
        buf.discard();
        buf.room(4).put_slice(b"next");
        assert_eq!(&buf.split()[..], b"next");
    }
}
