//! Method paths, ids and the names of their constants.
//!
//! A method's path is `"{Trait}/{method}"`, or `"{package}.{Trait}/{method}"` under
//! `#[service(package = "...")]`. The id is on the wire in every request header, so it must
//! not depend on the order of the methods in the trait or on the compiler: it is the 32-bit
//! FNV-1a hash of the path, unless the method pins it with `#[method(id = N)]`.
//! `rpc_core::method_id` computes the same hash at run time (or in a `const`).

/// FNV-1a's 32-bit offset basis.
const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
/// FNV-1a's 32-bit prime.
const FNV_PRIME: u32 = 0x0100_0193;

/// The 32-bit FNV-1a hash of `bytes`: for each byte, xor it in, then multiply by the prime.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The qualified name of a service: `"{package}.{service}"`, or the service's name alone.
pub(crate) fn service_path(package: Option<&str>, service: &str) -> String {
    match package {
        Some(package) => format!("{package}.{service}"),
        None => service.to_owned(),
    }
}

/// The path of `method` in the service named `service_path` (see [`service_path`]):
/// `"{service_path}/{method}"`, names as written in the source without a raw-identifier `r#`
/// prefix.
pub(crate) fn method_path(service_path: &str, method: &str) -> String {
    format!("{service_path}/{method}")
}

/// The stable id of the method at `path`: its FNV-1a hash.
pub(crate) fn hashed_id(path: &str) -> u32 {
    fnv1a_32(path.as_bytes())
}

/// Checks a `package` name: dot-separated segments, each an ASCII identifier (a letter or `_`,
/// then letters, digits or `_`), as in protobuf's `package store.v1;`. Returns why not.
pub(crate) fn check_package(package: &str) -> Result<(), String> {
    if package.is_empty() {
        return Err("the package name is empty".into());
    }
    for segment in package.split('.') {
        let mut chars = segment.chars();
        match chars.next() {
            None => {
                return Err(format!(
                    "`{package}` has an empty segment (two dots, or a dot at an end)"
                ))
            }
            Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
                let which = if segment == package {
                    String::new()
                } else {
                    format!("segment `{segment}` of ")
                };
                return Err(format!(
                    "{which}`{package}` must start with an ASCII letter or `_`"
                ));
            }
            Some(_) => {}
        }
        if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
            return Err(format!("`{package}` contains {c:?}: segments are ASCII letters, digits and `_`, separated by dots"));
        }
    }
    Ok(())
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
    fn id_hashes_the_path() {
        let put = method_path(&service_path(None, "Store"), "put");
        assert_eq!(put, "Store/put");
        assert_eq!(hashed_id(&put), 0x0e28_fcb0);
        assert_ne!(hashed_id(&put), hashed_id("Store/get"));
        let put = method_path(&service_path(Some("store.v1"), "Store"), "put");
        assert_eq!(put, "store.v1.Store/put");
        assert_eq!(hashed_id(&put), fnv1a_32(b"store.v1.Store/put"));
    }

    #[test]
    fn package_names() {
        for good in ["store", "store.v1", "_a.b_2.C"] {
            assert_eq!(check_package(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".store",
            "store.",
            "store..v1",
            "1store",
            "store.v-1",
            "store/v1",
            "store v1",
            "störe",
        ] {
            assert!(check_package(bad).is_err(), "{bad:?}");
        }
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
