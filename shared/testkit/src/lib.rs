//! What waiter-bus tests share: a Kafka broker, unique names, telemetry, and
//! waiting on a condition with a deadline instead of sleeping.
//!
//! Start with [`TestKafka::start`]: an embedded broker (librdkafka's mock
//! cluster, consumer-group rebalance delay 0) or, when
//! `KAFKA_BOOTSTRAP_SERVERS` is set, the real broker it names. Give every test
//! its own topics and groups with [`unique_name`], start services in process
//! on port 0, and wait for outcomes with [`eventually`] or the span sink's
//! `wait_for_trace`. [`telemetry`] installs the process's telemetry once, with
//! log lines only when `TEST_LOG` is set.

use std::future::Future;
use std::time::Duration;

use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

pub use kafka_kit::KafkaSettings;

/// Why the test broker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TestKafkaError {
    /// The embedded broker failed.
    #[error(transparent)]
    Embedded(#[from] embedded_kafka::EmbeddedKafkaError),
    /// The real broker refused a client or a topic.
    #[error("Kafka at {bootstrap}: {reason}")]
    External {
        /// The broker's address.
        bootstrap: String,
        /// What went wrong.
        reason: String,
    },
}

/// A broker for one test (or one test binary).
#[derive(Debug)]
pub struct TestKafka {
    bootstrap_servers: String,
    // `None` when the test targets a real broker from the environment.
    embedded: Option<EmbeddedKafka>,
}

impl TestKafka {
    /// Starts an embedded broker with the project's topics, or connects to
    /// the broker in `KAFKA_BOOTSTRAP_SERVERS`.
    pub fn start() -> Result<Self, TestKafkaError> {
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            Ok(bootstrap) if !bootstrap.trim().is_empty() => Ok(Self {
                bootstrap_servers: bootstrap,
                embedded: None,
            }),
            _ => {
                let embedded = EmbeddedKafka::start(EmbeddedKafkaOptions::default())?;
                Ok(Self {
                    bootstrap_servers: embedded.bootstrap_servers().to_string(),
                    embedded: Some(embedded),
                })
            }
        }
    }

    /// The embedded broker, when the test is not pointed at a real one
    /// (failure tests need it to take the broker down).
    pub fn embedded(&self) -> Option<&EmbeddedKafka> {
        self.embedded.as_ref()
    }

    /// The broker's `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Settings for a service under test.
    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings::new(self.bootstrap_servers.clone())
    }

    /// Creates `name` with `partitions` partitions; an existing topic is fine.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), TestKafkaError> {
        if let Some(embedded) = &self.embedded {
            return Ok(embedded.create_topic(name, partitions)?);
        }
        let external = |reason: String| TestKafkaError::External {
            bootstrap: self.bootstrap_servers.clone(),
            reason,
        };
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap_servers)
            .create()
            .map_err(|e| external(e.to_string()))?;
        let results = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(|e| external(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(external(format!("create {topic}: {code}"))),
            }
        }
        Ok(())
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
pub fn reader(kafka: &TestKafka, topics: &[&str]) -> StreamConsumer {
    use kafka_kit::assign::{Start, assign_whole_topics};
    let consumer: StreamConsumer = kafka
        .settings()
        .client_config()
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("a reader for the test broker");
    assign_whole_topics(&consumer, topics, Start::Beginning, Duration::from_secs(10))
        .expect("the topics can be assigned");
    consumer
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
