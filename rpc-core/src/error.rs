//! Error types, one per operation. Misuse, peer faults and IO failures are kept apart.

use std::io;
use std::time::Duration;

use bytes::Bytes;

use crate::code::Code;
use crate::codec::{CodecError, Decode};

/// An error status a handler returns, or a call receives: code, human text, and (for
/// [`Code::APPLICATION`]) the encoded application error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Status {
    /// What kind of failure.
    pub code: Code,
    /// Human-readable text.
    pub message: String,
    /// Encoded details (the application's error value for [`Code::APPLICATION`]).
    pub details: Bytes,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Status { code, message: message.into(), details: Bytes::new() }
    }

    /// The method is not served here.
    pub fn unimplemented(method: u32) -> Self {
        Status::new(Code::UNIMPLEMENTED, format!("unknown method id {method:#010x}"))
    }

    /// The request did not decode.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Status::new(Code::INVALID_ARGUMENT, message)
    }

    /// An error with no better code ([`Code::UNKNOWN`]).
    pub fn unknown(message: impl Into<String>) -> Self {
        Status::new(Code::UNKNOWN, message)
    }

    /// What the call names does not exist ([`Code::NOT_FOUND`]).
    pub fn not_found(message: impl Into<String>) -> Self {
        Status::new(Code::NOT_FOUND, message)
    }

    /// What the call would create exists already ([`Code::ALREADY_EXISTS`]).
    pub fn already_exists(message: impl Into<String>) -> Self {
        Status::new(Code::ALREADY_EXISTS, message)
    }

    /// A limit was reached ([`Code::RESOURCE_EXHAUSTED`]).
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Status::new(Code::RESOURCE_EXHAUSTED, message)
    }

    /// The system is not in the state the call needs ([`Code::FAILED_PRECONDITION`]).
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Status::new(Code::FAILED_PRECONDITION, message)
    }

    /// Abandoned for a conflict with another call ([`Code::ABORTED`]).
    pub fn aborted(message: impl Into<String>) -> Self {
        Status::new(Code::ABORTED, message)
    }

    /// An offset or a length past what is valid ([`Code::OUT_OF_RANGE`]).
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Status::new(Code::OUT_OF_RANGE, message)
    }

    /// A bug or a broken invariant on the serving side ([`Code::INTERNAL`]).
    pub fn internal(message: impl Into<String>) -> Self {
        Status::new(Code::INTERNAL, message)
    }

    /// The service cannot take the call now; the caller may retry ([`Code::UNAVAILABLE`]).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Status::new(Code::UNAVAILABLE, message)
    }

    /// Data was lost or corrupted ([`Code::DATA_LOSS`]).
    pub fn data_loss(message: impl Into<String>) -> Self {
        Status::new(Code::DATA_LOSS, message)
    }

    /// The caller is not known ([`Code::UNAUTHENTICATED`]): it presented no credentials, or
    /// none this server accepts.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Status::new(Code::UNAUTHENTICATED, message)
    }

    /// The caller is known and may not make this call ([`Code::PERMISSION_DENIED`]).
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Status::new(Code::PERMISSION_DENIED, message)
    }

    /// An application error whose value travels encoded in `details`.
    pub fn application(details: Bytes) -> Self {
        Status { code: Code::APPLICATION, message: String::from("application error"), details }
    }
}

/// A frame or handshake could not be decoded. The connection that produced it is closed with
/// a goaway naming this error; every other connection carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The handshake did not start with the zcrpc magic. The message says what the peer seems
    /// to speak instead: `bad magic "HTTP": the peer is not speaking zcrpc; it looks like an
    /// HTTP/1 server's response (expected "ZCRP")`. (When fewer than 4 bytes had come, the rest
    /// of `found` is zeros.)
    #[error("bad magic {}: the peer is not speaking zcrpc{} (expected {})", show_magic(found), guess_protocol(found), show_magic(expected))]
    BadMagic {
        /// What we read.
        found: [u8; 4],
        /// What we expected.
        expected: [u8; 4],
    },
    /// The peer speaks another wire version.
    #[error("wire version mismatch: peer speaks version {peer}, we speak version {ours}")]
    VersionMismatch {
        /// The peer's version.
        peer: u16,
        /// Ours.
        ours: u16,
    },
    /// The frame kind byte is not one we know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A length field is over the negotiated limit; nothing was allocated for it.
    #[error("{what} of {len} bytes is over the limit of {limit} bytes{}", frame_hint(what))]
    TooLarge {
        /// Which length.
        what: &'static str,
        /// The length the peer claimed.
        len: u64,
        /// The limit in force.
        limit: u64,
    },
    /// More attachments than the negotiated limit.
    #[error("{count} attachments is over the limit of {limit}")]
    TooManyAttachments {
        /// The count the peer claimed.
        count: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The header's lengths do not add up, or a field holds an impossible value.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// Frame kind.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes received of the frame.
        have: usize,
        /// Bytes the frame needs.
        need: usize,
    },
}

/// The connection broke the protocol or ended; why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// We could not decode what the peer sent.
    #[error("peer sent bad data: {0}")]
    Decode(#[from] DecodeError),
    /// The peer sent a well-formed frame that is not allowed here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer sent a goaway with an error code.
    #[error("peer closed the connection: {code}: {message}")]
    GoAway {
        /// The peer's code.
        code: Code,
        /// The peer's reason.
        message: String,
    },
    /// No ping answer or traffic in time.
    #[error("keepalive timeout: no answer from peer in {0:?}")]
    KeepaliveTimeout(Duration),
    /// The peer's hello did not arrive within the handshake timeout
    /// ([`ConnConfig::handshake_timeout`](crate::conn::ConnConfig::handshake_timeout)).
    #[error("no hello from the peer within {0:?}")]
    HelloTimeout(Duration),
    /// The transport failed.
    #[error("transport error: {0}")]
    Io(String),
    /// Our writes made no progress for this long: the peer stopped reading (or vanished).
    #[error("write stalled: the peer took no bytes for {0:?} (it stopped reading, or is gone)")]
    WriteStalled(Duration),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// We closed it (client dropped, server shut down).
    #[error("connection closed locally")]
    LocallyClosed,
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(e.to_string())
    }
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The transport could not connect.
    #[error("could not connect: {0}")]
    Io(#[from] io::Error),
    /// The transport did not connect in time (`ClientConfig::connect_timeout`).
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The transport connected, but the peer sent no zcrpc hello before the connect timeout
    /// (or the handshake timeout) ran out: something else listens there. A server of most
    /// other protocols (HTTP, TLS) waits for its client to speak its own protocol first, so
    /// it says nothing to a zcrpc hello.
    #[error(
        "connected, but no zcrpc hello came back within {0:?}: is a zcrpc server listening there? \
         (an HTTP or TLS server waits for its client to speak first, and says nothing to a zcrpc hello)"
    )]
    NoHello(Duration),
    /// The transport connected, but the peer closed the connection without sending a zcrpc
    /// hello: something else listens there (a TLS server, for one, closes on a first record
    /// it cannot parse). A zcrpc server that refuses a connection says why
    /// ([`ConnectError::Refused`]).
    #[error(
        "connected, but the peer closed the connection without a zcrpc hello: is a zcrpc server \
         listening there? (a TLS server, for one, closes on a hello it does not understand)"
    )]
    ClosedBeforeHello,
    /// The handshake failed (bad magic, version mismatch, ...).
    #[error("handshake failed: {0}")]
    Handshake(#[from] ConnectionError),
    /// The server refused the connection and said why.
    #[error("server refused the connection: {code}: {message}")]
    Refused {
        /// The server's code.
        code: Code,
        /// The server's reason.
        message: String,
    },
    /// Connecting to an address failed: a client made from an address
    /// ([`crate::Client::connect_tcp`], [`crate::Client::connect_unix`]) names it in front of
    /// the error. [`ConnectError::reason`] is the error without the address.
    #[error("connecting to {target}: {error}")]
    Dialing {
        /// The address: `127.0.0.1:7411`, `unix:/run/app.sock`.
        target: String,
        /// What went wrong there.
        error: Box<ConnectError>,
    },
}

impl ConnectError {
    /// What went wrong, without the address: the error a [`ConnectError::Dialing`] wraps, any
    /// other as it is. Match on this to tell a timeout from a refusal whatever the client.
    pub fn reason(&self) -> &ConnectError {
        match self {
            ConnectError::Dialing { error, .. } => error.reason(),
            other => other,
        }
    }

    /// The address that was dialed, when the error names one.
    pub fn target(&self) -> Option<&str> {
        match self {
            ConnectError::Dialing { target, .. } => Some(target),
            _ => None,
        }
    }

    /// This error with `target` named in front ([`ConnectError::Dialing`]), unless it names an
    /// address already: for a client made with [`crate::Client::connect_with`], whose dial
    /// function only the caller knows the address of.
    pub fn with_target(self, target: impl Into<String>) -> ConnectError {
        match self {
            named @ ConnectError::Dialing { .. } => named,
            error => ConnectError::Dialing { target: target.into(), error: Box::new(error) },
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The server answered with an error status.
    #[error("server returned {0}")]
    Status(Status),
    /// The deadline passed; the call was cancelled on the server.
    #[error("deadline of {0:?} exceeded")]
    DeadlineExceeded(Duration),
    /// The connection is going away (goaway received or client closed); the call was not sent.
    #[error("connection is shutting down; call not sent")]
    ShuttingDown,
    /// The connection ended before the answer came.
    #[error("connection lost: {0}")]
    Connection(ConnectionError),
    /// There is no connection to send the call on (the client is re-dialing, and the call was
    /// set not to wait, or waited in vain).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request exceeds a limit the peer declared (checked before sending).
    #[error(
        "request of {len} bytes (message, metadata and attachments together) is over the \
         peer's frame limit of {limit} bytes (its max_frame)"
    )]
    TooLarge {
        /// Request size.
        len: u64,
        /// Peer's limit.
        limit: u64,
    },
    /// Encoding the request or decoding the response failed.
    #[error("codec error: {0}")]
    Codec(String),
    /// The server's response headers or trailers were refused (over the limit this side
    /// declared, a key that is not printable ASCII, a block that does not parse): the call
    /// ends (cancelled on the server if it still ran); the connection carries on.
    #[error("{0}")]
    Metadata(String),
}

impl CallError {
    /// The server's status, if the failure came from the server.
    pub fn status(&self) -> Option<&Status> {
        match self {
            CallError::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The error of a call to the method at `path` (`"Store/put"`): a server that does not know
    /// the method can only name its id, so the path the client asked for is put in front.
    /// Generated clients do this for you.
    pub fn for_method(self, path: &str) -> CallError {
        match self {
            CallError::Status(mut s) if s.code == Code::UNIMPLEMENTED => {
                s.message = format!("{path}: {}", s.message);
                CallError::Status(s)
            }
            other => other,
        }
    }

    /// The error value the server's handler returned (the `Err(e)` of a method returning
    /// `Result<_, E>`), decoded with the service's codec `C`; `None` unless the server answered
    /// with an application error ([`Code::APPLICATION`]).
    ///
    /// Generated unary and client-streaming methods hand that error typed already (the inner
    /// `Result`); a stream's `Source` (server-streaming and bidirectional methods) ends with it
    /// as its last event, a `CallError`, which this decodes:
    ///
    /// ```
    /// # use rpc_core::{codec::Postcard, CallError, Source};
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct Line(String);
    /// # #[derive(Debug, serde::Serialize, serde::Deserialize)] struct LogError(String);
    /// async fn read(mut lines: Source<Line>) -> Result<Vec<Line>, String> {
    ///     let mut out = Vec::new();
    ///     while let Some(line) = lines.recv().await {
    ///         match line {
    ///             Ok(line) => out.push(line),
    ///             Err(e) => match e.application::<LogError, Postcard>() {
    ///                 Some(Ok(LogError(why))) => return Err(format!("the log refused: {why}")),
    ///                 _ => return Err(format!("the call failed: {e}")),
    ///             },
    ///         }
    ///     }
    ///     Ok(out)
    /// }
    /// ```
    pub fn application<E, C: Decode<E>>(&self) -> Option<Result<E, CodecError>> {
        match self {
            CallError::Status(s) if s.code == Code::APPLICATION => Some(C::decode(s.details.clone())),
            _ => None,
        }
    }

    /// The code: the server's, or the local equivalent.
    pub fn code(&self) -> Code {
        match self {
            CallError::Status(s) => s.code,
            CallError::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            CallError::ShuttingDown | CallError::Connection(_) | CallError::Unavailable(_) => Code::UNAVAILABLE,
            CallError::TooLarge { .. } => Code::RESOURCE_EXHAUSTED,
            CallError::Codec(_) => Code::INVALID_ARGUMENT,
            CallError::Metadata(_) => Code::PROTOCOL,
        }
    }
}

/// Four handshake bytes as text when they are printable (`"HTTP"`), else as hex (`16 03 01 02`).
fn show_magic(bytes: &[u8; 4]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    }
}

/// What a peer whose first bytes are `found` seems to speak, as the end of a sentence.
fn guess_protocol(found: &[u8; 4]) -> &'static str {
    const HTTP1_METHODS: [&[u8; 4]; 9] = [b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC"];
    match found {
        b"HTTP" => "; it looks like an HTTP/1 server's response (is the address an HTTP server's?)",
        b"PRI " => "; it looks like HTTP/2 (the connection preface \"PRI *\"): a gRPC or h2 client?",
        // An HTTP/2 frame header: a 24-bit length (a few settings of 6 bytes each), type 4.
        [0, 0, len, 4] if len % 6 == 0 => "; it looks like HTTP/2 (a SETTINGS frame): a gRPC or h2 server?",
        [0x16, 0x03, ..] => "; it looks like TLS (a handshake record): a TLS client or server at the other end?",
        [0x15, 0x03, ..] => "; it looks like TLS (an alert record): a TLS peer refusing plain text?",
        b"SSH-" => "; it looks like SSH",
        m if HTTP1_METHODS.contains(&m) => "; it looks like an HTTP/1 request (a browser or curl?)",
        _ => "",
    }
}

/// What a frame's size counts, said after a "frame over the limit" error.
fn frame_hint(what: &str) -> &'static str {
    if what == "frame" {
        " (max_frame counts the message and every attachment together)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Encode, Postcard};

    #[test]
    fn an_application_error_decodes_with_the_services_codec_and_nothing_else_does() {
        let details = <Postcard as Encode<(u32, String)>>::encode(&(7, "full".to_string())).unwrap();
        let e = CallError::Status(Status::application(details));
        assert_eq!(e.application::<(u32, String), Postcard>().unwrap().unwrap(), (7, "full".to_string()));
        // Details that are not an `E`: the codec's error, not a made-up value.
        let e = CallError::Status(Status::application(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])));
        assert!(e.application::<(u32, String), Postcard>().unwrap().is_err());
        // Not an application error: none, whatever the details.
        let mut status = Status::internal("boom");
        status.details = Bytes::from_static(b"\x07\x04full");
        assert!(CallError::Status(status).application::<(u32, String), Postcard>().is_none());
        assert!(CallError::DeadlineExceeded(Duration::from_secs(1)).application::<(u32, String), Postcard>().is_none());
    }
}
