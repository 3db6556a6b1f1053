//! A handler that panics fails its call with `INTERNAL`, not the connection.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::body::Body;
use crate::code::Code;
use crate::error::Status;
use crate::service::BoxFuture;

/// Polls the handler, turning a panic into an `INTERNAL` status.
pub(crate) struct CatchUnwind {
    inner: BoxFuture<'static, Result<Body, Status>>,
}

impl CatchUnwind {
    pub(crate) fn new(inner: BoxFuture<'static, Result<Body, Status>>) -> Self {
        CatchUnwind { inner }
    }
}

impl Future for CatchUnwind {
    type Output = Result<Body, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The handler is never polled again after a panic, so broken invariants inside it
        // cannot be observed: asserting unwind safety is sound here.
        match catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                Poll::Ready(Err(Status::new(Code::INTERNAL, format!("handler panicked: {what}"))))
            }
        }
    }
}
