//! Wire status codes: a newtype with one table, numbered like gRPC's where the meaning is
//! the same, so people who know one know the other.

use std::fmt;

/// A status code carried by error and goaway frames.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u32);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $val:expr, $text:expr;)*) => {
        impl Code {
            $($(#[$doc])* pub const $name: Code = Code($val);)*

            /// The code's name, or `None` for a code this version does not know.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// No error (goaway for a plain shutdown).
    OK = 0, "ok";
    /// The caller cancelled the call.
    CANCELLED = 1, "cancelled";
    /// An error with no better code.
    UNKNOWN = 2, "unknown";
    /// The request could not be decoded into the method's arguments.
    INVALID_ARGUMENT = 3, "invalid argument";
    /// The call's deadline passed before it finished.
    DEADLINE_EXCEEDED = 4, "deadline exceeded";
    /// What the call names does not exist (a handler's answer: a key, a file).
    NOT_FOUND = 5, "not found";
    /// What the call would create exists already (a handler's answer).
    ALREADY_EXISTS = 6, "already exists";
    /// The caller may not call this method (the server's authorization hook refused it: see
    /// [`crate::ServerBuilder::authorize`]). The caller is known; asking again will not help.
    PERMISSION_DENIED = 7, "permission denied";
    /// A limit was reached: calls in flight, connections.
    RESOURCE_EXHAUSTED = 8, "resource exhausted";
    /// The system is not in the state the call needs (a handler's answer; retrying as is
    /// will not help).
    FAILED_PRECONDITION = 9, "failed precondition";
    /// The call was abandoned for a conflict with another one (a handler's answer; the caller
    /// may retry the whole sequence).
    ABORTED = 10, "aborted";
    /// An offset or a length past what is valid (a handler's answer).
    OUT_OF_RANGE = 11, "out of range";
    /// The method id is not served here.
    UNIMPLEMENTED = 12, "unimplemented";
    /// A bug on the serving side (a handler panicked).
    INTERNAL = 13, "internal";
    /// The server is shutting down or not reachable.
    UNAVAILABLE = 14, "unavailable";
    /// Data was lost or corrupted (a handler's answer).
    DATA_LOSS = 15, "data loss";
    /// The caller is not known: the call needs credentials it did not present (a client
    /// certificate, a token in its metadata).
    UNAUTHENTICATED = 16, "unauthenticated";
    /// The peer broke the wire protocol; the connection ends.
    PROTOCOL = 64, "protocol violation";
    /// The handler returned its own error type; the frame's message holds it, encoded.
    APPLICATION = 100, "application error";
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "Code({} {n})", self.0),
            None => write!(f, "Code({})", self.0),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "code {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn every_grpc_code_has_its_grpc_number_and_name() {
        // gRPC's canonical codes, in order: a peer that knows gRPC reads ours the same.
        let grpc = [
            "ok", "cancelled", "unknown", "invalid argument", "deadline exceeded", "not found", "already exists",
            "permission denied", "resource exhausted", "failed precondition", "aborted", "out of range",
            "unimplemented", "internal", "unavailable", "data loss", "unauthenticated",
        ];
        for (n, name) in grpc.iter().enumerate() {
            assert_eq!(Code(n as u32).name(), Some(*name), "code {n}");
        }
        assert_eq!(Code(17).name(), None);
    }

    #[test]
    fn each_constructor_makes_its_code() {
        let made = [
            (Status::unknown("x"), Code::UNKNOWN),
            (Status::not_found("x"), Code::NOT_FOUND),
            (Status::already_exists("x"), Code::ALREADY_EXISTS),
            (Status::resource_exhausted("x"), Code::RESOURCE_EXHAUSTED),
            (Status::failed_precondition("x"), Code::FAILED_PRECONDITION),
            (Status::aborted("x"), Code::ABORTED),
            (Status::out_of_range("x"), Code::OUT_OF_RANGE),
            (Status::internal("x"), Code::INTERNAL),
            (Status::unavailable("x"), Code::UNAVAILABLE),
            (Status::data_loss("x"), Code::DATA_LOSS),
        ];
        for (status, code) in made {
            assert_eq!((status.code, status.message.as_str()), (code, "x"));
        }
        assert_eq!(Status::not_found("no blob").to_string(), "not found: no blob");
    }
}
