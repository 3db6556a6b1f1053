//! The lending receive: [`StreamReceiver::recv_ref`] shows the next message where it lies, a
//! small one in the batch frame it came in, instead of cutting out a `Bytes` for it (an atomic
//! increment, and a decrement when the caller drops it: for 64-byte messages, the largest cost
//! of receiving them). What was lent is taken at the receiver's next step: then the batch moves
//! past it, and its credit is counted as `recv`'s would be. A batch is counted, as `recv` counts
//! it, once its last message is lent, but for that message, which counts at the next step.

use std::future::poll_fn;

use super::StreamReceiver;
use crate::body::Body;
use crate::error::CallError;
use crate::payload::Payload;

/// A message that [`StreamReceiver::recv_ref`] lends: its bytes and its attachments, borrowed
/// from the receiver until its next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// The encoded message.
    pub message: &'a [u8],
    /// Attachments, in order (none for a message that came in a batch).
    pub attachments: &'a [Payload],
}

impl MessageRef<'_> {
    /// Bytes in the message and its attachments.
    pub fn len(&self) -> u64 {
        self.message.len() as u64 + self.attachments.iter().map(|a| a.len() as u64).sum::<u64>()
    }

    /// True for an empty message without attachments.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as an owned body (its `message` copied, its attachments shared).
    pub fn to_body(&self) -> Body {
        Body::new(bytes::Bytes::copy_from_slice(self.message), self.attachments.to_vec())
    }
}

/// What the receiver lent last.
#[derive(Debug, Default)]
pub(super) enum Lent {
    #[default]
    Nothing,
    /// The first message of `packed`.
    Packed,
    /// A message that came in a frame of its own.
    Body(Body),
}

/// The next message, counted as taken.
pub(super) enum Taken {
    /// The first message of `packed`, left there.
    Packed,
    /// A message that came in a frame of its own.
    Body(Body),
}

impl StreamReceiver {
    /// The next message, lent: as [`recv`](StreamReceiver::recv), but a message that came in a
    /// batch of small ones is shown where it lies instead of cut out as `Bytes` of its own, so
    /// that a stream of small messages costs no atomic operation per message. The message is
    /// taken (its credit counted) when the receiver is next used, or dropped.
    ///
    /// ```no_run
    /// # async fn f(mut rx: rpc_core::StreamReceiver) -> Result<(), rpc_core::CallError> {
    /// let mut total = 0;
    /// while let Some(message) = rx.recv_ref().await {
    ///     total += message?.message.len();
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv_ref(&mut self) -> Option<Result<MessageRef<'_>, CallError>> {
        match poll_fn(|cx| self.poll_take(cx)).await? {
            Ok(Taken::Packed) => {
                // The last of its batch: the messages before it count now, as `recv` counts a
                // batch taken whole, so that a caller working on it holds back no more credit
                // than this one message's.
                self.count_packed_once_left(1);
                self.lent = Lent::Packed;
                let message = self.packed.first().expect("the next message is packed");
                Some(Ok(MessageRef { message, attachments: &[] }))
            }
            Ok(Taken::Body(body)) => {
                self.lent = Lent::Body(body);
                let Lent::Body(body) = &self.lent else { unreachable!("just lent") };
                Some(Ok(MessageRef { message: &body.message, attachments: &body.attachments }))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Takes what was lent: a batch's message is skipped (and the batch counted once none is
    /// left), a whole one dropped.
    pub(super) fn settle_lent(&mut self) {
        if let Lent::Packed = std::mem::take(&mut self.lent) {
            self.packed.skip_first();
            self.count_packed_once_left(0);
        }
    }
}
