//! zcrpc's call errors as tarpc's `ServerError`, and back: what a tarpc client sees of a call
//! that failed below it.

use std::io::ErrorKind;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use rpc_core::{CallError, Code, Status};
use tarpc::ServerError;

/// A `ServerError` as it travels (in a response on the stream, in the status of a call): its kind
/// as tarpc's number for it (0 `NotFound` to 17 `UnexpectedEof`, tarpc's own table), a `u32`,
/// then its detail. Not tarpc's own `Serialize`: it writes the number as an `i32`, which postcard
/// zigzags, and its `Deserialize` reads a `u32`, so every kind but `NotFound` came back as
/// another one (`PermissionDenied` as `ConnectionRefused`, `WouldBlock` as `Other`).
#[derive(Serialize)]
pub(crate) struct WireErrorRef<'a> {
    kind: u32,
    detail: &'a str,
}

impl<'a> From<&'a ServerError> for WireErrorRef<'a> {
    fn from(e: &'a ServerError) -> Self {
        WireErrorRef { kind: kind_number(e.kind), detail: &e.detail }
    }
}

/// A [`WireErrorRef`] as it is read.
#[derive(Deserialize)]
pub(crate) struct WireError {
    kind: u32,
    detail: String,
}

impl From<WireError> for ServerError {
    fn from(e: WireError) -> Self {
        ServerError::new(kind_of_number(e.kind), e.detail)
    }
}

/// tarpc's table of the kinds it carries (`tarpc::util::serde`), in order; any other is `Other`.
const KINDS: [ErrorKind; 18] = [
    ErrorKind::NotFound,
    ErrorKind::PermissionDenied,
    ErrorKind::ConnectionRefused,
    ErrorKind::ConnectionReset,
    ErrorKind::ConnectionAborted,
    ErrorKind::NotConnected,
    ErrorKind::AddrInUse,
    ErrorKind::AddrNotAvailable,
    ErrorKind::BrokenPipe,
    ErrorKind::AlreadyExists,
    ErrorKind::WouldBlock,
    ErrorKind::InvalidInput,
    ErrorKind::InvalidData,
    ErrorKind::TimedOut,
    ErrorKind::WriteZero,
    ErrorKind::Interrupted,
    ErrorKind::Other,
    ErrorKind::UnexpectedEof,
];

fn kind_number(kind: ErrorKind) -> u32 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(16) as u32
}

fn kind_of_number(n: u32) -> ErrorKind {
    KINDS.get(n as usize).copied().unwrap_or(ErrorKind::Other)
}

/// `result` as it travels: serialized as a `Result` whose error is a [`WireErrorRef`].
pub(crate) struct WireResult<'a, T>(pub(crate) &'a Result<T, ServerError>);

impl<T: Serialize> Serialize for WireResult<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Ok(v) => serializer.serialize_newtype_variant("Result", 0, "Ok", v),
            Err(e) => serializer.serialize_newtype_variant("Result", 1, "Err", &WireErrorRef::from(e)),
        }
    }
}

/// The status a tarpc server's `ServerError` travels in: code `APPLICATION`, the error itself
/// (kind and detail, a [`WireErrorRef`]) encoded in the details.
pub(crate) fn server_error_status(e: &ServerError) -> Status {
    let details = postcard::to_allocvec(&WireErrorRef::from(e)).map(Bytes::from).unwrap_or_default();
    Status { details, ..Status::new(Code::APPLICATION, e.detail.clone()) }
}

/// The `ServerError` a tarpc client gets for a zcrpc call that failed.
pub(crate) fn to_server_error(e: CallError) -> ServerError {
    if let CallError::Status(s) = &e {
        if s.code == Code::APPLICATION {
            if let Ok(inner) = postcard::from_bytes::<WireError>(&s.details) {
                return inner.into();
            }
        }
    }
    let kind = match &e {
        CallError::DeadlineExceeded(_) => ErrorKind::TimedOut,
        CallError::TooLarge { .. } => ErrorKind::InvalidInput,
        CallError::Codec(_) => ErrorKind::InvalidData,
        CallError::Connection(_) => ErrorKind::ConnectionAborted,
        CallError::ShuttingDown | CallError::Unavailable(_) => ErrorKind::NotConnected,
        CallError::Status(s) => match s.code {
            Code::DEADLINE_EXCEEDED => ErrorKind::TimedOut,
            Code::INVALID_ARGUMENT => ErrorKind::InvalidInput,
            Code::UNAVAILABLE => ErrorKind::NotConnected,
            Code::UNIMPLEMENTED => ErrorKind::Unsupported,
            Code::UNAUTHENTICATED | Code::PERMISSION_DENIED => ErrorKind::PermissionDenied,
            _ => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    };
    ServerError::new(kind, format!("zcrpc: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_comes_back_as_itself() {
        for kind in KINDS {
            let e = ServerError::new(kind, "why".into());
            let back = to_server_error(rpc_core::CallError::Status(server_error_status(&e)));
            assert_eq!((back.kind, back.detail.as_str()), (kind, "why"));
            let r: Result<(), ServerError> = Err(e);
            let bytes = postcard::to_allocvec(&WireResult(&r)).unwrap();
            let back: Result<(), WireError> = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(ServerError::from(back.unwrap_err()).kind, kind);
            // tarpc's own Deserialize reads the same bytes (a u32) alike.
            let back: Result<(), ServerError> = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.unwrap_err().kind, kind);
        }
        let unusual = ServerError::new(ErrorKind::OutOfMemory, "why".into());
        assert_eq!(to_server_error(rpc_core::CallError::Status(server_error_status(&unusual))).kind, ErrorKind::Other);
    }
}
