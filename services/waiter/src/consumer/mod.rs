//! Stage 1: Kafka consumers. Each record becomes a CONSUMER `process` span;
//! `handle` decides whether it is this waiter's (tenancy), decodes it, and
//! hands it to the waiters over a bounded channel (or, when unusable,
//! straight to the producers as a dead letter). Acknowledgements come back
//! to the consumer task, which stores the offsets they release.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kafka_kit::acks::{Ack, Finished, ack_channel};
use kafka_kit::handoff::send_timed;
use opentelemetry::KeyValue;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::TraceContextExt;
use protocol::headers;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{WaiterMetrics, handed_off};
use crate::pipeline::{DeadLetterOf, Outgoing, Work, carried_headers};
use crate::reasons::{ExpiredAt, Failure, Skip};
use crate::request::{self, RequestLimits, WaitRequest};

mod context;
pub(crate) mod undecodable;

pub use context::WaiterContext;
pub use undecodable::{StoppedPartitions, UndecodablePolicy};

/// The consumer type every stage refers to.
pub type WaiterConsumer = StreamConsumer<WaiterContext>;

/// What the consumer stage reads, resolved once from the settings.
#[derive(Clone)]
pub(crate) struct ConsumerConfig {
    pub variant: String,
    pub group: String,
    pub tenancy: tenancy::ConsumerTenancy,
    pub routes: tenancy::RouteTable,
    /// Per-tenant counts sent with the variant's lease renewals.
    pub tally: tenancy::TenantTally,
    /// How long a record stamped past the table's version waits for it.
    pub version_wait: std::time::Duration,
    /// This consumer stands in for a variant that is not live (the
    /// baseline in the variant's group, see `standins`): it takes only the
    /// records the variant's absence would strand, and holds back the rest.
    pub standing_in: bool,
    /// `process <request topic>`, built once.
    pub process_span_name: Arc<str>,
    /// `skip {topic}`: the span of a record left to another consumer.
    pub skip_span_name: Arc<str>,
    /// The waiters' factor on every wait, to judge what a deadline allows.
    pub wait_scale: f64,
    /// See `waiter.deadline_margin`.
    pub deadline_margin: std::time::Duration,
    /// See `waiter.trace_mode`.
    pub trace_mode: crate::settings::TraceMode,
    /// How long work lately waited for a waiter slot (the pool updates it).
    pub queue_estimate: crate::pipeline::QueueEstimate,
    pub limits: RequestLimits,
    /// Which request headers name the reply topic, partition and correlation.
    pub reply_headers: request::ReplyHeaders,
    pub default_response_topic: String,
    pub dead_letter_topic: String,
    /// See `waiter.undecodable_batches`.
    pub undecodable: UndecodablePolicy,
    /// Partitions stopped at a record set they cannot decode (readiness).
    pub stopped: StoppedPartitions,
    /// Client settings for the probe that locates such a record set.
    pub probe: rdkafka::ClientConfig,
    /// Whether a group without committed offsets starts at the oldest record.
    pub starts_at_earliest: bool,
    pub metrics: WaiterMetrics,
}

/// Reads records until `stop` is cancelled, handing each one on, and stores
/// the offsets that acknowledgements flowing back release. After `stop` it
/// keeps draining acknowledgements until every record it handed on is
/// finished or abandoned downstream.
pub(crate) async fn run(
    consumer: Arc<WaiterConsumer>,
    config: Arc<ConsumerConfig>,
    work: mpsc::Sender<Work>,
    dead_letters: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
) {
    let (acks, mut finished) = ack_channel();
    // Partitions a stand-in has met a live variant's record on: it reads
    // nothing more from them (see `Verdict::HoldBack`) until the routes
    // change or the group rebalances.
    let mut held_back = HeldBack::default();
    loop {
        if held_back.outlived_by(&consumer) {
            // Those partitions may be another member's now, or ours again
            // from the committed position: read whatever is assigned.
            held_back.release(&consumer, false).await;
        }
        // Under backpressure `handle` waits on a full channel; settle what
        // came back meanwhile before reading on.
        while let Some(done) = finished.try_recv() {
            store(&consumer, done);
        }
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(done) = finished.recv() => {
                store(&consumer, done);
                continue;
            }
            () = held_back.routes_changed(&config.routes) => {
                // The variant may have gone down again before the stand-in
                // left: the held records are decided again, not left behind
                // a paused partition for good.
                held_back.release(&consumer, true).await;
                continue;
            }
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) if undecodable::is_undecodable(&e) => {
                config.metrics.failed(Failure::Consume);
                if !undecodable::handle(&consumer, &config, &acks, &dead_letters, &e).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                // The broker going away surfaces here; librdkafka reconnects
                // by itself, so the stage keeps asking.
                tracing::warn!(error = %e, "consume failed; retrying");
                config.metrics.failed(Failure::Consume);
                continue;
            }
        };
        config.metrics.consumed.increment(1);
        if held_back.holds(message.partition()) {
            // Prefetched before the pause; left uncommitted like the first.
            continue;
        }
        let ack = consumer.context().offsets.begin(
            &acks,
            message.topic(),
            message.partition(),
            message.offset(),
        );
        match handle(&config, &message, ack, &work, &dead_letters).await {
            Handled::Next => {}
            Handled::Stop => break,
            Handled::HeldBack => held_back.hold(&consumer, &config.routes, &message),
        }
    }
    // The stream ends once every record handed on is finished or dropped.
    drop(acks);
    while let Some(done) = finished.recv().await {
        store(&consumer, done);
    }
}

/// The partitions a stand-in holds back, each at the record it met, as of
/// one routes version and one assignment.
#[derive(Default)]
struct HeldBack {
    partitions: std::collections::BTreeMap<i32, (String, i64)>,
    at_version: tenancy::RoutesVersion,
    at_rebalance: u64,
}

impl HeldBack {
    fn holds(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Pauses `message`'s partition; its record stays uncommitted.
    fn hold<M: Message>(
        &mut self,
        consumer: &WaiterConsumer,
        routes: &tenancy::RouteTable,
        message: &M,
    ) {
        let partition = message.partition();
        if self.partitions.is_empty() {
            self.at_version = routes.version();
            self.at_rebalance = rebalances(consumer);
        }
        self.partitions
            .insert(partition, (message.topic().to_string(), message.offset()));
        let mut paused = rdkafka::TopicPartitionList::new();
        paused.add_partition(message.topic(), partition);
        if let Err(e) = consumer.pause(&paused) {
            tracing::debug!(error = %e, partition, "pausing a held-back partition");
        }
    }

    /// Whether the group has rebalanced since the partitions were held.
    fn outlived_by(&self, consumer: &WaiterConsumer) -> bool {
        !self.partitions.is_empty() && rebalances(consumer) != self.at_rebalance
    }

    /// Resolves when the routes move past the version the partitions were
    /// held at; never while nothing is held.
    async fn routes_changed(&self, routes: &tenancy::RouteTable) {
        if self.partitions.is_empty() {
            return std::future::pending().await;
        }
        let held_at = self.at_version;
        let _ = routes
            .wait_for(std::time::Duration::from_secs(3600), |r| {
                r.version() > held_at
            })
            .await;
    }

    /// Resumes every held partition: with `reread`, from the record it was
    /// held at (still assigned here, it is decided again); without, from
    /// wherever the assignment now starts.
    async fn release(&mut self, consumer: &Arc<WaiterConsumer>, reread: bool) {
        let held = std::mem::take(&mut self.partitions);
        let consumer = consumer.clone();
        // A seek blocks until the fetcher has taken it.
        let _ = tokio::task::spawn_blocking(move || {
            for (partition, (topic, offset)) in held {
                if reread
                    && let Err(e) = consumer.seek(
                        &topic,
                        partition,
                        rdkafka::Offset::Offset(offset),
                        std::time::Duration::from_secs(5),
                    )
                {
                    tracing::debug!(error = %e, partition, "seeking back to a held-back record");
                }
                let mut resumed = rdkafka::TopicPartitionList::new();
                resumed.add_partition(&topic, partition);
                if let Err(e) = consumer.resume(&resumed) {
                    tracing::debug!(error = %e, partition, "resuming a held-back partition");
                }
                tracing::info!(
                    partition,
                    offset,
                    reread,
                    "a held-back partition is read again"
                );
            }
        })
        .await;
    }
}

fn rebalances(consumer: &WaiterConsumer) -> u64 {
    consumer
        .context()
        .rebalances
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Stores the position an acknowledgement releases, if it released one.
fn store(consumer: &WaiterConsumer, finished: Finished) {
    let Some(position) = finished.settle() else {
        return;
    };
    if let Err(e) =
        consumer.store_offset(&position.topic, position.partition, position.last_finished)
    {
        // Only possible when the partition was revoked meanwhile; the next
        // owner re-reads from the committed position.
        tracing::debug!(error = %e, partition = position.partition, "offset not stored");
    }
}

/// What became of one record, for the read loop.
enum Handled {
    /// Skipped, handed on or dead-lettered: read the next.
    Next,
    /// The next stage has gone away (shutdown).
    Stop,
    /// A stand-in met a record of a variant that is live again: left
    /// uncommitted for the variant, and its partition must not be read on.
    HeldBack,
}

/// How the tenancy rules settle one record for this consumer.
enum Verdict {
    Process,
    Skip(tenancy::SkipReason),
    /// Standing in, on a record whose variant has been live since it was
    /// stamped: the variant's instances take it once the stand-in leaves
    /// the group, which it is about to (its table says the variant is
    /// live). Committing past it, or processing it as the baseline, would
    /// take it from them.
    HoldBack,
}

/// One record: decide whether it is this waiter's, decode it, hand it off.
async fn handle<M: Message>(
    config: &ConsumerConfig,
    message: &M,
    ack: Ack,
    work: &mpsc::Sender<Work>,
    dead_letters: &mpsc::Sender<Outgoing>,
) -> Handled {
    let consumed = Consumed::now();
    let parent = propagation::extract_kafka(message.headers());
    let tenant = propagation::tenant(&parent);
    // Head sampling: the caller decided (OTEL_TRACES_SAMPLER, parent-based)
    // and said so in `traceparent`. An unsampled record gets no spans here
    // at all, which is what makes it nearly free; its reply carries the
    // request's own trace context on.
    let parent_span = parent.span().span_context().clone();
    let unsampled = parent_span.is_valid() && !parent_span.is_sampled();
    let verdict = decide(config, message, tenant.as_deref()).await;
    // A record this waiter does not process gets an INTERNAL `skip` span,
    // not a CONSUMER `process` one: visible in its trace with the reason,
    // without counting as a processed message in span metrics.
    let span = match (unsampled, &verdict) {
        (true, _) => tracing::Span::none(),
        (false, Verdict::Process) => process_span(config, message),
        (false, Verdict::Skip(_) | Verdict::HoldBack) => skip_span(config, message),
    };
    match config.trace_mode {
        crate::settings::TraceMode::Child => {
            let _ = span.set_parent(parent);
        }
        crate::settings::TraceMode::Link => {
            // A trace of its own, keeping the baggage (the tenant), linked
            // to the span that produced the record.
            let _ = span.set_parent(
                opentelemetry::Context::new().with_baggage(
                    parent
                        .baggage()
                        .iter()
                        .map(|(key, (value, _))| KeyValue::new(key.clone(), value.clone())),
                ),
            );
            if parent_span.is_valid() {
                span.add_link(parent_span.clone());
            }
        }
    }
    record_broker_timestamp(&span, message.timestamp(), consumed.wall_us);
    if let Some(tenant) = &tenant {
        match verdict {
            Verdict::Skip(_) => config.tally.skipped(tenant),
            Verdict::Process => config.tally.processed(tenant),
            Verdict::HoldBack => {}
        }
    }
    match verdict {
        Verdict::Process => {}
        Verdict::Skip(reason) => {
            // Not ours: commit past it. The span shows who skipped it and why.
            config.metrics.skipped(Skip::Tenancy(reason));
            span.record("waiter_bus.skip_reason", reason.label());
            span.add_event(
                "skipped",
                vec![KeyValue::new("tenancy.skip_reason", reason.label())],
            );
            ack.finish();
            return Handled::Next;
        }
        Verdict::HoldBack => {
            config.metrics.skipped(Skip::HeldBackForLiveVariant);
            span.add_event("held back for the live variant", vec![]);
            drop(ack);
            return Handled::HeldBack;
        }
    }
    match decode(config, message, &span) {
        Ok(request) => {
            let deadline =
                deadline(config, message).map(|d| tokio::time::Instant::now() + d.remaining());
            // Counting in how long work lately waited for a slot: what
            // cannot make it after that is shed here, cheaply.
            let ahead = request.wait(config.wait_scale) + config.queue_estimate.current();
            if !crate::pipeline::can_finish(deadline, ahead, config.deadline_margin) {
                // Cheapest here: nothing downstream spends a slot on it.
                crate::pipeline::expire(&config.metrics, &span, ack, ExpiredAt::Consumer);
                return Handled::Next;
            }
            let carried = crate::pipeline::carried_to_reply(message.headers(), unsampled, &request);
            let item = Work {
                request,
                trace_id: match unsampled {
                    true => parent_span.trace_id().to_string(),
                    false => span.context().span().span_context().trace_id().to_string(),
                },
                span,
                ack,
                consumed_at: consumed.at,
                consumed_wall_us: consumed.wall_us,
                key: message.key().map(<[u8]>::to_vec),
                carried,
                tenant,
                hops: propagation::kafka_header(message.headers(), headers::HOPS)
                    .map(protocol::Hops::parse)
                    .unwrap_or_default(),
                origin: origin(message),
                deadline,
            };
            let span = item.span.clone();
            match send_timed(work, item).await {
                Ok(blocked) => {
                    handed_off(&config.metrics.requests_blocked, &span, "queued", blocked);
                    Handled::Next
                }
                Err(_) => Handled::Stop,
            }
        }
        Err(unusable) => {
            let outgoing = dead_letter(config, message, unusable, span, ack, consumed.at);
            match send_timed(dead_letters, outgoing).await {
                Ok(_) => Handled::Next,
                Err(_) => Handled::Stop,
            }
        }
    }
}

/// When a record was consumed, by the monotonic and the wall clock.
struct Consumed {
    at: Instant,
    wall_us: u64,
}

impl Consumed {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            wall_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }
}

/// The record's CONSUMER `process` span (its parent is set by the caller).
fn process_span<M: Message>(config: &ConsumerConfig, message: &M) -> tracing::Span {
    kafka_kit::spans::process(
        &config.process_span_name,
        message,
        Some(&config.group),
        protocol::Service::Waiter.as_str(),
        &config.variant,
    )
}

/// The INTERNAL span of a record this waiter leaves to another consumer.
fn skip_span<M: Message>(config: &ConsumerConfig, message: &M) -> tracing::Span {
    tracing::info_span!(
        "skip",
        otel.name = %config.skip_span_name,
        otel.kind = "internal",
        messaging.system = "kafka",
        messaging.destination.name = %message.topic(),
        messaging.destination.partition.id = message.partition().to_string(),
        messaging.kafka.offset = message.offset(),
        messaging.consumer.group.name = %config.group,
        waiter_bus.skip_reason = tracing::field::Empty,
        service = protocol::Service::Waiter.as_str(),
        variant = %config.variant,
    )
}

/// Whether this waiter skips a record of `tenant`, and why: the tenancy
/// rules against the routes at the record's stamped version (waiting,
/// bounded, for the table to reach it), or the current routes for a record
/// from a producer that does not stamp one.
async fn decide<M: Message>(config: &ConsumerConfig, message: &M, tenant: Option<&str>) -> Verdict {
    let stamped = protocol::headers::last(message.headers(), headers::ROUTES_VERSION).and_then(
        |value| match tenancy::parse_version(value) {
            Ok(version) => Some(version),
            Err(reason) => {
                // Deciding by the current routes is what an unstamped
                // record gets; dead-lettering it would happen once per group.
                tracing::warn!(%reason, offset = message.offset(), "unreadable routes version; deciding by the current routes");
                config.metrics.failed(Failure::RoutesVersion);
                None
            }
        },
    );
    let routes = match stamped {
        Some(version) => {
            config
                .routes
                .routes_for("the record", version, config.version_wait)
                .await
        }
        None => config.routes.snapshot(),
    };
    let record = tenancy::RecordRoute {
        tenant,
        version: stamped,
    };
    match tenancy::decide(&config.tenancy, record, &routes) {
        tenancy::Decision::Skip(reason) => Verdict::Skip(reason),
        tenancy::Decision::Process
            if config.standing_in
                && !routes.down_after(
                    &config.tenancy.service,
                    &config.tenancy.label,
                    stamped.unwrap_or_else(|| routes.version()),
                ) =>
        {
            Verdict::HoldBack
        }
        tenancy::Decision::Process => Verdict::Process,
    }
}

/// The record's deadline; an unreadable one is counted and ignored (the
/// request is served as if it had none, as before deadlines existed).
fn deadline<M: Message>(config: &ConsumerConfig, message: &M) -> Option<protocol::Deadline> {
    let value = protocol::headers::last(message.headers(), headers::DEADLINE)?;
    match protocol::Deadline::parse(value) {
        Ok(deadline) => Some(deadline),
        Err(reason) => {
            tracing::debug!(%reason, offset = message.offset(), "unreadable deadline; serving without one");
            config.metrics.failed(Failure::Deadline);
            None
        }
    }
}

/// Parses the record into a request; one without a correlation id gets a
/// generated one (counted, and marked on its span, not logged: a client
/// that never sends one would fill the log), so its reply can still be
/// matched in traces and the ledger.
fn decode<M: Message>(
    config: &ConsumerConfig,
    message: &M,
    span: &tracing::Span,
) -> Result<WaitRequest, request::Unusable> {
    let mut request = request::parse(
        message.headers(),
        message.payload(),
        request::Topics {
            request: message.topic(),
            default_response: &config.default_response_topic,
        },
        config.limits,
        &config.reply_headers,
    )?;
    if request.correlation.is_empty() {
        request.correlation = request::Correlation {
            header: config.reply_headers.correlation[0].clone(),
            value: uuid::Uuid::new_v4().to_string().into_bytes(),
        };
        config.metrics.without_correlation.increment(1);
        span.add_event("correlation.generated", vec![]);
        request.correlation_generated = true;
    }
    span.record(
        "messaging.message.conversation_id",
        request.correlation.text().as_str(),
    );
    Ok(request)
}

/// An unusable record, moved to the dead-letter topic with its reason and
/// origin and the headers a reader needs to find its sender.
fn dead_letter<M: Message>(
    config: &ConsumerConfig,
    message: &M,
    unusable: request::Unusable,
    span: tracing::Span,
    ack: Ack,
    consumed_at: Instant,
) -> Outgoing {
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
    Outgoing::dead_letter(
        &config.dead_letter_topic,
        DeadLetterOf {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            // Every header as it came (the correlation and reply topic among
            // them), so a reader of the dead letter can find its sender.
            headers: carried_headers(message.headers()),
            reason: unusable.reason(),
            detail: unusable.to_string(),
            origin: origin(message),
        },
        span,
        ack,
        consumed_at,
    )
}

/// Where a record came from, as dead letters name it: `topic/partition@offset`.
fn origin<M: Message>(message: &M) -> String {
    format!(
        "{}/{}@{}",
        message.topic(),
        message.partition(),
        message.offset()
    )
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

#[cfg(test)]
mod tests {
    //! One record's fate, decided without a broker: the tenancy verdict,
    //! the deadline, decoding and dead letters, on tokio's paused clock.
    use std::time::Duration;

    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;
    use crate::pipeline::OutgoingKind;
    use crate::pipeline::testing::Partition;

    fn config(routes: tenancy::Routes) -> ConsumerConfig {
        // The W3C propagators the services install: the tenant comes from
        // the record's `baggage`.
        use opentelemetry::propagation::TextMapCompositePropagator;
        use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
        opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        ConsumerConfig {
            variant: protocol::BASELINE.into(),
            group: "waiter".into(),
            tenancy: tenancy::ConsumerTenancy::baseline("waiter"),
            routes: tenancy::RouteTable::fixed(routes),
            tally: Default::default(),
            version_wait: Duration::from_secs(5),
            standing_in: false,
            process_span_name: "process requests".into(),
            skip_span_name: "skip requests".into(),
            wait_scale: 1.0,
            deadline_margin: Duration::from_millis(100),
            trace_mode: crate::settings::TraceMode::Child,
            queue_estimate: crate::pipeline::QueueEstimate::new(),
            limits: RequestLimits {
                default_wait: Duration::from_millis(500),
                max_wait: Duration::from_secs(60),
            },
            reply_headers: Default::default(),
            default_response_topic: "replies".into(),
            dead_letter_topic: "dead-letters".into(),
            undecodable: UndecodablePolicy::Skip,
            stopped: Default::default(),
            probe: rdkafka::ClientConfig::new(),
            starts_at_earliest: true,
            metrics: WaiterMetrics::new(protocol::BASELINE),
        }
    }

    /// Routes where tenant `t1` maps the waiter to the live variant `sbx`.
    fn routed_to_variant() -> tenancy::Routes {
        let mut routes = tenancy::Routes::default();
        let records = [
            (
                tenancy::variant_key("waiter", "sbx"),
                r#"{"service":"waiter","label":"sbx","endpoint":"http://127.0.0.1:1"}"#,
            ),
            (
                tenancy::tenant_key("t1"),
                r#"{"id":"t1","services":{"waiter":"sbx"}}"#,
            ),
        ];
        for (offset, (key, value)) in records.into_iter().enumerate() {
            let record = tenancy::RouteRecord::decode(&key, Some(value.as_bytes())).unwrap();
            routes.apply(offset as u64, record);
        }
        routes
    }

    fn record(payload: &str, headers: &[(&str, &str)]) -> OwnedMessage {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (key, value)| {
                all.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
        OwnedMessage::new(
            Some(payload.as_bytes().to_vec()),
            Some(b"key-1".to_vec()),
            "requests".into(),
            Timestamp::CreateTime(0),
            0,
            42,
            Some(headers),
        )
    }

    /// What became of one record: handled, and what each channel received.
    struct Outcome {
        handled: Handled,
        work: Option<Work>,
        dead_letter: Option<Outgoing>,
        acks_finished: usize,
    }

    async fn handle_one(config: &ConsumerConfig, message: &OwnedMessage) -> Outcome {
        let mut partition = Partition::new();
        let (work_tx, mut work_rx) = mpsc::channel(1);
        let (dead_tx, mut dead_rx) = mpsc::channel(1);
        let handled = handle(config, message, partition.ack(), &work_tx, &dead_tx).await;
        let work = work_rx.try_recv().ok();
        let dead_letter = dead_rx.try_recv().ok();
        Outcome {
            handled,
            acks_finished: partition.finished_count(),
            work,
            dead_letter,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_is_handed_to_the_waiters_with_what_its_reply_needs() {
        let config = config(tenancy::Routes::default());
        let message = record(
            r#"{"name":"ada","wait_ms":250}"#,
            &[("correlation", "c-7"), ("responseTopic", "my-replies")],
        );
        let outcome = handle_one(&config, &message).await;
        assert!(matches!(outcome.handled, Handled::Next));
        let work = outcome.work.expect("handed on");
        assert_eq!(work.request.requested, Duration::from_millis(250));
        assert_eq!(work.request.response_topic, "my-replies");
        assert_eq!(work.request.correlation.text(), "c-7");
        assert_eq!(work.key.as_deref(), Some(&b"key-1"[..]));
        assert_eq!(work.origin, "requests/0@42");
        assert!(
            work.carried.iter().any(|(k, _)| k == "correlation"),
            "the correlation travels on to the reply"
        );
        assert!(work.deadline.is_none());
        assert_eq!(outcome.acks_finished, 0, "released only once answered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_a_correlation_gets_one_its_reply_will_carry() {
        let config = config(tenancy::Routes::default());
        let outcome = handle_one(&config, &record("ada", &[])).await;
        let work = outcome.work.expect("handed on");
        let generated = work.request.correlation.clone();
        assert!(!generated.is_empty());
        assert!(
            work.carried
                .iter()
                .any(|(k, v)| *k == generated.header && v.as_deref() == Some(&generated.value[..])),
            "{:?}",
            work.carried
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_routed_to_a_variant_is_skipped_by_the_baseline_and_released() {
        let config = config(routed_to_variant());
        let message = record("ada", &[("baggage", "tenant=t1")]);
        let outcome = handle_one(&config, &message).await;
        assert!(matches!(outcome.handled, Handled::Next));
        assert!(outcome.work.is_none() && outcome.dead_letter.is_none());
        assert_eq!(outcome.acks_finished, 1, "not ours: committed past");
        // Another tenant's record is the baseline's.
        let other = handle_one(&config, &record("ada", &[("baggage", "tenant=t2")])).await;
        assert!(other.work.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_routes_version_no_record_can_bring_is_decided_at_once() {
        let config = config(routed_to_variant());
        let message = record(
            "ada",
            &[
                ("baggage", "tenant=t1"),
                (protocol::headers::ROUTES_VERSION, "99999999"),
            ],
        );
        let started = tokio::time::Instant::now();
        let outcome = handle_one(&config, &message).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "not waited for");
        assert_eq!(
            outcome.acks_finished, 1,
            "decided by the current routes: skipped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_cannot_meet_its_deadline_is_dropped_at_the_consumer() {
        let config = config(tenancy::Routes::default());
        let soon = protocol::Deadline::after(Duration::from_millis(200)).to_header();
        let message = record(
            r#"{"name":"ada","wait_ms":500}"#,
            &[(protocol::headers::DEADLINE, soon.as_str())],
        );
        let outcome = handle_one(&config, &message).await;
        assert!(outcome.work.is_none() && outcome.dead_letter.is_none());
        assert_eq!(
            outcome.acks_finished, 1,
            "expired: committed, never answered"
        );
        // One it can meet goes on, its deadline on this process's clock.
        let later = protocol::Deadline::after(Duration::from_secs(10)).to_header();
        let message = record(
            r#"{"name":"ada","wait_ms":500}"#,
            &[(protocol::headers::DEADLINE, later.as_str())],
        );
        let work = handle_one(&config, &message).await.work.expect("served");
        let left = work.deadline.expect("a deadline") - tokio::time::Instant::now();
        assert!(
            left > Duration::from_secs(9) && left <= Duration::from_secs(10),
            "{left:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_deadline_is_served_as_if_there_were_none() {
        let config = config(tenancy::Routes::default());
        let message = record("ada", &[(protocol::headers::DEADLINE, "tomorrow")]);
        let work = handle_one(&config, &message).await.work.expect("served");
        assert!(work.deadline.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unusable_record_becomes_a_dead_letter_naming_its_origin() {
        let config = config(tenancy::Routes::default());
        let message = record(r#"{"name": 7}"#, &[("correlation", "c-9")]);
        let outcome = handle_one(&config, &message).await;
        assert!(outcome.work.is_none());
        let dead = outcome.dead_letter.expect("a dead letter");
        assert_eq!(dead.topic, "dead-letters");
        assert!(matches!(
            dead.kind,
            OutgoingKind::DeadLetter {
                reason: crate::reasons::DeadLetter::MalformedJson
            }
        ));
        let header = |name: &str| {
            dead.headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
                .map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            header(protocol::headers::DEAD_LETTER_ORIGIN).as_deref(),
            Some("requests/0@42")
        );
        assert!(
            header(protocol::headers::DEAD_LETTER_REASON)
                .is_some_and(|r| r.starts_with("malformed JSON body"))
        );
        assert_eq!(
            header("correlation").as_deref(),
            Some("c-9"),
            "its sender can be found"
        );
        assert_eq!(dead.payload, br#"{"name": 7}"#);
        assert_eq!(
            outcome.acks_finished, 0,
            "released once the dead letter is delivered"
        );
    }
}
