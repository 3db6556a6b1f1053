//! HTTP headers and zcrpc metadata, both ways, and gRPC's reserved headers: the path, the
//! timeout (the call's deadline), the status (the call's end).

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, TE};
use http::HeaderMap;
use rpc_core::{CallError, Code, Metadata};

/// The request metadata key that carries the gRPC path (`/pkg.Service/Method`): a server
/// routes by it (the method id alone is a hash it cannot invert). It starts with a colon, as
/// HTTP/2's pseudo-headers do, so no gRPC metadata key can take it.
pub(crate) const PATH_KEY: &str = ":grpc-path";

/// Where rpc-tonic's channels put the path before level 2 carried body chunks (2026-12-04): a
/// server tells such a client to update instead of misreading its messages, and such a server
/// answers this side `UNIMPLEMENTED` (it finds no path) instead of misreading this side's.
pub(crate) const OLD_PATH_KEY: &str = ":path";

/// The header gRPC's deadline travels in.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The trailer that carries a call's status code (a name made once: looking a `&str` up in a
/// header map parses it every time).
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The trailer that carries a failed call's message.
pub(crate) static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC's content type: not sent; the server puts it back on the request (the client does
/// not on the response: tonic's client neither reads nor shows it).
pub(crate) const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// Headers that describe an HTTP/2 connection or a gRPC call's framing, not the call: they are
/// not sent as metadata (each side's HTTP/2 would make its own).
fn is_transport_header(name: &HeaderName, value: &HeaderValue) -> bool {
    name == TE
        || (name == CONTENT_TYPE && value.as_bytes() == GRPC_CONTENT_TYPE.as_bytes())
        || matches!(name.as_str(), "host" | "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade")
}

/// How many paths a thread keeps ready to send (a generated client's paths are a handful of
/// constants); paths beyond are made for each call.
const PATHS_KEPT: usize = 64;

thread_local! {
    /// Paths sent from this thread, as bytes to send (shared, not copied per call) and their
    /// method ids.
    static PATHS: RefCell<Vec<(Bytes, u32)>> = const { RefCell::new(Vec::new()) };
}

/// The bytes of `path` (`/pkg.Service/Method`) to send as metadata, and the method id of the
/// path without its leading slash: both made once per path and thread, then shared.
pub(crate) fn path_and_id(path: &str) -> (Bytes, u32) {
    PATHS.with(|paths| {
        let mut paths = paths.borrow_mut();
        if let Some((b, id)) = paths.iter().find(|(b, _)| b.as_ref() == path.as_bytes()) {
            return (b.clone(), *id);
        }
        let made = (Bytes::copy_from_slice(path.as_bytes()), rpc_core::method_id(path.strip_prefix('/').unwrap_or(path)));
        if paths.len() < PATHS_KEPT {
            paths.push(made.clone());
        }
        made
    })
}

/// The metadata of a request's headers: every header but those of the transport and
/// `grpc-timeout` (returned as the call's timeout), and the path (its bytes) in front.
pub(crate) fn request_metadata(path: Bytes, headers: &HeaderMap) -> Result<(Metadata, Option<Duration>), tonic::Status> {
    let mut timeout = None;
    let mut m = Metadata::new();
    m.insert(PATH_KEY, path).map_err(|e| tonic::Status::internal(e.to_string()))?;
    for (name, value) in headers {
        if name.as_str() == GRPC_TIMEOUT {
            timeout = Some(parse_timeout(value.as_bytes()).ok_or_else(|| {
                tonic::Status::invalid_argument(format!("grpc-timeout {value:?} is not a gRPC timeout (1 to 8 digits and a unit: H, M, S, m, u, n)"))
            })?);
            continue;
        }
        if is_transport_header(name, value) {
            continue;
        }
        m.insert(name.as_str(), Bytes::copy_from_slice(value.as_bytes())).map_err(|e| tonic::Status::internal(e.to_string()))?;
    }
    Ok((m, timeout))
}

/// The metadata of response headers or trailers: every header but those of the transport.
pub(crate) fn metadata_of(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter().filter(|(n, v)| !is_transport_header(n, v))
}

/// Adds each metadata entry to `headers` as a header; `skip` names entries that are not
/// headers. An entry that is no valid HTTP header (a zcrpc peer may send any printable key and
/// any bytes) is an error naming it.
pub(crate) fn add_headers(headers: &mut HeaderMap, m: &Metadata, skip: &[&str]) -> Result<(), String> {
    for (key, value) in m.iter() {
        if skip.contains(&key) {
            continue;
        }
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| format!("metadata key {key:?} is not a valid HTTP header name"))?;
        let value = HeaderValue::from_maybe_shared(value.clone()).map_err(|_| format!("the value of metadata key {key:?} is not a valid HTTP header value"))?;
        if name.as_str().ends_with("-bin") && !is_base64(value.as_bytes()) {
            return Err(format!("the value of binary metadata key {key:?} is not base64"));
        }
        headers.append(name, value);
    }
    Ok(())
}

/// True for base64 text as gRPC sends binary headers (tonic's decoder panics on anything else).
fn is_base64(v: &[u8]) -> bool {
    let body = v.strip_suffix(b"==").or_else(|| v.strip_suffix(b"=")).unwrap_or(v);
    body.len() % 4 != 1 && body.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit.
pub(crate) fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `d`: the finest unit whose count fits 8 digits.
pub(crate) fn format_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let (n, unit) = if d.as_nanos() <= MAX {
        (d.as_nanos(), "n")
    } else if d.as_micros() <= MAX {
        (d.as_micros(), "u")
    } else if d.as_millis() <= MAX {
        (d.as_millis(), "m")
    } else if u128::from(d.as_secs()) <= MAX {
        (u128::from(d.as_secs()), "S")
    } else {
        ((u128::from(d.as_secs()) / 3600).min(MAX), "H")
    };
    HeaderValue::from_str(&format!("{n}{unit}")).expect("digits and a letter")
}

/// The gRPC code of a zcrpc code: the same number for gRPC's own codes (zcrpc numbers them
/// alike), `INTERNAL` for a protocol fault, `UNKNOWN` for the rest (an application error).
pub(crate) fn grpc_code(code: Code) -> tonic::Code {
    match code.0 {
        0..=16 => tonic::Code::from(code.0 as i32),
        _ if code == Code::PROTOCOL => tonic::Code::Internal,
        _ => tonic::Code::Unknown,
    }
}

/// The gRPC status of a failed zcrpc call: the server's status as it sent it, or what went
/// wrong on this side (deadline, connection) in words.
pub(crate) fn status_of(e: &CallError) -> tonic::Status {
    match e {
        CallError::Status(s) => tonic::Status::new(grpc_code(s.code), s.message.clone()),
        other => tonic::Status::new(grpc_code(other.code()), other.to_string()),
    }
}

/// The trailers that end a gRPC response: `grpc-status`, `grpc-message`, then the server's
/// trailer metadata.
pub(crate) fn status_trailers(status: &tonic::Status, trailers: Option<&Metadata>) -> HeaderMap {
    if status.code() == tonic::Code::Ok && status.message().is_empty() && trailers.is_none_or(Metadata::is_empty) {
        // The usual end, without building a status's header map to copy from.
        let mut h = HeaderMap::with_capacity(1);
        h.insert(GRPC_STATUS.clone(), HeaderValue::from_static("0"));
        return h;
    }
    let mut h = HeaderMap::new();
    if let Some(t) = trailers {
        if let Err(why) = add_headers(&mut h, t, &["grpc-status", "grpc-message"]) {
            tracing::debug!("rpc-tonic: trailers dropped: {why}");
            h.clear();
        }
    }
    if let Err(e) = status.add_header(&mut h) {
        h.insert(GRPC_STATUS.clone(), HeaderValue::from_static("13"));
        tracing::debug!("rpc-tonic: a status that makes no header: {e}");
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_format_in_every_unit() {
        for (v, d) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("40m", Duration::from_millis(40)),
            ("5u", Duration::from_micros(5)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            assert_eq!(parse_timeout(v.as_bytes()), Some(d), "{v}");
            assert_eq!(parse_timeout(format_timeout(d).as_bytes()), Some(d), "{v}");
        }
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(format_timeout(Duration::from_secs(1)).to_str().unwrap(), "1000000u");
    }

    #[test]
    fn transport_headers_and_the_timeout_are_not_metadata() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-timeout", HeaderValue::from_static("250m"));
        h.insert("x-trace", HeaderValue::from_static("abc"));
        let (m, timeout) = request_metadata(Bytes::from_static(b"/a.B/C"), &h).unwrap();
        assert_eq!(timeout, Some(Duration::from_millis(250)));
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), [":grpc-path", "x-trace"]);
        h.insert("grpc-timeout", HeaderValue::from_static("soon"));
        assert_eq!(request_metadata(Bytes::from_static(b"/a.B/C"), &h).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn paths_are_kept_per_thread_and_shared_not_copied() {
        let (a, id) = path_and_id("/a.B/C");
        assert_eq!(&a[..], b"/a.B/C");
        assert_eq!(id, rpc_core::method_id("a.B/C"));
        let (again, id_again) = path_and_id(&String::from("/a.B/C"));
        assert_eq!((again.as_ptr(), id_again), (a.as_ptr(), id), "the same bytes, shared");
        for n in 0..2 * PATHS_KEPT {
            let p = format!("/p.S/M{n}");
            assert_eq!(path_and_id(&p), (Bytes::from(p.clone()), rpc_core::method_id(&p[1..])));
        }
        assert!(PATHS.with(|p| p.borrow().len()) <= PATHS_KEPT, "bounded");
    }

    #[test]
    fn metadata_that_is_no_header_is_refused_by_name() {
        let mut h = HeaderMap::new();
        let e = add_headers(&mut h, &Metadata::new().with("Bad(Name", "v"), &[]).unwrap_err();
        assert!(e.contains("Bad(Name") || e.contains("bad(name"), "{e}");
        let e = add_headers(&mut h, &Metadata::new().with("x-bin", "not base64!"), &[]).unwrap_err();
        assert!(e.contains("not base64"), "{e}");
        add_headers(&mut h, &Metadata::new().with("x-bin", "AAEC").with("x", "y"), &[]).unwrap();
        assert_eq!(h.len(), 2);
    }
}
