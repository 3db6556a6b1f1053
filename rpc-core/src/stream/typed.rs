//! Typed ends of a stream, as `#[service]` methods take and generated clients return them:
//! [`Sink`] sends items, [`Source`] yields them. Each item is one stream message: its typed
//! value through the codec `C`, plus any attachments, which travel as they are.

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use crate::codec::{Decode, Encode, EncodeBuffer, Postcard};
use crate::error::CallError;
use crate::payload::Payload;

use super::{StreamReceiver, StreamSender};

/// An item received with its attachments, or why the stream ended badly.
pub type ItemWith<T> = Result<(T, Vec<Payload>), CallError>;

/// Sends a stream of `T`s (encoded with `C`), each when the receiver's credit allows.
///
/// In a `#[service]` trait, a `Sink<T>` argument makes the method server-streaming: the
/// implementation sends items into it, and the stream ends when the method returns (with its
/// error, if it returns one). The generated client returns the matching [`Source`].
pub struct Sink<T, C = Postcard> {
    inner: StreamSender,
    /// Small items are encoded here, back to back, sharing allocations.
    buf: EncodeBuffer,
    _types: PhantomData<fn(T) -> C>,
}

impl<T, C: Encode<T>> Sink<T, C> {
    /// Typed view of an untyped sender.
    pub fn new(inner: StreamSender) -> Self {
        Sink { inner, buf: EncodeBuffer::new(), _types: PhantomData }
    }

    /// Sends `item`. Waits while the receiver has a full window unconsumed; fails when the call
    /// is over (cancelled, answered, expired, connection lost).
    pub async fn send(&mut self, item: T) -> Result<(), CallError> {
        self.send_with(item, Vec::new()).await
    }

    /// Sends `item` with `attachments` (large data, sent without a copy).
    pub async fn send_with(&mut self, item: T, attachments: Vec<Payload>) -> Result<(), CallError> {
        let body = C::encode_body_in(&item, attachments, &mut self.buf)
            .map_err(|e| CallError::Codec(format!("cannot encode a stream item: {e}")))?;
        self.inner.send(body).await
    }

    /// Sends every item `items` yields, in order, stepping the connection once per run of
    /// items instead of once per item ([`StreamSender::send_all`]): the way to stream many small
    /// items fast. Stops at the first item that does not encode or cannot go.
    pub async fn send_all<I: IntoIterator<Item = T>>(&mut self, items: I) -> Result<(), CallError> {
        let mut failed = None;
        let buf = &mut self.buf;
        let bodies = items.into_iter().map_while(|item| match C::encode_body_in(&item, Vec::new(), buf) {
            Ok(body) => Some(body),
            Err(e) => {
                failed = Some(CallError::Codec(format!("cannot encode a stream item: {e}")));
                None
            }
        });
        self.inner.send_all(bodies).await?;
        failed.map_or(Ok(()), Err)
    }

    /// Client: ends the stream cleanly (so does dropping the sink while the call's other end
    /// lives). The server's stream ends when its method returns.
    pub fn finish(&mut self) {
        self.inner.finish();
    }

    /// The untyped sender.
    pub fn into_inner(self) -> StreamSender {
        self.inner
    }
}

impl<T, C> fmt::Debug for Sink<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Sink").field(&self.inner).finish()
    }
}

/// Yields a stream of `T`s (decoded with `C`).
///
/// In a `#[service]` trait, a `Source<T>` argument makes the method client-streaming (with a
/// [`Sink`] too: bidirectional): the implementation reads the client's items from it. The
/// generated client returns the matching [`Sink`].
pub struct Source<T, C = Postcard> {
    inner: StreamReceiver,
    _types: PhantomData<fn() -> (T, C)>,
}

impl<T, C: Decode<T>> Source<T, C> {
    /// Typed view of an untyped receiver.
    pub fn new(inner: StreamReceiver) -> Self {
        Source { inner, _types: PhantomData }
    }

    /// The next item; `None` once the stream ended cleanly; an error when it ended otherwise or
    /// an item does not decode. Attachments, if any, are dropped: see [`Source::recv_with`].
    pub async fn recv(&mut self) -> Option<Result<T, CallError>> {
        Some(self.recv_with().await?.map(|(item, _)| item))
    }

    /// The next item with its attachments.
    pub async fn recv_with(&mut self) -> Option<ItemWith<T>> {
        std::future::poll_fn(|cx| self.poll_recv_with(cx)).await
    }

    /// Polls for the next item with its attachments (see [`Source::recv_with`]).
    pub fn poll_recv_with(&mut self, cx: &mut Context<'_>) -> Poll<Option<ItemWith<T>>> {
        self.inner.poll_recv(cx).map(|next| {
            next.map(|body| {
                C::decode_body(body?).map_err(|e| CallError::Codec(format!("cannot decode a stream item: {e}")))
            })
        })
    }

    /// Every remaining item, in order (stops at the first error).
    pub async fn collect(mut self) -> Result<Vec<T>, CallError> {
        let mut out = Vec::new();
        while let Some(item) = self.recv().await {
            out.push(item?);
        }
        Ok(out)
    }

    /// Client: waits for the server's response headers (see
    /// [`StreamReceiver::response_headers`]); no item is lost meanwhile.
    pub async fn response_headers(&mut self) -> crate::Metadata {
        self.inner.response_headers().await
    }

    /// The server's response headers, once they arrived (see [`StreamReceiver::headers`]).
    pub fn headers(&self) -> Option<&crate::Metadata> {
        self.inner.headers()
    }

    /// The server's trailers, once the stream ended (see [`StreamReceiver::trailers`]).
    pub fn trailers(&self) -> Option<&crate::Metadata> {
        self.inner.trailers()
    }

    /// The untyped receiver.
    pub fn into_inner(self) -> StreamReceiver {
        self.inner
    }
}

impl<T, C> fmt::Debug for Source<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Source").field(&self.inner).finish()
    }
}
