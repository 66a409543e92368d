//! The Kafka vocabulary every waiter-bus service shares: topic names, the
//! header names on the wire, and how a client configuration is built from
//! settings.
//!
//! Start with [`topics`] and [`headers`]: they are the contract between
//! dispatch (B), the waiter (C) and the load generator, and they keep the Go
//! waiter app's names so its JMeter plans keep working. [`KafkaSettings`] is
//! the settings section every Kafka-speaking service embeds; its
//! [`KafkaSettings::client_config`] is the one place librdkafka properties are
//! assembled.

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
}

/// The `kafka` section of a service's settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list. `KAFKA_BOOTSTRAP_SERVERS` overrides it.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties applied to every client, for tuning
    /// (`linger.ms`, `fetch.wait.max.ms`, …). They win over the defaults here.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings pointing at `bootstrap_servers` with no extra properties.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client: BTreeMap::new(),
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
}
