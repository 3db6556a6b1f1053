//! The messages of the `tarpc/stream` call: tarpc's small requests, their cancels and their
//! responses, each one stream message (postcard), tagged with the client's request id.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tarpc::context::Context;
use tarpc::ServerError;

use crate::errors::{WireError, WireResult};

/// The longest deadline a request's context may carry: a longer one is cut to this. tarpc's
/// server keeps its deadlines in a timer wheel that panics past about 2.2 years, and adding
/// the peer's `Duration` to the clock panics once it overflows: either would take the
/// connection's tarpc channel down (or the whole server, when its channels share a task).
pub(crate) const MAX_DEADLINE: Duration = Duration::from_secs(2 * 365 * 86_400);

/// A request's context as the server reads it: the bytes of a `tarpc::context::Context` (its
/// deadline relative to the moment it was sent, its trace), decoded without tarpc's own
/// `Deserialize`, which adds the deadline to the clock unchecked.
#[derive(Deserialize)]
pub(crate) struct WireContext {
    deadline: Duration,
    trace_context: tarpc::trace::Context,
}

impl WireContext {
    /// The context, its deadline cut to [`MAX_DEADLINE`].
    pub(crate) fn into_context(self) -> Context {
        // `Context` cannot be built field by field outside tarpc (`#[non_exhaustive]`): a copy of
        // one, both of whose fields are then set.
        static TEMPLATE: OnceLock<Context> = OnceLock::new();
        let mut context = *TEMPLATE.get_or_init(Context::current);
        context.deadline = Instant::now() + self.deadline.min(MAX_DEADLINE);
        context.trace_context = self.trace_context;
        context
    }
}

/// A message of the client's stream, as the client writes it (borrowing the request).
#[derive(Serialize)]
pub(crate) enum ToServerRef<'a, Req> {
    /// Kind 0: request `id`, its context (deadline, trace), its message. After the kind and
    /// the id, the same bytes as a `tarpc/call` message (see [`call_message_at`]).
    Request(u64, &'a Context, &'a Req),
    /// Kind 1: the client dropped request `id`.
    Cancel(u64),
}

/// A message of the client's stream, as the server reads it.
pub(crate) enum ToServer<Req> {
    /// Request `id`, its context and message: or why they do not decode (a method of another
    /// version of the service, a type postcard cannot read), which fails that request alone.
    Request(u64, Result<(Context, Req), postcard::Error>),
    Cancel(u64),
}

/// A message of the client's stream read in two steps: its kind and id, then the rest, so that a
/// request that does not decode fails alone. Err: not a message of the client's stream (an
/// unknown kind, no id), which ends the stream.
pub(crate) fn read_from_client<Req: DeserializeOwned>(bytes: &[u8]) -> Result<ToServer<Req>, postcard::Error> {
    let ((kind, id), rest) = postcard::take_from_bytes::<(u32, u64)>(bytes)?;
    match kind {
        0 => Ok(ToServer::Request(
            id,
            postcard::from_bytes::<(WireContext, Req)>(rest).map(|(context, request)| (context.into_context(), request)),
        )),
        1 => Ok(ToServer::Cancel(id)),
        _ => Err(postcard::Error::DeserializeBadEnum),
    }
}

/// A message of the server's stream, as the server writes it (borrowing the response).
#[derive(Serialize)]
pub(crate) enum FromServerRef<'a, Resp> {
    /// Kind 0: the response to request `id` (its error, if any, as a
    /// [`crate::errors::WireErrorRef`]).
    Response(u64, WireResult<'a, Resp>),
}

impl<'a, Resp> FromServerRef<'a, Resp> {
    /// The response `result` to request `id`.
    pub(crate) fn response(id: u64, result: &'a Result<Resp, ServerError>) -> Self {
        FromServerRef::Response(id, WireResult(result))
    }
}

/// A message of the server's stream, as the client reads it: the id of the request it answers
/// and its response, read in two steps, so that a response that does not decode (a type
/// postcard cannot read, a server of another version) fails its own request only. Err: not a
/// message of the server's stream (an unknown kind, no id), which ends the stream.
pub(crate) fn read_from_server<Resp: DeserializeOwned>(bytes: &[u8]) -> Result<(u64, Result<Resp, ServerError>), postcard::Error> {
    let ((kind, id), rest) = postcard::take_from_bytes::<(u32, u64)>(bytes)?;
    if kind != 0 {
        return Err(postcard::Error::DeserializeBadEnum);
    }
    let response = match postcard::from_bytes::<Result<Resp, WireError>>(rest) {
        Ok(response) => response.map_err(ServerError::from),
        Err(e) => Err(ServerError::new(std::io::ErrorKind::InvalidData, format!("cannot decode the response: {e}"))),
    };
    Ok((id, response))
}

/// Where the `(context, message)` part starts in the stream message of request `id`: after
/// its kind (one byte: varint 0) and its id (a varint). A request too large for the stream goes
/// as a `tarpc/call` with the bytes from there, so it is encoded once either way.
pub(crate) fn call_message_at(id: u64) -> usize {
    1 + varint_len(id)
}

/// Bytes of `v` as a postcard varint (7 bits a byte).
fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requests_call_message_is_the_tail_of_its_stream_message() {
        let ctx = tarpc::context::current();
        let req = (7u32, "hello".to_owned());
        for id in [0u64, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let stream = postcard::to_allocvec(&ToServerRef::Request(id, &ctx, &req)).unwrap();
            // The tail decodes as a call's message (the deadline is sent relative to the clock,
            // so the bytes of two encodings may differ in it).
            let (_, tail): (WireContext, (u32, String)) = postcard::from_bytes(&stream[call_message_at(id)..]).unwrap();
            assert_eq!(tail, req, "id {id}");
            let call = postcard::to_allocvec(&(&ctx, &req)).unwrap();
            assert_eq!(stream.len() - call_message_at(id), call.len(), "id {id}");
            match read_from_client::<(u32, String)>(&stream).unwrap() {
                ToServer::Request(got, r) => assert_eq!((got, r.unwrap().1), (id, req.clone())),
                ToServer::Cancel(_) => panic!("a request read as a cancel"),
            }
        }
    }

    #[test]
    fn a_context_decodes_with_its_deadline_and_trace_and_an_absurd_deadline_is_cut() {
        let mut ctx = tarpc::context::current();
        ctx.deadline = Instant::now() + Duration::from_secs(30);
        ctx.trace_context.trace_id = tarpc::trace::TraceId::from(7u128);
        let bytes = postcard::to_allocvec(&ctx).unwrap();
        let got = postcard::from_bytes::<WireContext>(&bytes).unwrap().into_context();
        assert_eq!(got.trace_context, ctx.trace_context);
        let left = got.deadline.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(20) && left <= Duration::from_secs(30), "{left:?}");
        for absurd in [Duration::MAX, Duration::from_secs(u64::MAX), Duration::from_secs(10 * 365 * 86_400)] {
            let bytes = postcard::to_allocvec(&(absurd, tarpc::trace::Context::default())).unwrap();
            let got = postcard::from_bytes::<WireContext>(&bytes).unwrap().into_context();
            assert!(got.deadline <= Instant::now() + MAX_DEADLINE, "{absurd:?}");
        }
    }

    #[test]
    fn an_unknown_kind_does_not_decode() {
        assert!(read_from_client::<u32>(&[2, 0]).is_err());
        assert!(read_from_client::<u32>(&[0]).is_err(), "no id");
        let cancel = postcard::to_allocvec(&ToServerRef::<u32>::Cancel(9)).unwrap();
        assert!(matches!(read_from_client::<u32>(&cancel), Ok(ToServer::Cancel(9))));
        // A request whose id reads but whose message does not: an error for that request.
        let ctx = tarpc::context::current();
        let request = postcard::to_allocvec(&ToServerRef::Request(4, &ctx, &"not a bool")).unwrap();
        assert!(matches!(read_from_client::<bool>(&request), Ok(ToServer::Request(4, Err(_)))));
        assert!(read_from_server::<u32>(&[1, 0, 0, 7]).is_err());
        assert!(read_from_server::<u32>(&[0]).is_err(), "no id");
    }

    #[test]
    fn a_response_that_does_not_decode_is_an_error_for_its_request_alone() {
        let ok: Result<u32, ServerError> = Ok(7);
        let bytes = postcard::to_allocvec(&FromServerRef::response(300, &ok)).unwrap();
        assert_eq!(read_from_server::<u32>(&bytes).unwrap().1.unwrap(), 7);
        // A string where a bool was expected: the id still comes out.
        let (id, response) = read_from_server::<bool>(&bytes).unwrap();
        assert_eq!(id, 300);
        let e = response.unwrap_err();
        assert_eq!(e.kind, std::io::ErrorKind::InvalidData);
        assert!(e.detail.starts_with("cannot decode the response"), "{e:?}");
    }
}
