//! `CallMap`: a hash map keyed by call id. Ids are our own sequential counters (or a peer's,
//! bounded by the in-flight limit), so SipHash's protection against chosen keys buys nothing
//! here while costing about 5% of the instructions of a small call; a Fibonacci multiply
//! spreads sequential ids over the table.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from call id to `V`.
pub(crate) type CallMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Hashes one `u64` by a Fibonacci multiply: for maps keyed by ids a side counts itself
/// (call ids here, request ids in the tarpc adapter), where SipHash's protection against keys
/// chosen by a peer buys nothing.
///
/// ```
/// use std::collections::HashMap;
/// use std::hash::BuildHasherDefault;
/// let mut calls: HashMap<u64, &str, BuildHasherDefault<rpc_core::IdHasher>> = HashMap::default();
/// calls.insert(7, "in flight");
/// assert_eq!(calls.get(&7), Some(&"in flight"));
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

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
    use super::*;

    #[test]
    fn sequential_ids_land_in_distinct_high_bits() {
        // hashbrown takes its group index from the high bits: neighbours must differ there.
        let h = |n: u64| {
            let mut s = IdHasher::default();
            s.write_u64(n);
            s.finish() >> 57
        };
        let distinct: std::collections::HashSet<u64> = (1..=64).map(h).collect();
        assert!(distinct.len() > 32, "{} distinct top-7-bit values for 64 ids", distinct.len());
        let mut m: CallMap<u32> = CallMap::default();
        for i in 0..10_000u64 {
            m.insert(i, i as u32);
        }
        assert!((0..10_000u64).all(|i| m[&i] == i as u32));
    }
}
