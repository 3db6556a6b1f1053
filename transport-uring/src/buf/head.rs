//! Frame-head slots: a small arena at the start of each pool registration.
//!
//! A vectored fixed-buffer send (`SENDMSG_ZC` with `buf_index`, 6.15) takes iovecs that all
//! lie in the one registered buffer it names. A message's frame head is built in ordinary
//! memory, so a message of pool buffers would need a second send for its head. The engine
//! copies the head (a few dozen bytes) into a slot of the arena inside the same registration
//! instead, and the whole message goes out in one send. A slot is the engine's alone from
//! `take` until its `HeadSlot` drops, which the in-flight record does only after the kernel's
//! notification.

use std::sync::{Arc, Mutex};

use super::PoolInner;

/// Bytes at the start of each registration kept for heads (whole pages, so the buffers after
/// it stay page-aligned).
pub(super) const ARENA_BYTES: usize = 64 * 1024;
/// Bytes per head slot: a header, the attachment lengths and an inline message fit in most
/// frames (a larger head goes in a send of its own).
const SLOT_BYTES: usize = 1024;
const SLOTS: usize = ARENA_BYTES / SLOT_BYTES;

/// One registration's arena: its address and free slots.
pub(super) struct HeadArena {
    base: *mut u8,
    free: Mutex<Vec<u16>>,
}

// SAFETY: `base` points into the pool's mapping, which lives as long as the pool; a slot is
// written only by the holder of its index, taken from the mutex-guarded free list.
unsafe impl Send for HeadArena {}
// SAFETY: as above; shared access only pops and pushes indexes under the mutex.
unsafe impl Sync for HeadArena {}

impl HeadArena {
    /// The arena at `base` (`ARENA_BYTES` of the pool's mapping), every slot free.
    pub(super) fn new(base: *mut u8) -> HeadArena {
        HeadArena {
            base,
            free: Mutex::new((0..SLOTS as u16).rev().collect()),
        }
    }

    fn slot_ptr(&self, slot: u16) -> *mut u8 {
        // In bounds: slot < SLOTS and the arena holds SLOTS * SLOT_BYTES bytes.
        self.base.wrapping_add(slot as usize * SLOT_BYTES)
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<u16>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A frame head copied into an arena slot; the slot is free again on drop.
pub(crate) struct HeadSlot {
    pool: Arc<PoolInner>,
    group: usize,
    slot: u16,
    len: usize,
}

impl HeadSlot {
    /// Copies `head` into a free slot of `pool`'s arena `group`; `None` when it does not fit a
    /// slot or none is free.
    pub(super) fn take(pool: Arc<PoolInner>, group: usize, head: &[u8]) -> Option<HeadSlot> {
        if head.len() > SLOT_BYTES {
            return None;
        }
        let arena = &pool.arenas[group];
        let slot = arena.free().pop()?;
        // SAFETY: the slot was just taken from the free list, so nothing else writes it and the
        // kernel reads it no more (a slot goes back only when the send that used it has had its
        // notification); `head` is ordinary memory, not the arena, so the ranges are disjoint.
        unsafe { std::ptr::copy_nonoverlapping(head.as_ptr(), arena.slot_ptr(slot), head.len()) };
        Some(HeadSlot { len: head.len(), pool, group, slot })
    }

    /// The head's bytes, in the registration.
    pub(crate) fn as_slice(&self) -> &[u8] {
        let arena = &self.pool.arenas[self.group];
        // SAFETY: `len` bytes were written at the slot in `take`, and the slot stays this
        // holder's, unchanged, until drop; the mapping lives as long as `pool`.
        unsafe { std::slice::from_raw_parts(arena.slot_ptr(self.slot), self.len) }
    }
}

impl Drop for HeadSlot {
    fn drop(&mut self) {
        self.pool.arenas[self.group].free().push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use crate::BufferPool;

    #[test]
    fn heads_land_in_the_arena_of_their_buffers_registration_and_slots_come_back() {
        let pool = BufferPool::new(4 << 20, 1 << 20).unwrap();
        let buf = pool.take().unwrap();
        let seg = super::super::ZcSegment { buf };
        let head = [7u8; 100];
        let mut held = Vec::new();
        for _ in 0..super::SLOTS {
            let h = seg.head_slot(&head).expect("a free slot");
            assert_eq!(h.as_slice(), &head[..]);
            held.push(h);
        }
        assert!(seg.head_slot(&head).is_none(), "the arena is full");
        // Distinct slots, none overlapping the buffer.
        let buf_start = seg.buf.as_ptr() as usize;
        let mut starts: Vec<usize> = held.iter().map(|h| h.as_slice().as_ptr() as usize).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), super::SLOTS);
        assert!(starts.iter().all(|&p| p + super::SLOT_BYTES <= buf_start));
        held.pop();
        assert!(seg.head_slot(&head).is_some(), "a dropped slot is free again");
        assert!(seg.head_slot(&[0u8; super::SLOT_BYTES + 1]).is_none(), "too large for a slot");
    }
}
