//! What waiter-bus tests share: a Kafka broker, unique names, telemetry, and
//! waiting on a condition with a deadline instead of sleeping.
//!
//! Start with [`TestKafka::start`]: an embedded broker (librdkafka's mock
//! cluster, consumer-group rebalance delay 0) or, when
//! `KAFKA_BOOTSTRAP_SERVERS` is set, the real broker it names. Give every test
//! its own topics and groups with [`unique_name`], start services in process
//! on port 0, and wait for outcomes with [`eventually`] or the span sink's
//! `wait_for_trace`. [`telemetry`] installs the process's telemetry once, with
//! log lines only when `TEST_LOG` is set. [`otlp::OtlpReceiver`] is a real
//! OTLP receiver (gRPC and HTTP) for proving what a process exports;
//! [`java::InteropClient`] is a request/reply client on the reference Java
//! client and Spring Kafka.

pub mod corrupt;
pub mod http;
pub mod java;
pub mod otlp;

use std::future::Future;
use std::time::Duration;

use embedded_kafka::EmbeddedKafkaOptions;
use embedded_kafka::apache::ApacheKafkaOptions;
use embedded_kafka::broker::{Broker, bootstrap_from_environment};
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;

pub use embedded_kafka::signal;
pub use kafka_kit::KafkaSettings;
/// The signals tests send their child processes.
pub use nix::sys::signal::Signal;

/// Why the test broker could not be used.
pub type TestKafkaError = embedded_kafka::BrokerError;

/// A broker for one test (or one test binary).
#[derive(Debug)]
pub struct TestKafka {
    bootstrap_servers: String,
    // Shared with the blocking-pool tasks that create topics and restart it.
    broker: std::sync::Arc<Broker>,
}

impl TestKafka {
    /// Starts an embedded broker with the project's topics, or connects to
    /// the broker in `KAFKA_BOOTSTRAP_SERVERS`.
    /// Starting a broker blocks (a mock cluster, or a JVM), so it runs on
    /// the blocking pool, never on the test's runtime threads.
    pub async fn start() -> Result<Self, TestKafkaError> {
        off_the_runtime(|| match bootstrap_from_environment() {
            Some(bootstrap) => Ok(Self::on(Broker::external(bootstrap))),
            None => Self::embedded(),
        })
        .await
    }

    /// A broker this test owns and may take down ([`Self::take_down`]):
    /// a fresh embedded broker, or, when the suite runs against a real broker
    /// (`KAFKA_BOOTSTRAP_SERVERS` set), an Apache Kafka of its own (the JVM
    /// `kafka-dev --apache` runs, from the same cache), so killing it leaves
    /// the shared broker and the other tests alone.
    pub async fn start_own() -> Result<Self, TestKafkaError> {
        off_the_runtime(|| match bootstrap_from_environment() {
            Some(_) => Ok(Self::on(Broker::apache(ApacheKafkaOptions::default())?)),
            None => Self::embedded(),
        })
        .await
    }

    /// A 3-node Apache Kafka cluster this test owns (replication factor 3,
    /// `min.insync.replicas=2`), whose brokers it may kill one by one
    /// ([`Self::take_down_broker`]): on the real-broker tier only. On the
    /// embedded broker there is no failover to test (the mock moves no
    /// leaders), so this says SKIPPED and why, and returns `None`.
    pub async fn start_own_cluster() -> Result<Option<Self>, TestKafkaError> {
        if !Self::is_real_broker() {
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                b"SKIPPED: the cluster tests need Apache Kafka (set KAFKA_BOOTSTRAP_SERVERS, e.g. from `kafka-dev --apache`); the embedded broker has no leader failover\n",
            );
            return Ok(None);
        }
        let options = ApacheKafkaOptions {
            brokers: 3,
            ..ApacheKafkaOptions::default()
        };
        off_the_runtime(|| Ok(Some(Self::on(Broker::apache(options)?)))).await
    }

    fn embedded() -> Result<Self, TestKafkaError> {
        Ok(Self::on(Broker::embedded(EmbeddedKafkaOptions::default())?))
    }

    fn on(broker: Broker) -> Self {
        Self {
            bootstrap_servers: broker.bootstrap_servers(),
            broker: std::sync::Arc::new(broker),
        }
    }

    /// Whether the tests run against a real broker (`KAFKA_BOOTSTRAP_SERVERS`).
    pub fn is_real_broker() -> bool {
        bootstrap_from_environment().is_some()
    }

    /// Takes the broker away, as a crash would: the embedded broker closes
    /// its connections and refuses new ones; an Apache broker is killed with
    /// SIGKILL. Only for a broker from [`Self::start_own`].
    pub async fn take_down(&self) -> Result<(), TestKafkaError> {
        self.broker.take_down()
    }

    /// Brings the broker back after [`Self::take_down`]: an Apache broker
    /// restarts on the same data directory and port, and this returns once
    /// it answers.
    pub async fn bring_back(&self) -> Result<(), TestKafkaError> {
        self.off_thread(|broker| broker.bring_back()).await
    }

    /// The brokers of a cluster from [`Self::start_own_cluster`] (ids from 1).
    pub fn broker_ids(&self) -> Vec<i32> {
        self.broker.broker_ids()
    }

    /// Kills broker `id` of a cluster from [`Self::start_own_cluster`] with
    /// SIGKILL; the others serve on.
    pub async fn take_down_broker(&self, id: i32) -> Result<(), TestKafkaError> {
        self.off_thread(move |broker| broker.take_down_broker(id))
            .await
    }

    /// Restarts broker `id` after [`Self::take_down_broker`]; returns once
    /// it has registered and every topic is led.
    pub async fn bring_back_broker(&self, id: i32) -> Result<(), TestKafkaError> {
        self.off_thread(move |broker| broker.bring_back_broker(id))
            .await
    }

    /// The broker leading `topic`'s `partition` now.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> Result<i32, TestKafkaError> {
        let topic = topic.to_string();
        self.off_thread(move |broker| broker.leader_of(&topic, partition))
            .await
    }

    /// The broker coordinating consumer group `group` now (real Kafka only).
    pub async fn coordinator_of(&self, group: &str) -> Result<i32, TestKafkaError> {
        let group = group.to_string();
        self.off_thread(move |broker| broker.coordinator_of(&group))
            .await
    }

    /// Where `topic`'s `partition` is on disk: for a broker from
    /// [`Self::start_own`] on Apache Kafka only.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> Option<std::path::PathBuf> {
        self.broker.partition_dir(topic, partition)
    }

    /// The broker's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Settings for a service under test (on the embedded broker, tuned
    /// for it: [`embedded_kafka::EmbeddedKafka::client_settings`]).
    pub fn settings(&self) -> KafkaSettings {
        self.broker.client_settings()
    }

    /// Creates a request, a reply and a dead-letter topic under names no
    /// other test uses: requests and replies with `partitions`, the dead
    /// letters with one.
    pub async fn fresh_topics(
        &self,
        partitions: i32,
    ) -> Result<protocol::topics::RequestTopics, TestKafkaError> {
        let topics = protocol::topics::RequestTopics {
            requests: unique_name("requests"),
            replies: unique_name("replies"),
            dead_letters: unique_name("dead-letters"),
        };
        self.create_topic(&topics.requests, partitions).await?;
        self.create_topic(&topics.replies, partitions).await?;
        self.create_topic(&topics.dead_letters, 1).await?;
        Ok(topics)
    }

    /// Creates `name` with `partitions` partitions; an existing topic is fine.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), TestKafkaError> {
        let name = name.to_string();
        self.off_thread(move |broker| broker.create_topic(&name, partitions))
            .await
    }

    /// Makes every produce fail with a retriable error, or take them
    /// again: `None` (SKIPPED said) on a real broker, which cannot be made
    /// to (see `Broker::refuse_produce`).
    pub async fn refuse_produce(&self, refuse: bool) -> Result<Option<()>, TestKafkaError> {
        if Self::is_real_broker() {
            use std::io::Write;
            let _ = std::io::stderr().write_all(
                b"SKIPPED: refusing writes on request needs the embedded broker; Apache Kafka caps min.insync.replicas at a topic's replicas\n",
            );
            return Ok(None);
        }
        self.off_thread(move |broker| broker.refuse_produce(refuse))
            .await
            .map(Some)
    }

    /// Deletes `name`, on a real broker only: the embedded broker (the
    /// mock) cannot delete a topic, so there this says so instead.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TestKafkaError> {
        if !Self::is_real_broker() {
            return Err(embedded_kafka::BrokerError::Refused {
                bootstrap: self.bootstrap_servers.clone(),
                reason: "the embedded broker cannot delete a topic".into(),
            });
        }
        let name = name.to_string();
        self.off_thread(move |broker| broker.delete_topics(&[name.as_str()]))
            .await
    }

    /// Runs a blocking broker call on tokio's blocking pool.
    async fn off_thread<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Broker) -> T + Send + 'static,
    ) -> T {
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || call(&broker))
            .await
            .expect("a broker call does not panic")
    }

    /// A producer tuned for tests (acks=all, no lingering).
    pub fn producer(&self) -> FutureProducer {
        self.settings()
            .client_config()
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()
            .expect("a producer for the test broker")
    }

    /// A consumer in `group`, reading from the earliest offset.
    pub fn consumer(&self, group: &str) -> StreamConsumer {
        self.settings()
            .client_config()
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("a consumer for the test broker")
    }
}

/// A consumer reading every partition of `topics` from the beginning by
/// assignment, not group membership: it never rebalances, so it never
/// re-reads, and what it sees is what the topics hold.
/// (Assigning waits on metadata, so it runs on the blocking pool.)
pub async fn reader(kafka: &TestKafka, topics: &[&str]) -> StreamConsumer {
    use kafka_kit::assign::{Start, assign_whole_topics};
    let consumer: StreamConsumer = kafka
        .settings()
        .client_config()
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("a reader for the test broker");
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    off_the_runtime(move || {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        assign_whole_topics(&consumer, &names, Start::Beginning, Duration::from_secs(10))
            .expect("the topics can be assigned");
        consumer
    })
    .await
}

/// Runs blocking `work` (starting a broker, a metadata round trip) on the
/// blocking pool, so the test's runtime threads keep serving the services
/// under test meanwhile.
pub async fn off_the_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("blocking test work does not panic")
}

/// Whether the external `tool` (from Debian package `package`) is on the
/// PATH, for the few tests that drive one (promtool, chromedriver). CI sets
/// `WAITER_BUS_TEST_TOOLS=required` and installs them, so there a missing
/// tool fails the test; on a newcomer's machine the test says what to
/// install and passes without it, so `cargo test` works from a clean clone.
pub fn tool_available(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    if !found {
        let required = std::env::var("WAITER_BUS_TEST_TOOLS").is_ok_and(|v| v == "required");
        assert!(
            !required,
            "`{tool}` is not installed (Debian package `{package}`)"
        );
        // Straight to the process's stderr: the test harness captures
        // `eprintln!`, and a skip must be seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: `{tool}` is not installed; `apt-get install {package}` to run this test (CI always does)"
        );
    }
    found
}

/// A name no other test in this run uses, for topics and consumer groups.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The process's telemetry, set up for tests (see `telemetry::TelemetryConfig::for_tests`).
pub fn telemetry() -> telemetry::Telemetry {
    telemetry::init(telemetry::TelemetryConfig::for_tests()).expect("test telemetry")
}

/// The condition did not hold before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("condition `{what}` did not hold within {timeout:?}")]
pub struct Timeout {
    /// What was being waited for.
    pub what: String,
    /// How long it was given.
    pub timeout: Duration,
}

/// Re-checks `check` until it returns `Some`, or fails after `timeout`.
///
/// For state that offers nothing to await (a counter, a consumer group's
/// assignment); the re-check interval is short and backs off, and the deadline
/// makes a broken condition fail instead of hang.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(2);
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Timeout {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}
