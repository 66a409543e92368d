//! What travels between the stages, and how a record's offset is released.
//!
//! ```text
//! consumers ──Work──▶ [requests channel] ──▶ waiters ──Outgoing──▶ [replies channel] ──▶ producers
//!     └──────────────── Outgoing (dead letters) ──────────────────────┘
//! ```
//!
//! Every record carries an [`Ack`] from the consumer that read it to the
//! producer that delivers its reply (or dead letter). Only when the broker
//! acknowledges that delivery is the ack finished, and only the contiguous
//! finished prefix of a partition is stored for commit: at-least-once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_kit::offsets::PartitionOffsets;
use protocol::headers;
use rdkafka::consumer::Consumer;
use rdkafka::message::Headers;

use crate::consumer::WaiterConsumer;
use crate::metrics::WaiterMetrics;
use crate::request::WaitRequest;

/// Settings every stage reads, resolved once.
pub(crate) struct PipelineConfig {
    pub variant: String,
    pub instance: String,
    pub group: String,
    pub default_response_topic: String,
    pub dead_letter_topic: String,
    pub default_wait: Duration,
    pub max_wait: Duration,
    pub metrics: WaiterMetrics,
    pub ledger: Option<crate::ledger::LedgerClient>,
    pub tenancy: tenancy::ConsumerTenancy,
    /// Factor applied to every wait, and how replies describe it (`None` at 1).
    pub wait_scale: f64,
    pub behaviour: Option<String>,
    pub routes: tenancy::RouteTable,
}

/// A parsed request on its way to a waiter.
pub(crate) struct Work {
    pub request: WaitRequest,
    /// The record's CONSUMER `process` span; ends when the reply is delivered.
    pub span: tracing::Span,
    pub ack: Ack,
    pub consumed_at: Instant,
    pub consumed_wall_us: u64,
    /// Request headers carried on to the reply.
    pub carried: Vec<(String, Vec<u8>)>,
    pub trace_id: String,
    pub tenant: Option<String>,
    /// `waiter-bus-hops` from the request: who handled the earlier hops.
    pub hops: protocol::Hops,
}

/// A record on its way to a producer.
pub(crate) struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Headers other than trace context, which the producer injects.
    pub headers: Vec<(String, Vec<u8>)>,
    pub span: tracing::Span,
    pub ack: Ack,
    pub consumed_at: Instant,
    pub kind: OutgoingKind,
}

/// What an outgoing record is.
pub(crate) enum OutgoingKind {
    /// A reply; the timings become headers when the producer takes it.
    Reply {
        ok: bool,
        consumed_wall_us: u64,
        queue: Duration,
        service: Duration,
        serviced_at: Instant,
    },
    /// An unusable record moved aside.
    DeadLetter { reason: &'static str },
}

/// Releases one record's offset once its outcome is safely in Kafka.
///
/// Dropping an `Ack` without [`Ack::finish`] leaves the record uncommitted,
/// so it is redelivered: that is what abandoning work at shutdown means.
pub(crate) struct Ack {
    consumer: Arc<WaiterConsumer>,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    offsets: Arc<PartitionOffsets>,
}

impl Ack {
    pub fn new(
        consumer: Arc<WaiterConsumer>,
        topic: &str,
        partition: i32,
        offset: i64,
        offsets: Arc<PartitionOffsets>,
    ) -> Self {
        Self {
            consumer,
            topic: topic.into(),
            partition,
            offset,
            offsets,
        }
    }

    /// Marks the record done; stores the partition's new position for the
    /// next commit when it advanced.
    pub fn finish(self) {
        if let Some(next) = self.offsets.finish(self.offset) {
            // librdkafka stores `offset + 1`: pass the last finished offset.
            if let Err(e) = self
                .consumer
                .store_offset(&self.topic, self.partition, next - 1)
            {
                // Only possible when the partition was revoked meanwhile;
                // the next owner re-reads from the committed position.
                tracing::debug!(error = %e, partition = self.partition, "offset not stored");
            }
        }
    }
}

/// Headers a reply carries on from its request: everything but the trace
/// context (the reply has its own) and earlier timing (it has its own).
pub(crate) fn carried_headers<H: Headers>(headers: Option<&H>) -> Vec<(String, Vec<u8>)> {
    const REPLACED: [&str; 3] = [headers::TRACEPARENT, headers::TRACESTATE, headers::BAGGAGE];
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .iter()
        .filter(|h| !REPLACED.contains(&h.key) && !h.key.starts_with("waiter."))
        .filter(|h| h.key != headers::CORRELATION)
        .map(|h| {
            (
                h.key.to_string(),
                h.value.map(<[u8]>::to_vec).unwrap_or_default(),
            )
        })
        .collect()
}
