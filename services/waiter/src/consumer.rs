//! Stage 1: Kafka consumers. Each record becomes a CONSUMER `process` span,
//! is parsed, and is handed to the waiters over a bounded channel (or, when
//! unusable, straight to the producers as a dead letter).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kafka_kit::handoff::send_timed;
use kafka_kit::offsets::PartitionOffsets;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use protocol::headers;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientContext, Message, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{WaiterMetrics, handed_off};
use crate::pipeline::{Ack, Outgoing, OutgoingKind, PipelineConfig, Work, carried_headers};
use crate::request::{self, RequestLimits};

/// The consumer type every stage refers to.
pub type WaiterConsumer = StreamConsumer<WaiterContext>;

/// Per-consumer state librdkafka calls back into: partition bookkeeping on
/// rebalance, lag from statistics, commit failures.
pub struct WaiterContext {
    metrics: WaiterMetrics,
    variant: String,
    group: String,
    // Offsets in flight per assigned partition. Replaced on assignment and
    // marked revoked on revocation, so a late acknowledgement from a previous
    // assignment never moves the committed position.
    partitions: Mutex<HashMap<i32, Arc<PartitionOffsets>>>,
    // Partitions assigned across all of this instance's consumers; readiness.
    assigned: Arc<tokio::sync::watch::Sender<usize>>,
}

impl WaiterContext {
    pub(crate) fn new(
        config: &PipelineConfig,
        assigned: Arc<tokio::sync::watch::Sender<usize>>,
    ) -> Self {
        Self {
            metrics: config.metrics.clone(),
            variant: config.variant.clone(),
            group: config.group.clone(),
            partitions: Mutex::new(HashMap::new()),
            assigned,
        }
    }

    fn partitions(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<PartitionOffsets>>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offsets_for(&self, partition: i32) -> Arc<PartitionOffsets> {
        self.partitions().entry(partition).or_default().clone()
    }

    fn rebalance_event(&self, kind: &'static str, list: &TopicPartitionList) {
        let described = describe(list);
        tracing::info!(variant = %self.variant, group = %self.group, partitions = %described, "partitions {kind}");
        self.metrics.rebalanced(kind);
        let span = tracing::info_span!(
            "rebalance",
            otel.kind = "internal",
            service = protocol::Service::Waiter.as_str(),
            variant = %self.variant,
            messaging.consumer.group.name = %self.group,
        );
        span.add_event(
            format!("partitions.{kind}"),
            vec![KeyValue::new("messaging.kafka.partitions", described)],
        );
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
            let mut partitions = self.partitions();
            for element in list.elements() {
                if let Some(offsets) = partitions.remove(&element.partition()) {
                    if offsets.in_flight() > 0 {
                        tracing::info!(
                            partition = element.partition(),
                            in_flight = offsets.in_flight(),
                            "revoked with work in flight: its replies still go out, its offsets are left for the next owner"
                        );
                    }
                    offsets.revoke();
                }
            }
            drop(partitions);
            self.assigned
                .send_modify(|n| *n = n.saturating_sub(list.count()));
            self.rebalance_event("revoked", list);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let mut partitions = self.partitions();
                for element in list.elements() {
                    partitions.insert(element.partition(), Arc::new(PartitionOffsets::new()));
                }
                drop(partitions);
                self.assigned.send_modify(|n| *n += list.count());
                self.rebalance_event("assigned", list);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance failed");
                self.metrics.rebalanced("error");
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
                self.metrics.failed("commit");
            }
        }
    }
}

/// Reads records until `stop` is cancelled, handing each one on.
pub(crate) async fn run(
    consumer: Arc<WaiterConsumer>,
    config: Arc<PipelineConfig>,
    work: mpsc::Sender<Work>,
    dead_letters: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                // The broker going away surfaces here; librdkafka reconnects
                // by itself, so the stage keeps asking.
                tracing::warn!(error = %e, "consume failed; retrying");
                config.metrics.failed("consume");
                continue;
            }
        };
        config.metrics.consumed.increment(1);
        let handed_on = handle(&consumer, &config, &message, &work, &dead_letters).await;
        if !handed_on {
            break;
        }
    }
}

/// Returns false when the next stage has gone away (shutdown).
async fn handle(
    consumer: &Arc<WaiterConsumer>,
    config: &PipelineConfig,
    message: &BorrowedMessage<'_>,
    work: &mpsc::Sender<Work>,
    dead_letters: &mpsc::Sender<Outgoing>,
) -> bool {
    let consumed_at = Instant::now();
    let consumed_wall_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let offsets = consumer.context().offsets_for(message.partition());
    offsets.begin(message.offset());
    let ack = Ack::new(
        consumer.clone(),
        message.topic(),
        message.partition(),
        message.offset(),
        offsets,
    );

    let parent = propagation::extract_kafka(message.headers());
    let tenant = propagation::tenant(&parent);
    let key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {}", message.topic()),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %message.topic(),
        messaging.destination.partition.id = message.partition(),
        messaging.kafka.offset = message.offset(),
        messaging.kafka.message.key = key.as_deref().unwrap_or_default(),
        messaging.consumer.group.name = %config.group,
        messaging.message.conversation_id = tracing::field::Empty,
        service = protocol::Service::Waiter.as_str(),
        variant = %config.variant,
    );
    let _ = span.set_parent(parent);
    record_broker_timestamp(&span, message.timestamp(), consumed_wall_us);
    let routes = config.routes.snapshot();
    if let tenancy::Decision::Skip(reason) =
        tenancy::decide(&config.tenancy, tenant.as_deref(), &routes)
    {
        // Not ours: commit past it. The span shows who skipped it and why.
        config.metrics.skipped(reason.label());
        span.add_event(
            "skipped",
            vec![KeyValue::new("tenancy.skip_reason", reason.label())],
        );
        ack.finish();
        return true;
    }
    let trace_id = span.context().span().span_context().trace_id().to_string();

    let limits = RequestLimits {
        default_wait: config.default_wait,
        max_wait: config.max_wait,
    };
    let parsed = request::parse(
        message.headers(),
        message.payload(),
        &config.default_response_topic,
        limits,
    );
    let carried = carried_headers(message.headers());
    match parsed {
        Ok(mut request) => {
            if request.correlation.is_empty() {
                request.correlation = uuid::Uuid::new_v4().to_string();
                tracing::warn!(
                    parent: &span,
                    correlation = %request.correlation,
                    offset = message.offset(),
                    "request without a `correlation` header; generated one"
                );
                span.add_event("correlation.generated", vec![]);
            }
            span.record(
                "messaging.message.conversation_id",
                request.correlation.as_str(),
            );
            let item = Work {
                request,
                span: span.clone(),
                ack,
                consumed_at,
                consumed_wall_us,
                carried,
                trace_id,
                tenant,
                hops: propagation::kafka_header(message.headers(), headers::HOPS)
                    .map(protocol::Hops::parse)
                    .unwrap_or_default(),
            };
            match send_timed(work, item).await {
                Ok(blocked) => {
                    handed_off(&config.metrics.requests_blocked, &span, "queued", blocked);
                    true
                }
                Err(_) => false,
            }
        }
        Err(unusable) => {
            tracing::warn!(
                parent: &span,
                reason = %unusable,
                partition = message.partition(),
                offset = message.offset(),
                "unusable record; moving it to the dead-letter topic"
            );
            span.add_event(
                "dead_letter",
                vec![KeyValue::new("dead_letter.reason", unusable.to_string())],
            );
            span.record("otel.status_code", "ERROR");
            let mut headers = carried;
            headers.push((
                headers::DEAD_LETTER_REASON.into(),
                unusable.to_string().into_bytes(),
            ));
            headers.push((
                headers::DEAD_LETTER_ORIGIN.into(),
                format!(
                    "{}/{}@{}",
                    message.topic(),
                    message.partition(),
                    message.offset()
                )
                .into_bytes(),
            ));
            for name in [headers::CORRELATION, headers::RESPONSE_TOPIC] {
                if let Some(value) = raw_header(message.headers(), name) {
                    headers.push((name.into(), value));
                }
            }
            let outgoing = Outgoing {
                topic: config.dead_letter_topic.clone(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                headers,
                span,
                ack,
                consumed_at,
                kind: OutgoingKind::DeadLetter {
                    reason: unusable.label(),
                },
            };
            send_timed(dead_letters, outgoing).await.is_ok()
        }
    }
}

fn raw_header<H: Headers>(headers: Option<&H>, name: &str) -> Option<Vec<u8>> {
    protocol::headers::last(headers, name).map(<[u8]>::to_vec)
}

/// Marks when the broker (or the producer) stamped the record, naming which.
/// The embedded broker stamps CreateTime on consumed records; real Kafka
/// topics may be configured for LogAppendTime. Nothing is presented as a
/// broker time unless the broker said it was one.
fn record_broker_timestamp(span: &tracing::Span, timestamp: Timestamp, consumed_wall_us: u64) {
    let (kind, millis) = match timestamp {
        Timestamp::CreateTime(ms) => ("CreateTime", ms),
        Timestamp::LogAppendTime(ms) => ("LogAppendTime", ms),
        Timestamp::NotAvailable => {
            span.add_event(
                "message.timestamp",
                vec![KeyValue::new(
                    "messaging.kafka.timestamp.type",
                    "NotAvailable",
                )],
            );
            return;
        }
    };
    let age_ms = (consumed_wall_us / 1000) as i64 - millis;
    span.add_event(
        "message.timestamp",
        vec![
            KeyValue::new("messaging.kafka.timestamp.type", kind),
            KeyValue::new("messaging.kafka.timestamp.ms", millis),
            KeyValue::new("messaging.kafka.timestamp.age_ms", age_ms),
        ],
    );
}
