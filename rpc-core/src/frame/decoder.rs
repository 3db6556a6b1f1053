//! `FrameDecoder`: cuts frames out of a receive buffer, checking every length against the
//! limits before anything is allocated, and handing out message and attachments as slices of
//! that buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::align::{pad_len, ATTACHMENT_ALIGN};
use super::header::{FrameHeader, FrameKind, HEADER_LEN};
use super::hello::{Hello, HELLO_LEN};
use super::piece::{Pieces, Stripped, FLAG_PIECED};
use super::raw::RawFrame;
use super::Frame;
use crate::error::DecodeError;

/// What this side accepts in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message + payload.
    pub max_frame: u32,
    /// Most attachments.
    pub max_attachments: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame: 256 << 20, max_attachments: 1024 }
    }
}

/// A buffer frames are cut from: the driver's own [`BytesMut`], or a [`Bytes`] chunk a
/// transport received into memory of its own (an io_uring provided-buffer ring), whose frames
/// then stay slices of that memory.
pub trait InputBuf: Buf + std::ops::Deref<Target = [u8]> {
    /// Takes the first `n` bytes as a shared, immutable slice (no copy).
    fn take_frozen(&mut self, n: usize) -> Bytes;

    /// Told that `bytes` of whole frames sent between a pieced frame's pieces were copied out of
    /// the pieced frame's buffer (where they had landed, in the room the rest of its body will
    /// take). The driver's input counts them in `recv_copied_bytes`; the default ignores it.
    fn count_between_copy(&mut self, _bytes: usize) {}

    /// Told that a frame decoded from this input did not lie where its payload would be
    /// 64-byte aligned, so `bytes` of payload were copied to aligned memory. The driver's input
    /// counts it in [`TransportStats`](crate::TransportStats) (`align_copies`,
    /// `align_copy_bytes`); the default ignores it.
    fn count_align_copy(&mut self, _bytes: usize) {}

    /// The buffer itself when it can be changed in place, so that a pieced frame's markers can
    /// be cut out of it; `None` (the default) for memory that cannot, such as a transport's
    /// chunk: a pieced frame is then not decoded from it (the driver moves it to a buffer of
    /// its own, as any frame cut off at a chunk's end).
    fn as_mut_buffer(&mut self) -> Option<&mut BytesMut> {
        None
    }
}

impl InputBuf for BytesMut {
    fn take_frozen(&mut self, n: usize) -> Bytes {
        self.split_to(n).freeze()
    }

    fn as_mut_buffer(&mut self) -> Option<&mut BytesMut> {
        Some(self)
    }
}

impl InputBuf for Bytes {
    fn take_frozen(&mut self, n: usize) -> Bytes {
        self.split_to(n)
    }
}

/// Decodes a byte stream: first the peer's hello, then frames.
#[derive(Debug)]
pub struct FrameDecoder {
    limits: Limits,
    hello_seen: bool,
    /// The header of the frame being received, validated, once its 40 bytes are in.
    pending: Option<(FrameHeader, usize)>,
    /// The frame being received comes in pieces (`docs/wire.md`, "Pieces"): how far its
    /// clean bytes reach.
    pieces: Option<Pieces>,
    /// Pieced frames the peer aborted part-way.
    aborted: u64,
    /// The kind and call id of each frame aborted since the connection last took them
    /// ([`FrameDecoder::take_aborted`]): a client must fail a live call whose answer the server
    /// abandoned, not leave it waiting. The connection takes them after every
    /// [`FrameDecoder::decode`], so they are at most what one input held; a decoder used alone
    /// keeps them (16 bytes each) until taken.
    aborted_ids: Vec<(FrameKind, u64)>,
    /// Whole frames that came between the pieces of the pending frame, copied out of its
    /// buffer and not decoded yet: [`FrameDecoder::decode`] returns them first.
    between: Bytes,
    /// `between` held more than one frame: each is copied out of it alone.
    between_shared: bool,
    /// Frames that came between pieces, so far.
    between_frames: u64,
    /// The highest id of a request whose header came in pieces (0: none yet).
    last_pieced_request: u64,
}

impl FrameDecoder {
    /// A decoder that expects a hello first.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            hello_seen: false,
            pending: None,
            pieces: None,
            aborted: 0,
            aborted_ids: Vec::new(),
            between: Bytes::new(),
            between_shared: false,
            between_frames: 0,
            last_pieced_request: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decodes the peer's hello, once, before any frame.
    pub fn decode_hello<B: InputBuf>(&mut self, buf: &mut B) -> Result<Option<Hello>, DecodeError> {
        debug_assert!(!self.hello_seen);
        if buf.len() < HELLO_LEN {
            // Check the magic as soon as we have it so a foreign peer fails fast.
            let n = buf.len().min(4);
            if buf[..n] != super::hello::MAGIC[..n] {
                let mut found = [0u8; 4];
                found[..n].copy_from_slice(&buf[..n]);
                return Err(DecodeError::BadMagic { found, expected: super::hello::MAGIC });
            }
            return Ok(None);
        }
        let hello = Hello::decode(&buf[..HELLO_LEN])?;
        buf.advance(HELLO_LEN);
        self.hello_seen = true;
        Ok(Some(hello))
    }

    /// Decodes the next complete frame from the front of `buf`, or returns `None` when more
    /// bytes are needed ([`FrameDecoder::bytes_needed`] says how many in all).
    pub fn decode<B: InputBuf>(&mut self, buf: &mut B) -> Result<Option<Frame>, DecodeError> {
        if !self.between.is_empty() {
            return self.decode_between(buf).map(Some);
        }
        // A loop, not a call to itself per aborted frame: a read block can hold a thousand of
        // them, and the reader's stack is a worker thread's.
        let (header, body_len) = loop {
            let Some(pending) = self.pending_header(buf)? else { return Ok(None) };
            if self.pieces.is_none() {
                break pending;
            }
            match self.strip_pieces(buf)? {
                Stripped::Partial => return Ok(None),
                Stripped::Whole => break pending,
                // The sender gave up on it: it never happened. On to the next frame.
                Stripped::Aborted { .. } => {}
                Stripped::Between(frames) => {
                    buf.count_between_copy(frames.len());
                    self.between = frames;
                    return self.decode_between(buf).map(Some);
                }
            }
        };
        if buf.len() < HEADER_LEN + body_len {
            return Ok(None);
        }
        self.pending = None;
        let (frame, copied) = self.take_frame(header, body_len, buf)?;
        if copied > 0 {
            buf.count_align_copy(copied);
        }
        Ok(Some(frame))
    }

    /// The next of the whole frames that came between the pending frame's pieces
    /// (`self.between`, not empty): a frame as any other, never itself pieced, and never cut
    /// off by the end of the bytes the marker announced.
    #[cold]
    #[inline(never)]
    fn decode_between<B: InputBuf>(&mut self, input: &mut B) -> Result<Frame, DecodeError> {
        let malformed = |reason: String| DecodeError::Malformed { kind: "piece marker", reason };
        let mut block = std::mem::take(&mut self.between);
        if block.len() < HEADER_LEN {
            return Err(malformed(format!("frames between pieces end with {} bytes of a frame header", block.len())));
        }
        let header = FrameHeader::decode(&block[..HEADER_LEN])?;
        let body_len = self.check(&header)?;
        if header.flags & FLAG_PIECED != 0 && matches!(header.kind, FrameKind::Request | FrameKind::Response) {
            return Err(malformed(format!("a pieced {} between the pieces of another frame", header.kind.name())));
        }
        if block.len() < HEADER_LEN + body_len {
            return Err(malformed(format!(
                "a {} of {} bytes between pieces, where the marker left {}",
                header.kind.name(),
                HEADER_LEN + body_len,
                block.len()
            )));
        }
        self.between_frames += 1;
        // A frame of a run of several is copied out of it alone (aligned), so that what the
        // application keeps of it (a message, an attachment) holds its own bytes, as charged,
        // not the whole run's (up to 128 KiB). A run of one frame is that frame.
        let len = HEADER_LEN + body_len;
        self.between_shared |= block.len() > len;
        let mut own = if self.between_shared {
            let own = super::align::copy_aligned(&block[..len]);
            block.advance(len);
            input.count_between_copy(len);
            own
        } else {
            std::mem::take(&mut block)
        };
        let (frame, copied) = self.take_frame(header, body_len, &mut own)?;
        if copied > 0 {
            input.count_align_copy(copied);
        }
        if block.is_empty() {
            self.between_shared = false;
        } else {
            self.between = block;
        }
        Ok(frame)
    }

    /// The frame whose header is `header` and whose body is the `body_len` bytes after it at
    /// the front of `buf`, all there: taken out of `buf` and decoded; with the bytes of its
    /// payload copied to aligned memory (0 when none were), for the caller to count.
    fn take_frame<B: InputBuf>(&self, header: FrameHeader, body_len: usize, buf: &mut B) -> Result<(Frame, usize), DecodeError> {
        buf.advance(HEADER_LEN);
        let body = buf.take_frozen(body_len);
        let (raw, copied) = RawFrame::from_body(header, body)?;
        // Exact now that the table is in: message and attachments, padding not counted.
        let content = raw.message.len() as u64 + raw.attachments.iter().map(|a| a.len() as u64).sum::<u64>();
        let max_frame = u64::from(self.limits.max_frame);
        if content > max_frame {
            return Err(DecodeError::TooLarge { what: "frame", len: content, limit: max_frame });
        }
        Ok((Frame::decode(raw)?, copied))
    }

    /// Cuts the markers out of the pieced frame at the front of `buf` (`docs/wire.md`,
    /// "Pieces"): where it lies, and never from memory that cannot change (the driver moves it
    /// to a buffer of its own first). An aborted frame is dropped with its marker.
    #[cold]
    #[inline(never)]
    fn strip_pieces<B: InputBuf>(&mut self, buf: &mut B) -> Result<Stripped, DecodeError> {
        let Some(b) = buf.as_mut_buffer() else { return Ok(Stripped::Partial) };
        let pieces = self.pieces.as_mut().expect("checked by the caller");
        let stripped = pieces.strip(b)?;
        match &stripped {
            Stripped::Partial | Stripped::Between(_) => {}
            Stripped::Whole => self.pieces = None,
            &Stripped::Aborted { consumed } => {
                b.advance(consumed);
                if let Some((header, _)) = self.pending.take() {
                    self.aborted_ids.push((header.kind, header.id));
                }
                self.pieces = None;
                self.aborted += 1;
            }
        }
        Ok(stripped)
    }

    /// With a pieced frame being received into a buffer that holds `have` bytes of it (from
    /// its start): how many the next read may bring without passing the end of the current
    /// piece or of the next marker. `None` otherwise.
    pub fn piece_room(&self, have: usize) -> Option<usize> {
        self.pieces.map(|p| p.room(have))
    }

    /// Pieced frames the peer aborted part-way so far.
    pub fn aborted_frames(&self) -> u64 {
        self.aborted
    }

    /// The kind and call id of the frame being received, when it comes in pieces.
    pub fn pending_pieced(&self) -> Option<(FrameKind, u64)> {
        self.pieces.and(self.pending).map(|(h, _)| (h.kind, h.id))
    }

    /// The highest id of a request whose header came in pieces so far, 0 when none did: what a
    /// server's goaway says of them ([`crate::frame::GoAway::last_pieced`]).
    pub fn last_pieced_request(&self) -> u64 {
        self.last_pieced_request
    }

    /// Frames that came between the pieces of a pieced frame so far (`Marker::Frames`).
    pub fn frames_between_pieces(&self) -> u64 {
        self.between_frames
    }

    /// The kind and call id of each pieced frame the peer aborted since the last call, in the
    /// order they came (before any frame [`FrameDecoder::decode`] returned with them).
    pub fn take_aborted(&mut self) -> Vec<(FrameKind, u64)> {
        std::mem::take(&mut self.aborted_ids)
    }

    /// True when [`FrameDecoder::take_aborted`] has something to take: a check that costs
    /// nothing on the common path.
    #[inline]
    pub fn has_aborted(&self) -> bool {
        !self.aborted_ids.is_empty()
    }

    /// Bytes the current frame needs in all, from the front of the buffer (header included);
    /// [`HEADER_LEN`] while the header itself is incomplete. Lets the caller size the receive
    /// buffer once so that a large payload lands in one allocation.
    /// (A pieced frame's markers are not counted: they never stay in the buffer.)
    pub fn bytes_needed(&self) -> usize {
        match self.pending {
            Some((_, body)) => HEADER_LEN + body,
            None if self.hello_seen => HEADER_LEN,
            None => HELLO_LEN,
        }
    }

    fn pending_header(&mut self, buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, DecodeError> {
        if let Some(p) = self.pending {
            return Ok(Some(p));
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = FrameHeader::decode(&buf[..HEADER_LEN])?;
        let body_len = self.check(&header)?;
        // Requests (to a server announcing pieces) and responses (to a client announcing
        // pieced answers) come in pieces; on any other kind the bit means nothing.
        if header.flags & FLAG_PIECED != 0 && matches!(header.kind, FrameKind::Request | FrameKind::Response) {
            self.pieces = Some(Pieces::new(body_len));
            if header.kind == FrameKind::Request {
                self.last_pieced_request = self.last_pieced_request.max(header.id);
            }
        }
        self.pending = Some((header, body_len));
        Ok(self.pending)
    }

    /// Every length against the limits, in u64 so that no claim can overflow. `max_frame`
    /// limits message and attachment bytes; the padding between attachments (at most 63 bytes
    /// after each but the last, counted in `payload_len`) comes on top, and is exact once the
    /// table is in (see [`FrameDecoder::decode`]).
    fn check(&self, h: &FrameHeader) -> Result<usize, DecodeError> {
        let n = u64::from(h.attachments);
        if n > u64::from(self.limits.max_attachments) {
            return Err(DecodeError::TooManyAttachments { count: n, limit: u64::from(self.limits.max_attachments) });
        }
        let max_frame = u64::from(self.limits.max_frame);
        let max_padded = max_frame + (ATTACHMENT_ALIGN as u64 - 1) * n.saturating_sub(1);
        if h.payload_len > max_padded {
            return Err(DecodeError::TooLarge { what: "payload", len: h.payload_len, limit: max_padded });
        }
        let content = u64::from(h.message_len) + h.payload_len;
        if content > max_padded {
            return Err(DecodeError::TooLarge { what: "frame", len: content, limit: max_padded });
        }
        if n == 0 && h.payload_len != 0 {
            return Err(DecodeError::Malformed {
                kind: h.kind.name(),
                reason: format!("payload of {} bytes but no attachments", h.payload_len),
            });
        }
        let body = body_len(h);
        usize::try_from(body).map_err(|_| DecodeError::TooLarge { what: "frame", len: body, limit: max_frame })
    }

    /// Call at end of stream: an error if a frame was cut off.
    pub fn finish(&self, buf: &[u8]) -> Result<(), DecodeError> {
        if buf.is_empty() {
            return Ok(());
        }
        Err(DecodeError::Truncated { have: buf.len(), need: self.bytes_needed().max(buf.len() + 1) })
    }
}

/// Bytes after the header: the table, the message and, with attachments, the padding that
/// starts the payload at a multiple of 64 from the frame's start, then `payload_len` bytes.
/// From the header alone, so a large frame's buffer is sized before its table arrives.
pub(crate) fn body_len(h: &FrameHeader) -> u64 {
    let n = u64::from(h.attachments);
    let prefix = HEADER_LEN as u64 + 8 * n + u64::from(h.message_len);
    if n == 0 {
        return prefix - HEADER_LEN as u64;
    }
    prefix + pad_len(prefix) - HEADER_LEN as u64 + h.payload_len
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;
    use crate::frame::{FrameKind, Request, WIRE_VERSION};

    const LIMITS: Limits = Limits { max_frame: 1 << 20, max_attachments: 8 };

    fn decoder() -> FrameDecoder {
        let mut d = FrameDecoder::new(LIMITS);
        let hello = Hello { version: WIRE_VERSION, capabilities: 0, max_frame: 4096, max_calls_in_flight: 1, max_attachments: 8, max_metadata: 0, stream_window: 0 };
        d.decode_hello(&mut BytesMut::from(&hello.encode()[..])).unwrap().unwrap();
        d
    }

    /// A request frame with `lengths` in its table, `payload_len` in its header and `rest`
    /// after the table (message empty).
    fn frame(lengths: &[u64], payload_len: u64, rest: &[u8]) -> BytesMut {
        let mut h = FrameHeader::new(FrameKind::Request);
        h.id = 1;
        h.attachments = lengths.len() as u16;
        h.payload_len = payload_len;
        let mut b = BytesMut::new();
        h.encode(&mut b);
        for l in lengths {
            b.put_u64_le(*l);
        }
        b.put_slice(rest);
        b
    }

    /// A unary request, id 1, method 1, of `message` and `attachments`.
    fn request(message: Bytes, attachments: Vec<crate::Payload>) -> Request {
        Request {
            id: 1,
            method: 1,
            mode: Default::default(),
            await_commit: false,
            metadata: Bytes::new(),
            deadline: None,
            message,
            attachments,
        }
    }

    fn reason(r: Result<Option<Frame>, DecodeError>) -> String {
        match r {
            Err(DecodeError::Malformed { kind: "request", reason }) => reason,
            other => panic!("expected a malformed request, got {other:?}"),
        }
    }

    #[test]
    fn padded_frames_decode() {
        // Table ends at 56: 8 zeros, "abc" at 64, 61 zeros, "de" at 128.
        let mut rest = vec![0u8; 8];
        rest.extend_from_slice(b"abc");
        rest.extend_from_slice(&[0; 61]);
        rest.extend_from_slice(b"de");
        let mut buf = frame(&[3, 2], 66, &rest);
        assert_eq!(decoder().bytes_needed(), HEADER_LEN);
        let Some(Frame::Request(r)) = decoder().decode(&mut buf).unwrap() else { panic!() };
        assert_eq!(r.attachments.iter().map(|a| a.to_bytes()).collect::<Vec<_>>(), [&b"abc"[..], &b"de"[..]]);
        assert!(buf.is_empty());
    }

    #[test]
    fn the_frame_length_counts_the_padding() {
        let mut d = decoder();
        let mut buf = frame(&[3, 2], 66, &[]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        // Header, table, 8 zeros, then payload_len (padding between attachments included).
        assert_eq!(d.bytes_needed(), 40 + 16 + 8 + 66);
        // Without attachments: header and message only.
        let mut d = decoder();
        let mut h = FrameHeader::new(FrameKind::Response);
        h.message_len = 24;
        let mut buf = BytesMut::new();
        h.encode(&mut buf);
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert_eq!(d.bytes_needed(), 64);
    }

    #[test]
    fn a_table_without_padding_is_named() {
        // A sender that does not pad: 3 + 2 back to back, payload_len 5.
        let mut rest = vec![0u8; 8];
        rest.extend_from_slice(b"abcde");
        let r = reason(decoder().decode(&mut frame(&[3, 2], 5, &rest)));
        assert!(r.contains("2 attachments of 5 bytes take 66 bytes") && r.contains("a sender that does not pad?"), "{r}");
    }

    #[test]
    fn padding_of_the_wrong_length_is_malformed() {
        for payload_len in [65, 67, 130] {
            let rest = vec![0u8; 8 + payload_len as usize];
            let r = reason(decoder().decode(&mut frame(&[3, 2], payload_len, &rest)));
            assert!(r.contains("do not add up") || r.contains("does not match"), "{payload_len}: {r}");
            assert!(r.contains(&format!("the header says {payload_len}")), "{r}");
        }
        // A length so large that padding it overflows.
        let r = reason(decoder().decode(&mut frame(&[u64::MAX, 1], 64, &[0; 72])));
        assert!(r.contains("does not match"), "{r}");
    }

    #[test]
    fn padding_that_is_not_zero_is_malformed() {
        let mut rest = vec![0u8; 8];
        rest[3] = 1;
        rest.extend_from_slice(b"abc");
        rest.extend_from_slice(&[0; 61]);
        rest.extend_from_slice(b"de");
        let r = reason(decoder().decode(&mut frame(&[3, 2], 66, &rest)));
        assert_eq!(r, "padding after the message is not zero");
        let mut rest = vec![0u8; 8];
        rest.extend_from_slice(b"abc");
        rest.extend_from_slice(&[0; 61]);
        rest[8 + 3 + 60] = 9;
        rest.extend_from_slice(b"de");
        let r = reason(decoder().decode(&mut frame(&[3, 2], 66, &rest)));
        assert_eq!(r, "padding after attachment 0 is not zero");
    }

    #[test]
    fn padding_does_not_count_against_max_frame() {
        // Seven attachments filling max_frame exactly: up to 6 x 63 bytes of padding on top.
        let lens = [1u64, 1, 1, 1, 1, 1, (1 << 20) - 6];
        let req = request(Bytes::new(), lens.iter().map(|&l| crate::Payload::from(vec![1u8; l as usize])).collect());
        let mut buf = BytesMut::from(&req.clone().encode().unwrap().to_vec()[..]);
        assert_eq!(decoder().decode(&mut buf).unwrap(), Some(Frame::Request(req)));
        // But the attachments themselves may not exceed it: 2^20 + 10 bytes with no padding
        // (the first is a multiple of 64) passes the header's bound, not the table's.
        let mut rest = vec![0u8; 8];
        rest.resize(8 + (1 << 20) + 10, 1);
        let err = decoder().decode(&mut frame(&[1 << 20, 10], (1 << 20) + 10, &rest)).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { what: "frame", len: (1 << 20) + 10, limit: 1 << 20 });
    }

    #[test]
    fn a_misaligned_frame_gets_its_payload_copied_aligned_and_says_so() {
        struct Input(BytesMut, usize);
        impl Buf for Input {
            fn remaining(&self) -> usize {
                self.0.remaining()
            }
            fn chunk(&self) -> &[u8] {
                self.0.chunk()
            }
            fn advance(&mut self, n: usize) {
                self.0.advance(n)
            }
        }
        impl std::ops::Deref for Input {
            type Target = [u8];
            fn deref(&self) -> &[u8] {
                &self.0
            }
        }
        impl InputBuf for Input {
            fn take_frozen(&mut self, n: usize) -> Bytes {
                self.0.split_to(n).freeze()
            }
            fn count_align_copy(&mut self, bytes: usize) {
                self.1 += bytes;
            }
        }
        let req = request(Bytes::from_static(b"m"), vec![crate::Payload::from(vec![5u8; 100]), crate::Payload::from(vec![6u8; 10])]);
        let wire = req.clone().encode().unwrap().to_vec();
        for skew in 0..64 {
            let mut b = crate::frame::aligned_with_capacity(skew + wire.len());
            b.resize(skew, 0);
            b.extend_from_slice(&wire);
            b.advance(skew);
            let mut input = Input(b, 0);
            let Some(Frame::Request(got)) = decoder().decode(&mut input).unwrap() else { panic!() };
            for a in &got.attachments {
                assert_eq!(a.to_bytes().as_ptr() as usize % 64, 0, "skew {skew}");
            }
            assert_eq!(got, req);
            // 100 bytes, 28 of padding, 10 bytes: copied only when the frame was not aligned.
            assert_eq!(input.1, if skew == 0 { 0 } else { 138 }, "skew {skew}");
        }
    }
}
