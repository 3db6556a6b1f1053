//! `Metadata`: the headers of a call — ordered key/value pairs beside the typed arguments, for
//! what is about the call rather than in it (a trace id, an authorization token, a tenant).
//!
//! Keys are ASCII (printable, no spaces), matched without regard to case and stored in lower
//! case; values are any bytes. On the wire (`docs/wire.md`) a block is `u16` count, then per
//! entry `u16` key length, key, `u32` value length, value; each side declares in its hello the
//! largest block it accepts, and a sender checks it before sending.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Why metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// A key with a byte that is not printable ASCII, or empty, or too long.
    #[error("metadata key {key:?} is invalid: {why}")]
    BadKey {
        /// The key (lossily decoded).
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A block that does not parse.
    #[error("malformed metadata block: {0}")]
    Malformed(String),
    /// Response metadata that would be larger than the client accepts (its hello's
    /// `max_metadata_kib`; 0: it takes none).
    #[error("{what} of {len} bytes would be over the client's limit of {limit} bytes")]
    TooLarge {
        /// `"response headers"` or `"trailers"`.
        what: &'static str,
        /// The encoded block's size with the entry added.
        len: usize,
        /// The client's limit.
        limit: usize,
    },
    /// A response header set after the headers went out (with the call's first message).
    #[error("the response headers were already sent (with the call's first message); set them before sending")]
    HeadersSent,
}

/// The headers of a call. Cheap to clone (values are `Bytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Bytes)>,
}

impl Metadata {
    /// No entries.
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Adds `key: value` (a key may appear more than once; [`Metadata::get`] gives the first).
    /// Errors for a key that is empty, longer than 255 bytes, or not printable ASCII.
    pub fn insert(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), MetadataError> {
        check_key(key.as_bytes())?;
        self.entries.push((key.to_ascii_lowercase(), value.into()));
        Ok(())
    }

    /// `self` with `key: value` added; panics on an invalid key (for literal keys in code).
    pub fn with(mut self, key: &str, value: impl Into<Bytes>) -> Self {
        if let Err(e) = self.insert(key, value) {
            panic!("{e}");
        }
        self
    }

    /// The first value of `key` (any case).
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    /// The first value of `key` as text, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.entries.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the last entry off (undoes an [`Metadata::insert`]).
    pub(crate) fn pop(&mut self) {
        self.entries.pop();
    }

    /// Size of the encoded block, in bytes (what the peer's limit is checked against).
    pub fn encoded_len(&self) -> usize {
        2 + self.entries.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum::<usize>()
    }

    /// The wire block; empty bytes for no entries (no block is sent then).
    pub fn encode(&self) -> Bytes {
        if self.entries.is_empty() {
            return Bytes::new();
        }
        let mut b = BytesMut::with_capacity(self.encoded_len());
        b.put_u16_le(self.entries.len() as u16);
        for (k, v) in &self.entries {
            b.put_u16_le(k.len() as u16);
            b.put_slice(k.as_bytes());
            b.put_u32_le(v.len() as u32);
            b.put_slice(v);
        }
        b.freeze()
    }

    /// Parses a block; values are slices of it. Empty bytes are no metadata.
    pub fn decode(mut block: Bytes) -> Result<Self, MetadataError> {
        if block.is_empty() {
            return Ok(Metadata::default());
        }
        let short = |what: &str| MetadataError::Malformed(format!("block ends inside {what}"));
        if block.len() < 2 {
            return Err(short("the entry count"));
        }
        let count = block.get_u16_le() as usize;
        // Each entry takes at least 6 bytes: a count past that is a lie, caught before allocating.
        if count > block.len() / 6 {
            return Err(MetadataError::Malformed(format!("{count} entries cannot fit in {} bytes", block.len())));
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            if block.len() < 2 {
                return Err(short("a key length"));
            }
            let klen = block.get_u16_le() as usize;
            if block.len() < klen + 4 {
                return Err(short("a key"));
            }
            let key = block.split_to(klen);
            check_key(&key)?;
            let vlen = block.get_u32_le() as usize;
            if block.len() < vlen {
                return Err(short("a value"));
            }
            let value = block.split_to(vlen);
            let mut key = String::from_utf8(key.to_vec()).expect("checked ASCII");
            key.make_ascii_lowercase();
            entries.push((key, value));
        }
        if !block.is_empty() {
            return Err(MetadataError::Malformed(format!("{} bytes after the last entry", block.len())));
        }
        Ok(Metadata { entries })
    }
}

impl FromIterator<(String, Bytes)> for Metadata {
    /// Collects entries; invalid keys are checked when the metadata is sent.
    fn from_iter<I: IntoIterator<Item = (String, Bytes)>>(iter: I) -> Self {
        Metadata { entries: iter.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect() }
    }
}

fn check_key(key: &[u8]) -> Result<(), MetadataError> {
    let bad = |why| MetadataError::BadKey { key: String::from_utf8_lossy(key).into_owned(), why };
    if key.is_empty() {
        return Err(bad("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad("longer than 255 bytes"));
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(bad("not printable ASCII (no spaces, no control or non-ASCII bytes)"));
    }
    Ok(())
}

/// Checks every key of `m` (entries collected without [`Metadata::insert`]).
pub(crate) fn check_keys(m: &Metadata) -> Result<(), MetadataError> {
    m.entries.iter().try_for_each(|(k, _)| check_key(k.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_with_binary_values_and_keys_in_any_case() {
        let m = Metadata::new().with("Trace-Id", "abc").with("bin", Bytes::from_static(&[0, 255, 10])).with("trace-id", "x");
        let block = m.encode();
        assert_eq!(block.len(), m.encoded_len());
        let back = Metadata::decode(block).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.get_str("TRACE-ID"), Some("abc"));
        assert_eq!(back.get_all("trace-id").count(), 2);
        assert_eq!(&back.get("bin").unwrap()[..], &[0, 255, 10]);
        assert!(Metadata::new().encode().is_empty());
    }

    #[test]
    fn bad_keys_are_refused_when_set_and_when_received() {
        let mut m = Metadata::new();
        for key in ["", "has space", "naïve", "tab\t"] {
            assert!(matches!(m.insert(key, "v"), Err(MetadataError::BadKey { .. })), "{key:?}");
        }
        assert!(m.insert(&"k".repeat(256), "v").is_err());
        // A block with a non-ASCII key, as a hostile peer would send it.
        let mut block = BytesMut::new();
        block.put_u16_le(1);
        block.put_u16_le(2);
        block.put_slice("é".as_bytes());
        block.put_u32_le(0);
        let e = Metadata::decode(block.freeze()).unwrap_err();
        assert!(e.to_string().contains("not printable ASCII"), "{e}");
    }

    #[test]
    fn truncated_or_lying_blocks_are_malformed_not_panics() {
        let good = Metadata::new().with("a", "bcd").encode();
        for cut in 1..good.len() {
            assert!(Metadata::decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(Metadata::decode(trailing.into()).unwrap_err().to_string().contains("after the last entry"));
        let lying = Bytes::from_static(&[0xff, 0xff, 0, 0]);
        assert!(Metadata::decode(lying).unwrap_err().to_string().contains("cannot fit"));
    }
}
