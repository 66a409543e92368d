//! The broker the figures are taken on, and fresh topics for each measurement.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use embedded_kafka::EmbeddedKafkaOptions;
use embedded_kafka::apache::ApacheKafkaOptions;
use embedded_kafka::broker::bootstrap_from_environment;

/// Partitions of each topic a measurement creates.
pub(crate) const TOPIC_PARTITIONS: i32 = 4;

pub(crate) struct Topics {
    pub(crate) requests: String,
    pub(crate) replies: String,
}

/// The broker the figures are taken on, and the topics this run created on
/// it (deleted at the end on a broker that outlives the run).
pub(crate) struct Broker {
    pub(crate) broker: Arc<embedded_kafka::Broker>,
    pub(crate) bootstrap: String,
    pub(crate) created: Mutex<Vec<String>>,
}

impl Broker {
    /// An Apache Kafka of this run's own (`apache`), the broker in
    /// `KAFKA_BOOTSTRAP_SERVERS`, or the embedded one.
    /// A cluster of `brokers` nodes (1: a single broker); the embedded one
    /// is `brokers` mock brokers.
    pub(crate) fn start(apache: bool, brokers: usize) -> anyhow::Result<Self> {
        let broker = if apache {
            let version = embedded_kafka::apache::version();
            eprintln!("starting Apache Kafka {version} ({brokers} node(s))");
            embedded_kafka::Broker::apache(ApacheKafkaOptions {
                brokers,
                die_with_parent: true,
                ..ApacheKafkaOptions::default()
            })
            .context("starting Apache Kafka")?
        } else if let Some(bootstrap) = bootstrap_from_environment() {
            embedded_kafka::Broker::external(bootstrap)
        } else {
            embedded_kafka::Broker::embedded(EmbeddedKafkaOptions {
                brokers: brokers as i32,
                group_initial_rebalance_delay_ms: 0,
                ..EmbeddedKafkaOptions::default()
            })?
        };
        Ok(Self {
            bootstrap: broker.bootstrap_servers(),
            broker: Arc::new(broker),
            created: Mutex::default(),
        })
    }

    pub(crate) fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// What the figures are taken on, for the report.
    pub(crate) fn describe(&self) -> String {
        let bootstrap = &self.bootstrap;
        match &*self.broker {
            embedded_kafka::Broker::Embedded(_) => format!("embedded, {bootstrap}"),
            embedded_kafka::Broker::Apache(_) => format!(
                "Apache Kafka {}, {} node(s), {bootstrap}",
                embedded_kafka::apache::version(),
                self.broker.broker_ids().len()
            ),
            embedded_kafka::Broker::External(_) => {
                format!("{bootstrap} (KAFKA_BOOTSTRAP_SERVERS)")
            }
        }
    }

    pub(crate) async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let (broker, topic) = (self.broker.clone(), name.to_string());
        tokio::task::spawn_blocking(move || broker.create_topic(&topic, partitions))
            .await?
            .with_context(|| format!("creating topic {name}"))?;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_string());
        Ok(())
    }

    /// Deletes the topics this run created on a broker that outlives it.
    pub(crate) async fn clean_up(&self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        let broker = self.broker.clone();
        let deleted = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            broker.delete_topics(&names)
        })
        .await;
        if let Ok(Err(e)) = deleted {
            eprintln!("could not delete the benchmark's topics: {e}");
        }
    }
}

/// Fresh, empty topics: the embedded broker finds a fetch offset by walking
/// the partition's log from its oldest record, so a long log slows every
/// fetch. Each measurement starts on empty topics so none inherits another's.
pub(crate) async fn topics(broker: &Broker, name: &str) -> anyhow::Result<Topics> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let topics = Topics {
        requests: format!("bench-{name}-{id}-requests"),
        replies: format!("bench-{name}-{id}-replies"),
    };
    broker
        .create_topic(&topics.requests, TOPIC_PARTITIONS)
        .await?;
    broker
        .create_topic(&topics.replies, TOPIC_PARTITIONS)
        .await?;
    Ok(topics)
}
