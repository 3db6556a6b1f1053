//! The client cases of interop-test-descriptions.md, each asserting what the description
//! asserts (panicking with what differed).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataValue, BinaryMetadataValue};
use tonic::{Code, Request, Status};

use super::proto::test_service_client::TestServiceClient;
use super::proto::unimplemented_service_client::UnimplementedServiceClient;
use super::proto::*;
use super::server::{zeros, Observed};
use super::{InteropChannel, ECHO_INITIAL, ECHO_TRAILING};

/// `large_unary`'s request and response payload sizes.
pub const LARGE_REQUEST: i32 = 271_828;
/// See [`LARGE_REQUEST`].
pub const LARGE_RESPONSE: i32 = 314_159;
/// `client_streaming`'s request payload sizes (and `ping_pong`'s).
pub const REQUEST_SIZES: [i32; 4] = [27_182, 8, 1_828, 45_904];
/// `server_streaming`'s response payload sizes (and `ping_pong`'s).
pub const RESPONSE_SIZES: [i32; 4] = [31_415, 9, 2_653, 58_979];
/// Calls of `concurrent_large_unary`.
pub const CONCURRENT_CALLS: usize = 1_000;

const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: [u8; 3] = [0xab, 0xab, 0xab];
const STATUS_MESSAGE: &str = "test status message";

type Client = TestServiceClient<InteropChannel>;

fn client(channel: &InteropChannel) -> Client {
    TestServiceClient::new(channel.clone())
}

fn payload(size: i32) -> Payload {
    zeros(size).expect("a valid size")
}

/// Asserts a response payload: `size` zero bytes of type COMPRESSABLE.
fn assert_payload(p: Option<&Payload>, size: i32, what: &str) {
    let p = p.unwrap_or_else(|| panic!("{what}: response without payload"));
    assert_eq!(p.r#type, PayloadType::Compressable as i32, "{what}: payload type");
    assert_eq!(p.body.len(), size as usize, "{what}: payload size");
    assert!(p.body.iter().all(|&b| b == 0), "{what}: payload not all zeros");
}

fn ok<T>(r: Result<T, Status>, what: &str) -> T {
    r.unwrap_or_else(|s| panic!("{what}: failed with {s:?}"))
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_type: PayloadType::Compressable as i32,
        response_size: LARGE_RESPONSE,
        payload: Some(payload(LARGE_REQUEST)),
        ..Default::default()
    }
}

fn duplex_request(response: i32, request: i32) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_type: PayloadType::Compressable as i32,
        response_parameters: vec![ResponseParameters { size: response, ..Default::default() }],
        payload: Some(payload(request)),
        ..Default::default()
    }
}

/// `empty_unary`: an `Empty` for an `Empty`.
pub async fn empty_unary(channel: &InteropChannel, _: &Observed) {
    let r = ok(client(channel).empty_call(Empty {}).await, "EmptyCall");
    assert_eq!(r.into_inner(), Empty {});
}

/// `large_unary`: a 271,828-byte request, a 314,159-byte response.
pub async fn large_unary(channel: &InteropChannel, _: &Observed) {
    let r = ok(client(channel).unary_call(large_request()).await, "UnaryCall");
    assert_payload(r.get_ref().payload.as_ref(), LARGE_RESPONSE, "large_unary");
}

/// `client_streaming`: four requests (27,182 + 8 + 1,828 + 45,904 bytes), their aggregated
/// size (74,922) back.
pub async fn client_streaming(channel: &InteropChannel, _: &Observed) {
    let requests = REQUEST_SIZES.map(|n| StreamingInputCallRequest {
        payload: Some(payload(n)),
        ..Default::default()
    });
    let r = ok(
        client(channel).streaming_input_call(futures::stream::iter(requests)).await,
        "StreamingInputCall",
    );
    assert_eq!(r.get_ref().aggregated_payload_size, 74_922);
}

/// `server_streaming`: four responses of 31,415, 9, 2,653 and 58,979 bytes, in order, then OK.
pub async fn server_streaming(channel: &InteropChannel, _: &Observed) {
    let req = StreamingOutputCallRequest {
        response_type: PayloadType::Compressable as i32,
        response_parameters: RESPONSE_SIZES
            .iter()
            .map(|&size| ResponseParameters { size, ..Default::default() })
            .collect(),
        ..Default::default()
    };
    let mut stream = ok(client(channel).streaming_output_call(req).await, "StreamingOutputCall").into_inner();
    for (i, &size) in RESPONSE_SIZES.iter().enumerate() {
        let m = ok(stream.message().await, "response").unwrap_or_else(|| panic!("stream ended after {i} responses"));
        assert_payload(m.payload.as_ref(), size, &format!("response {i}"));
    }
    assert!(ok(stream.message().await, "end of stream").is_none(), "more than 4 responses");
}

/// `ping_pong`: four request/response pairs on one full-duplex call, each response read
/// before the next request is sent; then the client half-closes and the call ends OK.
pub async fn ping_pong(channel: &InteropChannel, _: &Observed) {
    let (tx, rx) = mpsc::channel(1);
    tx.send(duplex_request(RESPONSE_SIZES[0], REQUEST_SIZES[0])).await.expect("queue");
    let mut stream = ok(client(channel).full_duplex_call(ReceiverStream::new(rx)).await, "FullDuplexCall").into_inner();
    for i in 0..4 {
        if i > 0 {
            tx.send(duplex_request(RESPONSE_SIZES[i], REQUEST_SIZES[i])).await.expect("queue");
        }
        let m = ok(stream.message().await, "response").unwrap_or_else(|| panic!("stream ended after {i} responses"));
        assert_payload(m.payload.as_ref(), RESPONSE_SIZES[i], &format!("response {i}"));
    }
    drop(tx);
    assert!(ok(stream.message().await, "end of stream").is_none(), "a response after the last");
}

/// `empty_stream`: a full-duplex call the client half-closes at once ends OK with no
/// response.
pub async fn empty_stream(channel: &InteropChannel, _: &Observed) {
    let mut stream = ok(
        client(channel).full_duplex_call(futures::stream::empty()).await,
        "FullDuplexCall",
    )
    .into_inner();
    assert!(ok(stream.message().await, "end of stream").is_none(), "a response to nothing");
}

fn with_echo<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(ECHO_INITIAL, MetadataValue::from_static(INITIAL_VALUE));
    req.metadata_mut().insert_bin(ECHO_TRAILING, BinaryMetadataValue::from_bytes(&TRAILING_VALUE));
    req
}

/// `custom_metadata`: the initial metadata a UnaryCall and a FullDuplexCall send comes back
/// in the response headers, the trailing-bin one in the trailers.
pub async fn custom_metadata(channel: &InteropChannel, _: &Observed) {
    // Unary: tonic merges trailers into the response's metadata.
    let r = ok(client(channel).unary_call(with_echo(large_request())).await, "UnaryCall");
    assert_payload(r.get_ref().payload.as_ref(), LARGE_RESPONSE, "unary");
    assert_eq!(
        r.metadata().get(ECHO_INITIAL).map(|v| v.as_bytes()),
        Some(INITIAL_VALUE.as_bytes()),
        "unary: initial metadata"
    );
    assert_eq!(
        r.metadata().get_bin(ECHO_TRAILING).and_then(|v| v.to_bytes().ok()),
        Some(Bytes::from_static(&TRAILING_VALUE)),
        "unary: trailing metadata"
    );

    // Full duplex: headers and trailers apart.
    let req = with_echo(futures::stream::iter([duplex_request(LARGE_RESPONSE, LARGE_REQUEST)]));
    let r = ok(client(channel).full_duplex_call(req).await, "FullDuplexCall");
    assert_eq!(
        r.metadata().get(ECHO_INITIAL).map(|v| v.as_bytes()),
        Some(INITIAL_VALUE.as_bytes()),
        "full duplex: initial metadata"
    );
    let mut stream = r.into_inner();
    let m = ok(stream.message().await, "response").expect("one response");
    assert_payload(m.payload.as_ref(), LARGE_RESPONSE, "full duplex");
    assert!(ok(stream.message().await, "end of stream").is_none(), "one response only");
    let trailers = ok(stream.trailers().await, "trailers").expect("trailers");
    assert_eq!(
        trailers.get_bin(ECHO_TRAILING).and_then(|v| v.to_bytes().ok()),
        Some(Bytes::from_static(&TRAILING_VALUE)),
        "full duplex: trailing metadata"
    );
}

fn assert_status(s: &Status, what: &str) {
    assert_eq!(s.code(), Code::Unknown, "{what}: code ({s:?})");
    assert_eq!(s.message(), STATUS_MESSAGE, "{what}: message");
}

/// `status_code_and_message`: the status a request asks for (code 2, "test status message")
/// comes back as the call's status, unary and full duplex.
pub async fn status_code_and_message(channel: &InteropChannel, _: &Observed) {
    let echo = EchoStatus { code: 2, message: STATUS_MESSAGE.into() };
    let req = SimpleRequest { response_status: Some(echo.clone()), ..Default::default() };
    match client(channel).unary_call(req).await {
        Ok(r) => panic!("UnaryCall: succeeded ({r:?}) instead of failing with the status asked for"),
        Err(s) => assert_status(&s, "UnaryCall"),
    }
    let req = StreamingOutputCallRequest { response_status: Some(echo), ..Default::default() };
    let status = match client(channel).full_duplex_call(futures::stream::iter([req])).await {
        Err(s) => s,
        Ok(r) => match r.into_inner().message().await {
            Err(s) => s,
            Ok(m) => panic!("FullDuplexCall: {m:?} instead of the status asked for"),
        },
    };
    assert_status(&status, "FullDuplexCall");
}

/// `unimplemented_method`: `TestService/UnimplementedCall` fails with UNIMPLEMENTED.
pub async fn unimplemented_method(channel: &InteropChannel, _: &Observed) {
    let s = client(channel).unimplemented_call(Empty {}).await.expect_err("UnimplementedCall succeeded");
    assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
}

/// `unimplemented_service`: a method of a service the server does not have fails with
/// UNIMPLEMENTED.
pub async fn unimplemented_service(channel: &InteropChannel, _: &Observed) {
    let s = UnimplementedServiceClient::new(channel.clone())
        .unimplemented_call(Empty {})
        .await
        .expect_err("UnimplementedService/UnimplementedCall succeeded");
    assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
}

/// `cancel_after_begin`: a StreamingInputCall cancelled (its future dropped) once the server
/// has it, before any request: the call ends cancelled, and the server lets go of the call
/// while the client's request stream is still open (only the cancellation can end it there),
/// and the connection carries on.
///
/// tonic's server reads a request stream reset with CANCEL as its end (`Streaming` yields
/// `None`), so a handler cannot tell a cancelled upload from a complete one: the server's
/// counters accept either.
pub async fn cancel_after_begin(channel: &InteropChannel, observed: &Observed) {
    let (tx, rx) = mpsc::channel::<StreamingInputCallRequest>(1);
    let mut c = client(channel);
    let call = tokio::spawn(async move { c.streaming_input_call(ReceiverStream::new(rx)).await });
    observed.until(|o| o.started() == 1).await;
    call.abort();
    let ended = call.await;
    assert!(matches!(&ended, Err(e) if e.is_cancelled()), "the call was not cancelled: {ended:?}");
    observed.until(|o| o.finished() + o.cancelled() == 1).await;
    drop(tx);
    // The connection carries on.
    empty_unary(channel, observed).await;
}

/// `cancel_after_first_response`: a FullDuplexCall cancelled after its first response: the
/// call ends cancelled, the server lets go of it, and the connection carries on.
pub async fn cancel_after_first_response(channel: &InteropChannel, observed: &Observed) {
    let (tx, rx) = mpsc::channel(1);
    tx.send(duplex_request(RESPONSE_SIZES[0], REQUEST_SIZES[0])).await.expect("queue");
    let mut c = client(channel);
    let (got_tx, got) = tokio::sync::oneshot::channel();
    let call = tokio::spawn(async move {
        let mut stream = ok(c.full_duplex_call(ReceiverStream::new(rx)).await, "FullDuplexCall").into_inner();
        let first = stream.message().await;
        let _ = got_tx.send(first);
        // Holds the call open until cancelled.
        std::future::pending::<()>().await;
    });
    let first = ok(got.await.expect("the call's task"), "first response").expect("a first response");
    assert_payload(first.payload.as_ref(), RESPONSE_SIZES[0], "first response");
    call.abort();
    let ended = call.await;
    assert!(matches!(&ended, Err(e) if e.is_cancelled()), "the call was not cancelled: {ended:?}");
    // The request side ends with the call (tonic has the request stream in a task of its own).
    drop(tx);
    observed.until(|o| o.started() == 1 && o.finished() + o.cancelled() == 1).await;
    empty_unary(channel, observed).await;
}

/// `timeout_on_sleeping_server`: a FullDuplexCall with a 1 ms deadline whose server never
/// answers (the client neither half-closes) fails with DEADLINE_EXCEEDED, and the server lets
/// go of the call.
///
/// tonic reports a deadline its own timeout enforces (client or server side) as CANCELLED with
/// the message "Timeout expired" (`tonic::TimeoutExpired`), not DEADLINE_EXCEEDED; that is
/// accepted too, by its message.
pub async fn timeout_on_sleeping_server(channel: &InteropChannel, observed: &Observed) {
    let req = StreamingOutputCallRequest { payload: Some(payload(REQUEST_SIZES[0])), ..Default::default() };
    let requests = futures::stream::iter([req]).chain(futures::stream::pending());
    let mut req = Request::new(requests);
    req.set_timeout(Duration::from_millis(1));
    let status = match client(channel).full_duplex_call(req).await {
        Err(s) => s,
        Ok(r) => match r.into_inner().message().await {
            Err(s) => s,
            Ok(m) => panic!("a sleeping server answered: {m:?}"),
        },
    };
    let tonic_timeout = status.code() == Code::Cancelled && status.message().contains("Timeout expired");
    assert!(
        status.code() == Code::DeadlineExceeded || tonic_timeout,
        "not DEADLINE_EXCEEDED: {status:?}"
    );
    // (A reset reads as the request stream's end on tonic's server: see cancel_after_begin.)
    // The server holds nothing of the call: it let go of it, or (a zcrpc server, level 2)
    // never started its handler, the deadline having passed when the request arrived.
    observed.until(|o| o.started() <= 1 && o.finished() + o.cancelled() == o.started()).await;
}

/// 1,000 `large_unary` calls at once on one channel, every one answered in full.
pub async fn concurrent_large_unary(channel: &InteropChannel, _: &Observed) {
    let request = large_request();
    let calls: Vec<_> = (0..CONCURRENT_CALLS)
        .map(|_| {
            let mut c = client(channel);
            let req = request.clone();
            tokio::spawn(async move { c.unary_call(req).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let r = ok(call.await.expect("call task"), &format!("call {i}"));
        assert_payload(r.get_ref().payload.as_ref(), LARGE_RESPONSE, &format!("call {i}"));
    }
}
