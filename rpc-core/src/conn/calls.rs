//! The calls in flight on a connection: each with its deadline and the request bytes it holds
//! against the memory budget. One room, so that a call cannot leave the table without its
//! deadline and its bytes going with it.

use std::time::{Duration, Instant};

use super::deadlines::Deadlines;
use super::flow::Flow;
use crate::call_map::CallMap;

/// One call in flight.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) deadline: Option<Instant>,
    /// The budget as the caller gave it (for the error text).
    pub(super) budget: Option<Duration>,
    /// Server: bytes of the request, held against the memory budget until the call ends.
    pub(super) bytes: usize,
    /// A streaming call's flow state; `None` for a unary call (which stays small).
    pub(super) flow: Option<Box<Flow>>,
    /// Server: a request held until its commit frame (it has not run; a cancel discards it).
    pub(super) held: Option<Box<super::Event>>,
    /// Server: the request was sent awaiting a commit, and it has not come yet (the request may
    /// already run: past the bound on held requests, the oldest run as if committed).
    pub(super) awaits_commit: bool,
    /// Server: the response headers went out (with the first frame of the answer). Client: the
    /// server's response headers arrived (a second block fails the call).
    pub(super) headers_done: bool,
    /// Server: response headers and trailers the handler set, not yet sent; `None` until it
    /// sets one (a plain call never allocates it).
    pub(super) reply: Option<Box<ReplyMetadata>>,
    /// Client: the request goes in pieces (later calls may overtake it, see the goaway).
    pub(super) pieced: bool,
}

/// A call's response metadata, as the handler sets it.
#[derive(Debug, Default)]
pub(super) struct ReplyMetadata {
    pub(super) headers: crate::metadata::Metadata,
    pub(super) trailers: crate::metadata::Metadata,
}

impl InFlight {
    /// A unary call.
    pub(super) fn unary(deadline: Option<Instant>, budget: Option<Duration>, bytes: usize) -> Self {
        InFlight { deadline, budget, bytes, flow: None, held: None, awaits_commit: false, headers_done: false, reply: None, pieced: false }
    }
}

/// Client: calls waiting for an answer. Server: calls being served.
#[derive(Debug, Default)]
pub(super) struct Calls {
    map: CallMap<InFlight>,
    deadlines: Deadlines,
    bytes: usize,
}

impl Calls {
    pub(super) fn insert(&mut self, id: u64, call: InFlight) {
        if let Some(at) = call.deadline {
            self.deadlines.insert(at, id);
        }
        self.bytes += call.bytes;
        self.map.insert(id, call);
    }

    /// Takes call `id` out, with its deadline and bytes.
    pub(super) fn remove(&mut self, id: u64) -> Option<InFlight> {
        let call = self.map.remove(&id)?;
        if let Some(at) = call.deadline {
            self.deadlines.remove(at, id);
        }
        self.bytes -= call.bytes;
        Some(call)
    }

    /// Takes out every call whose deadline is at or before `now`.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<(u64, InFlight)> {
        let ids = self.deadlines.expire(now);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(call) = self.map.remove(&id) {
                self.bytes -= call.bytes;
                out.push((id, call));
            }
        }
        out
    }

    /// Takes out every call.
    pub(super) fn drain(&mut self) -> Vec<u64> {
        self.deadlines = Deadlines::default();
        self.bytes = 0;
        self.map.drain().map(|(id, _)| id).collect()
    }

    pub(super) fn get(&self, id: u64) -> Option<&InFlight> {
        self.map.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut InFlight> {
        self.map.get_mut(&id)
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The ids of the calls in flight.
    pub(super) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.map.keys().copied()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Request bytes the calls hold.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_leaves_with_its_deadline_and_its_bytes_however_it_ends() {
        let now = Instant::now();
        let mut c = Calls::default();
        let at = |s| Some(now + Duration::from_secs(s));
        c.insert(1, InFlight::unary(at(1), None, 10));
        c.insert(2, InFlight::unary(at(2), None, 20));
        c.insert(3, InFlight::unary(None, None, 30));
        assert_eq!((c.len(), c.bytes(), c.next_deadline()), (3, 60, at(1)));
        assert_eq!(c.remove(1).map(|f| f.bytes), Some(10));
        assert_eq!((c.bytes(), c.next_deadline()), (50, at(2)));
        let expired = c.expire(now + Duration::from_secs(5));
        assert_eq!(expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![2]);
        assert_eq!((c.bytes(), c.next_deadline()), (30, None));
        assert_eq!(c.drain(), vec![3]);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
