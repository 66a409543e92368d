//! At-least-once offset bookkeeping for records that finish out of order.
//!
//! A consumer hands records to concurrent workers; a 10 ms wait finishes
//! before a 5 s one that arrived earlier. Committing the later offset would
//! lose the earlier record on a crash, so each partition keeps the offsets
//! still in flight and only the contiguous finished prefix becomes committable.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Offsets of one assigned partition that are consumed but not yet finished.
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    state: Mutex<State>,
    // Set when the partition is revoked: finishing work of a previous
    // assignment must not move the committed position of the next one.
    revoked: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    in_flight: BTreeSet<i64>,
    highest_seen: Option<i64>,
    last_committable: Option<i64>,
}

impl PartitionOffsets {
    /// A tracker for a freshly assigned partition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` was consumed and is now in flight.
    pub fn begin(&self, offset: i64) {
        let mut state = self.lock();
        state.in_flight.insert(offset);
        // The position before the first record is already committed (or is
        // the reset point); it is never worth storing again.
        state.last_committable.get_or_insert(offset);
        state.highest_seen = Some(state.highest_seen.map_or(offset, |h| h.max(offset)));
    }

    /// Marks `offset` finished. Returns the new next-offset-to-consume when
    /// the committable position advanced (and the partition is still ours).
    pub fn finish(&self, offset: i64) -> Option<i64> {
        let mut state = self.lock();
        state.in_flight.remove(&offset);
        let committable = match state.in_flight.first() {
            Some(&oldest) => oldest,
            None => state.highest_seen? + 1,
        };
        if state
            .last_committable
            .is_some_and(|last| last >= committable)
        {
            return None;
        }
        state.last_committable = Some(committable);
        (!self.is_revoked()).then_some(committable)
    }

    /// How many consumed records are not finished.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Marks the partition as no longer assigned to this consumer.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// Whether [`Self::revoke`] was called.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_finishes_advance_one_by_one() {
        let offsets = PartitionOffsets::new();
        offsets.begin(10);
        offsets.begin(11);
        assert_eq!(offsets.finish(10), Some(11));
        assert_eq!(offsets.finish(11), Some(12));
    }

    #[test]
    fn a_later_finish_waits_for_the_earlier_record() {
        let offsets = PartitionOffsets::new();
        for o in 0..4 {
            offsets.begin(o);
        }
        assert_eq!(offsets.finish(2), None, "0 and 1 are still in flight");
        assert_eq!(offsets.finish(3), None);
        assert_eq!(offsets.finish(1), None, "0 is still in flight");
        assert_eq!(offsets.finish(0), Some(4), "everything up to 3 is done");
        assert_eq!(offsets.in_flight(), 0);
    }

    #[test]
    fn a_revoked_partition_never_offers_a_position() {
        let offsets = PartitionOffsets::new();
        offsets.begin(5);
        offsets.revoke();
        assert_eq!(offsets.finish(5), None);
    }

    #[test]
    fn the_position_never_moves_backwards() {
        let offsets = PartitionOffsets::new();
        offsets.begin(1);
        assert_eq!(offsets.finish(1), Some(2));
        assert_eq!(offsets.finish(1), None, "finishing twice changes nothing");
    }
}
