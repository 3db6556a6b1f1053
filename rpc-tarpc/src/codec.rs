//! Messages in and out of bytes: postcard, written into buffers the transport reuses.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A serialization buffer kept by one transport: each message is written at its end and split
/// off as `Bytes`. The allocations it makes are kept (by an empty handle at their start) and
/// taken again once every message written into them has been dropped (written out): with
/// several large messages in flight, a fresh multi-megabyte allocation per message would be
/// page-faulted in again every time.
#[derive(Debug, Default)]
pub(crate) struct EncodeBuf {
    buf: BytesMut,
    /// One empty handle at the start of each allocation kept, with its size.
    anchors: VecDeque<(BytesMut, usize)>,
    anchored_bytes: usize,
}

/// The smallest allocation the buffer makes, so that small messages share one.
const CHUNK: usize = 64 << 10;

/// From this size on a message counts as large: once one is handed to tarpc, the transport
/// lets the task that takes it run before it decodes the next one (see `ServerTransport` and
/// `ClientTransport`'s `poll_next`).
pub(crate) const LARGE: usize = CHUNK;

/// Allocations kept for reuse, per transport: the messages in flight at once (tarpc's window
/// of large messages) and a few blocks of small ones.
const KEEP_BUFFERS: usize = 12;
/// Most bytes kept for reuse, per transport (as zcrpc's receive side keeps by default): one
/// message of the default frame limit and then some.
const KEEP_BYTES: usize = 160 << 20;

/// In a transport's `poll_next`, after a large message was handed to tarpc (`yield_next`
/// set): yields once, so that the task that takes the message runs, and drops it, before the
/// next is decoded. Messages that arrived together are then not all decoded at once: their
/// memory stays bounded, and the allocator hands the same warm pages back instead of returning
/// them to the kernel and faulting in fresh ones. True: return `Poll::Pending`.
pub(crate) fn yield_after_large(yield_next: &mut bool, cx: &mut std::task::Context<'_>) -> bool {
    if !std::mem::take(yield_next) {
        return false;
    }
    // tokio's yield: woken once the runtime has run the others and polled its IO (on a
    // current-thread runtime, the `block_on` future too).
    let _ = std::future::Future::poll(std::pin::pin!(tokio::task::yield_now()), cx);
    true
}

impl EncodeBuf {
    /// `value` in postcard, as bytes split off this buffer.
    pub(crate) fn encode<T: Serialize>(&mut self, value: &T) -> Result<Bytes, postcard::Error> {
        // Most messages are small: one pass, straight into the room the buffer has, given up as
        // soon as it would not fit in that room or in `ONE_PASS` bytes (a large field is
        // refused before it is copied).
        let start = self.buf.len();
        let room = (self.buf.capacity() - start).min(ONE_PASS);
        if room > 0 {
            match rpc_core::codec::postcard_into(value, &mut self.buf, room) {
                Ok(true) => return Ok(self.buf.split().freeze()),
                Ok(false) => self.buf.truncate(start),
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            }
        }
        // The exact size first (a walk that copies nothing): a large message is then written
        // once into room made for it, not copied again each time the buffer would have doubled.
        let size = postcard::experimental::serialized_size(value)?;
        if self.buf.capacity() - self.buf.len() < size {
            // Let go of the current allocation first: if no message holds it any more, it is
            // the first to be taken again.
            self.buf = BytesMut::new();
            self.buf = self.allocation(size.max(CHUNK));
        }
        let flavor = BytesFlavor(std::mem::take(&mut self.buf));
        match postcard::serialize_with_flavor::<T, BytesFlavor, BytesMut>(value, flavor) {
            Ok(mut written) => {
                let message = written.split().freeze();
                self.buf = written;
                Ok(message)
            }
            Err(e) => Err(e),
        }
    }

    /// An empty buffer of at least `size` bytes: a kept allocation no message holds any more,
    /// else a new one, kept while the limits allow.
    fn allocation(&mut self, size: usize) -> BytesMut {
        for (anchor, _) in self.anchors.iter_mut() {
            if anchor.try_reclaim(size) {
                let mut b = std::mem::take(anchor);
                *anchor = b.split_to(0);
                return b;
            }
        }
        let mut b = BytesMut::with_capacity(size);
        if size <= KEEP_BYTES {
            self.anchors.push_back((b.split_to(0), size));
            self.anchored_bytes += size;
            while self.anchors.len() > KEEP_BUFFERS || self.anchored_bytes > KEEP_BYTES {
                let Some((_, n)) = self.anchors.pop_front() else { break };
                self.anchored_bytes -= n;
            }
        }
        b
    }
}

/// The most bytes [`EncodeBuf::encode`] writes in its one pass before it gives up and measures
/// the message first.
const ONE_PASS: usize = 4 << 10;

/// postcard's output into a `BytesMut`: slices are copied in one `extend_from_slice` (postcard's
/// own `Vec` flavor does the same; its `Extend` flavor would push byte by byte).
struct BytesFlavor(BytesMut);

impl postcard::ser_flavors::Flavor for BytesFlavor {
    type Output = BytesMut;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.extend_from_slice(&[data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<BytesMut> {
        Ok(self.0)
    }
}

/// A message out of postcard bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value postcard refuses after writing part of it.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeTuple};
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&1u8)?;
            Err(S::Error::custom("no"))
        }
    }

    #[test]
    fn an_encoding_failure_reads_as_postcards_error_alone() {
        // Callers say "cannot encode the request: {e}": `e` is postcard's error, not prefixed
        // with a second "encode: " (as it was before postcard_into moved to rpc-core).
        let mut buf = EncodeBuf::default();
        let e = buf.encode(&Unencodable).unwrap_err();
        let plain = postcard::to_stdvec(&Unencodable).unwrap_err();
        assert_eq!(e.to_string(), plain.to_string());
        let mut empty = EncodeBuf { buf: BytesMut::new(), ..EncodeBuf::default() };
        assert_eq!(empty.encode(&Unencodable).unwrap_err().to_string(), plain.to_string());
    }

    #[test]
    fn the_buffer_is_reused_once_its_messages_are_dropped() {
        let mut buf = EncodeBuf::default();
        let first = buf.encode(&(1u32, "hello".to_owned())).unwrap();
        let at = first.as_ptr();
        assert_eq!(decode::<(u32, String)>(&first).unwrap(), (1, "hello".to_owned()));
        drop(first);
        // Enough messages to use the chunk up: the allocation comes back for the next ones.
        let mut seen_again = false;
        for i in 0..10_000u32 {
            let m = buf.encode(&(i, "hello".to_owned())).unwrap();
            seen_again |= m.as_ptr() == at;
        }
        assert!(seen_again, "the first allocation was never reused");
    }

    #[test]
    fn a_large_message_is_written_once_into_room_made_for_it() {
        let mut buf = EncodeBuf::default();
        let _small = buf.encode(&7u32).unwrap();
        let big = counting_bytes(3 << 20);
        let message = buf.encode(&big).unwrap();
        assert_eq!(decode::<Vec<u8>>(&message).unwrap(), big);
        // Room for exactly what was asked: no doubling past it.
        assert!(buf.buf.capacity() < 64 << 10, "{} bytes kept after the message", buf.buf.capacity());
    }

    #[test]
    fn large_messages_in_flight_get_allocations_of_their_own_which_come_back_once_dropped() {
        let mut buf = EncodeBuf::default();
        let big = counting_bytes(1 << 20);
        // Eight in flight at once: eight allocations, none written over while held.
        let first: Vec<Bytes> = (0..8).map(|_| buf.encode(&big).unwrap()).collect();
        let at: Vec<*const u8> = first.iter().map(|m| m.as_ptr()).collect();
        for m in &first {
            assert_eq!(decode::<Vec<u8>>(m).unwrap(), big, "a message in flight was written over");
        }
        // One more while they are held: a new allocation.
        let ninth = buf.encode(&big).unwrap();
        assert!(!at.contains(&ninth.as_ptr()));
        drop(first);
        // Written out: the next eight take the same memory again.
        let next: Vec<Bytes> = (0..8).map(|_| buf.encode(&big).unwrap()).collect();
        for m in &next {
            assert!(at.contains(&m.as_ptr()), "a new allocation although a kept one was free");
        }
        assert_eq!(decode::<Vec<u8>>(&ninth).unwrap(), big);
    }

    #[test]
    fn a_message_larger_than_the_room_left_is_written_whole_elsewhere() {
        let mut buf = EncodeBuf::default();
        // Small messages until less than one pass of room is left in the chunk.
        let mut small = Vec::new();
        while buf.buf.capacity() - buf.buf.len() > 100 || buf.buf.capacity() == 0 {
            small.push(buf.encode(&(7u32, [1u8; 32])).unwrap());
        }
        // One that does not fit in the room left, nor in a pass: whole, and nothing before it
        // written over.
        let big = counting_bytes(10_000);
        let message = buf.encode(&big).unwrap();
        assert_eq!(decode::<Vec<u8>>(&message).unwrap(), big);
        for m in &small {
            assert_eq!(decode::<(u32, [u8; 32])>(m).unwrap(), (7, [1u8; 32]));
        }
        let next = buf.encode(&"after".to_owned()).unwrap();
        assert_eq!(decode::<String>(&next).unwrap(), "after");
    }

    fn counting_bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }
}
