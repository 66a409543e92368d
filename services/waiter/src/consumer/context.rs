//! The consumer's librdkafka context: offset bookkeeping on rebalance (the
//! `kafka_kit::acks` tracker), lag from statistics, commit failures.

use std::sync::Arc;

use kafka_kit::acks::OffsetTracker;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;

use super::ConsumerConfig;
use crate::metrics::WaiterMetrics;
use crate::reasons;

/// Per-consumer state librdkafka calls back into: offset bookkeeping on
/// rebalance, lag from statistics, commit failures.
pub struct WaiterContext {
    metrics: WaiterMetrics,
    variant: String,
    group: String,
    // Offsets in flight per assigned partition (see `kafka_kit::acks`).
    pub(super) offsets: OffsetTracker,
    // Partitions assigned across all of this instance's consumers; readiness.
    assigned: Arc<tokio::sync::watch::Sender<usize>>,
    // Partitions stopped at an undecodable record set; a revoked one is
    // its next owner's to find.
    stopped: super::StoppedPartitions,
    // Bumped at every assignment and revocation: a partition a stand-in
    // held back belongs to an assignment that may have ended.
    pub(super) rebalances: std::sync::atomic::AtomicU64,
}

impl WaiterContext {
    pub(crate) fn new(
        config: &ConsumerConfig,
        assigned: Arc<tokio::sync::watch::Sender<usize>>,
    ) -> Self {
        Self {
            metrics: config.metrics.clone(),
            variant: config.variant.clone(),
            group: config.group.clone(),
            offsets: OffsetTracker::new(),
            assigned,
            stopped: config.stopped.clone(),
            rebalances: Default::default(),
        }
    }

    /// A rebalance is a log event and a metric, not a span: as a span it
    /// was a one-span trace of its own, most of a trace list's entries.
    fn rebalance_event(&self, kind: reasons::Rebalance, list: &TopicPartitionList) {
        let kind_label = kind.label();
        self.rebalances
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.rebalanced(kind);
        let described = describe(list);
        match list.count() {
            // An instance with more consumers than partitions sees this on
            // every rebalance of the group.
            0 => {
                tracing::debug!(variant = %self.variant, group = %self.group, "no partitions {kind_label}")
            }
            _ => {
                tracing::info!(variant = %self.variant, group = %self.group, partitions = %described, "partitions {kind_label}")
            }
        }
    }
}

fn describe(list: &TopicPartitionList) -> String {
    list.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

impl ClientContext for WaiterContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (partition, stats) in &topic.partitions {
                // -1 marks partitions this client does not consume.
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    self.metrics.lag(name, *partition, stats.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for WaiterContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked = list
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect::<Vec<_>>();
            for element in list.elements() {
                if self.stopped.forget(element.topic(), element.partition()) {
                    self.metrics
                        .partition_stopped(element.topic(), element.partition(), false);
                }
            }
            for (partition, in_flight) in self.offsets.revoke(revoked) {
                tracing::info!(
                    partition,
                    in_flight,
                    "revoked with work in flight: its replies still go out, its offsets are left for the next owner"
                );
            }
            self.assigned
                .send_modify(|n| *n = n.saturating_sub(list.count()));
            self.rebalance_event(reasons::Rebalance::Revoked, list);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.offsets
                    .assign(list.elements().iter().map(|e| e.partition()));
                self.assigned.send_modify(|n| *n += list.count());
                self.rebalance_event(reasons::Rebalance::Assigned, list);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance failed");
                self.metrics.rebalanced(reasons::Rebalance::Error);
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            // Routine while the group settles; the stored offsets are
            // committed by the next owner's first commit or ours after it.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress)) => {
                tracing::debug!("offset commit deferred: rebalance in progress");
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; it is retried at the next interval");
                self.metrics.failed(reasons::Failure::Commit);
            }
        }
    }
}
