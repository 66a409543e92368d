//! The test's view of [`demo::Stack`]: on the test broker, with every
//! failure a test failure.

use std::time::Duration;

use gateway::GatewayResponse;
use testkit::TestKafka;

pub use demo::DEADLINE;
pub const TOKEN: &str = "flow-token";

/// Wait each test request asks for, in ms.
const WAIT_MS: u64 = 40;

pub struct Stack {
    // Declared first: services stop before the broker goes.
    pub inner: demo::Stack,
    pub kafka: TestKafka,
}

impl std::ops::Deref for Stack {
    type Target = demo::Stack;
    fn deref(&self) -> &demo::Stack {
        &self.inner
    }
}

impl Stack {
    pub async fn start(trust_incoming_baggage: bool) -> Self {
        let kafka = TestKafka::start().await.unwrap();
        let names = Self::create_topics(&kafka).await;
        Self::start_on(kafka, names, trust_incoming_baggage).await
    }

    /// Topics and groups of a stack's own, created on `kafka`: on a shared
    /// real broker, stacks of tests running at once must not see each other.
    pub async fn create_topics(kafka: &TestKafka) -> demo::StackNames {
        let names = demo::StackNames::unique("flow", &testkit::unique_name("stack"));
        for (topic, partitions) in names.topics() {
            kafka.create_topic(topic, partitions).await.unwrap();
        }
        names
    }

    /// Every service on `kafka`, with the topics from [`Self::create_topics`].
    pub async fn start_on(
        kafka: TestKafka,
        names: demo::StackNames,
        trust_incoming_baggage: bool,
    ) -> Self {
        testkit::telemetry();
        let options = demo::StackOptions {
            token: TOKEN.into(),
            trust_incoming_baggage,
            // Only for a gateway that does not trust everyone.
            baggage_token: (!trust_incoming_baggage).then(|| TOKEN.into()),
            names,
            ..demo::StackOptions::default()
        };
        let inner = demo::Stack::start(&kafka.settings(), options)
            .await
            .unwrap();
        Self { inner, kafka }
    }

    pub async fn start_variant(&mut self, label: &str, with_dispatch: bool, with_waiter: bool) {
        self.inner
            .start_variant(label, with_dispatch, with_waiter)
            .await
            .unwrap();
    }

    pub async fn stop(self) {
        self.inner.stop().await.unwrap();
    }

    pub async fn map(&self, tenant: &str, services: &[(&str, &str)]) -> Duration {
        self.inner.map(tenant, services).await.unwrap()
    }

    pub async fn delete(&self, tenant: &str) -> Duration {
        self.inner.delete(tenant).await.unwrap()
    }

    pub async fn send(&self, tenant: Option<&str>, name: &str) -> GatewayResponse {
        self.inner.send(tenant, name, WAIT_MS).await.unwrap()
    }

    pub async fn ledger(&self, tenant: &str) -> Vec<serde_json::Value> {
        self.inner.ledger(tenant).await.unwrap()
    }
}

/// `service=variant` for each hop, for compact assertions.
pub fn hops(response: &GatewayResponse) -> Vec<String> {
    response
        .hops
        .iter()
        .map(|h| format!("{}={}", h.service, h.variant))
        .collect()
}
