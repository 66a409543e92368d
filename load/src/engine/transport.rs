//! How requests leave and replies come back: Kafka records or HTTP calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_kit::assign::{Start, assign_topic_off_thread};
use protocol::headers::{self, timing};
use protocol::wire::{ReplyStatus, WaitReply, WaitRequestBody};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Timestamp};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Config, LoadError};

use super::accounting::*;

/// How requests leave the generator.
#[derive(Clone)]
pub(super) enum Sender {
    /// Records on the request topic; replies come back on the response topic.
    Kafka(FutureProducer),
    /// `POST {url}/wait` on the gateway; the response is the reply.
    Http(reqwest::Client, Arc<str>),
}

pub(super) async fn kafka_clients(
    config: &Config,
) -> Result<(FutureProducer, StreamConsumer), LoadError> {
    let mut producer = ClientConfig::new();
    producer
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("acks", "all")
        // A millisecond of batching costs at most that much latency and
        // turns one record per produce request into a few: against the
        // embedded broker it is the difference between keeping up at
        // 5,000 req/s and falling seconds behind (see the README).
        .set("linger.ms", "1")
        .set(
            "message.timeout.ms",
            config.timeout.as_millis().max(1).to_string(),
        );
    let producer: FutureProducer =
        with_properties(producer, &config.producer_properties).create()?;
    let mut replies = ClientConfig::new();
    replies
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set(
            "group.id",
            format!("load-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5");
    let replies: StreamConsumer = with_properties(replies, &config.consumer_properties).create()?;
    let (replies, assigned) = assign_topic_off_thread(
        replies,
        &config.response_topic,
        Start::End,
        Duration::from_secs(10),
    )
    .await?;
    if assigned.is_empty() {
        return Err(LoadError::NoResponseTopic(config.response_topic.clone()));
    }
    Ok((producer, replies))
}

/// `client` with the user's properties laid over its defaults.
pub(super) fn with_properties(
    mut client: ClientConfig,
    properties: &[(String, String)],
) -> ClientConfig {
    for (key, value) in properties {
        client.set(key, value);
    }
    client
}

pub(super) async fn send_one(
    config: Arc<Config>,
    sender: Sender,
    shared: Shared,
    intended: Instant,
    done: Option<oneshot::Sender<()>>,
) {
    match sender {
        Sender::Kafka(producer) => send_kafka(config, producer, shared, intended, done).await,
        Sender::Http(client, url) => send_http(config, client, &url, shared, intended, done).await,
    }
}

pub(super) fn request_body(config: &Config) -> WaitRequestBody {
    WaitRequestBody {
        name: "load".into(),
        wait_ms: Some(config.wait.sample()),
        padding: (config.payload_bytes > 0).then(|| "x".repeat(config.payload_bytes)),
    }
}

pub(super) async fn send_http(
    config: Arc<Config>,
    client: reqwest::Client,
    url: &str,
    shared: Shared,
    intended: Instant,
    done: Option<oneshot::Sender<()>>,
) {
    let correlation = uuid::Uuid::new_v4().simple().to_string();
    begin(&shared, &config, &correlation, intended, done, None);
    let mut request = client.post(url).json(&request_body(&config));
    if config.deadline {
        let deadline = protocol::Deadline::after(config.timeout);
        request = request.header(headers::DEADLINE, deadline.to_header());
    }
    if let Some(tenant) = &config.tenant {
        request = request.header(headers::BAGGAGE, format!("tenant={tenant}"));
    }
    let result = request.send().await;
    let mut guard = lock(&shared);
    let state = &mut *guard;
    match result {
        Ok(response) => {
            state.counts.sent += 1;
            let refused = !response.status().is_success();
            if let Some(pending) = answer(state, &correlation, refused)
                && let Some(done) = pending.done
            {
                let _ = done.send(());
            }
        }
        // The deadline passes on its own; the sweeper counts it.
        Err(e) if e.is_timeout() => state.counts.sent += 1,
        Err(e) => {
            tracing::debug!(error = %e, "request not sent");
            not_sent(state, &correlation);
        }
    }
}

pub(super) async fn send_kafka(
    config: Arc<Config>,
    producer: FutureProducer,
    shared: Shared,
    intended: Instant,
    done: Option<oneshot::Sender<()>>,
) {
    let correlation = uuid::Uuid::new_v4().simple().to_string();
    // The request's round trip is the root (INTERNAL: it is the caller's
    // own work, not a message); producing the record is its PRODUCER
    // `send` child, whose context the record carries.
    let span = config.trace.then(|| {
        let span = tracing::info_span!(
            "load.request",
            otel.kind = "internal",
            service = "load",
            messaging.message.conversation_id = %correlation,
        );
        // A root: the generator starts the trace the application continues.
        let _ = span.set_parent(opentelemetry::Context::new());
        span
    });
    let send_span = span.as_ref().map(|parent| {
        kafka_kit::spans::send(
            parent,
            &config.request_topic,
            &correlation,
            "load",
            protocol::BASELINE,
        )
    });
    let actual = Instant::now();
    begin(&shared, &config, &correlation, intended, done, span.clone());
    let payload = serde_json::to_vec(&request_body(&config)).expect("a request always serialises");
    let traceparent = match &send_span {
        Some(span) => {
            let context = span.context();
            let span_context = opentelemetry::trace::TraceContextExt::span(&context)
                .span_context()
                .clone();
            // The SDK's sampler (OTEL_TRACES_SAMPLER) made the decision.
            format!(
                "00-{}-{}-{:02x}",
                span_context.trace_id(),
                span_context.span_id(),
                span_context.trace_flags().to_u8()
            )
        }
        None => {
            // Still a fresh trace per request, so the application's spans of
            // one request group together even without export; sampled as
            // OTEL_TRACES_SAMPLER would decide for a root.
            let trace_id = uuid::Uuid::new_v4();
            let flags = match head_sampled(config.sample_ratio, trace_id.as_u128() as u64) {
                true => "01",
                false => "00",
            };
            format!(
                "00-{}-{}-{flags}",
                trace_id.simple(),
                &uuid::Uuid::new_v4().simple().to_string()[..16]
            )
        }
    };
    let baggage = config.tenant.as_ref().map(|t| format!("tenant={t}"));
    let deadline = config
        .deadline
        .then(|| protocol::Deadline::after(config.timeout).to_header());
    let mut record_headers = OwnedHeaders::new_with_capacity(5);
    for (key, value) in [
        (headers::CORRELATION, Some(correlation.as_str())),
        (
            headers::RESPONSE_TOPIC,
            Some(config.response_topic.as_str()),
        ),
        (headers::TRACEPARENT, Some(traceparent.as_str())),
        (headers::BAGGAGE, baggage.as_deref()),
        (headers::DEADLINE, deadline.as_deref()),
    ] {
        if let Some(value) = value {
            record_headers = record_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
    }
    let record = FutureRecord::to(&config.request_topic)
        .key(&correlation)
        .payload(&payload)
        .headers(record_headers);
    let result = producer.send(record, config.timeout).await;
    if let Some(send_span) = send_span {
        kafka_kit::spans::record_outcome(&send_span, &result);
    }
    let mut state = lock(&shared);
    match result {
        Ok(_) => {
            state.counts.sent += 1;
            state
                .producer_ack
                .saturating_record(micros(actual.elapsed()));
        }
        Err((e, _)) => {
            tracing::debug!(error = %e, "request not produced");
            not_sent(&mut state, &correlation);
        }
    }
}

pub(super) fn header_u64<H: Headers>(headers: Option<&H>, name: &str) -> Option<u64> {
    propagation::kafka_header(headers, name)?.parse().ok()
}

pub(super) async fn read_replies(replies: StreamConsumer, shared: Shared, stop: CancellationToken) {
    let mut stream = replies.stream();
    while let Some(message) = kafka_kit::stream::next_message(&mut stream, &stop, "replies").await {
        let now_wall = wall_us();
        let Some(correlation) = propagation::kafka_header(message.headers(), headers::CORRELATION)
        else {
            lock(&shared).counts.unexpected += 1;
            continue;
        };
        let refused = message
            .payload()
            .and_then(|p| serde_json::from_slice::<WaitReply>(p).ok())
            .is_some_and(|r| r.status == ReplyStatus::Error);
        let mut guard = lock(&shared);
        // A plain `&mut` so the histograms can be borrowed side by side.
        let state = &mut *guard;
        let Some(pending) = answer(state, correlation, refused) else {
            continue;
        };
        if let Some(span) = &pending.span {
            span.add_event("reply.received", vec![]);
        }
        let h = message.headers();
        for (name, histogram) in [
            (timing::QUEUE_US, &mut state.queue),
            (timing::SERVICE_US, &mut state.service),
            (timing::HANDOFF_US, &mut state.reply_handoff),
        ] {
            if let Some(us) = header_u64(h, name) {
                histogram.saturating_record(us.max(1));
            }
        }
        if let Some(consumed) = header_u64(h, timing::CONSUMED_AT_US) {
            state
                .broker_to_consumer
                .saturating_record(consumed.saturating_sub(pending.sent_wall_us).max(1));
        }
        let (kind, millis) = match message.timestamp() {
            Timestamp::CreateTime(ms) => ("CreateTime, set by the waiter's producer", Some(ms)),
            Timestamp::LogAppendTime(ms) => ("LogAppendTime, set by the broker", Some(ms)),
            Timestamp::NotAvailable => ("not available", None),
        };
        state.reply_timestamp_type = Some(kind);
        if let Some(ms) = millis {
            state
                .reply_consume
                .saturating_record(now_wall.saturating_sub(ms.max(0) as u64 * 1000).max(1));
        }
        if let Some(done) = pending.done {
            let _ = done.send(());
        }
    }
}

/// Whether a root trace whose id ends in `low_bits` is sampled at `ratio`,
/// by the SDK's TraceIdRatioBased rule: the id's low 63 bits below
/// ratio × 2⁶³.
fn head_sampled(ratio: f64, low_bits: u64) -> bool {
    (low_bits >> 1) < (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::head_sampled;

    #[test]
    fn the_ratio_decides_the_share_of_sampled_roots() {
        let sampled = |ratio| {
            (0..10_000u64)
                .filter(|i| head_sampled(ratio, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .count()
        };
        assert_eq!(sampled(1.0), 10_000);
        assert_eq!(sampled(0.0), 0);
        assert!((50..=150).contains(&sampled(0.01)), "{}", sampled(0.01));
    }
}
