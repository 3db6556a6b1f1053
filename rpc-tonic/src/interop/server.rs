//! The interop server: `grpc.testing.TestService` as interop-test-descriptions.md specifies
//! it, with counters of what it saw of its calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::echo::EchoMetadata;
use super::proto::test_service_server::{TestService, TestServiceServer};
use super::proto::*;

/// The largest payload the server makes on request (a bad size gets `INVALID_ARGUMENT`, not
/// an allocation of whatever a peer asked for).
pub const MAX_RESPONSE_SIZE: i32 = 16 << 20;

/// Responses a streaming call may have queued before the peer reads them.
const QUEUED_RESPONSES: usize = 4;

/// What the server saw of its calls: the cases that cancel check that the cancellation
/// reached the server.
#[derive(Debug, Default)]
pub struct Observed {
    started: AtomicUsize,
    finished: AtomicUsize,
    cancelled: AtomicUsize,
    changed: Notify,
}

impl Observed {
    /// Calls whose handler started.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Calls the server completed (with a response or a status of its own).
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// Calls that ended otherwise: the handler dropped, the request stream failed (reset by the
    /// client, its deadline passed), or the client stopped taking responses.
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until `done` holds (checked at every change).
    pub async fn until(&self, done: impl Fn(&Observed) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    fn call(self: &Arc<Self>) -> CallGuard {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        CallGuard { observed: self.clone(), finished: false }
    }
}

/// Counts its call as finished ([`CallGuard::finish`]) or, dropped before, cancelled.
struct CallGuard {
    observed: Arc<Observed>,
    finished: bool,
}

impl CallGuard {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let counter = if self.finished { &self.observed.finished } else { &self.observed.cancelled };
        counter.fetch_add(1, Ordering::SeqCst);
        self.observed.changed.notify_waiters();
    }
}

/// The interop suite's `TestService` (see [`super`] for what it answers).
#[derive(Debug, Clone, Default)]
pub struct TestServer {
    observed: Arc<Observed>,
}

impl TestServer {
    /// A server with fresh counters.
    pub fn new() -> TestServer {
        TestServer::default()
    }

    /// What it saw of its calls.
    pub fn observed(&self) -> Arc<Observed> {
        self.observed.clone()
    }

    /// The service to serve: `TestService` under [`EchoMetadata`].
    pub fn into_service(self) -> InteropService {
        EchoMetadata::new(TestServiceServer::new(self))
    }
}

/// What every level serves: the interop `TestService`, metadata echoed. A tower service of
/// `http::Request<tonic::body::Body>`, as tonic's generated servers are.
pub type InteropService = EchoMetadata<TestServiceServer<TestServer>>;

/// A payload of `size` zero bytes.
pub fn zeros(size: i32) -> Result<Payload, Status> {
    if !(0..=MAX_RESPONSE_SIZE).contains(&size) {
        return Err(Status::invalid_argument(format!(
            "payload size {size} outside 0..={MAX_RESPONSE_SIZE}"
        )));
    }
    Ok(Payload {
        r#type: PayloadType::Compressable as i32,
        body: Bytes::from(vec![0u8; size as usize]),
    })
}

/// The status a request asks for (`response_status` with a code other than OK).
fn asked_status(s: &Option<EchoStatus>) -> Option<Status> {
    let s = s.as_ref().filter(|s| s.code != 0)?;
    Some(Status::new(Code::from_i32(s.code), s.message.clone()))
}

/// Sends the responses `req` asks for, each after its interval; `Err` when the client stopped
/// taking them. `first` is told once one is queued.
async fn respond(
    req: &StreamingOutputCallRequest,
    tx: &mpsc::Sender<Result<StreamingOutputCallResponse, Status>>,
    first: &mut Option<oneshot::Sender<()>>,
) -> Result<(), ()> {
    for p in &req.response_parameters {
        if p.interval_us > 0 {
            tokio::time::sleep(Duration::from_micros(p.interval_us as u64)).await;
        }
        let r = zeros(p.size).map(|payload| StreamingOutputCallResponse { payload: Some(payload) });
        let fatal = r.is_err();
        tx.send(r).await.map_err(|_| ())?;
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        if fatal {
            return Err(());
        }
    }
    Ok(())
}

type ResponseStream = ReceiverStream<Result<StreamingOutputCallResponse, Status>>;

#[tonic::async_trait]
impl TestService for TestServer {
    async fn empty_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.observed.call().finish();
        Ok(Response::new(Empty {}))
    }

    async fn unary_call(&self, req: Request<SimpleRequest>) -> Result<Response<SimpleResponse>, Status> {
        let call = self.observed.call();
        let req = req.into_inner();
        let r = match asked_status(&req.response_status) {
            Some(status) => Err(status),
            None => zeros(req.response_size)
                .map(|p| Response::new(SimpleResponse { payload: Some(p), ..Default::default() })),
        };
        call.finish();
        r
    }

    type StreamingOutputCallStream = ResponseStream;

    async fn streaming_output_call(
        &self,
        req: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let call = self.observed.call();
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
        tokio::spawn(async move {
            if respond(&req, &tx, &mut None).await.is_err() {
                return;
            }
            if let Some(status) = asked_status(&req.response_status) {
                if tx.send(Err(status)).await.is_err() {
                    return;
                }
            }
            call.finish();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn streaming_input_call(
        &self,
        req: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let call = self.observed.call();
        let mut requests = req.into_inner();
        let mut size = 0usize;
        while let Some(r) = requests.message().await? {
            size += r.payload.map_or(0, |p| p.body.len());
        }
        let size = i32::try_from(size).map_err(|_| Status::out_of_range("aggregated size over i32"))?;
        call.finish();
        Ok(Response::new(StreamingInputCallResponse { aggregated_payload_size: size }))
    }

    type FullDuplexCallStream = ResponseStream;

    /// Serves each request as it comes. The response headers go with the first response (or
    /// the end of the call), not before: a call that never gets one — the sleeping server of
    /// `timeout_on_sleeping_server` — stays in its response future, where a client's deadline
    /// applies.
    async fn full_duplex_call(
        &self,
        req: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let call = self.observed.call();
        let mut requests = req.into_inner();
        let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
        let (first_tx, first) = oneshot::channel::<()>();
        let responses = ReceiverStream::new(rx);
        tokio::spawn(async move {
            let mut first = Some(first_tx);
            loop {
                let next = tokio::select! {
                    next = requests.message() => next,
                    // The client stopped taking responses (reset, deadline): `call` counts it.
                    () = tx.closed() => return,
                };
                match next {
                    Ok(Some(req)) => {
                        if let Some(status) = asked_status(&req.response_status) {
                            let _ = tx.send(Err(status)).await;
                            call.finish();
                            return;
                        }
                        if respond(&req, &tx, &mut first).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        call.finish();
                        return;
                    }
                    // Reset by the client (cancelled, deadline): `call` counts it.
                    Err(_) => return,
                }
            }
        });
        // The task says when it sent its first response (or ended: the sender dropped).
        let _ = first.await;
        Ok(Response::new(responses))
    }

    type HalfDuplexCallStream = ResponseStream;

    async fn half_duplex_call(
        &self,
        req: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let call = self.observed.call();
        let mut requests = req.into_inner();
        let mut all = Vec::new();
        while let Some(r) = requests.message().await? {
            all.push(r);
        }
        let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
        tokio::spawn(async move {
            for req in &all {
                if let Some(status) = asked_status(&req.response_status) {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                if respond(req, &tx, &mut None).await.is_err() {
                    return;
                }
            }
            call.finish();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented("grpc.testing.TestService/UnimplementedCall is not implemented"))
    }
}
