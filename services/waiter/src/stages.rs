//! Each stage's own configuration, resolved once from the settings.

use std::sync::Arc;

use crate::consumer::ConsumerConfig;
use crate::ledger;
use crate::metrics::WaiterMetrics;
use crate::producer::{ProducerConfig, TopicCatalog};
use crate::request::RequestLimits;
use crate::settings::Settings;
use crate::waiters::WaiterConfig;

/// Each stage's own configuration, resolved once from the settings.
pub(crate) struct Stages {
    pub(crate) consumer: Arc<ConsumerConfig>,
    pub(crate) waiter: Arc<WaiterConfig>,
    pub(crate) producer: Arc<ProducerConfig>,
    pub(crate) metrics: WaiterMetrics,
}

impl Stages {
    pub(crate) fn resolve(settings: &Settings, routes: tenancy::RouteTable) -> Self {
        let w = &settings.waiter;
        let variant = settings.service.variant.clone();
        let metrics = WaiterMetrics::new(&variant);
        let queue_estimate = crate::pipeline::QueueEstimate::new();
        Self {
            consumer: Arc::new(ConsumerConfig {
                variant: variant.clone(),
                group: settings.group_id(),
                tenancy: settings.consumer_tenancy(),
                routes,
                version_wait: settings.routes.version_wait,
                standing_in: false,
                process_span_name: format!("process {}", w.request_topic).into(),
                skip_span_name: format!("skip {}", w.request_topic).into(),
                wait_scale: w.wait_scale,
                deadline_margin: w.deadline_margin,
                trace_mode: w.trace_mode,
                queue_estimate: queue_estimate.clone(),
                tally: tenancy::TenantTally::default(),
                limits: RequestLimits {
                    default_wait: w.default_wait,
                    max_wait: w.max_wait,
                },
                reply_headers: w.reply_headers.clone(),
                default_response_topic: w.default_response_topic.clone(),
                dead_letter_topic: w.dead_letter_topic.clone(),
                undecodable: w.undecodable_batches,
                stopped: Default::default(),
                probe: settings.kafka.consumer_config(),
                starts_at_earliest: settings.auto_offset_reset()
                    == crate::settings::OffsetReset::Earliest,
                metrics: metrics.clone(),
            }),
            waiter: Arc::new(WaiterConfig {
                variant: variant.clone(),
                instance: telemetry::instance_id().to_string(),
                waiters: w.waiters.get(),
                reply_slots: w.undelivered_replies.get().max(
                    w.waiters.get()
                        + match settings.ledger.url {
                            Some(_) => settings.ledger.max_concurrent_calls.get(),
                            None => 0,
                        },
                ),
                wait_scale: w.wait_scale,
                behaviour: (w.wait_scale != 1.0).then(|| format!("wait_scale={}", w.wait_scale)),
                deadline_margin: w.deadline_margin,
                queue_estimate,
                ledger: settings.ledger.url.as_deref().map(|url| {
                    ledger::LedgerClient::new(
                        url,
                        settings.ledger.limits(),
                        settings.ledger.token.clone(),
                        &settings.service.variant,
                    )
                }),
                metrics: metrics.clone(),
            }),
            producer: Arc::new(ProducerConfig {
                variant,
                dead_letter_topic: w.dead_letter_topic.clone(),
                delivery_retry_for: w.delivery_retry_for,
                topics: TopicCatalog::new(w.reply_topics_refresh),
                max_in_flight: w.producer_max_in_flight.get(),
                metrics: metrics.clone(),
            }),
            metrics,
        }
    }

    pub(crate) fn variant(&self) -> &str {
        &self.consumer.variant
    }
}
