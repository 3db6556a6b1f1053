//! Bodies polled in the connection's turn. tonic encodes each message into a new buffer when
//! its body is polled; rpc-tonic polls a body that has data ready only in the connection's turn
//! ([`rpc_core::StreamSender::writer_turn`], [`rpc_core::Client::writer_turn`]), once the writer
//! has taken what was queued before, as h2 polls one only when its stream has window. A window
//! of large requests or answers is then made as fast as it goes out, not all at once.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use http_body::{Body as HttpBody, Frame};
use rpc_core::WriterTurn;

/// What a body's poll gives.
pub(crate) type Next<B> = Option<Result<Frame<bytes::Bytes>, <B as HttpBody>::Error>>;

/// The next frame of `body`, polled in the turn `turn` gives while it has one ready; one made
/// later (the body was waiting for its service) is made when it comes, without a turn.
pub(crate) async fn next_in_turn<B>(turn: impl Future<Output = WriterTurn>, body: &mut B) -> Next<B>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin,
{
    let turn = turn.await;
    match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
        Poll::Ready(next) => next,
        Poll::Pending => {
            // A body that waits for its service must not hold up the connection's others.
            drop(turn);
            poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        }
    }
}
