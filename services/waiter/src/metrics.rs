//! The waiter's Prometheus metrics, registered once per instance so the hot
//! path only touches pre-resolved handles. Every series carries the
//! `variant` label, so a baseline and its variants are told apart even when
//! they share one process (tests, the embedded demo).

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::reasons::{DeadLetter, ExpiredAt, Failure, Reason, Rebalance, Skip, UndecodableAction};

/// Channel between the consumers and the waiters.
pub const REQUESTS_CHANNEL: &str = "requests";
/// Channel between the waiters and the producers.
pub const REPLIES_CHANNEL: &str = "replies";

/// Handles for one waiter instance.
#[derive(Clone)]
pub struct WaiterMetrics {
    variant: String,
    /// Records received from Kafka.
    pub consumed: Counter,
    /// Replies acknowledged by the broker with `status=ok`.
    pub replied_ok: Counter,
    /// Replies acknowledged by the broker with `status=error` (refused requests).
    pub replied_error: Counter,
    /// Waits in progress.
    pub waits_in_flight: Gauge,
    /// Time a consumer was blocked handing a record to the waiters.
    pub requests_blocked: Histogram,
    /// Time a waiter was blocked handing a reply to the producers.
    pub replies_blocked: Histogram,
    /// Waiting for a free waiter.
    pub stage_queue: Histogram,
    /// The wait plus the ledger call.
    pub stage_service: Histogram,
    /// From the end of service to the producer client.
    pub stage_handoff: Histogram,
    /// From the producer client to the broker's acknowledgement.
    pub stage_delivery: Histogram,
    /// From consumption to acknowledged reply.
    pub stage_total: Histogram,
    /// Requests dropped because their caller's deadline had passed or
    /// could not be met, by where they were dropped.
    pub expired: ByReason<ExpiredAt>,
    /// Requests that named no correlation id (one was generated).
    pub without_correlation: Counter,
    skipped: ByReason<Skip>,
}

/// One counter per reason, resolved once: for the events the hot path
/// counts (a baseline skips most records when tenants route elsewhere).
#[derive(Clone)]
pub struct ByReason<R: Reason> {
    counters: std::sync::Arc<[(R, Counter)]>,
}

impl<R: Reason + PartialEq> ByReason<R> {
    fn new(name: &'static str, variant: &str, key: &'static str) -> Self {
        Self {
            counters: R::all()
                .map(|reason| {
                    let counter = metrics::counter!(name, "variant" => variant.to_string(), key => reason.label());
                    (reason, counter)
                })
                .collect(),
        }
    }

    /// Counts one event of `reason`.
    pub fn count(&self, reason: R) {
        if let Some((_, counter)) = self.counters.iter().find(|(known, _)| *known == reason) {
            counter.increment(1);
        }
    }
}

impl WaiterMetrics {
    /// Registers (or finds) the series for `variant`.
    pub fn new(variant: &str) -> Self {
        describe();
        let v = variant.to_string();
        let stage = |name: &'static str| metrics::histogram!("waiter_stage_seconds", "variant" => v.clone(), "stage" => name);
        let blocked = |channel: &'static str| metrics::histogram!("waiter_handoff_blocked_seconds", "variant" => v.clone(), "channel" => channel);
        Self {
            consumed: metrics::counter!("waiter_records_consumed_total", "variant" => v.clone()),
            replied_ok: metrics::counter!("waiter_replies_total", "variant" => v.clone(), "status" => "ok"),
            replied_error: metrics::counter!("waiter_replies_total", "variant" => v.clone(), "status" => "error"),
            waits_in_flight: metrics::gauge!("waiter_waits_in_flight", "variant" => v.clone()),
            requests_blocked: blocked(REQUESTS_CHANNEL),
            replies_blocked: blocked(REPLIES_CHANNEL),
            stage_queue: stage("queue"),
            stage_service: stage("service"),
            stage_handoff: stage("handoff"),
            stage_delivery: stage("delivery"),
            stage_total: stage("total"),
            expired: ByReason::new("waiter_requests_expired_total", &v, "stage"),
            without_correlation: metrics::counter!("waiter_requests_without_correlation_total", "variant" => v.clone()),
            skipped: ByReason::new("waiter_records_skipped_total", &v, "reason"),
            variant: v,
        }
        .registered_at_zero()
    }

    /// Registers every labelled counter the waiter may increment, at zero,
    /// so a dashboard's query finds its series before the first event.
    fn registered_at_zero(self) -> Self {
        self.zero_all::<DeadLetter>("waiter_records_dead_lettered_total", "reason");
        self.zero_all::<Failure>("waiter_records_failed_total", "reason");
        self.zero_all::<UndecodableAction>("waiter_undecodable_batches_total", "action");
        self.zero_all::<Rebalance>("waiter_rebalances_total", "kind");
        metrics::counter!("waiter_stand_ins_started_total").increment(0);
        self
    }

    fn zero_all<R: Reason>(&self, name: &'static str, key: &'static str) {
        for reason in R::all() {
            metrics::counter!(name, "variant" => self.variant.clone(), key => reason.label())
                .increment(0);
        }
    }

    /// Adds one to counter `name` of this variant, labelled `key=value`.
    fn count(&self, name: &'static str, key: &'static str, value: &'static str) {
        metrics::counter!(name, "variant" => self.variant.clone(), key => value).increment(1);
    }

    /// Counts a record moved to the dead-letter topic.
    pub fn dead_lettered(&self, reason: DeadLetter) {
        self.count(
            "waiter_records_dead_lettered_total",
            "reason",
            reason.label(),
        );
    }

    /// Counts a record left for another consumer by the tenancy rules.
    pub fn skipped(&self, reason: Skip) {
        self.skipped.count(reason);
    }

    /// Counts a failure that did not lose the record (it is retried or redelivered).
    pub fn failed(&self, reason: Failure) {
        self.count("waiter_records_failed_total", "reason", reason.label());
    }

    /// Counts a record set that could not be decoded, by what was done.
    pub fn undecodable(&self, action: UndecodableAction) {
        self.count("waiter_undecodable_batches_total", "action", action.label());
    }

    /// Marks one partition stopped at an undecodable record set (1) or not (0).
    pub fn partition_stopped(&self, topic: &str, partition: i32, stopped: bool) {
        metrics::gauge!(
            "waiter_partition_stopped",
            "variant" => self.variant.clone(),
            "topic" => topic.to_string(),
            "partition" => partition.to_string()
        )
        .set(if stopped { 1.0 } else { 0.0 });
    }

    /// Counts a rebalance event.
    pub fn rebalanced(&self, kind: Rebalance) {
        self.count("waiter_rebalances_total", "kind", kind.label());
    }

    /// Records a channel's depth and capacity.
    pub fn channel(&self, channel: &'static str, depth: usize, capacity: usize) {
        metrics::gauge!("waiter_channel_depth", "variant" => self.variant.clone(), "channel" => channel)
            .set(depth as f64);
        metrics::gauge!("waiter_channel_capacity", "variant" => self.variant.clone(), "channel" => channel)
            .set(capacity as f64);
    }

    /// Records one partition's consumer lag.
    pub fn lag(&self, topic: &str, partition: i32, lag: i64) {
        metrics::gauge!(
            "waiter_consumer_lag_records",
            "variant" => self.variant.clone(),
            "topic" => topic.to_string(),
            "partition" => partition.to_string()
        )
        .set(lag as f64);
    }
}

/// Records `elapsed` on `histogram` in seconds.
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.record(elapsed.as_secs_f64());
}

/// Records a hand-off to the next stage: how long it blocked on a full
/// channel, in `histogram` and as `event` (with `handoff.blocked_us`) on
/// the record's span.
pub fn handed_off(
    histogram: &Histogram,
    span: &tracing::Span,
    event: &'static str,
    blocked: Duration,
) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    observe(histogram, blocked);
    span.add_event(
        event,
        vec![opentelemetry::KeyValue::new(
            "handoff.blocked_us",
            blocked.as_micros() as i64,
        )],
    );
}

fn describe() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        metrics::describe_counter!(
            "waiter_records_consumed_total",
            "Records received from the request topic."
        );
        metrics::describe_counter!(
            "waiter_replies_total",
            "Replies acknowledged by the broker, by status."
        );
        metrics::describe_counter!(
            "waiter_records_dead_lettered_total",
            "Records moved to the dead-letter topic, by reason."
        );
        metrics::describe_counter!(
            "waiter_records_skipped_total",
            "Records left to another consumer by the tenancy rules, by reason."
        );
        metrics::describe_counter!(
            "waiter_requests_expired_total",
            "Requests dropped unanswered because their caller's deadline had passed or could not be met, by stage."
        );
        metrics::describe_counter!(
            "waiter_records_failed_total",
            "Failures that were retried or left for redelivery, by reason."
        );
        metrics::describe_counter!(
            "waiter_requests_without_correlation_total",
            "Requests with none of the correlation headers; their replies carry a generated id."
        );
        metrics::describe_counter!(
            "waiter_undecodable_batches_total",
            "Record sets the client could not decode (corrupt, or an unknown codec), by what was done: skipped with a dead-letter marker, or the partition stopped."
        );
        metrics::describe_gauge!(
            "waiter_partition_stopped",
            "1 while a partition is stopped at a record set it cannot decode (waiter.undecodable_batches: stop)."
        );
        metrics::describe_counter!(
            "waiter_rebalances_total",
            "Partition assignments and revocations."
        );
        metrics::describe_counter!(
            "waiter_stand_ins_started_total",
            "Times the baseline started standing in for a mapped variant that is not live."
        );
        metrics::describe_gauge!("waiter_waits_in_flight", "Waits in progress.");
        metrics::describe_gauge!("waiter_channel_depth", "Items waiting in a stage channel.");
        metrics::describe_gauge!("waiter_channel_capacity", "Capacity of a stage channel.");
        metrics::describe_gauge!(
            "waiter_consumer_lag_records",
            "Records behind the high watermark, per partition."
        );
        metrics::describe_histogram!(
            "waiter_handoff_blocked_seconds",
            Unit::Seconds,
            "Time a stage was blocked on a full channel (the saturation signal)."
        );
        metrics::describe_histogram!(
            "waiter_stage_seconds",
            Unit::Seconds,
            "Time spent per pipeline stage."
        );
    });
}
