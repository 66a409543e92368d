//! The messaging spans every producer and consumer here makes, one shape
//! per the semantic conventions the telemetry crate pins (1.42.0): a
//! PRODUCER `send {topic}` and a CONSUMER `process {topic}`. Callers set
//! the parent (the current span, or `set_parent`) and record what only
//! they know into the fields declared empty here.

use rdkafka::Message;
use rdkafka::producer::future_producer::Delivery;
use tracing::field::Empty;

/// A PRODUCER `send {topic}` span for a record keyed `key`, by `service`
/// running as `variant`, a child of `parent`. Empty until recorded:
/// `otel.status_code`, `messaging.destination.partition.id` and
/// `messaging.kafka.offset` ([`record_delivery`]),
/// `messaging.message.conversation_id`, `waiter_bus.routes_version`.
pub fn send(
    parent: &tracing::Span,
    topic: &str,
    key: &str,
    service: &str,
    variant: &str,
) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "send",
        otel.name = format!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = topic,
        messaging.kafka.message.key = key,
        messaging.destination.partition.id = Empty,
        messaging.kafka.offset = Empty,
        messaging.message.conversation_id = Empty,
        waiter_bus.routes_version = Empty,
        service = service,
        variant = variant,
    )
}

/// Records how a send ended: where the broker put the record, or an error.
pub fn record_outcome<E>(span: &tracing::Span, sent: &Result<Delivery, E>) {
    match sent {
        Ok(delivery) => record_delivery(span, delivery),
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Records where the broker put the record.
pub fn record_delivery(span: &tracing::Span, delivery: &Delivery) {
    // A string, as the conventions type a partition id.
    span.record(
        "messaging.destination.partition.id",
        delivery.partition.to_string(),
    );
    span.record("messaging.kafka.offset", delivery.offset);
}

/// A CONSUMER span named `name` (`process {topic}`, built once by the
/// caller) for `message`, read by consumer group `group` (none for a reader
/// assigned partitions directly), by `service` running as `variant`; its
/// parent is the caller's to set. Empty until recorded: `otel.status_code`,
/// `messaging.message.conversation_id`, `waiter_bus.reply.late`.
pub fn process<M: Message>(
    name: &str,
    message: &M,
    group: Option<&str>,
    service: &str,
    variant: &str,
) -> tracing::Span {
    // Borrowed when UTF-8, as keys are: no allocation per record.
    let key = message.key().map(String::from_utf8_lossy);
    tracing::info_span!(
        "process",
        otel.name = name,
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = message.topic(),
        messaging.destination.partition.id = message.partition().to_string(),
        messaging.kafka.offset = message.offset(),
        messaging.kafka.message.key = key.as_deref().unwrap_or_default(),
        messaging.consumer.group.name = group,
        messaging.message.conversation_id = Empty,
        waiter_bus.reply.late = Empty,
        service = service,
        variant = variant,
    )
}
