//! Sending, matching and timing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use kafka_kit::assign::{Start, assign_topic_off_thread};
use protocol::headers::{self, timing};
use protocol::wire::{ReplyStatus, WaitReply, WaitRequestBody};
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::report::{Counts, Hops, Percentiles, Report, Second, new_histogram};
use crate::{Config, LoadError, LoadModel, Target};

/// A request awaiting its reply.
struct Pending {
    intended: Instant,
    deadline: Instant,
    sent_wall_us: u64,
    // Closed loop: the user waiting for this request's outcome.
    done: Option<oneshot::Sender<()>>,
    // The request's root span, ended when the outcome is known.
    span: Option<tracing::Span>,
}

#[derive(Clone, Copy)]
enum Outcome {
    Received,
    TimedOut,
}

struct State {
    pending: HashMap<String, Pending>,
    // Deadlines in order, so the sweeper touches only what expired instead
    // of scanning every pending request under the lock.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    // Outcomes of recently finished requests, to tell duplicates and late
    // replies from replies this run never asked for. Kept for
    // `FINISHED_RETENTION` timeouts, so a long run does not grow without bound;
    // a reply later than that counts as unexpected.
    finished: HashMap<String, Outcome>,
    finished_order: VecDeque<(Instant, String)>,
    retention: Duration,
    counts: Counts,
    latency: Histogram<u64>,
    send_delay: Histogram<u64>,
    producer_ack: Histogram<u64>,
    broker_to_consumer: Histogram<u64>,
    queue: Histogram<u64>,
    service: Histogram<u64>,
    reply_handoff: Histogram<u64>,
    reply_consume: Histogram<u64>,
    reply_timestamp_type: Option<&'static str>,
    per_second: Vec<Histogram<u64>>,
    started: Instant,
}

type Shared = Arc<Mutex<State>>;

/// How many timeouts a finished request's outcome is remembered for.
const FINISHED_RETENTION: u32 = 3;

impl State {
    fn new(started: Instant, retention: Duration) -> Self {
        Self {
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            retention,
            counts: Counts::default(),
            latency: new_histogram(),
            send_delay: new_histogram(),
            producer_ack: new_histogram(),
            broker_to_consumer: new_histogram(),
            queue: new_histogram(),
            service: new_histogram(),
            reply_handoff: new_histogram(),
            reply_consume: new_histogram(),
            reply_timestamp_type: None,
            per_second: Vec::new(),
            started,
        }
    }

    /// Registers a request awaiting its reply.
    fn track(&mut self, correlation: &str, pending: Pending) {
        self.deadlines
            .push(Reverse((pending.deadline, correlation.to_string())));
        self.pending.insert(correlation.to_string(), pending);
    }

    /// Remembers how a request ended.
    fn finish(&mut self, correlation: &str, outcome: Outcome) {
        self.finished.insert(correlation.to_string(), outcome);
        self.finished_order
            .push_back((Instant::now(), correlation.to_string()));
    }

    /// Times out what is past its deadline and forgets old outcomes.
    fn sweep(&mut self, now: Instant) {
        while let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Reverse((_, correlation)) = self.deadlines.pop().expect("peeked");
            // Answered or unsent requests are no longer pending: nothing to do.
            if let Some(pending) = self.pending.remove(&correlation) {
                self.counts.timed_out += 1;
                self.finish(&correlation, Outcome::TimedOut);
                if let Some(done) = pending.done {
                    let _ = done.send(());
                }
            }
        }
        while let Some((finished_at, _)) = self.finished_order.front() {
            if now.saturating_duration_since(*finished_at) < self.retention {
                break;
            }
            let (_, correlation) = self.finished_order.pop_front().expect("front");
            self.finished.remove(&correlation);
        }
    }
}

/// How requests leave the generator.
#[derive(Clone)]
enum Sender {
    /// Records on the request topic; replies come back on the response topic.
    Kafka(FutureProducer),
    /// `POST {url}/wait` on the gateway; the response is the reply.
    Http(reqwest::Client, Arc<str>),
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Runs the load described by `config` and reports.
pub async fn run(config: Config) -> Result<Report, LoadError> {
    match config.model {
        LoadModel::Open { rate } if !(rate.is_finite() && rate > 0.0) => {
            return Err(LoadError::Invalid(format!("--rate {rate} must be above 0")));
        }
        LoadModel::Closed { users: 0 } => {
            return Err(LoadError::Invalid("--users must be at least 1".into()));
        }
        _ => {}
    }
    let (sender, replies) = match &config.target {
        Target::Kafka => {
            let (producer, replies) = kafka_clients(&config).await?;
            (Sender::Kafka(producer), Some(replies))
        }
        Target::Http { url } => {
            let client = reqwest::Client::builder()
                .timeout(config.timeout)
                .build()
                .map_err(|e| LoadError::Invalid(format!("HTTP client: {e}")))?;
            let url = format!("{}/wait", url.trim_end_matches('/'));
            (Sender::Http(client, url.into()), None)
        }
    };

    let started = Instant::now();
    let shared: Shared = Arc::new(Mutex::new(State::new(
        started,
        config.timeout * FINISHED_RETENTION,
    )));
    let stop = CancellationToken::new();
    let reader =
        replies.map(|replies| tokio::spawn(read_replies(replies, shared.clone(), stop.clone())));
    let sweeper = tokio::spawn(sweep_timeouts(shared.clone(), stop.clone()));
    let progress = config
        .progress
        .then(|| tokio::spawn(show_progress(shared.clone(), stop.clone())));

    let config = Arc::new(config);
    let sending = match config.model {
        LoadModel::Open { rate } => open_loop(&config, rate, &sender, &shared, started).await,
        LoadModel::Closed { users } => closed_loop(&config, users, &sender, &shared, started).await,
    };
    // Wait for the last replies: every pending request either answers or
    // reaches its deadline.
    let drain_deadline = Instant::now() + config.timeout + Duration::from_secs(1);
    while !lock(&shared).pending.is_empty() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    if let Some(reader) = reader {
        let _ = reader.await;
    }
    let _ = sweeper.await;
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let elapsed = started.elapsed();
    let state = lock(&shared);
    let mut counts = state.counts.clone();
    counts.in_flight = state.pending.len() as u64;
    let (model, rate, users) = match config.model {
        LoadModel::Open { rate } => ("open", Some(rate), None),
        LoadModel::Closed { users } => ("closed", None, Some(users)),
    };
    let mut unsplit: Vec<String> = vec![
        "broker → consumer runs from this generator's send (the request's CreateTime) to the waiter's consumption; it includes the produce round trip, since the broker's arrival time is not on the record".to_string(),
        "hops measured on the waiter use its clock; broker → consumer and reply consume compare two machines' wall clocks".to_string(),
    ];
    if matches!(config.target, Target::Http { .. }) {
        unsplit = vec![
            "the http target measures end to end only: the hops happen behind the gateway".into(),
        ];
    } else if state.queue.is_empty() && counts.received > 0 {
        unsplit.push(
            "replies carried no waiter timing headers; queue, service and hand-off are unknown"
                .into(),
        );
    }
    Ok(Report {
        target: match &config.target {
            Target::Kafka => "kafka".into(),
            Target::Http { url } => format!("http {url}"),
        },
        model: model.into(),
        rate,
        users,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_per_s: counts.received as f64 / sending.as_secs_f64().max(0.001),
        latency: Percentiles::of(&state.latency),
        send_delay: Percentiles::of(&state.send_delay),
        hops: Hops {
            producer_ack: Percentiles::of(&state.producer_ack),
            broker_to_consumer: Percentiles::of(&state.broker_to_consumer),
            queue: Percentiles::of(&state.queue),
            service: Percentiles::of(&state.service),
            reply_handoff: Percentiles::of(&state.reply_handoff),
            reply_consume: Percentiles::of(&state.reply_consume),
            timestamp_types: vec![
                "requests: CreateTime, set by this generator's producer".into(),
                format!(
                    "replies: {}",
                    state.reply_timestamp_type.unwrap_or("none received")
                ),
            ],
            unsplit,
        },
        timeline: state
            .per_second
            .iter()
            .enumerate()
            .map(|(second, h)| Second {
                second: second as u64,
                received: h.len(),
                p99_ms: if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                },
            })
            .collect(),
        counts,
    })
}

async fn kafka_clients(config: &Config) -> Result<(FutureProducer, StreamConsumer), LoadError> {
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
fn with_properties(mut client: ClientConfig, properties: &[(String, String)]) -> ClientConfig {
    for (key, value) in properties {
        client.set(key, value);
    }
    client
}

/// Sends on schedule; returns how long sending lasted.
///
/// The schedule is kept by a thread of its own: tokio's timer wakes on
/// millisecond ticks, which alone would put a send up to a millisecond behind
/// its intended time, while a thread's sleep is accurate to tens of
/// microseconds. The thread hands each intended time to this task, which
/// starts the send.
async fn open_loop(
    config: &Arc<Config>,
    rate: f64,
    sender: &Sender,
    shared: &Shared,
    started: Instant,
) -> Duration {
    let end = started + config.duration;
    let ramp_up = config.ramp_up;
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::Builder::new()
        .name("load-pacer".into())
        .spawn(move || {
            let mut next = started;
            while next < end {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                    continue;
                }
                while next <= now && next < end {
                    if due_tx.send(next).is_err() {
                        return;
                    }
                    next += interval(rate, next - started, ramp_up);
                }
            }
        })
        .expect("the pacer thread starts");
    let mut sends = tokio::task::JoinSet::new();
    while let Some(intended) = due_rx.recv().await {
        sends.spawn(send_one(
            config.clone(),
            sender.clone(),
            shared.clone(),
            intended,
            None,
        ));
        while sends.try_join_next().is_some() {}
    }
    let _ = pacer.join();
    while sends.join_next().await.is_some() {}
    config.duration
}

/// The gap after a request sent `since` the start: `1 / rate`, with the rate
/// climbing linearly from 1 % during the ramp-up.
fn interval(rate: f64, since: Duration, ramp_up: Duration) -> Duration {
    let current = if since < ramp_up {
        rate * (since.as_secs_f64() / ramp_up.as_secs_f64()).max(0.01)
    } else {
        rate
    };
    Duration::from_secs_f64(1.0 / current)
}

async fn closed_loop(
    config: &Arc<Config>,
    users: usize,
    sender: &Sender,
    shared: &Shared,
    started: Instant,
) -> Duration {
    let end = started + config.duration;
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..users {
        let (config, sender, shared) = (config.clone(), sender.clone(), shared.clone());
        running.spawn(async move {
            while Instant::now() < end {
                let (done_tx, done_rx) = oneshot::channel();
                send_one(
                    config.clone(),
                    sender.clone(),
                    shared.clone(),
                    Instant::now(),
                    Some(done_tx),
                )
                .await;
                let _ = done_rx.await;
            }
        });
    }
    while running.join_next().await.is_some() {}
    started.elapsed()
}

async fn send_one(
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

fn request_body(config: &Config) -> WaitRequestBody {
    WaitRequestBody {
        name: "load".into(),
        wait_ms: Some(config.wait.sample()),
        padding: (config.payload_bytes > 0).then(|| "x".repeat(config.payload_bytes)),
    }
}

/// Counts an attempt, records its send delay and registers it as pending.
fn begin(
    shared: &Shared,
    config: &Config,
    correlation: &str,
    intended: Instant,
    done: Option<oneshot::Sender<()>>,
    span: Option<tracing::Span>,
) -> u64 {
    let actual = Instant::now();
    let sent_wall_us = wall_us();
    let mut state = lock(shared);
    state.counts.attempted += 1;
    state
        .send_delay
        .saturating_record(micros(actual.saturating_duration_since(intended)));
    state.track(
        correlation,
        Pending {
            intended,
            deadline: intended + config.timeout,
            sent_wall_us,
            done,
            span,
        },
    );
    sent_wall_us
}

/// Records a request that never left. Under overload its deadline may have
/// passed first; then it was counted as timed out, which it was not.
fn not_sent(state: &mut State, correlation: &str) {
    state.counts.send_failed += 1;
    match state.pending.remove(correlation) {
        Some(pending) => {
            if let Some(done) = pending.done {
                let _ = done.send(());
            }
        }
        None => {
            if let Some(Outcome::TimedOut) = state.finished.remove(correlation) {
                // Its place in `finished_order` expires harmlessly.
                state.counts.timed_out -= 1;
            }
        }
    }
}

/// Records an answer: latency from the intended send time, or a late or
/// duplicate reply when the request is no longer pending.
fn answer(state: &mut State, correlation: &str, refused: bool) -> Option<Pending> {
    let now = Instant::now();
    let Some(pending) = state.pending.remove(correlation) else {
        match state.finished.get(correlation) {
            Some(Outcome::Received) => state.counts.duplicates += 1,
            Some(Outcome::TimedOut) => state.counts.late += 1,
            None => state.counts.unexpected += 1,
        }
        return None;
    };
    state.finish(correlation, Outcome::Received);
    state.counts.received += 1;
    if refused {
        state.counts.error_replies += 1;
    }
    let latency = micros(now.saturating_duration_since(pending.intended));
    state.latency.saturating_record(latency);
    let second = now.saturating_duration_since(state.started).as_secs() as usize;
    if state.per_second.len() <= second {
        state.per_second.resize_with(second + 1, new_histogram);
    }
    state.per_second[second].saturating_record(latency);
    Some(pending)
}

async fn send_http(
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

async fn send_kafka(
    config: Arc<Config>,
    producer: FutureProducer,
    shared: Shared,
    intended: Instant,
    done: Option<oneshot::Sender<()>>,
) {
    let correlation = uuid::Uuid::new_v4().simple().to_string();
    let span = config.trace.then(|| {
        let span = tracing::info_span!(
            "load.request",
            otel.kind = "producer",
            service = "load",
            messaging.system = "kafka",
            messaging.destination.name = %config.request_topic,
            messaging.message.conversation_id = %correlation,
        );
        // A root: the generator starts the trace the application continues.
        let _ = span.set_parent(opentelemetry::Context::new());
        span.add_event("send.started", vec![]);
        span
    });
    let actual = Instant::now();
    begin(&shared, &config, &correlation, intended, done, span.clone());
    let payload = serde_json::to_vec(&request_body(&config)).expect("a request always serialises");
    let traceparent = match &span {
        Some(span) => {
            let context = span.context();
            let span_context = opentelemetry::trace::TraceContextExt::span(&context)
                .span_context()
                .clone();
            format!(
                "00-{}-{}-01",
                span_context.trace_id(),
                span_context.span_id()
            )
        }
        None => {
            // Still a fresh trace per request, so the application's spans of
            // one request group together even without export.
            let trace_id = uuid::Uuid::new_v4().simple().to_string();
            format!(
                "00-{trace_id}-{}-01",
                &uuid::Uuid::new_v4().simple().to_string()[..16]
            )
        }
    };
    let baggage = config.tenant.as_ref().map(|t| format!("tenant={t}"));
    let mut record_headers = OwnedHeaders::new_with_capacity(4);
    for (key, value) in [
        (headers::CORRELATION, Some(correlation.as_str())),
        (
            headers::RESPONSE_TOPIC,
            Some(config.response_topic.as_str()),
        ),
        (headers::TRACEPARENT, Some(traceparent.as_str())),
        (headers::BAGGAGE, baggage.as_deref()),
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
    let mut state = lock(&shared);
    match result {
        Ok(_) => {
            state.counts.sent += 1;
            state
                .producer_ack
                .saturating_record(micros(actual.elapsed()));
            if let Some(span) = &span {
                span.add_event("send.acknowledged", vec![]);
            }
        }
        Err((e, _)) => {
            tracing::debug!(error = %e, "request not produced");
            not_sent(&mut state, &correlation);
        }
    }
}

fn header_u64<H: Headers>(headers: Option<&H>, name: &str) -> Option<u64> {
    propagation::kafka_header(headers, name)?.parse().ok()
}

async fn read_replies(replies: StreamConsumer, shared: Shared, stop: CancellationToken) {
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

async fn sweep_timeouts(shared: Shared, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        lock(&shared).sweep(Instant::now());
    }
}

async fn show_progress(shared: Shared, stop: CancellationToken) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .expect("a valid template"),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_received = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let state = lock(&shared);
        let c = &state.counts;
        let rate = (c.received - last_received) * 2;
        last_received = c.received;
        let p99 = if state.latency.is_empty() {
            0.0
        } else {
            state.latency.value_at_quantile(0.99) as f64 / 1000.0
        };
        bar.set_message(format!(
            "sent {} · {rate} replies/s · in flight {} · errors {} · p99 {p99:.1} ms",
            c.sent,
            state.pending.len(),
            c.errors()
        ));
        bar.tick();
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(deadline: Instant) -> Pending {
        Pending {
            intended: deadline - Duration::from_secs(1),
            deadline,
            sent_wall_us: 0,
            done: None,
            span: None,
        }
    }

    #[test]
    fn the_sweep_times_out_only_what_expired_and_skips_answered_requests() {
        let t0 = Instant::now();
        let mut state = State::new(t0, Duration::from_secs(10));
        for (name, at) in [("late", 3), ("early", 1), ("answered", 2)] {
            state.track(name, pending(t0 + Duration::from_secs(at)));
        }
        assert!(answer(&mut state, "answered", false).is_some());
        state.sweep(t0 + Duration::from_secs(2));
        assert_eq!(state.counts.timed_out, 1, "only `early` expired");
        assert!(state.pending.contains_key("late"));
        state.sweep(t0 + Duration::from_secs(3));
        assert_eq!(state.counts.timed_out, 2);
        assert!(state.pending.is_empty() && state.deadlines.is_empty());
        assert!(answer(&mut state, "early", false).is_none());
        assert_eq!(state.counts.late, 1, "a reply after its deadline is late");
    }

    #[test]
    fn old_outcomes_are_forgotten_after_the_retention_window() {
        let t0 = Instant::now();
        let mut state = State::new(t0, Duration::ZERO);
        state.track("done", pending(t0 + Duration::from_secs(60)));
        assert!(answer(&mut state, "done", false).is_some());
        state.sweep(Instant::now());
        assert!(state.finished.is_empty(), "retention 0 forgets at once");
        assert!(answer(&mut state, "done", false).is_none());
        assert_eq!(
            state.counts.unexpected, 1,
            "a reply beyond retention is unexpected"
        );
    }
}
