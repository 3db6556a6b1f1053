//! `Body`: an encoded message and its attachments — what a request or a reply carries.

use bytes::Bytes;

use crate::payload::Payload;

/// A request's or a reply's contents: the encoded typed message (small, serialized by a codec)
/// and the attachments (large, sent as they are).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// The encoded message (arguments or result).
    pub message: Bytes,
    /// Attachments, in order.
    pub attachments: Vec<Payload>,
}

impl Clone for Body {
    /// A body of small messages, cloned per message (a stream of the same item), is cloned
    /// without going through the empty attachment list's `clone`.
    fn clone(&self) -> Self {
        let attachments = if self.attachments.is_empty() { Vec::new() } else { self.attachments.clone() };
        Body { message: self.message.clone(), attachments }
    }
}

impl Body {
    /// A body with a message and no attachments.
    pub fn message(message: Bytes) -> Self {
        Body { message, attachments: Vec::new() }
    }

    /// A body with a message and attachments.
    pub fn new(message: Bytes, attachments: Vec<Payload>) -> Self {
        Body { message, attachments }
    }

    /// Bytes of message and attachments together.
    pub fn len(&self) -> u64 {
        self.message.len() as u64 + self.attachments.iter().map(|a| a.len() as u64).sum::<u64>()
    }

    /// True when there is neither message nor attachment data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
