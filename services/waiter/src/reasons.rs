//! Every reason the waiter counts an event by, each an enum with its full
//! list and its label. The metrics register their series from these lists
//! (at zero, so a dashboard finds them before the first event), and the
//! stages name what happened by a variant, never by a string: a reason
//! cannot be misspelt, forgotten in the list, or counted under a label no
//! dashboard knows. A leaf module: it depends on nothing else in the crate.

use strum::{IntoStaticStr, VariantArray};

/// A closed set of labels: every variant, and each one's label.
pub trait Reason: Copy + Sized + 'static {
    /// Every variant, in the order the metrics register them.
    fn all() -> Box<dyn Iterator<Item = Self>>;
    /// The bounded label a metric, a span event or a header carries.
    fn label(self) -> &'static str;
}

/// Implements [`Reason`] for an enum of unit variants from its strum
/// derives, and `label` as its own method (callable without the trait).
macro_rules! unit_reason {
    ($($name:ty),* $(,)?) => {$(
        impl $name {
            /// The bounded label a metric, a span event or a header carries.
            pub fn label(self) -> &'static str {
                self.into()
            }
        }
        impl Reason for $name {
            fn all() -> Box<dyn Iterator<Item = Self>> {
                Box::new(<$name as VariantArray>::VARIANTS.iter().copied())
            }
            fn label(self) -> &'static str {
                <$name>::label(self)
            }
        }
    )*};
}

unit_reason!(Failure, DeadLetter, ExpiredAt, UndecodableAction, Rebalance);

/// A failure that lost nothing (the record is retried, redelivered or
/// served without the part that failed): `waiter_records_failed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Failure {
    /// Reading from Kafka failed (the broker away; an undecodable record set).
    Consume,
    /// Committing offsets failed; they are committed again later.
    Commit,
    /// A delivery attempt failed and is retried.
    Delivery,
    /// The dead-letter topic itself refused a record for good.
    DeadLetterRefused,
    /// A record's routes-version header could not be read.
    RoutesVersion,
    /// A record's deadline header could not be read.
    Deadline,
    /// The ledger call failed (unreachable, or an error status).
    Ledger,
    /// The ledger call was not made: its concurrent calls were all taken.
    LedgerBusy,
    /// The ledger call was not made: its breaker is open.
    LedgerPaused,
}

/// Why a record went to the dead-letter topic:
/// `waiter_records_dead_lettered_total{reason}` and the `dlt.reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum DeadLetter {
    /// No payload.
    EmptyBody,
    /// The payload is not UTF-8 text.
    BodyNotUtf8,
    /// The payload looks like JSON but is not a valid request.
    MalformedJson,
    /// A header needed as text (the reply topic) is not UTF-8.
    HeaderNotUtf8,
    /// The reply-topic header names no legal topic.
    BadResponseTopic,
    /// The reply-topic header names the request topic.
    ReplyWouldLoop,
    /// The reply-partition header is not a partition number.
    BadReplyPartition,
    /// The record is a waiter's reply, not a request.
    IsAReply,
    /// The reply topic does not exist.
    UnknownResponseTopic,
    /// The broker refused the reply for good (too large, invalid, forbidden).
    UndeliverableReply,
    /// The reply partition the caller named does not exist.
    UnknownReplyPartition,
    /// A record set the client cannot decode was skipped (a marker, empty body).
    UndecodableBatch,
}

/// Why a record was left to another consumer: `waiter_records_skipped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The tenancy rules gave it to another consumer.
    Tenancy(tenancy::SkipReason),
    /// A stand-in met a record of a variant that is live again and left it,
    /// uncommitted, for the variant.
    HeldBackForLiveVariant,
}

impl Skip {
    /// The bounded label a metric, a span event or a header carries.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Tenancy(reason) => reason.label(),
            Skip::HeldBackForLiveVariant => "held_back_for_live_variant",
        }
    }
}

impl Reason for Skip {
    fn all() -> Box<dyn Iterator<Item = Self>> {
        Box::new(
            tenancy::SkipReason::VARIANTS
                .iter()
                .copied()
                .map(Skip::Tenancy)
                .chain([Skip::HeldBackForLiveVariant]),
        )
    }

    fn label(self) -> &'static str {
        Skip::label(self)
    }
}

/// Where a request past (or certain to miss) its deadline was dropped:
/// `waiter_requests_expired_total{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ExpiredAt {
    /// At the consumer, before it went on to the waiters.
    Consumer,
    /// At the waiter pool, before it took a waiter slot.
    Waiter,
    /// After its wait, instead of replying.
    Reply,
}

/// What was done with a record set the client could not decode:
/// `waiter_undecodable_batches_total{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum UndecodableAction {
    /// Moved past, with a dead-letter marker naming its offsets.
    Skipped,
    /// Its partition was paused there.
    Stopped,
}

/// A consumer group event: `waiter_rebalances_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Rebalance {
    /// Partitions were assigned.
    Assigned,
    /// Partitions were revoked.
    Revoked,
    /// The rebalance failed.
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<R: Reason>() -> Vec<&'static str> {
        R::all().map(R::label).collect()
    }

    #[test]
    fn labels_are_the_ones_dashboards_and_alerts_query() {
        assert_eq!(
            labels::<Failure>(),
            [
                "consume",
                "commit",
                "delivery",
                "dead_letter_refused",
                "routes_version",
                "deadline",
                "ledger",
                "ledger_busy",
                "ledger_paused"
            ]
        );
        assert_eq!(labels::<DeadLetter>()[8], "unknown_response_topic");
        assert_eq!(labels::<DeadLetter>().len(), 12);
        assert_eq!(labels::<ExpiredAt>(), ["consumer", "waiter", "reply"]);
        assert_eq!(labels::<Skip>().len(), 7);
        assert_eq!(labels::<Skip>().last(), Some(&"held_back_for_live_variant"));
    }

    #[test]
    fn every_label_is_distinct_within_its_reason() {
        fn distinct<R: Reason>() {
            let mut all = labels::<R>();
            let count = all.len();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), count, "{}", std::any::type_name::<R>());
        }
        distinct::<Failure>();
        distinct::<DeadLetter>();
        distinct::<Skip>();
        distinct::<ExpiredAt>();
        distinct::<UndecodableAction>();
        distinct::<Rebalance>();
    }
}
