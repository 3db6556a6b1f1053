//! Messages in and out of bytes: postcard, written into a buffer the transport reuses.

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A serialization buffer kept by one transport: each message is written at its end and split
/// off as `Bytes`; once the messages sent from it are dropped (written out), `reserve` takes
/// the same allocation back instead of a new one.
#[derive(Debug, Default)]
pub(crate) struct EncodeBuf {
    buf: BytesMut,
}

/// The smallest allocation the buffer makes, so that small messages share one.
const CHUNK: usize = 64 << 10;

impl EncodeBuf {
    /// `value` in postcard, as bytes split off this buffer.
    pub(crate) fn encode<T: Serialize>(&mut self, value: &T) -> Result<Bytes, postcard::Error> {
        // The exact size first (a walk that copies nothing): a large message is then written
        // once into room made for it, not copied again each time the buffer would have doubled.
        let size = postcard::experimental::serialized_size(value)?;
        if self.buf.capacity() - self.buf.len() < size {
            self.buf.reserve(size.max(CHUNK));
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
}

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

    fn counting_bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }
}
