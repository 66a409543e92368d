//! A waiter inside another program: the one way the demo stack, `load
//! --embedded`, `bench` and the tests start a waiter on topics of their own.

use std::time::Duration;

use kafka_kit::KafkaSettings;
use protocol::topics::RequestTopics;
use service_kit::{RunningService, ServiceApp};

use crate::{Application, Readiness, Settings, WaiterError};

impl Settings {
    /// The defaults for a waiter on `kafka`'s broker (its extra properties
    /// layered over the defaults) reading and writing `topics` as consumer
    /// group `group`, with HTTP on an ephemeral loopback port and one
    /// consumer (a single group member needs no rebalance to start).
    pub fn in_process(kafka: KafkaSettings, topics: &RequestTopics, group: &str) -> Self {
        let mut settings = Self::defaults_with(kafka);
        settings.http = service_kit::HttpSettings::loopback_ephemeral();
        settings.waiter.consumers = std::num::NonZeroUsize::MIN;
        settings.waiter.request_topic = topics.requests.clone();
        settings.waiter.default_response_topic = topics.replies.clone();
        settings.waiter.dead_letter_topic = topics.dead_letters.clone();
        settings.waiter.group_id = Some(group.to_string());
        // A baseline in group `g` finds its variants' groups as `g-<label>`.
        settings.tenancy.variant_group = format!("{group}-{{label}}");
        settings
    }
}

/// A waiter running in this process; stopped when dropped.
pub struct RunningWaiter {
    service: RunningService,
    readiness: Readiness,
    instance: String,
    variant: String,
}

impl RunningWaiter {
    /// Builds a waiter from `settings` and runs it.
    pub async fn start(settings: Settings) -> Result<Self, WaiterError> {
        let variant = settings.service.variant.clone();
        let app = Application::build(settings).await?;
        let readiness = app.readiness();
        let instance = app.instance().to_string();
        Ok(Self {
            service: RunningService::spawn(app),
            readiness,
            instance,
            variant,
        })
    }

    /// [`Self::start`], then waits until it has partitions assigned.
    pub async fn start_assigned(settings: Settings, within: Duration) -> anyhow::Result<Self> {
        let waiter = Self::start(settings).await?;
        waiter.assigned(within).await?;
        Ok(waiter)
    }

    /// Waits until at least one partition is assigned, or says it was not
    /// within `within`.
    pub async fn assigned(&self, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, self.readiness.assigned())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "waiter `{}` got no partitions within {within:?}",
                    self.variant
                )
            })
    }

    /// Its HTTP port (`/metrics`, `/readyz`).
    pub fn port(&self) -> u16 {
        self.service.port()
    }

    /// Its readiness: route table caught up, partitions assigned.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Its route table.
    pub fn route_table(&self) -> tenancy::RouteTable {
        self.readiness.routes.clone()
    }

    /// The instance name its replies carry.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Its variant label.
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// Whether it has stopped.
    pub fn is_finished(&self) -> bool {
        self.service.is_finished()
    }

    /// Tells it to stop without waiting.
    pub fn begin_stop(&self) {
        self.service.begin_stop();
    }

    /// Graceful stop: drains, commits, and returns the waiter's own result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }

    /// The running service itself (to stop it with a bound, or keep it
    /// beside others).
    pub fn into_service(self) -> RunningService {
        self.service
    }
}
