//! Stage 3: producers. Each takes replies (and dead letters) off the shared
//! channel, publishes them inside a PRODUCER `send` span whose context the
//! record carries, and finishes the record's offset only when the broker
//! acknowledges it. A failed delivery is retried with backoff until it
//! succeeds or shutdown abandons it; either way nothing is committed that was
//! not delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use protocol::headers::timing;
use rdkafka::Timestamp;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{WaiterMetrics, observe};
use crate::pipeline::{Outgoing, OutgoingKind, make_dead_letter, mark_reply};
use crate::reasons::{DeadLetter, Failure};

/// What the producer stage reads, resolved once from the settings.
pub(crate) struct ProducerConfig {
    pub variant: String,
    /// Where records go that cannot be delivered where they were bound.
    pub dead_letter_topic: String,
    /// How long a reply is retried at transient failures before it is
    /// dead-lettered.
    pub delivery_retry_for: Duration,
    /// The topics that exist, for refusing replies to any other.
    pub topics: TopicCatalog,
    /// Deliveries one producer awaits at once before it stops taking records.
    pub max_in_flight: usize,
    pub metrics: WaiterMetrics,
}

/// What the producer stage needs of a Kafka producer: the one seam between
/// its rules (which replies may go, what is retried, what becomes a dead
/// letter) and the client, so those rules have unit tests on paused time.
pub(crate) trait RecordSink: Clone + Send + Sync + 'static {
    /// Sends one record; resolves once the broker has acknowledged it or
    /// the client gave up on it.
    fn send<'a>(
        &'a self,
        record: FutureRecord<'a, [u8], [u8]>,
    ) -> impl Future<Output = Result<Delivery, KafkaError>> + Send + 'a;

    /// Every topic the cluster lists, with its partition count (one
    /// metadata request, which never creates a topic).
    fn list_topics(&self) -> impl Future<Output = Result<HashMap<String, i32>, KafkaError>> + Send;
}

impl RecordSink for FutureProducer {
    async fn send<'a>(
        &'a self,
        record: FutureRecord<'a, [u8], [u8]>,
    ) -> Result<Delivery, KafkaError> {
        FutureProducer::send(self, record, Duration::from_secs(5))
            .await
            .map_err(|(error, _)| error)
    }

    async fn list_topics(&self) -> Result<HashMap<String, i32>, KafkaError> {
        let client = self.clone();
        tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|m| {
                    m.topics()
                        .iter()
                        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
                        .collect()
                })
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }
}

/// Longest pause between delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes until the channel closes and every delivery has settled.
pub(crate) async fn run<S: RecordSink>(
    producer: S,
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

async fn deliver<S: RecordSink>(
    producer: S,
    config: Arc<ProducerConfig>,
    outgoing: Outgoing,
    abandon: CancellationToken,
) {
    let Outgoing {
        topic,
        partition,
        key,
        payload,
        mut headers,
        span,
        ack,
        consumed_at,
        kind,
        origin,
        // Given back when this delivery ends, however it ends.
        reply_slot: _reply_slot,
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
        mark_reply(
            &mut headers,
            &config.variant,
            [
                (timing::CONSUMED_AT_US, *consumed_wall_us),
                (timing::QUEUE_US, queue.as_micros() as u64),
                (timing::SERVICE_US, service.as_micros() as u64),
                (timing::HANDOFF_US, handoff.as_micros() as u64),
            ],
        );
    }
    let mut record = Record {
        topic,
        partition,
        key,
        payload,
        headers,
        kind,
    };
    // A reply goes only to a topic (and partition) that exists: on a
    // broker that creates topics on first use, any reply topic would
    // otherwise become one, and a partition that does not exist would be
    // retried as a transient failure for `delivery_retry_for`.
    if record.is_reply() {
        let refusal = match config.topics.partitions(&producer, &record.topic).await {
            Known::Missing => Some((
                DeadLetter::UnknownResponseTopic,
                format!("reply topic `{}` does not exist", record.topic),
            )),
            Known::Partitions(count) if record.partition.is_some_and(|p| p >= count) => Some((
                DeadLetter::UnknownReplyPartition,
                format!(
                    "reply partition {} does not exist: `{}` has {count}",
                    record.partition.unwrap_or_default(),
                    record.topic
                ),
            )),
            Known::Partitions(_) | Known::Unknown => None,
        };
        if let Some((label, reason)) = refusal {
            record = record.into_dead_letter(
                &config,
                label,
                &reason,
                &origin,
                DEAD_LETTER_PAYLOAD_LIMIT,
            );
        }
    }
    let sent_at = Instant::now();
    loop {
        let send_span = send_span(&span, &config, &record);
        match send_with_retries(&producer, &config, &record, &send_span, &abandon).await {
            Sent::Delivered(delivery) => {
                record_delivery(&send_span, &delivery);
                observe(&config.metrics.stage_delivery, sent_at.elapsed());
                observe(&config.metrics.stage_total, consumed_at.elapsed());
                match record.kind {
                    OutgoingKind::Reply { ok: true, .. } => config.metrics.replied_ok.increment(1),
                    OutgoingKind::Reply { ok: false, .. } => {
                        config.metrics.replied_error.increment(1)
                    }
                    OutgoingKind::DeadLetter { reason } => config.metrics.dead_lettered(reason),
                }
                ack.finish();
                return;
            }
            Sent::Abandoned => return,
            Sent::Refused(error) if record.is_reply() => {
                let reason = format!("reply to `{}` not deliverable: {error}", record.topic);
                tracing::warn!(parent: &span, %reason, "moving the reply to the dead-letter topic");
                let keep = match classify_size(&error) {
                    true => DEAD_LETTER_PAYLOAD_AFTER_SIZE_REFUSAL,
                    false => DEAD_LETTER_PAYLOAD_LIMIT,
                };
                record = record.into_dead_letter(
                    &config,
                    DeadLetter::UndeliverableReply,
                    &reason,
                    &origin,
                    keep,
                );
            }
            Sent::Refused(error) => {
                // The dead-letter topic itself refuses the record for good
                // (it does not exist, or this client may not write there):
                // nothing is left to try, and holding the partition would
                // stop every record behind it.
                tracing::error!(parent: &span, %error, topic = %record.topic, %origin, "the dead-letter topic refused a record; it is dropped");
                config.metrics.failed(Failure::DeadLetterRefused);
                ack.finish();
                return;
            }
        }
    }
}

/// One record as it is produced.
struct Record {
    topic: String,
    /// The partition the caller asked for; `None` partitions by key.
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    /// Headers other than trace context, which each send span injects.
    headers: crate::pipeline::HeaderList,
    kind: OutgoingKind,
}

/// How much of an undeliverable reply a dead letter keeps: enough to read,
/// never so much that the dead-letter topic refuses it as well.
const DEAD_LETTER_PAYLOAD_LIMIT: usize = 64 * 1024;
/// What it keeps of a reply refused for its size: its start only.
const DEAD_LETTER_PAYLOAD_AFTER_SIZE_REFUSAL: usize = 512;

/// Whether the broker (or the client) refused the record for its size.
fn classify_size(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

impl Record {
    fn is_reply(&self) -> bool {
        matches!(self.kind, OutgoingKind::Reply { .. })
    }

    /// The same record, bound for the dead-letter topic with `reason`.
    fn into_dead_letter(
        mut self,
        config: &ProducerConfig,
        label: DeadLetter,
        reason: &str,
        origin: &str,
        keep: usize,
    ) -> Self {
        make_dead_letter(&mut self.headers, &mut self.payload, reason, origin, keep);
        Self {
            topic: config.dead_letter_topic.clone(),
            partition: None,
            kind: OutgoingKind::DeadLetter { reason: label },
            ..self
        }
    }
}

fn send_span(parent: &tracing::Span, config: &ProducerConfig, record: &Record) -> tracing::Span {
    if parent.is_none() {
        // An unsampled record: no span, and the request's trace context is
        // among the carried headers (see `carried_to_reply`).
        return tracing::Span::none();
    }
    let key_text = record
        .key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned();
    kafka_kit::spans::send(
        parent,
        &record.topic,
        &key_text,
        protocol::Service::Waiter.as_str(),
        &config.variant,
    )
}

/// How a delivery ended.
enum Sent {
    Delivered(Delivery),
    /// Refused for good: permanently, or transiently more often than allowed.
    Refused(KafkaError),
    /// Shutdown gave up on it; it stays uncommitted.
    Abandoned,
}

/// Sends `record`, retrying transient failures with backoff: a reply for up
/// to `delivery_retry_for`, a dead letter for as long as it takes (it is the
/// last place a record can go). A permanent failure is not retried.
async fn send_with_retries<S: RecordSink>(
    producer: &S,
    config: &ProducerConfig,
    record: &Record,
    send_span: &tracing::Span,
    abandon: &CancellationToken,
) -> Sent {
    // The client takes each attempt's headers; building them is one
    // allocation per header in librdkafka, so the first attempt gets them
    // as built and only a retry builds them again (a copy costs as much).
    let build_headers = || {
        record.headers.iter().fold(
            propagation::inject_kafka(
                &send_span.context(),
                OwnedHeaders::new_with_capacity(record.headers.len() + 3),
            ),
            |acc, (name, value)| {
                acc.insert(Header {
                    key: name,
                    value: value.as_deref(),
                })
            },
        )
    };
    let mut first_headers = Some(build_headers());
    let mut backoff = Duration::from_millis(100);
    let mut attempts = 0;
    // On tokio's clock, which the backoff sleeps on.
    let give_up_at = tokio::time::Instant::now() + config.delivery_retry_for;
    loop {
        let mut kafka_record = FutureRecord::<[u8], [u8]>::to(&record.topic)
            .payload(record.payload.as_slice())
            .headers(first_headers.take().unwrap_or_else(build_headers));
        if let Some(key) = &record.key {
            kafka_record = kafka_record.key(key.as_slice());
        }
        if let Some(partition) = record.partition {
            kafka_record = kafka_record.partition(partition);
        }
        let result = tokio::select! {
            result = producer.send(kafka_record) => result,
            () = abandon.cancelled() => {
                send_span.add_event("delivery.abandoned", vec![]);
                tracing::warn!(topic = %record.topic, "shutdown abandoned an undelivered record; it will be redelivered");
                return Sent::Abandoned;
            }
        };
        let error = match result {
            Ok(delivery) => return Sent::Delivered(delivery),
            Err(error) => error,
        };
        attempts += 1;
        let class = classify(&error);
        config.metrics.failed(Failure::Delivery);
        send_span.add_event(
            "delivery.failed",
            vec![
                KeyValue::new("error.message", error.to_string()),
                KeyValue::new("delivery.failure", class.label()),
            ],
        );
        // A reply topic deleted since the catalog listed it: not a passing
        // state to retry for `delivery_retry_for` (and, on a broker that
        // creates topics on first use, a retry could bring it back).
        let unknown_topic = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition)
        );
        if record.is_reply()
            && unknown_topic
            && config.topics.recheck(producer, &record.topic).await == Known::Missing
        {
            send_span.record("otel.status_code", "ERROR");
            return Sent::Refused(error);
        }
        let out_of_time = record.is_reply() && tokio::time::Instant::now() >= give_up_at;
        if class == FailureClass::Permanent || out_of_time {
            send_span.record("otel.status_code", "ERROR");
            return Sent::Refused(error);
        }
        tracing::warn!(%error, topic = %record.topic, retry_in = ?backoff, attempts, "delivery failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = abandon.cancelled() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn record_delivery(
    send_span: &tracing::Span,
    delivery: &rdkafka::producer::future_producer::Delivery,
) {
    let (timestamp_type, timestamp_ms) = match delivery.timestamp {
        Timestamp::CreateTime(ms) => ("CreateTime", ms),
        Timestamp::LogAppendTime(ms) => ("LogAppendTime", ms),
        Timestamp::NotAvailable => ("NotAvailable", -1),
    };
    kafka_kit::spans::record_delivery(send_span, delivery);
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
}

/// What a failed delivery means for its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Retrying cannot help: the record is too large or invalid, or the
    /// topic is invalid or forbidden. It is dead-lettered at once.
    Permanent,
    /// The broker may take it later (it is away, slow, electing a leader,
    /// or still loading a topic after a restart: Kafka counts an unknown
    /// topic or partition as retriable; a reply to a topic that does not
    /// exist at all is dead-lettered before it is sent).
    Transient,
}

impl FailureClass {
    fn label(self) -> &'static str {
        match self {
            FailureClass::Permanent => "permanent",
            FailureClass::Transient => "transient",
        }
    }
}

/// Classifies a delivery error (see the table in the tests).
pub fn classify(error: &KafkaError) -> FailureClass {
    use RDKafkaErrorCode::*;
    match error.rdkafka_error_code() {
        Some(
            MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidMessage
            | InvalidRecord
            | InvalidTopic
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | PolicyViolation,
        ) => FailureClass::Permanent,
        _ => FailureClass::Transient,
    }
}

/// What the catalog knows of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// It exists, with this many partitions.
    Partitions(i32),
    /// The broker says it does not exist.
    Missing,
    /// The broker could not be asked: let the delivery itself decide.
    Unknown,
}

/// The topics that exist and their partition counts, as the broker last
/// listed them, for the reply check.
///
/// One listing of every topic (a metadata request that never creates one)
/// answers for all of them, and each refresh replaces it whole: what the
/// catalog holds is bounded by the cluster's topics, never by the topic
/// names requests carry. A topic in the listing is believed for `refresh`
/// (so a deleted topic stops counting as existing, and a topic's new
/// partitions become valid); a topic not in it is believed missing for
/// [`TopicCatalog::MISSING_FOR`] (a reply topic created a moment ago is
/// found). Refreshes are single-flight: a burst of replies to topics never
/// seen costs one listing, not one each.
pub(crate) struct TopicCatalog {
    refresh: Duration,
    listing: std::sync::RwLock<Option<Arc<Listing>>>,
    refreshing: tokio::sync::Mutex<()>,
    // Read by the tests: a flood of unknown topics costs few listings.
    #[cfg_attr(not(test), allow(dead_code))]
    listings: std::sync::atomic::AtomicU64,
}

struct Listing {
    at: Instant,
    topics: std::collections::HashMap<String, i32>,
}

impl TopicCatalog {
    /// How long a topic missing from the listing is believed missing.
    pub(crate) const MISSING_FOR: Duration = Duration::from_secs(1);

    /// A catalog that believes a listed topic for `refresh`.
    pub(crate) fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            listing: Default::default(),
            refreshing: Default::default(),
            listings: Default::default(),
        }
    }

    /// What is known of `topic`, from a listing fresh enough to answer;
    /// otherwise from a new one.
    pub(crate) async fn partitions(&self, producer: &impl RecordSink, topic: &str) -> Known {
        self.known(producer, topic, self.refresh).await
    }

    /// [`Self::partitions`] from a listing at most [`Self::MISSING_FOR`]
    /// old: for a delivery the broker just refused as an unknown topic.
    pub(crate) async fn recheck(&self, producer: &impl RecordSink, topic: &str) -> Known {
        self.known(producer, topic, Self::MISSING_FOR).await
    }

    async fn known(
        &self,
        producer: &impl RecordSink,
        topic: &str,
        trust_listed: Duration,
    ) -> Known {
        if let Some(known) = self.answer(topic, trust_listed) {
            return known;
        }
        let _refreshing = self.refreshing.lock().await;
        // Another reply's refresh may have answered while this one waited.
        if let Some(known) = self.answer(topic, trust_listed) {
            return known;
        }
        let listed = producer.list_topics().await;
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(topics) = listed else {
            return Known::Unknown;
        };
        let known = match topics.get(topic) {
            Some(&count) => Known::Partitions(count),
            None => Known::Missing,
        };
        *self.listing.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Listing {
            at: Instant::now(),
            topics,
        }));
        known
    }

    /// Listings fetched so far.
    #[cfg(test)]
    fn listings(&self) -> u64 {
        self.listings.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Topics the catalog holds.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.current().map_or(0, |listing| listing.topics.len())
    }

    fn current(&self) -> Option<Arc<Listing>> {
        self.listing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn answer(&self, topic: &str, trust_listed: Duration) -> Option<Known> {
        let listing = self.current()?;
        let age = listing.at.elapsed();
        match listing.topics.get(topic) {
            Some(&count) if age < trust_listed => Some(Known::Partitions(count)),
            None if age < Self::MISSING_FOR => Some(Known::Missing),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod rules {
        //! The stage's rules on tokio's paused clock, against a scripted
        //! client: which replies may go, what is retried and for how long,
        //! and what becomes a dead letter, in milliseconds, no broker.
        use std::collections::VecDeque;
        use std::sync::Mutex as StdMutex;

        use rdkafka::message::Headers;

        use super::*;
        use crate::pipeline::testing::Partition;
        use crate::reasons::DeadLetter;

        /// One record as the client was given it.
        #[derive(Debug, Clone)]
        struct Sent {
            topic: String,
            partition: Option<i32>,
            payload: Vec<u8>,
            headers: Vec<(String, Vec<u8>)>,
        }

        impl Sent {
            fn header(&self, name: &str) -> Option<String> {
                self.headers
                    .iter()
                    .rev()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            }
        }

        /// A client that answers each send from a script (delivered once
        /// the script is used up) and lists fixed topics.
        #[derive(Clone, Default)]
        struct Scripted {
            failures: Arc<StdMutex<VecDeque<RDKafkaErrorCode>>>,
            sent: Arc<StdMutex<Vec<Sent>>>,
            topics: HashMap<String, i32>,
        }

        impl Scripted {
            fn new(topics: &[(&str, i32)], failures: &[RDKafkaErrorCode]) -> Self {
                Self {
                    failures: Arc::new(StdMutex::new(failures.iter().copied().collect())),
                    sent: Default::default(),
                    topics: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
                }
            }

            fn sent(&self) -> Vec<Sent> {
                self.sent.lock().unwrap().clone()
            }
        }

        impl RecordSink for Scripted {
            fn send<'a>(
                &'a self,
                record: FutureRecord<'a, [u8], [u8]>,
            ) -> impl Future<Output = Result<Delivery, KafkaError>> + Send + 'a {
                let headers = record
                    .headers
                    .as_ref()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                self.sent.lock().unwrap().push(Sent {
                    topic: record.topic.to_string(),
                    partition: record.partition,
                    payload: record.payload.map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
                let failure = self.failures.lock().unwrap().pop_front();
                async move {
                    match failure {
                        None => Ok(Delivery {
                            partition: 0,
                            offset: 0,
                            timestamp: Timestamp::NotAvailable,
                        }),
                        Some(code) => Err(KafkaError::MessageProduction(code)),
                    }
                }
            }

            async fn list_topics(&self) -> Result<HashMap<String, i32>, KafkaError> {
                Ok(self.topics.clone())
            }
        }

        fn config(delivery_retry_for: Duration) -> Arc<ProducerConfig> {
            Arc::new(ProducerConfig {
                variant: "baseline".into(),
                dead_letter_topic: "dead-letters".into(),
                delivery_retry_for,
                topics: TopicCatalog::new(Duration::from_secs(30)),
                max_in_flight: 10,
                metrics: WaiterMetrics::new("baseline"),
            })
        }

        fn reply(partition: &mut Partition, topic: &str, payload: Vec<u8>) -> Outgoing {
            Outgoing {
                topic: topic.into(),
                partition: None,
                key: None,
                payload,
                headers: vec![("correlation".into(), Some(b"c-1".to_vec()))],
                span: tracing::Span::none(),
                ack: partition.ack(),
                consumed_at: Instant::now(),
                kind: OutgoingKind::Reply {
                    ok: true,
                    consumed_wall_us: 0,
                    queue: Duration::ZERO,
                    service: Duration::ZERO,
                    serviced_at: Instant::now(),
                },
                origin: "requests/0@0".into(),
                reply_slot: None,
            }
        }

        async fn deliver_one(client: &Scripted, config: Arc<ProducerConfig>, outgoing: Outgoing) {
            deliver(client.clone(), config, outgoing, CancellationToken::new()).await;
        }

        #[tokio::test(start_paused = true)]
        async fn a_reply_is_retried_through_transient_failures_with_backoff() {
            use RDKafkaErrorCode::*;
            let client = Scripted::new(
                &[("replies", 4)],
                &[MessageTimedOut, BrokerTransportFailure],
            );
            let mut partition = Partition::new();
            let started = tokio::time::Instant::now();
            let outgoing = reply(&mut partition, "replies", b"{}".to_vec());
            deliver_one(&client, config(Duration::from_secs(300)), outgoing).await;
            // 100 ms, then 200 ms, between the three attempts.
            assert_eq!(started.elapsed(), Duration::from_millis(300));
            let sent = client.sent();
            assert_eq!(sent.len(), 3);
            assert!(sent.iter().all(|s| s.topic == "replies"));
            // The reply's own headers, once, after what it carried on.
            let last = &sent[2];
            assert_eq!(
                last.header(protocol::headers::REPLY).as_deref(),
                Some("baseline")
            );
            assert_eq!(last.header("correlation").as_deref(), Some("c-1"));
            assert_eq!(
                partition.finished_count(),
                1,
                "delivered: its offset is released"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_reply_failing_past_delivery_retry_for_becomes_a_dead_letter() {
            use RDKafkaErrorCode::*;
            let client = Scripted::new(&[("replies", 4)], &[MessageTimedOut; 5]);
            let mut partition = Partition::new();
            let outgoing = reply(&mut partition, "replies", b"{}".to_vec());
            let started = tokio::time::Instant::now();
            deliver_one(&client, config(Duration::from_secs(1)), outgoing).await;
            // Attempts at 0, 0.1, 0.3, 0.7 and 1.5 s: the last is past the second.
            assert_eq!(started.elapsed(), Duration::from_millis(1500));
            let sent = client.sent();
            assert_eq!(sent.len(), 6, "{sent:?}");
            let dead = &sent[5];
            assert_eq!(dead.topic, "dead-letters");
            assert_eq!(dead.partition, None);
            assert!(
                dead.header(protocol::headers::DEAD_LETTER_REASON)
                    .is_some_and(|r| r.contains("reply to `replies` not deliverable")),
                "{dead:?}"
            );
            assert_eq!(
                dead.header(protocol::headers::DEAD_LETTER_ORIGIN)
                    .as_deref(),
                Some("requests/0@0")
            );
            assert_eq!(partition.finished_count(), 1);
        }

        #[tokio::test(start_paused = true)]
        async fn a_reply_too_large_for_the_broker_is_dead_lettered_at_once_and_cut() {
            let client = Scripted::new(&[("replies", 4)], &[RDKafkaErrorCode::MessageSizeTooLarge]);
            let mut partition = Partition::new();
            let outgoing = reply(&mut partition, "replies", vec![b'x'; 10_000]);
            let started = tokio::time::Instant::now();
            deliver_one(&client, config(Duration::from_secs(300)), outgoing).await;
            assert_eq!(started.elapsed(), Duration::ZERO, "permanent: no retry");
            let sent = client.sent();
            assert_eq!(sent.len(), 2);
            let dead = &sent[1];
            assert_eq!(dead.topic, "dead-letters");
            assert_eq!(dead.payload.len(), DEAD_LETTER_PAYLOAD_AFTER_SIZE_REFUSAL);
            assert_eq!(
                dead.header(protocol::headers::DEAD_LETTER_TRUNCATED)
                    .as_deref(),
                Some("10000")
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_reply_to_a_topic_or_partition_the_cluster_does_not_list_is_never_sent_there() {
            let client = Scripted::new(&[("replies", 4)], &[]);
            let mut partition = Partition::new();
            let to_nowhere = reply(&mut partition, "nowhere", b"{}".to_vec());
            let mut to_partition_7 = reply(&mut partition, "replies", b"{}".to_vec());
            to_partition_7.partition = Some(7);
            let config = config(Duration::from_secs(300));
            deliver_one(&client, config.clone(), to_nowhere).await;
            deliver_one(&client, config, to_partition_7).await;
            let sent = client.sent();
            assert_eq!(sent.len(), 2, "{sent:?}");
            assert!(sent.iter().all(|s| s.topic == "dead-letters"));
            assert_eq!(
                sent[0]
                    .header(protocol::headers::DEAD_LETTER_REASON)
                    .as_deref(),
                Some("reply topic `nowhere` does not exist")
            );
            assert_eq!(
                sent[1]
                    .header(protocol::headers::DEAD_LETTER_REASON)
                    .as_deref(),
                Some("reply partition 7 does not exist: `replies` has 4")
            );
            assert_eq!(partition.finished_count(), 2);
        }

        #[tokio::test(start_paused = true)]
        async fn a_dead_letter_is_retried_for_as_long_as_it_takes_but_dropped_when_refused_for_good()
         {
            use RDKafkaErrorCode::*;
            let mut partition = Partition::new();
            let dead_letter = |partition: &mut Partition| Outgoing {
                kind: OutgoingKind::DeadLetter {
                    reason: DeadLetter::MalformedJson,
                },
                topic: "dead-letters".into(),
                ..reply(partition, "dead-letters", b"{".to_vec())
            };
            // Transient failures for far longer than a reply's retry window.
            let client = Scripted::new(&[], &[MessageTimedOut; 20]);
            deliver_one(
                &client,
                config(Duration::from_millis(1)),
                dead_letter(&mut partition),
            )
            .await;
            assert_eq!(client.sent().len(), 21);
            assert_eq!(partition.finished_count(), 1);
            // Refused for good: dropped (nothing is left to try), released.
            let client = Scripted::new(&[], &[TopicAuthorizationFailed]);
            deliver_one(
                &client,
                config(Duration::from_secs(300)),
                dead_letter(&mut partition),
            )
            .await;
            assert_eq!(client.sent().len(), 1);
            assert_eq!(partition.finished_count(), 1);
        }
    }

    /// Replies naming a thousand topics no broker lists, all at once: they
    /// cost one listing (a refresh is single-flight and answers them all),
    /// each is found missing, and the catalog holds only what the broker
    /// lists, never the names the records carried.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_flood_of_unknown_reply_topics_costs_one_listing_and_holds_nothing() {
        let kafka = testkit::TestKafka::start().await.unwrap();
        let producer = kafka.producer();
        let catalog = Arc::new(TopicCatalog::new(Duration::from_secs(30)));
        let started = Instant::now();
        let mut asking = JoinSet::new();
        for i in 0..1000 {
            let (catalog, producer) = (catalog.clone(), producer.clone());
            asking.spawn(async move {
                catalog
                    .partitions(&producer, &format!("nowhere-{i}-{}", std::process::id()))
                    .await
            });
        }
        while let Some(known) = asking.join_next().await {
            assert_eq!(known.unwrap(), Known::Missing);
        }
        let listings = catalog.listings();
        assert!(
            listings <= 1 + started.elapsed().as_secs(),
            "{listings} listings for 1000 unknown topics in {:?}",
            started.elapsed()
        );
        let listed = producer
            .client()
            .fetch_metadata(None, Duration::from_secs(5))
            .unwrap()
            .topics()
            .len();
        assert!(catalog.held() <= listed, "{} > {listed}", catalog.held());
    }

    /// The classification table: what each delivery error means.
    #[test]
    fn delivery_errors_are_classified() {
        use RDKafkaErrorCode::*;
        let table = [
            (MessageSizeTooLarge, FailureClass::Permanent),
            (InvalidMessageSize, FailureClass::Permanent),
            (InvalidRecord, FailureClass::Permanent),
            (InvalidTopic, FailureClass::Permanent),
            (TopicAuthorizationFailed, FailureClass::Permanent),
            (ClusterAuthorizationFailed, FailureClass::Permanent),
            (PolicyViolation, FailureClass::Permanent),
            (MessageTimedOut, FailureClass::Transient),
            (UnknownTopic, FailureClass::Transient),
            (UnknownTopicOrPartition, FailureClass::Transient),
            (BrokerTransportFailure, FailureClass::Transient),
            (AllBrokersDown, FailureClass::Transient),
            (NotLeaderForPartition, FailureClass::Transient),
            (LeaderNotAvailable, FailureClass::Transient),
            (RequestTimedOut, FailureClass::Transient),
            (NotEnoughReplicas, FailureClass::Transient),
            (QueueFull, FailureClass::Transient),
        ];
        for (code, expected) in table {
            assert_eq!(
                classify(&KafkaError::MessageProduction(code)),
                expected,
                "{code:?}"
            );
        }
    }
}
