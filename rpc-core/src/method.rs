//! Method paths and their wire ids.
//!
//! Every method has a string path, `"{Trait}/{method}"` or, for a service declared with
//! `#[service(package = "store.v1")]`, `"store.v1.{Trait}/{method}"`; on the wire a request
//! names its method by a 32-bit id, which unless pinned with `#[method(id = N)]` is the
//! FNV-1a hash of the path. [`method_id`] computes that hash, so an adapter (a gRPC bridge, a
//! `.proto` service) can address a method by its path.

/// FNV-1a's 32-bit offset basis.
const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
/// FNV-1a's 32-bit prime.
const FNV_PRIME: u32 = 0x0100_0193;

/// The wire id of the method at `path`: the 32-bit FNV-1a hash of its UTF-8 bytes, as
/// `#[service]` computes it for every method without a pinned id.
///
/// ```
/// use rpc_core::method_id;
///
/// assert_eq!(method_id("Store/put"), 0x0e28_fcb0);
/// const PUT: u32 = method_id("store.v1.Store/put");
/// # assert_ne!(PUT, method_id("Store/put"));
/// ```
pub const fn method_id(path: &str) -> u32 {
    let bytes = path.as_bytes();
    let mut hash = FNV_OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u32).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::method_id;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv, "FNV-1a 32").
        assert_eq!(method_id(""), 0x811c_9dc5);
        assert_eq!(method_id("a"), 0xe40c_292c);
        assert_eq!(method_id("foobar"), 0xbf9c_f968);
    }
}
