//! Stage 3: producers. Each takes replies (and dead letters) off the shared
//! channel, publishes them inside a PRODUCER `send` span whose context the
//! record carries, and finishes the record's offset only when the broker
//! acknowledges it. A failed delivery is retried with backoff until it
//! succeeds or shutdown abandons it; either way nothing is committed that was
//! not delivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use protocol::headers::timing;
use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{WaiterMetrics, observe};
use crate::pipeline::{Outgoing, OutgoingKind};

/// What the producer stage reads, resolved once from the settings.
pub(crate) struct ProducerConfig {
    pub variant: String,
    /// Deliveries one producer awaits at once before it stops taking records.
    pub max_in_flight: usize,
    pub metrics: WaiterMetrics,
}

/// Longest pause between delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes until the channel closes and every delivery has settled.
pub(crate) async fn run(
    producer: FutureProducer,
    config: Arc<ProducerConfig>,
    outgoing: Arc<Mutex<mpsc::Receiver<Outgoing>>>,
    abandon: CancellationToken,
) {
    let mut deliveries = JoinSet::new();
    loop {
        while deliveries.try_join_next().is_some() {}
        if deliveries.len() >= config.max_in_flight {
            deliveries.join_next().await;
            continue;
        }
        // One producer at a time waits on the channel; the others queue on
        // the lock, which is as fair as the channel itself.
        let next = outgoing.lock().await.recv().await;
        let Some(item) = next else { break };
        deliveries.spawn(deliver(
            producer.clone(),
            config.clone(),
            item,
            abandon.clone(),
        ));
    }
    while deliveries.join_next().await.is_some() {}
}

async fn deliver(
    producer: FutureProducer,
    config: Arc<ProducerConfig>,
    outgoing: Outgoing,
    abandon: CancellationToken,
) {
    let Outgoing {
        topic,
        key,
        payload,
        mut headers,
        span,
        ack,
        consumed_at,
        kind,
    } = outgoing;
    if let OutgoingKind::Reply {
        consumed_wall_us,
        queue,
        service,
        serviced_at,
        ..
    } = &kind
    {
        let handoff = serviced_at.elapsed();
        observe(&config.metrics.stage_handoff, handoff);
        for (name, value) in [
            (timing::CONSUMED_AT_US, *consumed_wall_us),
            (timing::QUEUE_US, queue.as_micros() as u64),
            (timing::SERVICE_US, service.as_micros() as u64),
            (timing::HANDOFF_US, handoff.as_micros() as u64),
        ] {
            headers.push((name.into(), value.to_string().into_bytes()));
        }
    }
    let key_text = key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned();
    let send_span = tracing::info_span!(
        parent: &span,
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = %topic,
        messaging.kafka.message.key = %key_text,
        service = protocol::Service::Waiter.as_str(),
        variant = %config.variant,
    );
    let record_headers = headers.iter().fold(
        propagation::inject_kafka(
            &send_span.context(),
            OwnedHeaders::new_with_capacity(headers.len() + 3),
        ),
        |acc, (name, value)| {
            acc.insert(Header {
                key: name,
                value: Some(value),
            })
        },
    );

    let sent_at = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut record = FutureRecord::to(&topic)
            .payload(&payload)
            .headers(record_headers.clone());
        if let Some(key) = &key {
            record = record.key(key);
        }
        let result = tokio::select! {
            result = producer.send(record, Duration::from_secs(5)) => result,
            () = abandon.cancelled() => {
                send_span.add_event("delivery.abandoned", vec![]);
                tracing::warn!(topic = %topic, "shutdown abandoned an undelivered record; it will be redelivered");
                return;
            }
        };
        match result {
            Ok(delivery) => {
                let (timestamp_type, timestamp_ms) = match delivery.timestamp {
                    Timestamp::CreateTime(ms) => ("CreateTime", ms),
                    Timestamp::LogAppendTime(ms) => ("LogAppendTime", ms),
                    Timestamp::NotAvailable => ("NotAvailable", -1),
                };
                send_span.add_event(
                    "delivery.ack",
                    vec![
                        KeyValue::new(
                            "messaging.destination.partition.id",
                            delivery.partition.to_string(),
                        ),
                        KeyValue::new("messaging.kafka.offset", delivery.offset),
                        KeyValue::new("messaging.kafka.timestamp.type", timestamp_type),
                        KeyValue::new("messaging.kafka.timestamp.ms", timestamp_ms),
                    ],
                );
                observe(&config.metrics.stage_delivery, sent_at.elapsed());
                observe(&config.metrics.stage_total, consumed_at.elapsed());
                match kind {
                    OutgoingKind::Reply { ok: true, .. } => config.metrics.replied_ok.increment(1),
                    OutgoingKind::Reply { ok: false, .. } => {
                        config.metrics.replied_error.increment(1)
                    }
                    OutgoingKind::DeadLetter { reason } => config.metrics.dead_lettered(reason),
                }
                ack.finish();
                return;
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, topic = %topic, retry_in = ?backoff, "delivery failed; retrying");
                config.metrics.failed("delivery");
                send_span.add_event(
                    "delivery.failed",
                    vec![KeyValue::new("error.message", e.to_string())],
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = abandon.cancelled() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
