//! zcrpc's call errors as tarpc's `ServerError`, and back: what a tarpc client sees of a call
//! that failed below it.

use std::io::ErrorKind;

use bytes::Bytes;
use rpc_core::{CallError, Code, Status};
use tarpc::ServerError;

/// The status a tarpc server's `ServerError` travels in: code `APPLICATION`, the error itself
/// (kind and detail) encoded in the details.
pub(crate) fn server_error_status(e: &ServerError) -> Status {
    let details = postcard::to_allocvec(e).map(Bytes::from).unwrap_or_default();
    Status { details, ..Status::new(Code::APPLICATION, e.detail.clone()) }
}

/// The `ServerError` a tarpc client gets for a zcrpc call that failed.
pub(crate) fn to_server_error(e: CallError) -> ServerError {
    if let CallError::Status(s) = &e {
        if s.code == Code::APPLICATION {
            if let Ok(inner) = postcard::from_bytes::<ServerError>(&s.details) {
                return inner;
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
