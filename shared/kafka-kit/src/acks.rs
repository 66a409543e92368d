//! Acknowledgements that flow back to the consumer that read the record.
//!
//! A consumer hands each record downstream with an [`Ack`]. Whoever settles
//! the record's outcome (a producer once the broker has its reply, or the
//! consumer itself for a record it skips) calls [`Ack::finish`], which sends
//! the acknowledgement back over an unbounded channel; the consumer task
//! drains that [`AckStream`] and stores the offsets the acknowledgements
//! release (the shape of vector's Kafka source). Downstream stages therefore
//! never hold the consumer, and the offset bookkeeping lives here:
//!
//! - [`OffsetTracker`]: one [`PartitionOffsets`] per assigned partition,
//!   replaced on assignment and marked revoked on revocation, so a late
//!   acknowledgement from an earlier assignment never moves a position;
//! - [`Finished::settle`]: the position to store, when the partition's
//!   contiguous finished prefix advanced (at-least-once).
//!
//! Dropping an `Ack` without finishing it leaves its record uncommitted: that
//! is what abandoning work means; the record is redelivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::offsets::PartitionOffsets;

/// The offsets in flight of every partition a consumer is assigned.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<i32, Arc<PartitionOffsets>>>,
}

impl OffsetTracker {
    /// A tracker with nothing assigned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts fresh bookkeeping for newly assigned `partitions`.
    pub fn assign(&self, partitions: impl IntoIterator<Item = i32>) {
        let mut tracked = self.lock();
        for partition in partitions {
            tracked.insert(partition, Arc::new(PartitionOffsets::new()));
        }
    }

    /// Stops tracking revoked `partitions`; acknowledgements still in flight
    /// for them change nothing. Returns each revoked partition that had
    /// records in flight, with how many.
    pub fn revoke(&self, partitions: impl IntoIterator<Item = i32>) -> Vec<(i32, usize)> {
        let mut tracked = self.lock();
        let mut busy = Vec::new();
        for partition in partitions {
            if let Some(offsets) = tracked.remove(&partition) {
                let in_flight = offsets.in_flight();
                if in_flight > 0 {
                    busy.push((partition, in_flight));
                }
                offsets.revoke();
            }
        }
        busy
    }

    /// Records that `offset` of `topic`/`partition` was consumed, returning
    /// the acknowledgement that finishes it back through `acks`.
    pub fn begin(&self, acks: &AckSender, topic: &str, partition: i32, offset: i64) -> Ack {
        let offsets = self.lock().entry(partition).or_default().clone();
        offsets.begin(offset);
        Ack {
            sender: acks.0.clone(),
            finished: Finished {
                offsets,
                topic: topic.into(),
                partition,
                offset,
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Arc<PartitionOffsets>>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A consumer task's side of its acknowledgement channel.
pub fn ack_channel() -> (AckSender, AckStream) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (AckSender(sender), AckStream(receiver))
}

/// Given to [`OffsetTracker::begin`]; drop it when the consumer stops
/// reading, so the [`AckStream`] ends once every outstanding [`Ack`] is
/// finished or dropped.
#[derive(Debug, Clone)]
pub struct AckSender(mpsc::UnboundedSender<Finished>);

/// The acknowledgements a consumer task drains.
#[derive(Debug)]
pub struct AckStream(mpsc::UnboundedReceiver<Finished>);

impl AckStream {
    /// The next acknowledgement; `None` once the [`AckSender`] and every
    /// outstanding [`Ack`] are gone.
    pub async fn recv(&mut self) -> Option<Finished> {
        self.0.recv().await
    }

    /// An acknowledgement already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Finished> {
        self.0.try_recv().ok()
    }
}

/// One record's acknowledgement, carried downstream with the record.
#[derive(Debug)]
pub struct Ack {
    sender: mpsc::UnboundedSender<Finished>,
    finished: Finished,
}

impl Ack {
    /// The record's outcome is safely settled: send the acknowledgement back
    /// to its consumer. (If that consumer has already stopped, the record
    /// stays uncommitted and is redelivered: at-least-once.)
    pub fn finish(self) {
        let _ = self.sender.send(self.finished);
    }
}

/// A finished record, as its consumer receives it.
#[derive(Debug)]
pub struct Finished {
    offsets: Arc<PartitionOffsets>,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

/// An offset to store: librdkafka's `store_offset` takes the last finished
/// offset (it stores `offset + 1` as the next to consume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePosition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The last offset of the finished prefix.
    pub last_finished: i64,
}

impl Finished {
    /// Marks the record finished; returns the position to store when the
    /// partition's finished prefix advanced and the partition is still
    /// assigned.
    pub fn settle(self) -> Option<StorePosition> {
        let next = self.offsets.finish(self.offset)?;
        Some(StorePosition {
            topic: self.topic,
            partition: self.partition,
            last_finished: next - 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle_all(stream: &mut AckStream) -> Vec<i64> {
        std::iter::from_fn(|| stream.try_recv())
            .filter_map(Finished::settle)
            .map(|p| p.last_finished)
            .collect()
    }

    /// A tracker with `partition` assigned and a record of it in flight at
    /// each of `offsets`.
    fn in_flight(partition: i32, offsets: [i64; 2]) -> (OffsetTracker, [Ack; 2], AckStream) {
        let tracker = OffsetTracker::new();
        tracker.assign([partition]);
        let (sender, stream) = ack_channel();
        let acks = offsets.map(|offset| tracker.begin(&sender, "t", partition, offset));
        (tracker, acks, stream)
    }

    #[test]
    fn acknowledgements_come_back_and_release_the_finished_prefix() {
        let (_tracker, [first, second], mut stream) = in_flight(0, [7, 8]);
        second.finish();
        assert_eq!(settle_all(&mut stream), Vec::<i64>::new(), "7 is in flight");
        first.finish();
        assert_eq!(settle_all(&mut stream), vec![8]);
    }

    #[test]
    fn a_revoked_partition_ignores_late_acknowledgements() {
        let (tracker, [first, second], mut stream) = in_flight(3, [1, 2]);
        assert_eq!(tracker.revoke([3]), vec![(3, 2)]);
        first.finish();
        second.finish();
        assert_eq!(settle_all(&mut stream), Vec::<i64>::new());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_stream_ends_when_the_sender_and_every_ack_are_gone() {
        let tracker = OffsetTracker::new();
        let (sender, mut stream) = ack_channel();
        let abandoned = tracker.begin(&sender, "t", 0, 0);
        drop(sender);
        drop(abandoned);
        assert!(stream.recv().await.is_none());
    }
}
