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
    /// The caller may not call this method (the server's authorization hook refused it: see
    /// [`crate::ServerBuilder::authorize`]). The caller is known; asking again will not help.
    PERMISSION_DENIED = 7, "permission denied";
    /// A limit was reached: calls in flight, connections.
    RESOURCE_EXHAUSTED = 8, "resource exhausted";
    /// The method id is not served here.
    UNIMPLEMENTED = 12, "unimplemented";
    /// A bug on the serving side (a handler panicked).
    INTERNAL = 13, "internal";
    /// The server is shutting down or not reachable.
    UNAVAILABLE = 14, "unavailable";
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
