//! Method ids and the names of their constants.
//!
//! The id is on the wire in every request header, so it must not depend on the order of the
//! methods in the trait or on the compiler: it is the 32-bit FNV-1a hash of
//! `"{Trait}/{method}"`, unless the method pins it with `#[method(id = N)]`.

/// FNV-1a's 32-bit offset basis.
const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
/// FNV-1a's 32-bit prime.
const FNV_PRIME: u32 = 0x0100_0193;

/// The 32-bit FNV-1a hash of `bytes`: for each byte, xor it in, then multiply by the prime.
pub(crate) fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The stable id of `method` in `service`: FNV-1a of `"{service}/{method}"`, both names as
/// written in the source without a raw-identifier `r#` prefix.
pub(crate) fn hashed_id(service: &str, method: &str) -> u32 {
    fnv1a_32(format!("{service}/{method}").as_bytes())
}

/// The SCREAMING_SNAKE_CASE name of the id constant for a method: `put_blob` → `PUT_BLOB`,
/// `putBlob` → `PUT_BLOB`.
pub(crate) fn const_name(method: &str) -> String {
    let mut out = String::with_capacity(method.len() + 4);
    let mut prev_lower_or_digit = false;
    for c in method.chars() {
        if c.is_uppercase() && prev_lower_or_digit {
            out.push('_');
        }
        prev_lower_or_digit = c.is_lowercase() || c.is_ascii_digit();
        out.extend(c.to_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv, "FNV-1a 32").
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn id_hashes_service_slash_method() {
        assert_eq!(hashed_id("Store", "put"), 0x0e28_fcb0);
        assert_eq!(hashed_id("Store", "put"), fnv1a_32(b"Store/put"));
        assert_ne!(hashed_id("Store", "put"), hashed_id("Store", "get"));
    }

    #[test]
    fn const_names() {
        assert_eq!(const_name("put"), "PUT");
        assert_eq!(const_name("put_blob"), "PUT_BLOB");
        assert_eq!(const_name("putBlob"), "PUT_BLOB");
        assert_eq!(const_name("get2"), "GET2");
        assert_eq!(const_name("v2Get"), "V2_GET");
    }
}
