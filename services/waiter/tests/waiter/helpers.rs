//! Starting waiters in process (or as a child process) against the test
//! broker, and a client that sends requests and collects replies.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use protocol::topics::RequestTopics;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestKafka;
use waiter::{RunningWaiter, Settings};

pub const DEADLINE: Duration = Duration::from_secs(60);

/// Topics and group of one test.
#[derive(Clone, Debug)]
pub struct Topics {
    pub topics: RequestTopics,
    pub group: String,
}

impl std::ops::Deref for Topics {
    type Target = RequestTopics;

    fn deref(&self) -> &RequestTopics {
        &self.topics
    }
}

impl Topics {
    pub async fn create(kafka: &TestKafka, partitions: i32) -> Self {
        Self {
            topics: kafka.fresh_topics(partitions).await.unwrap(),
            group: testkit::unique_name("waiter"),
        }
    }
}

/// Settings for a waiter on `topics`: one consumer (a single group member
/// needs no rebalance), HTTP on an ephemeral port, a variant label no other
/// test uses so its metrics are its own. Being a variant, it shadows
/// (processes every record, tenancy routing off) and starts at `earliest`;
/// the tenancy rules themselves are tested in the flow tests.
pub fn settings(kafka: &TestKafka, topics: &Topics) -> Settings {
    let mut settings = Settings::in_process(kafka.settings(), topics, &topics.group);
    settings.service.variant = testkit::unique_name("t");
    settings.tenancy.tenant_routing = false;
    settings.waiter.auto_offset_reset = Some(waiter::settings::OffsetReset::Earliest);
    let w = &mut settings.waiter;
    w.producers = count(2);
    w.waiters = count(200);
    w.request_channel_capacity = count(50);
    w.reply_channel_capacity = count(50);
    w.default_wait = Duration::from_millis(10);
    settings
}

/// A count for settings that must not be zero.
pub fn count(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a count of at least 1")
}

/// A waiter running in this process.
pub struct TestWaiter {
    pub port: u16,
    pub variant: String,
    running: RunningWaiter,
}

/// A broker, fresh one-partition topics, and a waiter on them with the
/// test settings: what most tests start with.
pub async fn started() -> (TestKafka, Topics, TestWaiter) {
    started_with(|_| {}).await
}

/// [`started`] with the test settings adjusted first.
pub async fn started_with(adjust: impl FnOnce(&mut Settings)) -> (TestKafka, Topics, TestWaiter) {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let mut settings = settings(&kafka, &topics);
    adjust(&mut settings);
    let waiter = spawn_waiter(settings).await;
    (kafka, topics, waiter)
}

pub async fn spawn_waiter(settings: Settings) -> TestWaiter {
    testkit::telemetry();
    let running = RunningWaiter::start(settings).await.expect("waiter builds");
    TestWaiter {
        port: running.port(),
        variant: running.variant().to_string(),
        running,
    }
}

impl TestWaiter {
    /// Graceful stop: drains and commits.
    pub async fn stop(self) {
        self.running.stop().await.expect("waiter stops cleanly");
    }

    /// Tells it to stop without waiting for the drain (its last calls may
    /// still be hanging on a downstream).
    pub fn is_finished(&self) -> bool {
        self.running.is_finished()
    }

    pub fn begin_stop(&self) {
        self.running.begin_stop();
    }

    /// Partitions, route table.
    pub fn readiness(&self) -> &waiter::Readiness {
        self.running.readiness()
    }

    /// The value of `name` once it reaches `expected`, or its value after
    /// a 10 s deadline. Counters of replies move when the broker acknowledges
    /// the delivery, which a real broker may do after a consumer has already
    /// read the reply: read too early, they lag behind what the test saw.
    pub async fn settled_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) -> f64 {
        let _ = testkit::eventually(name, std::time::Duration::from_secs(10), || {
            std::future::ready(
                (self.metric_if_present(name, labels) == Some(expected)).then_some(()),
            )
        })
        .await;
        self.metric(name, labels)
    }

    /// Asserts that `name` settles at `expected` (see [`Self::settled_metric`]).
    pub async fn expect_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let settled = self.settled_metric(name, labels, expected).await;
        assert_eq!(settled, expected, "{name} {labels:?}");
    }

    /// The value of `name` for this waiter's variant (and `labels`), summed
    /// over the series that match. A series that is not there fails the
    /// test: the counters a test reads are registered at zero, so a missing
    /// one is a renamed or unregistered metric, not a zero.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metric_if_present(name, labels).unwrap_or_else(|| {
            panic!(
                "no series `{name}` {labels:?} of variant `{}` in the exposition",
                self.variant
            )
        })
    }

    /// [`Self::metric`], `None` while no series matches (a gauge that
    /// appears with its first event).
    pub fn metric_if_present(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&telemetry::render_metrics(), name, &self.variant, labels)
    }
}

/// Reads one series (the sum of those matching) from Prometheus text;
/// `None` when none matches.
pub fn metric_value(text: &str, name: &str, variant: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let variant_label = format!("variant=\"{variant}\"");
    let values: Vec<f64> = text
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| line.contains(&variant_label))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Sends requests and reads replies, as the Go app's JMeter plan did.
pub struct Client {
    producer: FutureProducer,
    replies: StreamConsumer,
    pub requests_topic: String,
}

/// One request's wire form.
pub struct Request<'a> {
    pub correlation: Option<&'a str>,
    pub response_topic: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub body: &'a [u8],
}

impl Client {
    pub async fn new(kafka: &TestKafka, requests_topic: &str, reply_topics: &[&str]) -> Self {
        Self {
            producer: kafka.producer(),
            replies: testkit::reader(kafka, reply_topics).await,
            requests_topic: requests_topic.to_string(),
        }
    }

    pub async fn send(&self, request: Request<'_>) {
        let headers: Vec<(&str, &[u8])> = [
            ("correlation", request.correlation),
            ("responseTopic", request.response_topic),
            ("traceparent", request.traceparent),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?.as_bytes())))
        .collect();
        self.send_with_headers(&headers, request.body).await;
    }

    /// Produces `body` with exactly `headers`, keyed by its correlation.
    pub async fn send_with_headers(&self, headers: &[(&str, &[u8])], body: &[u8]) {
        let record_headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |acc, (key, value)| {
                acc.insert(Header {
                    key,
                    value: Some(*value),
                })
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.requests_topic)
            .payload(body)
            .headers(record_headers);
        if let Some((_, correlation)) = headers.iter().find(|(key, _)| *key == "correlation") {
            record = record.key(*correlation);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("the request is produced");
    }

    pub async fn send_json(&self, correlation: &str, wait_ms: u64) -> String {
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
        let traceparent = format!("00-{trace_id}-{span_id}-01");
        let body = format!(r#"{{"name":"{correlation}","wait_ms":{wait_ms}}}"#);
        self.send(Request {
            correlation: Some(correlation),
            response_topic: None,
            traceparent: Some(&traceparent),
            body: body.as_bytes(),
        })
        .await;
        trace_id
    }

    /// Collects replies until `done` says so or the deadline passes.
    pub async fn collect(
        &self,
        mut done: impl FnMut(&[OwnedMessage]) -> bool,
    ) -> Vec<OwnedMessage> {
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !done(&replies) {
            match tokio::time::timeout_at(deadline, self.replies.recv()).await {
                Ok(Ok(message)) => replies.push(message.detach()),
                // Broker outages surface as transient errors; the deadline
                // still bounds the wait.
                Ok(Err(e)) => eprintln!("reply consumer: {e}; still reading"),
                Err(_) => panic!("only {} replies before the deadline", replies.len()),
            }
        }
        replies
    }

    /// [`Self::collect`] until `count` distinct requests whose correlation
    /// starts with `prefix` are answered (duplicates included in what it returns).
    pub async fn collect_answers_to(&self, prefix: &str, count: usize) -> Vec<OwnedMessage> {
        self.collect(|r| {
            count_by_correlation(r)
                .keys()
                .filter(|c| c.starts_with(prefix))
                .count()
                == count
        })
        .await
    }
}

/// A header's value as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    protocol::headers::last(message.headers(), name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The reply body.
pub fn reply_body(message: &OwnedMessage) -> protocol::wire::WaitReply {
    serde_json::from_slice(message.payload().expect("reply has a body")).expect("reply is JSON")
}

/// Replies per correlation id.
pub fn count_by_correlation(replies: &[OwnedMessage]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        *counts
            .entry(header(reply, "correlation").unwrap_or_default())
            .or_default() += 1;
    }
    counts
}

/// Records in `topic` according to its high watermarks.
pub async fn records_in(kafka: &TestKafka, topic: &str) -> i64 {
    let consumer = kafka.consumer(&testkit::unique_name("watermarks"));
    let topic = topic.to_string();
    testkit::off_the_runtime(move || {
        kafka_kit::assign::records_in(&consumer, &topic, Duration::from_secs(10)).unwrap()
    })
    .await
}

/// A `waiter` binary run as a child process on a test's topics (the one
/// launcher the tests use), killed when dropped.
pub struct WaiterProcess(pub Child);

impl WaiterProcess {
    pub fn start(kafka: &TestKafka, topics: &Topics) -> Self {
        Self::start_logging(kafka, topics, "warn")
    }

    pub fn start_logging(kafka: &TestKafka, topics: &Topics, rust_log: &str) -> Self {
        Self::start_with(kafka, topics, &[("RUST_LOG", rust_log)])
    }

    /// Started with `env` over the defaults below.
    pub fn start_with(kafka: &TestKafka, topics: &Topics, env: &[(&str, &str)]) -> Self {
        Self::command(kafka, topics, env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map(Self)
            .expect("the waiter binary starts")
    }

    /// Started with its log lines (stdout, a pipe: not a terminal) sent to
    /// the receiver as they come.
    pub fn start_reading_logs(
        kafka: &TestKafka,
        topics: &Topics,
    ) -> (Self, std::sync::mpsc::Receiver<String>) {
        let mut child = Self::command(kafka, topics, &[("RUST_LOG", "info")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the waiter binary starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        (Self(child), received)
    }

    pub fn command(kafka: &TestKafka, topics: &Topics, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_waiter"));
        command
            .env("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers())
            .env("WAITER_BUS__HTTP__HOST", "127.0.0.1")
            .env("WAITER_BUS__HTTP__PORT", "0")
            .env("WAITER_BUS__WAITER__REQUEST_TOPIC", &topics.requests)
            .env(
                "WAITER_BUS__WAITER__DEFAULT_RESPONSE_TOPIC",
                &topics.replies,
            )
            .env(
                "WAITER_BUS__WAITER__DEAD_LETTER_TOPIC",
                &topics.dead_letters,
            )
            .env("WAITER_BUS__WAITER__GROUP_ID", &topics.group)
            .env("WAITER_BUS__WAITER__CONSUMERS", "1")
            .env("WAITER_BUS__WAITER__WAITERS", "20")
            .env("WAITER_BUS__WAITER__COMMIT_INTERVAL", "100ms")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        command
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then the broker gone as a crashed broker process is
    /// (listener closed as well): the waiter must still exit. Drain (2 s in
    /// these tests), the final commits (10 s) and consumer closes (10 s)
    /// are bounded; a stop that outlives them all by far hangs.
    pub async fn stops_as_its_broker_goes(&mut self, kafka: TestKafka) {
        assert!(testkit::signal(&self.0, testkit::Signal::SIGTERM));
        drop(kafka);
        let exited = testkit::eventually("the waiter exits", Duration::from_secs(40), || {
            std::future::ready(self.0.try_wait().ok().flatten())
        })
        .await;
        if exited.is_err() {
            self.kill();
            panic!("the waiter did not exit within 40 s of SIGTERM with its broker gone");
        }
    }
}

impl Drop for WaiterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `count` JSON requests named `{prefix}-{i}` to `partition`.
pub async fn send_to_partition(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    prefix: &str,
    count: usize,
) {
    let producer = kafka.producer();
    for i in 0..count {
        let correlation = format!("{prefix}-{i}");
        let body = format!(r#"{{"name":"{correlation}","wait_ms":1}}"#);
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .partition(partition)
                    .key(&correlation)
                    .payload(&body)
                    .headers(rdkafka::message::OwnedHeaders::new().insert(
                        rdkafka::message::Header {
                            key: "correlation",
                            value: Some(&correlation),
                        },
                    )),
                Duration::from_secs(10),
            )
            .await
            .expect("the request is produced");
    }
}
