//! `IdMap`: a hash map keyed by request id. The ids are this side's own counter, so SipHash's
//! protection against chosen keys buys nothing; a Fibonacci multiply spreads sequential ids
//! over the table (as rpc-core's call map does).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from request id to `V`.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Hashes one `u64` by a Fibonacci multiply.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are used; fold anything else in so the hasher stays correct.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::IdMap;

    #[test]
    fn sequential_ids_go_in_and_come_out() {
        let mut m = IdMap::default();
        for id in 0..1000u64 {
            m.insert(id, id * 2);
        }
        assert!((0..1000u64).all(|id| m.remove(&id) == Some(id * 2)));
        assert!(m.is_empty());
    }
}
