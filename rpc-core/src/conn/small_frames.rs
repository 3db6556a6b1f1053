//! Small stream frames of one call, written back to back into one buffer: a stream of 64-byte
//! messages costs one allocation and one iovec per run of frames, not per frame (measured on
//! `stream_64b` before this room: one heap allocation, one free and one iovec per message,
//! with the kernel's per-iovec copy the largest single cost of the sending side).
//!
//! To a peer that takes stream batches (`caps::STREAM_BATCHES`) a run is one frame carrying
//! all its messages, each behind a 4-byte length (one header, one decode, one credit check
//! per run on the receiving side); to any other peer, whole frames back to back.
//!
//! A run holds frames of one call only, so a withdrawn or cancelled call's queued frames can
//! still be found by the header in front of each transmit (`Connection::withdraw_or_cancel`).

use bytes::BytesMut;

use crate::body::Body;
use crate::frame::{StreamBatch, StreamData, BATCH_PREFIX, HEADER_LEN, INLINE_MESSAGE_MAX};
use crate::transmit::Transmit;

/// A run becomes a transmit of its own at this size, so the writer gets frames to write while
/// a fast sender goes on, and memory held by a run is bounded.
const RUN_MAX: usize = 64 << 10;

/// The run being written, not yet a transmit.
#[derive(Debug)]
pub(super) struct SmallFrames {
    /// The call whose frames are in `buf`.
    id: u64,
    buf: BytesMut,
    /// The run is one batch frame.
    batch: bool,
    /// A batch's messages (with their lengths) fit in this many bytes: the peer's `max_frame`.
    batch_max: usize,
}

impl Default for SmallFrames {
    fn default() -> Self {
        SmallFrames { id: 0, buf: BytesMut::new(), batch: false, batch_max: RUN_MAX }
    }
}

impl SmallFrames {
    /// True when `body` goes as a small frame: no attachments, a message copied in place.
    pub(super) fn fits(body: &Body) -> bool {
        body.attachments.is_empty() && Self::message_fits(&body.message)
    }

    /// True when a message without attachments goes as a small frame: it is copied in place.
    pub(super) fn message_fits(message: &[u8]) -> bool {
        message.len() <= INLINE_MESSAGE_MAX
    }

    /// Runs become batch frames of at most `max_frame` bytes of messages, once the peer's
    /// hello says it takes them (`batches`). Called before any message is pushed.
    pub(super) fn configure(&mut self, batches: bool, max_frame: u32) {
        debug_assert!(self.buf.is_empty());
        self.batch = batches;
        self.batch_max = RUN_MAX.min(max_frame as usize);
    }

    /// Appends `messages` (small ones: see [`SmallFrames::fits`]), in order, to call `id`'s
    /// batch being written while each fits there as things are (no run to seal, no room to
    /// make) and `take` agrees to its length: a fast stream's common case, one check of the run
    /// for all of them rather than [`SmallFrames::push`]'s per message. Returns how many were
    /// copied (the first so many of `messages`, which the caller drops together) and the bytes
    /// they added; the caller takes the rest with `push`.
    #[inline]
    pub(super) fn append_from<'a>(
        &mut self,
        id: u64,
        messages: impl Iterator<Item = &'a [u8]>,
        mut take: impl FnMut(usize) -> bool,
    ) -> (usize, usize) {
        if !(self.batch && self.id == id && !self.buf.is_empty()) {
            return (0, 0);
        }
        let mut room = self.batch_room();
        let (start, mut taken) = (self.buf.len(), 0);
        for message in messages {
            let len = message.len();
            if BATCH_PREFIX + len > room || !take(len) {
                break;
            }
            StreamBatch::push_in_place(message, &mut self.buf);
            room -= BATCH_PREFIX + len;
            taken += 1;
        }
        (taken, self.buf.len() - start)
    }

    /// True when a frame of call `id` carrying `message_len` bytes goes into the run being
    /// written as it is: the run holds `id`'s frames, is not full, and its buffer has room.
    /// Else [`SmallFrames::push`] seals the run first.
    #[inline]
    fn continues_run(&self, id: u64, message_len: usize) -> bool {
        let len = self.buf.len();
        let fits = match self.batch {
            true => BATCH_PREFIX + message_len <= self.batch_room(),
            false => len < RUN_MAX && BATCH_PREFIX + message_len <= self.spare(),
        };
        len > 0 && self.id == id && fits
    }

    /// Bytes of messages (each with its length) the batch being written still takes, as
    /// [`SmallFrames::continues_run`] allows: under `batch_max`, and within [`SmallFrames::spare`].
    #[inline]
    fn batch_room(&self) -> usize {
        self.batch_max.saturating_sub(self.buf.len().saturating_sub(HEADER_LEN)).min(self.spare())
    }

    /// The buffer's room past the run, less a header's. A run the writer took early (it seals
    /// whatever is there when it wakes) leaves the rest of the buffer to the next run, which can
    /// run out of room before it is full: it is sealed there rather than grown, since growing a
    /// buffer the sealed runs still share copies the run into a new one (measured on
    /// `stream_64b`: 40 KB copied per run, about 5% of both ends' instructions per message).
    #[inline]
    fn spare(&self) -> usize {
        (self.buf.capacity() - self.buf.len()).saturating_sub(HEADER_LEN)
    }

    /// Appends call `id`'s frame carrying `message`; gives back the run sealed first, when it
    /// held another call's frames or was full, and the bytes the message added.
    pub(super) fn push(&mut self, id: u64, message: &[u8]) -> (Option<Transmit>, usize) {
        let need = HEADER_LEN + BATCH_PREFIX + message.len();
        let sealed = if !self.buf.is_empty() && !self.continues_run(id, message.len()) { self.seal() } else { None };
        self.id = id;
        if self.buf.capacity() - self.buf.len() < need {
            // Empty here, so nothing is copied: the buffer is taken back whole if the writer is
            // done with the runs in it, else a new one is allocated.
            self.buf.reserve(RUN_MAX + HEADER_LEN + BATCH_PREFIX + INLINE_MESSAGE_MAX);
        }
        let start = self.buf.len();
        match self.batch {
            true => {
                if self.buf.is_empty() {
                    StreamBatch::start_in_place(&mut self.buf);
                }
                StreamBatch::push_in_place(message, &mut self.buf);
            }
            false => StreamData::encode_small(id, message, &mut self.buf),
        }
        (sealed, self.buf.len() - start)
    }

    /// The frames written so far, as one transmit (none when there are none).
    pub(super) fn seal(&mut self) -> Option<Transmit> {
        if self.buf.is_empty() {
            return None;
        }
        if self.batch {
            StreamBatch::finish_in_place(self.id, &mut self.buf);
        }
        Some(Transmit { head: self.buf.split().freeze(), segments: Vec::new() })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameDecoder, Frame, Limits};
    use bytes::Bytes;

    fn frames_of(t: &Transmit) -> Vec<(u64, Bytes)> {
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut input = BytesMut::from(&t.to_vec()[..]);
        let mut out = Vec::new();
        while let Some(frame) = decoder.decode(&mut input).unwrap() {
            match frame {
                Frame::StreamData(d) => out.push((d.id, d.message)),
                Frame::StreamBatch(b) => out.extend(b.messages.map(|m| (b.id, m))),
                other => panic!("not stream data: {other:?}"),
            }
        }
        assert!(input.is_empty());
        out
    }

    #[test]
    fn frames_of_one_call_share_a_transmit_until_another_call_comes() {
        let mut run = SmallFrames::default();
        assert!(run.seal().is_none());
        assert!(run.push(1, b"a").0.is_none());
        assert!(run.push(1, b"bb").0.is_none());
        let first = run.push(2, b"ccc").0.expect("another call seals the run");
        assert_eq!(frames_of(&first), vec![(1, Bytes::from_static(b"a")), (1, Bytes::from_static(b"bb"))]);
        let second = run.seal().unwrap();
        assert_eq!(frames_of(&second), vec![(2, Bytes::from_static(b"ccc"))]);
        assert!(run.is_empty() && run.seal().is_none());
    }

    #[test]
    fn a_batch_run_is_one_frame_within_the_peers_max_frame() {
        let mut run = SmallFrames::default();
        run.configure(true, 4096);
        let mut sealed = Vec::new();
        for i in 0..200u8 {
            sealed.extend(run.push(3, &[i; 60]).0);
        }
        let (batch, _) = run.push(4, b"x");
        sealed.push(batch.expect("another call seals the batch"));
        sealed.extend(run.seal());
        // 200 messages of 64 bytes with their lengths: four batches of 4096 bytes or less.
        assert_eq!(sealed.len(), 5);
        assert!(sealed.iter().all(|t| t.len() <= HEADER_LEN + 4096), "{:?}", sealed.iter().map(Transmit::len).collect::<Vec<_>>());
        let frames: Vec<_> = sealed.iter().flat_map(frames_of).collect();
        assert_eq!(frames.len(), 201);
        assert!(frames[..200].iter().enumerate().all(|(i, (id, m))| *id == 3 && m[..] == [i as u8; 60]));
        assert_eq!(frames[200], (4, Bytes::from_static(b"x")));
    }

    /// Pushes `n` messages of call 7, checking after each that a run still growing was never
    /// moved (its bytes stay where they were written); returns the runs sealed on the way.
    fn push_in_place(run: &mut SmallFrames, n: usize) -> Vec<Transmit> {
        let mut sealed = Vec::new();
        for _ in 0..n {
            let start = (!run.buf.is_empty()).then(|| run.buf.as_ptr());
            let (s, _) = run.push(7, &[3u8; 64]);
            if s.is_none() {
                if let Some(start) = start {
                    assert_eq!(run.buf.as_ptr(), start, "a run was moved (copied) while it grew");
                }
            }
            sealed.extend(s);
        }
        sealed
    }

    #[test]
    fn a_run_taken_early_leaves_its_room_to_the_next_run_which_is_never_copied() {
        for batch in [false, true] {
            let mut run = SmallFrames::default();
            run.configure(batch, 16 << 20);
            let mut sealed = push_in_place(&mut run, 100);
            // The writer takes a short run while the sender goes on.
            sealed.extend(run.seal());
            let early = sealed.len();
            let first_run_end = sealed[early - 1].head.as_ptr_range().end;
            // The next runs start in the room the early one left, and each is sealed when the
            // room runs out, never grown.
            sealed.extend(push_in_place(&mut run, 3000));
            sealed.extend(run.seal());
            assert_eq!(sealed[early].head.as_ptr(), first_run_end, "the next run starts where the early one ended");
            let frames: Vec<_> = sealed.iter().flat_map(frames_of).collect();
            assert_eq!(frames.len(), 3100);
            assert!(frames.iter().all(|(id, m)| *id == 7 && m[..] == [3u8; 64]));
            assert!(sealed.iter().all(|t| t.len() <= RUN_MAX + HEADER_LEN + BATCH_PREFIX + INLINE_MESSAGE_MAX));
        }
    }

    #[test]
    fn append_from_then_push_writes_the_same_runs_as_push_alone() {
        for batch in [true, false] {
            let (mut fast, mut plain) = (SmallFrames::default(), SmallFrames::default());
            fast.configure(batch, 16 << 10);
            plain.configure(batch, 16 << 10);
            let (mut fast_runs, mut plain_runs) = (Vec::new(), Vec::new());
            let (mut appended, mut fast_bytes, mut plain_bytes) = (0, 0, 0);
            for i in 0..5000u32 {
                // Runs of one call, then another: seals on a call change, on a full batch and
                // when the room runs out.
                let id = 1 + u64::from(i / 700 % 3);
                let message = vec![i as u8; (i as usize * 37) % (INLINE_MESSAGE_MAX + 1)];
                match fast.append_from(id, std::iter::once(&message[..]), |_| true) {
                    (1, added) => {
                        appended += 1;
                        fast_bytes += added;
                    }
                    _ => {
                        let (sealed, added) = fast.push(id, &message);
                        fast_runs.extend(sealed);
                        fast_bytes += added;
                    }
                }
                let (sealed, added) = plain.push(id, &message);
                plain_runs.extend(sealed);
                plain_bytes += added;
            }
            fast_runs.extend(fast.seal());
            plain_runs.extend(plain.seal());
            assert_eq!(fast_bytes, plain_bytes);
            let bytes = |runs: &[Transmit]| runs.iter().map(|t| t.to_vec()).collect::<Vec<_>>();
            assert_eq!(bytes(&fast_runs), bytes(&plain_runs), "batch {batch}");
            assert_eq!(appended > 0, batch, "append takes only a batch's messages");
        }
    }

    #[test]
    fn a_full_run_is_sealed_and_every_frame_is_kept_in_order() {
        let mut run = SmallFrames::default();
        let message = [9u8; 64];
        let mut sealed = Vec::new();
        for _ in 0..3000 {
            sealed.extend(run.push(5, &message).0);
        }
        sealed.extend(run.seal());
        assert!(sealed.len() >= 3, "3000 frames of 104 bytes fill several runs of {RUN_MAX} bytes");
        assert!(sealed.iter().all(|t| t.len() <= RUN_MAX + HEADER_LEN + INLINE_MESSAGE_MAX));
        let frames: Vec<_> = sealed.iter().flat_map(frames_of).collect();
        assert_eq!(frames.len(), 3000);
        assert!(frames.iter().all(|(id, m)| *id == 5 && m[..] == message));
    }
}
