//! `IdMap`: a hash map keyed by request id. The ids are this side's own counter, so SipHash's
//! protection against chosen keys buys nothing; rpc-core's [`rpc_core::IdHasher`] (a Fibonacci
//! multiply, as its call map uses) spreads sequential ids over the table.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// A map from request id to `V`.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<rpc_core::IdHasher>>;

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
