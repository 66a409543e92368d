//! One handle on whichever broker a program runs against: the embedded one,
//! an Apache Kafka this process started, or one named by an address
//! (`KAFKA_BOOTSTRAP_SERVERS`). The test kit's `TestKafka` and `bench` both
//! stand on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

use crate::apache::{ApacheKafka, ApacheKafkaError, ApacheKafkaOptions};
use crate::{EmbeddedKafka, EmbeddedKafkaError, EmbeddedKafkaOptions};

/// The variable naming a broker to use instead of starting one.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// `KAFKA_BOOTSTRAP_SERVERS`, when it names something.
pub fn bootstrap_from_environment() -> Option<String> {
    std::env::var(BOOTSTRAP_ENV)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Why a broker could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The embedded broker failed.
    #[error(transparent)]
    Embedded(#[from] EmbeddedKafkaError),
    /// An Apache Kafka of this process failed.
    #[error(transparent)]
    Apache(#[from] ApacheKafkaError),
    /// The broker refused, or cannot do what was asked.
    #[error("Kafka at {bootstrap}: {reason}")]
    Refused {
        /// The broker's address.
        bootstrap: String,
        /// What went wrong.
        reason: String,
    },
}

/// A broker and what this process may do with it.
#[derive(Debug)]
pub enum Broker {
    /// librdkafka's mock cluster, in this process.
    Embedded(EmbeddedKafka),
    /// An Apache Kafka JVM this process started (and stops when dropped).
    Apache(Arc<Mutex<ApacheKafka>>),
    /// A broker someone else runs, by address.
    External(String),
}

impl Broker {
    /// Starts an embedded broker.
    pub fn embedded(options: EmbeddedKafkaOptions) -> Result<Self, BrokerError> {
        Ok(Self::Embedded(EmbeddedKafka::start(options)?))
    }

    /// Starts an Apache Kafka of this process's own.
    pub fn apache(options: ApacheKafkaOptions) -> Result<Self, BrokerError> {
        Ok(Self::Apache(Arc::new(Mutex::new(ApacheKafka::start(
            options,
        )?))))
    }

    /// The broker at `bootstrap`.
    pub fn external(bootstrap: impl Into<String>) -> Self {
        Self::External(bootstrap.into())
    }

    /// The folder holding `topic`'s `partition` on disk, for an Apache
    /// Kafka of this process (tests that damage a segment, as a failing
    /// disk would); `None` for other brokers.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> Option<std::path::PathBuf> {
        match self {
            Self::Apache(apache) => {
                Some(lock(apache).log_dir().join(format!("{topic}-{partition}")))
            }
            _ => None,
        }
    }

    /// Its `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        match self {
            Self::Embedded(embedded) => embedded.bootstrap_servers().to_string(),
            Self::Apache(apache) => lock(apache).bootstrap_servers(),
            Self::External(bootstrap) => bootstrap.clone(),
        }
    }

    /// Client settings for services on it: the embedded broker's tuned ones
    /// ([`EmbeddedKafka::client_settings`]), or just the bootstrap servers.
    pub fn client_settings(&self) -> kafka_kit::KafkaSettings {
        match self {
            Self::Embedded(embedded) => embedded.client_settings(),
            other => kafka_kit::KafkaSettings::new(other.bootstrap_servers()),
        }
    }

    /// Creates `name` with `partitions` partitions and returns once it can
    /// be used; an existing topic is fine. Blocking.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        match self {
            Self::Embedded(embedded) => Ok(embedded.create_topic(name, partitions)?),
            _ => Ok(crate::apache::create_topics(
                &self.bootstrap_servers(),
                &[name],
                partitions,
            )?),
        }
    }

    /// Makes every produce request fail with a retriable error, or take
    /// them again, as a cluster that cannot meet `min.insync.replicas`
    /// does: on the embedded broker only ([`EmbeddedKafka::refuse_produce`]).
    /// Apache Kafka cannot be made to: it caps a topic's effective
    /// `min.insync.replicas` at its replicas, so a single broker always has
    /// enough. Blocking.
    pub fn refuse_produce(&self, refuse: bool) -> Result<(), BrokerError> {
        match self {
            Self::Embedded(embedded) => Ok(embedded.refuse_produce(refuse)?),
            _ => Err(BrokerError::Refused {
                bootstrap: self.bootstrap_servers(),
                reason: "only the embedded broker can refuse writes on request".into(),
            }),
        }
    }

    /// Deletes `names` (the embedded broker's topics go with it). Blocking.
    pub fn delete_topics(&self, names: &[&str]) -> Result<(), BrokerError> {
        if names.is_empty() || matches!(self, Self::Embedded(_)) {
            return Ok(());
        }
        let bootstrap = self.bootstrap_servers();
        let refused = |reason: String| BrokerError::Refused {
            bootstrap: bootstrap.clone(),
            reason,
        };
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .map_err(|e| refused(e.to_string()))?;
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        futures_lite::future::block_on(admin.delete_topics(names, &options))
            .map_err(|e| refused(format!("deleting {names:?}: {e}")))?;
        Ok(())
    }

    /// Takes the broker away, as a crash would: the embedded broker refuses
    /// connections, an Apache broker is killed with SIGKILL. Not for a
    /// broker someone else runs.
    pub fn take_down(&self) -> Result<(), BrokerError> {
        match self {
            Self::Embedded(embedded) => Ok(embedded.broker_down(1)?),
            Self::Apache(apache) => {
                lock(apache).kill();
                Ok(())
            }
            Self::External(_) => Err(self.not_ours("taken down")),
        }
    }

    /// Brings it back after [`Self::take_down`]: an Apache broker restarts on
    /// the same data directory and port. Blocking until it answers.
    pub fn bring_back(&self) -> Result<(), BrokerError> {
        match self {
            Self::Embedded(embedded) => Ok(embedded.broker_up(1)?),
            Self::Apache(apache) => Ok(lock(apache).restart()?),
            Self::External(_) => Err(self.not_ours("brought back")),
        }
    }

    /// The ids of the brokers this process runs (1 to their number; none
    /// for a broker someone else runs).
    pub fn broker_ids(&self) -> Vec<i32> {
        match self {
            Self::Embedded(embedded) => (1..=embedded.brokers()).collect(),
            Self::Apache(apache) => lock(apache).node_ids(),
            Self::External(_) => Vec::new(),
        }
    }

    /// Takes broker `id` of a cluster away, as a crash would (SIGKILL for
    /// an Apache node; the embedded broker refuses its connections); the
    /// others serve on.
    pub fn take_down_broker(&self, id: i32) -> Result<(), BrokerError> {
        match self {
            Self::Embedded(embedded) => Ok(embedded.broker_down(id)?),
            Self::Apache(apache) => Ok(lock(apache).kill_node(id)?),
            Self::External(_) => Err(self.not_ours("taken down")),
        }
    }

    /// Brings broker `id` back after [`Self::take_down_broker`]: an Apache
    /// node restarts on its data and port. Blocking until it has registered
    /// and the project's topics are led.
    pub fn bring_back_broker(&self, id: i32) -> Result<(), BrokerError> {
        match self {
            Self::Embedded(embedded) => Ok(embedded.broker_up(id)?),
            Self::Apache(apache) => Ok(lock(apache).restart_node(id)?),
            Self::External(_) => Err(self.not_ours("brought back")),
        }
    }

    /// The broker leading `topic`'s `partition` now. Blocking.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Result<i32, BrokerError> {
        Ok(crate::apache::leader_of(
            &self.bootstrap_servers(),
            topic,
            partition,
        )?)
    }

    /// The broker coordinating consumer group `group` now (real Kafka only:
    /// the embedded broker keeps no `__consumer_offsets`). Blocking.
    pub fn coordinator_of(&self, group: &str) -> Result<i32, BrokerError> {
        Ok(crate::apache::coordinator_of(
            &self.bootstrap_servers(),
            group,
        )?)
    }

    fn not_ours(&self, what: &str) -> BrokerError {
        BrokerError::Refused {
            bootstrap: self.bootstrap_servers(),
            reason: format!("a broker this process did not start cannot be {what}"),
        }
    }
}

fn lock(apache: &Mutex<ApacheKafka>) -> std::sync::MutexGuard<'_, ApacheKafka> {
    apache.lock().unwrap_or_else(|e| e.into_inner())
}
