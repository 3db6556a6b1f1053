//! Typed ends of a stream, as `#[service]` methods take and generated clients return them:
//! [`Sink`] sends items, [`Source`] yields them. Each item is one stream message: its typed
//! value through the codec `C`, plus any attachments, which travel as they are.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::task::{ready, Context, Poll};

use bytes::buf::Take;
use bytes::{Bytes, BytesMut};

use super::lent::Taken;
use super::{StreamReceiver, StreamSender, SEND_ALL_RUN};
use crate::body::Body;
use crate::codec::{CodecError, Decode, Encode, EncodeBuffer, Postcard};
use crate::conn::LentMessage;
use crate::error::CallError;
use crate::frame::INLINE_MESSAGE_MAX;
use crate::payload::Payload;

/// A run of [`Sink::send_all`] ends once its packed items take this many bytes.
const PACKED_RUN_MAX: usize = 64 << 10;

/// A sink keeps at most this much room for packed items, and for this many items of a run,
/// between calls of `send_all` (so that an idle sink holds little).
const PACKED_KEPT: usize = 16 << 10;
const RUN_KEPT: usize = 64;

/// An item received with its attachments, or why the stream ended badly.
pub type ItemWith<T> = Result<(T, Vec<Payload>), CallError>;

/// Sends a stream of `T`s (encoded with `C`), each when the receiver's credit allows.
///
/// In a `#[service]` trait, a `Sink<T>` argument makes the method server-streaming: the
/// implementation sends items into it, and the stream ends when the method returns (with its
/// error, if it returns one). The generated client returns the matching [`Source`].
pub struct Sink<T, C = Postcard> {
    inner: StreamSender,
    /// Items sent one at a time, and `send_all`'s larger ones, are encoded here, back to back,
    /// sharing allocations.
    buf: EncodeBuffer,
    /// `send_all`'s run of small items, encoded back to back: the connection copies each into
    /// its frames from here.
    packed: BytesMut,
    /// The run's items, in order.
    run: Vec<RunItem>,
    _types: PhantomData<fn(T) -> C>,
}

/// An item of [`Sink::send_all`]'s run.
enum RunItem {
    /// Packed: its message ends here in `packed` (and starts where the one before ended).
    Packed(usize),
    /// A body of its own (a larger message, or attachments).
    Body(Body),
}

impl<T, C: Encode<T>> Sink<T, C> {
    /// Typed view of an untyped sender.
    pub fn new(inner: StreamSender) -> Self {
        Sink { inner, buf: EncodeBuffer::new(), packed: BytesMut::new(), run: Vec::new(), _types: PhantomData }
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
    /// items fast. A small item (a message of at most 512 bytes, no attachments) is encoded
    /// into one buffer with the rest of its run, and the connection copies it into its frames
    /// from there: no allocation and no `Bytes` per item. Stops at the first item that does not
    /// encode (the items before it are sent) or cannot go.
    pub async fn send_all<I: IntoIterator<Item = T>>(&mut self, items: I) -> Result<(), CallError> {
        self.inner.still_open()?;
        let mut items = items.into_iter();
        let result = loop {
            let failed = self.encode_run(&mut items);
            if self.run.is_empty() {
                break failed.map_or(Ok(()), Err);
            }
            let packed = &self.packed[..];
            let mut start = 0;
            let mut queue: VecDeque<LentMessage<'_>> = (self.run.drain(..))
                .map(|item| match item {
                    RunItem::Packed(end) => {
                        let message = &packed[start..end];
                        start = end;
                        LentMessage::Message(message)
                    }
                    RunItem::Body(body) => LentMessage::Owned(body),
                })
                .collect();
            if let Err(e) = self.inner.send_lent_queue(&mut queue).await {
                break Err(e);
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        if self.packed.capacity() > PACKED_KEPT || self.run.capacity() > RUN_KEPT {
            // A long run's room goes back; a sink sending a few items at a time keeps its own.
            self.packed = BytesMut::new();
            self.run = Vec::new();
        }
        result
    }

    /// Encodes the next run of `items` into `run` (and `packed`): up to [`SEND_ALL_RUN`] items,
    /// or [`PACKED_RUN_MAX`] bytes packed. The error of an item that does not encode ends the
    /// run before it.
    fn encode_run(&mut self, items: &mut impl Iterator<Item = T>) -> Option<CallError> {
        self.packed.clear();
        self.run.clear();
        while self.run.len() < SEND_ALL_RUN && self.packed.len() < PACKED_RUN_MAX {
            let item = items.next()?;
            match C::encode_packed(&item, &mut self.packed, INLINE_MESSAGE_MAX, &mut self.buf) {
                Ok(None) => self.run.push(RunItem::Packed(self.packed.len())),
                Ok(Some(body)) => self.run.push(RunItem::Body(body)),
                Err(e) => return Some(CallError::Codec(format!("cannot encode a stream item: {e}"))),
            }
        }
        None
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
        std::future::poll_fn(|cx| self.poll_decode(cx, C::decode_in, |body| Ok(C::decode_body(body)?.0))).await
    }

    /// The next item with its attachments.
    pub async fn recv_with(&mut self) -> Option<ItemWith<T>> {
        std::future::poll_fn(|cx| self.poll_recv_with(cx)).await
    }

    /// Polls for the next item with its attachments (see [`Source::recv_with`]).
    pub fn poll_recv_with(&mut self, cx: &mut Context<'_>) -> Poll<Option<ItemWith<T>>> {
        self.poll_decode(cx, |message| Ok((C::decode_in(message)?, Vec::new())), C::decode_body)
    }

    /// Polls for the next message, decoded by `packed` when it lies in a batch (where it lies:
    /// see [`Decode::decode_in`]), else by `whole`.
    fn poll_decode<R>(
        &mut self,
        cx: &mut Context<'_>,
        packed: impl FnOnce(Take<&mut Bytes>) -> Result<R, CodecError>,
        whole: impl FnOnce(Body) -> Result<R, CodecError>,
    ) -> Poll<Option<Result<R, CallError>>> {
        let decoded = match ready!(self.inner.poll_take(cx)) {
            Some(Ok(Taken::Packed)) => self.inner.take_packed_with(packed),
            Some(Ok(Taken::Body(body))) => whole(body),
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => return Poll::Ready(None),
        };
        Poll::Ready(Some(decoded.map_err(|e| CallError::Codec(format!("cannot decode a stream item: {e}")))))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CallMode;
    use crate::service::{BoxFuture, ServerRequest, Service};
    use crate::transport::mem;
    use crate::{CallOptions, Client, ClientConfig, Server, Status};

    /// Reads its request stream through and answers how many messages came.
    struct Count;

    impl Service for Count {
        fn call(&self, mut req: ServerRequest) -> BoxFuture<'static, Result<Body, Status>> {
            Box::pin(async move {
                let (_tx, mut rx) = req.stream.take().expect("a streaming call").split();
                let mut n = 0u64;
                while let Some(m) = rx.recv().await {
                    m.map_err(|e| Status::internal(e.to_string()))?;
                    n += 1;
                }
                Ok(Body::message(Bytes::copy_from_slice(&n.to_le_bytes())))
            })
        }
    }

    /// The room a sink keeps between runs is bounded: a long run of small items gives its
    /// packed buffer and its run back, a short one keeps its own (no allocation per run).
    #[tokio::test]
    async fn a_sink_keeps_little_room_between_runs() {
        let (a, b) = mem::pair();
        tokio::spawn(Server::builder().build(Count).serve_connection(b));
        let client = Client::connect(a, ClientConfig::default()).await.unwrap();
        let (tx, rx) = client.open(1, Body::default(), CallMode::CLIENT_STREAMING, CallOptions::default()).await.unwrap().split();
        let mut sink: Sink<Vec<u8>> = Sink::new(tx);

        // 20,000 items of 100 bytes: runs of 256 items, about 26 KB packed each.
        sink.send_all((0..20_000).map(|_| vec![7u8; 100])).await.unwrap();
        assert!(sink.packed.capacity() <= PACKED_KEPT, "{} bytes of packed room kept", sink.packed.capacity());
        assert!(sink.run.capacity() <= RUN_KEPT, "room for {} run items kept", sink.run.capacity());

        // A few items at a time: the room stays, the same allocation each run.
        sink.send_all((0..3).map(|_| vec![7u8; 100])).await.unwrap();
        let kept = (sink.packed.capacity(), sink.run.capacity());
        assert!(kept.0 > 0 && kept.1 > 0, "a short run kept no room");
        for _ in 0..10 {
            sink.send_all((0..3).map(|_| vec![7u8; 100])).await.unwrap();
            assert_eq!((sink.packed.capacity(), sink.run.capacity()), kept, "a short run reallocated");
        }

        // Every item arrived.
        let (mut tx, mut rx) = (sink.inner, rx);
        tx.finish();
        let count = rx.recv().await.expect("the answer").expect("the answer");
        assert_eq!(u64::from_le_bytes(count.message[..].try_into().unwrap()), 20_000 + 11 * 3);
    }
}
