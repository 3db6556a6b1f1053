//! [`EchoMetadata`]: the interop server's echo of the initial and trailing metadata the
//! `custom_metadata` case sends (`x-grpc-test-echo-initial` back in the response headers,
//! `x-grpc-test-echo-trailing-bin` back in the trailers), as an HTTP layer over the generated
//! server, the way interop servers do it (the generated handlers cannot set trailers).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use super::{ECHO_INITIAL, ECHO_TRAILING};

/// Echoes the interop metadata of each request into its response (see the module).
#[derive(Debug, Clone)]
pub struct EchoMetadata<S> {
    inner: S,
}

impl<S> EchoMetadata<S> {
    /// Wraps a generated server.
    pub fn new(inner: S) -> Self {
        EchoMetadata { inner }
    }
}

impl<S: NamedService> NamedService for EchoMetadata<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for EchoMetadata<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let initial = req.headers().get(ECHO_INITIAL).cloned();
        let trailing = req.headers().get(ECHO_TRAILING).cloned();
        let response = self.inner.call(req);
        Box::pin(async move {
            let mut res = response.await?;
            if let Some(v) = initial {
                res.headers_mut().insert(ECHO_INITIAL, v);
            }
            let Some(v) = trailing else { return Ok(res) };
            if res.headers().contains_key("grpc-status") {
                // Trailers-only: these headers are the trailers.
                res.headers_mut().insert(ECHO_TRAILING, v);
                return Ok(res);
            }
            Ok(res.map(|body| Body::new(WithTrailer { inner: body, trailer: Some(v) })))
        })
    }
}

/// A body whose trailers gain one header (a trailers frame of its own if the body ends
/// without one).
struct WithTrailer {
    inner: Body,
    trailer: Option<HeaderValue>,
}

impl http_body::Body for WithTrailer {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(None) => {
                let Some(v) = self.trailer.take() else { return Poll::Ready(None) };
                let mut trailers = HeaderMap::new();
                trailers.insert(ECHO_TRAILING, v);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            other => return other,
        };
        match frame.into_trailers() {
            Ok(mut trailers) => {
                if let Some(v) = self.trailer.take() {
                    trailers.insert(ECHO_TRAILING, v);
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Err(data) => Poll::Ready(Some(Ok(data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailer.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
