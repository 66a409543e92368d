//! The Kafka plumbing every waiter-bus service shares: how a client
//! configuration is built from settings, and the pieces of an at-least-once
//! pipeline. What travels on the wire (topic and header names, bodies) is
//! the `protocol` crate's.
//!
//! Start with [`KafkaSettings`], the settings section every Kafka-speaking
//! service embeds; its
//! [`KafkaSettings::client_config`] is the one place librdkafka properties are
//! assembled. [`acks`] (over [`offsets`]) and [`handoff`] are the pieces
//! every at-least-once pipeline stage needs: acknowledgements that flow back
//! to the consumer, which commits only what is finished, and measuring how
//! long a full channel held a stage back; [`stream`] reads a consumer until
//! told to stop; [`spans`] are the messaging spans every producer and
//! consumer makes.

pub mod acks;
pub mod assign;
pub mod handoff;
pub mod offsets;
pub mod spans;
pub mod stream;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

/// The `kafka` section of a service's settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list. `KAFKA_BOOTSTRAP_SERVERS` overrides it.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties applied to every client, for tuning.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// Extra properties for consumers only (`fetch.wait.max.ms`,
    /// `heartbeat.interval.ms`, …); they win over `client`.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// Extra properties for producers only (`linger.ms`, `batch.size`,
    /// `compression.type`, …); they win over `client`.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings pointing at `bootstrap_servers` with no extra properties.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }

    /// These settings pointed at `other`'s brokers, with `other`'s extra
    /// properties laid over their own (a test broker's tuning over a
    /// service's checked-in defaults).
    pub fn overlaid_with(mut self, other: &KafkaSettings) -> Self {
        self.bootstrap_servers.clone_from(&other.bootstrap_servers);
        self.client.extend(other.client.clone());
        self.consumer.extend(other.consumer.clone());
        self.producer.extend(other.producer.clone());
        self
    }

    /// A client configuration with the bootstrap servers and the extra
    /// properties applied; callers add role-specific properties on top.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.client {
            config.set(key, value);
        }
        config
    }

    /// [`Self::client_config`] plus the consumer-only properties. Callers
    /// set the group and offset policy on top; properties set here that the
    /// caller also sets are overridden by the caller.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        for (key, value) in &self.consumer {
            config.set(key, value);
        }
        config
    }

    /// [`Self::client_config`] plus the producer-only properties.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config
    }
}
