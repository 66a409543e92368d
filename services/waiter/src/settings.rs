//! The waiter's typed settings; defaults live in `config/base.yaml`.

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use kafka_kit::KafkaSettings;
use serde::Deserialize;
use service_kit::{HttpSettings, ServiceSettings};

/// The checked-in defaults.
pub const DEFAULTS: &str = include_str!("../config/base.yaml");

/// Everything the waiter reads at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The pipeline's shape and limits.
    pub waiter: WaiterSettings,
    /// Who this instance is.
    pub service: ServiceSettings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http: HttpSettings,
    /// Broker address and extra client properties.
    pub kafka: KafkaSettings,
    /// Which records this waiter processes.
    pub tenancy: TenancySettings,
    /// The route table of tenant mappings.
    pub routes: tenancy::RouteTableSettings,
    /// Variant registration.
    pub registry: tenancy::RegistrySettings,
    /// The optional call to service D.
    pub ledger: LedgerSettings,
}

/// The tenancy rules this waiter applies (see the `tenancy` crate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenancySettings {
    /// Tenancies accepted at all.
    pub allowed_tenancies: tenancy::AllowedTenancies,
    /// Route test records by the registry's mappings.
    pub tenant_routing: bool,
    /// The baseline joins the consumer group of a mapped variant that is
    /// not live and processes the records left for it (see `standins`).
    pub stand_in_for_variants: bool,
    /// A variant's consumer group; `{label}` is replaced.
    pub variant_group: String,
}

/// What the waiter does with a record set it cannot decode
/// (`waiter.undecodable_batches`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UndecodablePolicy {
    /// Move past it, leaving a dead-letter marker that names its offsets.
    Skip,
    /// Stop its partition and say so on `/readyz`.
    Stop,
}

/// How a consumer span relates to the producer span of its record: both
/// are what the messaging conventions allow, and the OpenTelemetry demo
/// shows both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceMode {
    /// A child: the producer's trace continues.
    Child,
    /// A root of its own trace, linked to the producer's span.
    Link,
}

/// The consumer → waiters → producer pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiterSettings {
    /// Topic requests are consumed from.
    pub request_topic: String,
    /// Topic replies go to when a request has no `responseTopic` header.
    pub default_response_topic: String,
    /// Topic unusable records are moved to.
    pub dead_letter_topic: String,
    /// Which request headers name the reply topic, partition and
    /// correlation (the Go app's, Spring Kafka's and SmallRye's by default).
    pub reply_headers: crate::request::ReplyHeaders,
    /// A record set the client cannot decode (corrupt, unknown codec):
    /// skip it with a dead-letter marker naming its offsets, or stop its
    /// partition (see `consumer::undecodable`).
    pub undecodable_batches: UndecodablePolicy,
    /// Consumer group; derived from the variant label when unset.
    pub group_id: Option<String>,
    /// Where a group with no committed offset starts; derived when unset.
    pub auto_offset_reset: Option<OffsetReset>,
    /// Kafka consumer clients (each a group member; more than partitions idle).
    pub consumers: NonZeroUsize,
    /// Waits in progress at once.
    pub waiters: NonZeroUsize,
    /// Kafka producer clients publishing replies.
    pub producers: NonZeroUsize,
    /// Capacity of the consumers → waiters channel.
    pub request_channel_capacity: NonZeroUsize,
    /// Capacity of the waiters → producers channel.
    pub reply_channel_capacity: NonZeroUsize,
    /// Deliveries one producer awaits at once.
    pub producer_max_in_flight: NonZeroUsize,
    /// Replies built and not yet delivered, at most (never fewer than
    /// `waiters` plus the ledger's concurrent calls): past that, waits that
    /// end keep their slots and the consumers stop reading, so a reply path
    /// that stalls grows consumer lag, not memory.
    pub undelivered_replies: NonZeroUsize,
    /// Wait for a plain-text request, or a JSON one without `wait_ms`.
    #[serde(with = "settings::duration")]
    pub default_wait: Duration,
    /// Longest wait honoured; longer requests get an error reply.
    #[serde(with = "settings::duration")]
    pub max_wait: Duration,
    /// Every wait is scaled by this factor: the behaviour change a variant
    /// under test can carry.
    pub wait_scale: f64,
    /// A request with a deadline (`waiter-bus-deadline`) is served only if
    /// its wait can end this long before the deadline: time kept for the
    /// reply's way back, and slack for clock skew. Others are dropped
    /// unanswered (see README, "Deadlines and shedding").
    #[serde(with = "settings::duration")]
    pub deadline_margin: Duration,
    /// How a record's `process` span relates to its producer's span.
    pub trace_mode: TraceMode,
    /// Time allowed for the broker to acknowledge a reply.
    #[serde(with = "settings::duration")]
    pub delivery_timeout: Duration,
    /// How long a reply is retried at transient delivery failures (broker
    /// away, leader moving) before it goes to the dead-letter topic; a
    /// permanent failure (too large, invalid, not authorised) goes there at
    /// once. Longer than a broker restart, so an outage loses nothing.
    #[serde(with = "settings::duration")]
    pub delivery_retry_for: Duration,
    /// How long the broker's listing of topics is believed for a reply
    /// topic it lists: past that, the next reply there lists them again, so
    /// a deleted topic stops counting as existing and new partitions count.
    #[serde(with = "settings::duration")]
    pub reply_topics_refresh: Duration,
    /// Time allowed on shutdown for in-flight work to finish.
    #[serde(with = "settings::duration")]
    pub drain_timeout: Duration,
    /// How often stored offsets are committed.
    #[serde(with = "settings::duration")]
    pub commit_interval: Duration,
    /// How often librdkafka reports statistics (consumer lag); 0s disables.
    #[serde(with = "settings::duration")]
    pub statistics_interval: Duration,
}

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// Start from the oldest record.
    Earliest,
    /// Start from new records only.
    Latest,
}

impl OffsetReset {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// The ledger (service D).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Base URL; `None` means waits are not recorded.
    pub url: Option<String>,
    /// Time allowed for one call.
    #[serde(with = "settings::duration")]
    pub timeout: Duration,
    /// Calls in flight at once; beyond that a wait is not recorded.
    pub max_concurrent_calls: NonZeroUsize,
    /// Failures in a row after which calls pause.
    pub breaker_failures: std::num::NonZeroU32,
    /// How long calls pause.
    #[serde(with = "settings::duration")]
    pub breaker_open_for: Duration,
    /// Sent as `Authorization: Bearer` when the ledger requires one.
    pub token: Option<settings::Secret>,
}

impl LedgerSettings {
    /// The client's limits.
    pub fn limits(&self) -> crate::ledger::LedgerLimits {
        crate::ledger::LedgerLimits {
            timeout: self.timeout,
            max_concurrent_calls: self.max_concurrent_calls.get(),
            breaker_failures: self.breaker_failures.get(),
            breaker_open_for: self.breaker_open_for,
        }
    }
}

/// Why the settings cannot run a waiter.
#[derive(Debug, thiserror::Error)]
pub enum InvalidSettings {
    /// Loading failed (unknown key, wrong type, unreadable file).
    #[error(transparent)]
    Load(#[from] settings::SettingsError),
    /// A value is out of range.
    #[error("settings: key `{key}`: {reason}")]
    Value {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Settings {
    /// Whether this instance is a variant rather than the baseline.
    pub fn is_variant(&self) -> bool {
        self.service.is_variant()
    }

    /// The consumer group: configured, or `waiter` / `waiter-<label>`.
    pub fn group_id(&self) -> String {
        match (&self.waiter.group_id, self.is_variant()) {
            (Some(group), _) => group.clone(),
            (None, false) => "waiter".into(),
            (None, true) => format!("waiter-{}", self.service.variant),
        }
    }

    /// Where a new group starts: configured, or earliest / latest.
    pub fn auto_offset_reset(&self) -> OffsetReset {
        match (self.waiter.auto_offset_reset, self.is_variant()) {
            (Some(reset), _) => reset,
            (None, false) => OffsetReset::Earliest,
            (None, true) => OffsetReset::Latest,
        }
    }

    /// The consumer group of variant `label`.
    pub fn variant_group_of(&self, label: &str) -> String {
        self.tenancy.variant_group.replace("{label}", label)
    }

    /// This consumer's tenancy rules.
    pub fn consumer_tenancy(&self) -> tenancy::ConsumerTenancy {
        let mut rules = match self.is_variant() {
            false => tenancy::ConsumerTenancy::baseline(protocol::Service::Waiter.as_str()),
            true => tenancy::ConsumerTenancy::variant(
                protocol::Service::Waiter.as_str(),
                &self.service.variant,
            ),
        };
        rules.allowed = self.tenancy.allowed_tenancies;
        rules.tenant_routing = self.tenancy.tenant_routing;
        rules
    }

    /// Loads defaults → optional file → environment, then checks ranges.
    pub fn load(file: Option<&Path>) -> Result<Self, InvalidSettings> {
        let settings: Settings = settings::load_service(DEFAULTS, file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The defaults alone, pointed at `kafka`'s broker with its extra
    /// properties layered over the default ones (for tests and embedding).
    pub fn defaults_with(kafka: KafkaSettings) -> Self {
        let mut settings: Settings = settings::defaults(DEFAULTS);
        settings.kafka = settings.kafka.overlaid_with(&kafka);
        settings
    }

    /// Checks the values a type cannot express.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let w = &self.waiter;
        if w.default_wait > w.max_wait {
            return Err(InvalidSettings::Value {
                key: "waiter.default_wait",
                reason: format!(
                    "{} exceeds waiter.max_wait ({})",
                    humantime::format_duration(w.default_wait),
                    humantime::format_duration(w.max_wait)
                ),
            });
        }
        if !(w.wait_scale.is_finite() && w.wait_scale >= 0.0) {
            return Err(InvalidSettings::Value {
                key: "waiter.wait_scale",
                reason: format!("{} is not a factor of zero or more", w.wait_scale),
            });
        }
        if w.waiters.get() > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(InvalidSettings::Value {
                key: "waiter.waiters",
                reason: "too large".into(),
            });
        }
        if w.reply_headers.correlation.is_empty() {
            return Err(InvalidSettings::Value {
                key: "waiter.reply_headers.correlation",
                reason: "name at least one header (a generated id goes under the first)".into(),
            });
        }
        if self.service.variant.trim().is_empty() {
            return Err(InvalidSettings::Value {
                key: "service.variant",
                reason: "must not be empty (use `baseline`)".into(),
            });
        }
        Ok(())
    }
}
