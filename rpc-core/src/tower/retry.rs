//! Which failed calls may be sent again, for `tower::retry`.

use std::error::Error as StdError;
use std::time::Duration;

use crate::body::Body;
use crate::code::Code;
use crate::error::CallError;
use crate::service::BoxFuture;

use super::Call;

/// A `tower::retry::Policy` for [`Call`]s: sends a call again, up to `attempts` times in all,
/// when it failed in a way that a retry can mend —
///
/// - it was never sent, or the server never took it (the connection was going away, or was
///   down: [`CallError::ShuttingDown`], [`CallError::Unavailable`]; a server that is shutting
///   down says which calls it will still answer, and the others end as `ShuttingDown`):
///   always;
/// - its connection was lost while it was in flight ([`CallError::Connection`]), or the server
///   answered `UNAVAILABLE` ([`CallError::Status`]): only for a call marked
///   [`Call::idempotent`]. The server may have run it: a handler that wrote somewhere and then
///   found a dependency down answers `UNAVAILABLE` after its side effects, and running a
///   non-idempotent call twice is the caller's decision, not the policy's.
///
/// Deadlines, statuses of the application and errors of the request itself are final. Between
/// attempts it waits `backoff`, doubled each time up to `max_backoff` (default 1 s). Over a [`Balanced`](super::Balanced) client
/// each attempt picks its endpoint anew, so a call whose server died goes to another one.
///
/// Works over a bare [`crate::Client`] (errors are [`CallError`]) and over layers whose error
/// is a `tower::BoxError` (a `CallError` inside it is found by downcasting).
///
/// ```
/// use std::time::Duration;
/// use rpc_core::tower::RetryPolicy;
/// let policy = RetryPolicy::new(4).backoff(Duration::from_millis(5));
/// # let _ = policy;
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts left, the first included.
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl RetryPolicy {
    /// At most `attempts` attempts per call in all (the first included; 0 or 1: no retry),
    /// with no wait between them.
    pub fn new(attempts: u32) -> Self {
        RetryPolicy { attempts: attempts.max(1), backoff: Duration::ZERO, max_backoff: Duration::from_secs(1) }
    }

    /// Waits `first` before the first retry, twice as long before the next, and so on, up to
    /// the longest wait ([`RetryPolicy::max_backoff`]).
    pub fn backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// The longest wait between two attempts. Default 1 s.
    pub fn max_backoff(mut self, longest: Duration) -> Self {
        self.max_backoff = longest;
        self
    }

    fn next(&mut self, call: &Call, error: &CallError) -> Option<BoxFuture<'static, ()>> {
        if self.attempts <= 1 || !retryable(call, error) {
            return None;
        }
        self.attempts -= 1;
        let wait = self.backoff.min(self.max_backoff);
        self.backoff = self.backoff.saturating_mul(2);
        Some(Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }))
    }
}

/// True when sending `call` again after `error` is safe and may succeed.
pub fn retryable(call: &Call, error: &CallError) -> bool {
    match error {
        CallError::ShuttingDown | CallError::Unavailable(_) => true,
        CallError::Status(s) => s.code == Code::UNAVAILABLE && call.options.idempotent,
        CallError::Connection(_) => call.options.idempotent,
        _ => false,
    }
}

/// The `CallError` inside a boxed error (itself, or the source of a wrapper such as tower's
/// buffer error), if there is one.
pub(super) fn find_call_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a CallError> {
    let mut e: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(err) = e {
        if let Some(c) = err.downcast_ref::<CallError>() {
            return Some(c);
        }
        e = err.source();
    }
    None
}

impl ::tower::retry::Policy<Call, Body, CallError> for RetryPolicy {
    type Future = BoxFuture<'static, ()>;

    fn retry(&mut self, call: &mut Call, result: &mut Result<Body, CallError>) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(e) => self.next(call, e),
        }
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        // A body is reference-counted slices: the clone copies no payload.
        Some(call.clone())
    }
}

impl ::tower::retry::Policy<Call, Body, ::tower::BoxError> for RetryPolicy {
    type Future = BoxFuture<'static, ()>;

    fn retry(&mut self, call: &mut Call, result: &mut Result<Body, ::tower::BoxError>) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let found = find_call_error(error.as_ref())?.clone();
        self.next(call, &found)
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}
