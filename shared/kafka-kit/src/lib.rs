//! The Kafka vocabulary every waiter-bus service shares: topic names, the
//! header names on the wire, and how a client configuration is built from
//! settings.
//!
//! Start with [`topics`] and [`headers`]: they are the contract between
//! dispatch (B), the waiter (C) and the load generator, and they keep the Go
//! waiter app's names so its JMeter plans keep working. [`KafkaSettings`] is
//! the settings section every Kafka-speaking service embeds; its
//! [`KafkaSettings::client_config`] is the one place librdkafka properties are
//! assembled. [`offsets`] and [`handoff`] are the two pieces every
//! at-least-once pipeline stage needs: committing only what is finished, and
//! measuring how long a full channel held a stage back; [`stream`] reads a
//! consumer until told to stop.

pub mod assign;
pub mod handoff;
pub mod offsets;
pub mod stream;
pub mod wire;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

/// Topic names used by the flow.
pub mod topics {
    /// Requests produced by dispatch (B) or a load generator, consumed by the waiter (C).
    pub const REQUESTS: &str = "Waiter-Requests";
    /// Replies produced by the waiter, consumed by whoever asked.
    pub const RESPONSES: &str = "Waiter-Responses";
    /// Compacted topic holding tenant → variant mappings, tailed by every router.
    pub const TENANT_ROUTES: &str = "tenant-routes";
    /// Records that could not be parsed or used, with the reason in a header.
    pub const DEAD_LETTER: &str = "Waiter-Requests-DLT";

    /// Every topic the project needs, in the order they are created.
    pub const ALL: [&str; 4] = [REQUESTS, RESPONSES, TENANT_ROUTES, DEAD_LETTER];
}

/// Kafka header names. The first three are the Go waiter app's, verbatim.
pub mod headers {
    /// Identifies a request so its reply can be matched (and duplicates counted).
    pub const CORRELATION: &str = "correlation";
    /// Topic the reply must be produced to.
    pub const RESPONSE_TOPIC: &str = "responseTopic";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// W3C baggage; carries the tenant.
    pub const BAGGAGE: &str = "baggage";
    /// Why a record was sent to the dead-letter topic.
    pub const DEAD_LETTER_REASON: &str = "dlt.reason";
    /// Which variant handled each hop so far, as `service=label,service=label`;
    /// the same name is used as an HTTP header and a Kafka header.
    pub const HOPS: &str = "waiter-bus-hops";
    /// Where a dead-lettered record came from: `topic/partition@offset`.
    pub const DEAD_LETTER_ORIGIN: &str = "dlt.origin";

    /// Reply timing, all in microseconds, so a client can split its
    /// end-to-end latency into hops. Durations are measured on the waiter's
    /// monotonic clock; `waiter.consumed.us` is wall-clock time since the
    /// Unix epoch, for comparing with the request's Kafka timestamp.
    pub mod timing {
        /// Wall-clock time the waiter's consumer received the request.
        pub const CONSUMED_AT_US: &str = "waiter.consumed.us";
        /// Waiting for a free waiter (the queue).
        pub const QUEUE_US: &str = "waiter.queue.us";
        /// The wait itself, plus the call to the ledger when configured.
        pub const SERVICE_US: &str = "waiter.service.us";
        /// From the end of service to the reply being handed to the producer client.
        pub const HANDOFF_US: &str = "waiter.handoff.us";
    }
}

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
