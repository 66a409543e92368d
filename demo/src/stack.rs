//! The whole flow in one process: registry, ledger, gateway, baseline
//! dispatch and waiter, and per-tenant variants, on one broker.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gateway::GatewayResponse;
use kafka_kit::KafkaSettings;

use crate::process::{WaiterProcess, WaiterProcessConfig};
use serde_json::json;
use service_kit::{RunningService, ServiceApp};
use tenancy::RouteTable;

/// How long the stack waits for a service to get ready, a change to reach
/// every route table, or a service to drain.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How the stack is started.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The registry's token for mutations.
    pub token: String,
    /// Whether the gateway believes the tenant in a client's `baggage`
    /// (an edge behind a trusted proxy) or routes everyone to the baseline.
    pub trust_incoming_baggage: bool,
    /// With `trust_incoming_baggage` false: callers presenting this bearer
    /// token may still name their tenant.
    pub baggage_token: Option<String>,
    /// The gateway's port; 0 for any free one.
    pub gateway_port: u16,
    /// How a variant's waiter differs from the baseline's: it scales every
    /// wait by this factor, so its replies show the change under test.
    pub variant_wait_scale: f64,
    /// The topics and consumer-group names the stack uses.
    pub names: StackNames,
    /// When set, variant waiters run as processes of this binary (the
    /// `waiter` built beside the caller), so that killing one is a real
    /// SIGKILL; otherwise every service runs in this process.
    pub waiter_binary: Option<std::path::PathBuf>,
}

/// The Kafka names a stack uses: the project's own by default; tests on a
/// shared broker give every stack its own so stacks do not see each other.
#[derive(Debug, Clone)]
pub struct StackNames {
    /// Requests from dispatch to the waiters.
    pub requests: String,
    /// Replies from the waiters to dispatch.
    pub responses: String,
    /// Records the waiters cannot use.
    pub dead_letter: String,
    /// The registry's compacted route topic.
    pub routes: String,
    /// The baseline waiter's consumer group; a variant's is `<this>-<label>`.
    pub waiter_group: String,
}

impl Default for StackNames {
    fn default() -> Self {
        Self {
            requests: protocol::topics::REQUESTS.into(),
            responses: protocol::topics::RESPONSES.into(),
            dead_letter: protocol::topics::DEAD_LETTER.into(),
            routes: protocol::topics::TENANT_ROUTES.into(),
            waiter_group: "waiter".into(),
        }
    }
}

impl StackNames {
    /// Names no other stack uses, each starting with `prefix` and ending in
    /// `suffix` (for example a unique id).
    pub fn unique(prefix: &str, suffix: &str) -> Self {
        Self {
            requests: format!("{prefix}-requests-{suffix}"),
            responses: format!("{prefix}-responses-{suffix}"),
            dead_letter: format!("{prefix}-dlt-{suffix}"),
            routes: format!("{prefix}-routes-{suffix}"),
            waiter_group: format!("{prefix}-waiter-{suffix}"),
        }
    }

    /// Every topic with its partition count, for creating them: the
    /// routes topic has one (its offsets are the routes' versions).
    pub fn topics(&self) -> [(&str, i32); 4] {
        [
            (&self.requests, 4),
            (&self.responses, 4),
            (&self.dead_letter, 4),
            (&self.routes, 1),
        ]
    }

    /// Creates every topic: on `embedded` when given, else through the
    /// admin API of the broker at `bootstrap`.
    pub async fn create_topics(
        &self,
        embedded: Option<&embedded_kafka::EmbeddedKafka>,
        bootstrap: &str,
    ) -> anyhow::Result<()> {
        let topics: Vec<(String, i32)> = self
            .topics()
            .iter()
            .map(|(topic, partitions)| (topic.to_string(), *partitions))
            .collect();
        match embedded {
            Some(embedded) => {
                for (topic, partitions) in &topics {
                    embedded.create_topic(topic, *partitions)?;
                }
            }
            None => {
                let bootstrap = bootstrap.to_string();
                tokio::task::spawn_blocking(move || {
                    topics.iter().try_for_each(|(topic, partitions)| {
                        embedded_kafka::apache::create_topics(
                            &bootstrap,
                            &[topic.as_str()],
                            *partitions,
                        )
                    })
                })
                .await?
                .context("creating the stack's topics")?;
            }
        }
        Ok(())
    }

    fn waiter_group_of(&self, label: &str) -> String {
        match label == tenancy::BASELINE {
            true => self.waiter_group.clone(),
            false => format!("{}-{label}", self.waiter_group),
        }
    }
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            token: "dev-token".into(),
            trust_incoming_baggage: true,
            baggage_token: None,
            gateway_port: 0,
            variant_wait_scale: 0.5,
            names: StackNames::default(),
            waiter_binary: None,
        }
    }
}

/// Every service of the flow, running on this process's runtime.
pub struct Stack {
    // Declared first so that, even without `stop`, services are told to stop
    // before the broker they talk to goes away.
    running: Vec<RunningService>,
    // The variant label of each entry of `running`.
    labels: Vec<String>,
    // Variant waiters running as processes (`StackOptions::waiter_binary`).
    processes: Vec<WaiterProcess>,
    kafka: KafkaSettings,
    options: StackOptions,
    /// The registry's base URL.
    pub registry: String,
    /// The ledger's base URL.
    pub ledger: String,
    /// The gateway's base URL: where requests enter.
    pub gateway: String,
    /// Every in-process waiter's base URL (its `/metrics` feeds the console).
    pub waiters: Vec<String>,
    /// Every route table in the stack, to know when a change is everywhere.
    pub tables: Vec<RouteTable>,
    /// A client for talking to the stack.
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts registry, ledger, baseline waiter (once its partitions are
    /// assigned), baseline dispatch and the gateway on `kafka`.
    pub async fn start(kafka: &KafkaSettings, options: StackOptions) -> anyhow::Result<Self> {
        let mut stack = Self {
            running: Vec::new(),
            labels: Vec::new(),
            processes: Vec::new(),
            kafka: kafka.clone(),
            options,
            registry: String::new(),
            ledger: String::new(),
            gateway: String::new(),
            waiters: Vec::new(),
            tables: Vec::new(),
            http: reqwest::Client::new(),
        };

        let mut registry_settings = tenants::Settings::defaults_with(kafka);
        registry_settings.tenants.token = settings::Secret::new(&stack.options.token);
        registry_settings.routes.topic = stack.options.names.routes.clone();
        // The stack's variants run until it stops, so a deleted tenant's
        // groups still have members: answer `pending` quickly.
        registry_settings.tenants.group_deletion.wait = Duration::from_secs(1);
        registry_settings.tenants.variant_consumers.insert(
            protocol::Service::Waiter.as_str().into(),
            tenants::VariantConsumers {
                group: format!("{}-{{label}}", stack.options.names.waiter_group),
                topic: stack.options.names.requests.clone(),
            },
        );
        let registry = tenants::Application::build(registry_settings)
            .await
            .context("starting the registry")?;
        stack.tables.push(registry.route_table());
        stack.registry = stack.keep(RunningService::spawn_open(registry).await);

        let ledger = RunningService::start::<ledger::Application>(ledger::Settings::for_tests())
            .await
            .context("starting the ledger")?;
        stack.ledger = stack.keep(ledger);

        stack.start_waiter(tenancy::BASELINE).await?;
        let dispatch = stack.start_dispatch(tenancy::BASELINE).await?;

        let mut gateway_settings = gateway::Settings::defaults_with(kafka, &dispatch);
        gateway_settings.http.port = stack.options.gateway_port;
        gateway_settings.gateway.trust_incoming_baggage = stack.options.trust_incoming_baggage;
        gateway_settings.gateway.baggage_token = stack
            .options
            .baggage_token
            .as_deref()
            .map(settings::Secret::new);
        gateway_settings.routes.topic = stack.options.names.routes.clone();
        let gateway = gateway::Application::build(gateway_settings)
            .await
            .context("starting the gateway")?;
        stack.tables.push(gateway.route_table());
        stack.gateway = stack.keep(RunningService::spawn_open(gateway).await);
        Ok(stack)
    }

    /// Keeps `service` running until the stack stops; returns its URL.
    fn keep(&mut self, service: RunningService) -> String {
        self.keep_labelled(service, tenancy::BASELINE)
    }

    fn keep_labelled(&mut self, service: RunningService, label: &str) -> String {
        let url = service.url();
        self.running.push(service);
        self.labels.push(label.to_string());
        url
    }

    /// Stops the newest waiter instance labelled `label`: gracefully
    /// (drains, gives up its lease) or, with `kill`, the way a crash would.
    pub async fn stop_waiter(&mut self, label: &str, kill: bool) -> anyhow::Result<()> {
        if let Some(index) = self.processes.iter().rposition(|p| p.label == label) {
            let process = self.processes.remove(index);
            return match kill {
                true => process.kill().await,
                false => process.stop_within(DEADLINE).await,
            };
        }
        let index = self
            .running
            .iter()
            .zip(&self.labels)
            .rposition(|(service, l)| service.service() == protocol::Service::Waiter && l == label)
            .with_context(|| format!("no running waiter `{label}`"))?;
        let service = self.running.remove(index);
        self.labels.remove(index);
        match kill {
            true => {
                service.kill().await;
                Ok(())
            }
            false => service.stop_within(DEADLINE).await,
        }
    }

    /// Starts one more waiter instance labelled `label` (a variant scaling
    /// out, or coming back) and waits until the registry lists it live.
    pub async fn add_waiter(&mut self, label: &str) -> anyhow::Result<()> {
        self.start_variant(label, false, true).await
    }

    /// Starts a waiter labelled `label` and waits until its partitions are
    /// assigned (a variant registers itself only then).
    async fn start_waiter(&mut self, label: &str) -> anyhow::Result<()> {
        let names = &self.options.names;
        let topics = protocol::topics::RequestTopics {
            requests: names.requests.clone(),
            replies: names.responses.clone(),
            dead_letters: names.dead_letter.clone(),
        };
        let wait_scale = match label == tenancy::BASELINE {
            true => 1.0,
            false => self.options.variant_wait_scale,
        };
        if let (Some(binary), false) = (&self.options.waiter_binary, label == tenancy::BASELINE) {
            // It registers once its partitions are assigned; the caller
            // waits for that through the registry.
            let process = WaiterProcess::spawn(&WaiterProcessConfig {
                binary,
                label,
                kafka: &self.kafka,
                topics: &topics,
                group: &names.waiter_group_of(label),
                routes_topic: &names.routes,
                registry: &self.registry,
                token: &self.options.token,
                ledger: &self.ledger,
                wait_scale,
            })?;
            self.processes.push(process);
            return Ok(());
        }
        let mut settings = waiter::Settings::in_process(
            self.kafka.clone(),
            &topics,
            &names.waiter_group_of(label),
        );
        settings.service.variant = label.into();
        settings.waiter.producers = std::num::NonZeroUsize::MIN;
        settings.ledger.url = Some(self.ledger.clone());
        settings.registry.url = Some(self.registry.clone());
        settings.registry.token = Some(settings::Secret::new(&self.options.token));
        settings.routes.topic = names.routes.clone();
        settings.waiter.wait_scale = wait_scale;
        let waiter = waiter::RunningWaiter::start(settings)
            .await
            .with_context(|| format!("starting waiter `{label}`"))?;
        self.tables.push(waiter.route_table());
        let assigned = waiter.assigned(DEADLINE).await;
        let url = self.keep_labelled(waiter.into_service(), label);
        self.waiters.push(url);
        assigned
    }

    /// Starts the web console on `port` (0: any free one), watching this
    /// stack and fed every span `spans` receives; returns its URL.
    pub async fn start_console(
        &mut self,
        port: u16,
        spans: &telemetry::SpanSink,
    ) -> anyhow::Result<String> {
        let metrics = self
            .waiters
            .iter()
            .map(|w| format!("{w}/metrics"))
            .collect();
        let mut settings = console::Settings::in_process(&self.gateway, &self.registry, metrics);
        settings.http.port = port;
        settings.console.jaeger_url = std::env::var("JAEGER_URL").ok();
        let console = console::Application::build(settings)
            .await
            .context("starting the console")?;
        console.follow(spans);
        Ok(self.keep(RunningService::spawn(console)))
    }

    /// Starts a dispatch labelled `label`; returns its base URL.
    async fn start_dispatch(&mut self, label: &str) -> anyhow::Result<String> {
        let mut settings = dispatch::Settings::defaults_with(&self.kafka);
        settings.service.variant = label.into();
        settings.registry.url = Some(self.registry.clone());
        settings.registry.token = Some(settings::Secret::new(&self.options.token));
        settings.dispatch.request_topic = self.options.names.requests.clone();
        settings.dispatch.response_topic = self.options.names.responses.clone();
        settings.routes.topic = self.options.names.routes.clone();
        let dispatch = dispatch::Application::build(settings)
            .await
            .with_context(|| format!("starting dispatch `{label}`"))?;
        Ok(self.keep_labelled(RunningService::spawn_open(dispatch).await, label))
    }

    /// Starts B″ and/or C″ labelled `label` and waits until the registry
    /// lists them live (C″ registers only once its partitions are assigned).
    pub async fn start_variant(
        &mut self,
        label: &str,
        with_dispatch: bool,
        with_waiter: bool,
    ) -> anyhow::Result<()> {
        if with_waiter {
            self.start_waiter(label).await?;
        }
        if with_dispatch {
            self.start_dispatch(label).await?;
        }
        let wanted: Vec<&str> = [
            (protocol::Service::Dispatch.as_str(), with_dispatch),
            (protocol::Service::Waiter.as_str(), with_waiter),
        ]
        .into_iter()
        .filter_map(|(service, on)| on.then_some(service))
        .collect();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let variants: Vec<serde_json::Value> = self
                .http
                .get(format!("{}/variants", self.registry))
                .send()
                .await?
                .json()
                .await?;
            let listed = wanted.iter().all(|service| {
                variants
                    .iter()
                    .any(|v| v["service"] == *service && v["label"] == label && v["live"] == true)
            });
            if listed {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("variant `{label}` of {wanted:?} was not registered within {DEADLINE:?}");
            }
            // Registration is an HTTP call from the variant; there is no
            // event to wait on from here, so poll the registry briefly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every service, newest first, and waits for each to drain
    /// while the broker is still up. Any service that failed, then or
    /// earlier, is named in the error; every service is stopped regardless.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        self.labels.clear();
        while let Some(process) = self.processes.pop() {
            if let Err(failure) = process.stop_within(DEADLINE).await {
                failures.push(format!("{failure:#}"));
            }
        }
        while let Some(service) = self.running.pop() {
            if let Err(failure) = service.stop_within(DEADLINE).await {
                failures.push(format!("{failure:#}"));
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => bail!("{}", failures.join("; ")),
        }
    }

    /// Maps `tenant`'s services to variant labels; returns how long until
    /// every route table had the mapping.
    pub async fn map(&self, tenant: &str, services: &[(&str, &str)]) -> anyhow::Result<Duration> {
        let body: serde_json::Map<String, serde_json::Value> = services
            .iter()
            .map(|(service, label)| (service.to_string(), json!(label)))
            .collect();
        let started = Instant::now();
        let response = self
            .http
            .put(format!("{}/tenants/{tenant}", self.registry))
            .bearer_auth(&self.options.token)
            .json(&json!({ "services": body }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "mapping tenant `{tenant}`: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        self.until_every_table(started, |routes| {
            services
                .iter()
                .all(|(service, label)| routes.variant_for(tenant, service) == Some(*label))
        })
        .await
    }

    /// Deletes `tenant`; returns how long until every route table forgot it.
    pub async fn delete(&self, tenant: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let response = self
            .http
            .delete(format!("{}/tenants/{tenant}", self.registry))
            .bearer_auth(&self.options.token)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("deleting tenant `{tenant}`: {}", response.status());
        }
        self.until_every_table(started, |routes| routes.tenant(tenant).is_none())
            .await
    }

    async fn until_every_table(
        &self,
        started: Instant,
        condition: impl Fn(&tenancy::Routes) -> bool,
    ) -> anyhow::Result<Duration> {
        for table in &self.tables {
            table
                .wait_for(DEADLINE, &condition)
                .await
                .context("a route change did not reach every table")?;
        }
        Ok(started.elapsed())
    }

    /// `POST /wait` on the gateway, with `tenant` in the baggage when given.
    pub async fn send(
        &self,
        tenant: Option<&str>,
        name: &str,
        wait_ms: u64,
    ) -> anyhow::Result<GatewayResponse> {
        let mut request = self
            .http
            .post(format!("{}/wait", self.gateway))
            .json(&json!({"name": name, "wait_ms": wait_ms}));
        if let Some(tenant) = tenant {
            request = request.header("baggage", format!("tenant={tenant}"));
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            bail!(
                "POST /wait: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response.json().await?)
    }

    /// Every ledger entry of `tenant` (`""` for production traffic),
    /// following the ledger's pages.
    pub async fn ledger(&self, tenant: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut entries = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = self
                .http
                .get(format!("{}/records", self.ledger))
                .query(&[("tenant", tenant)]);
            if let Some(after) = &after {
                request = request.query(&[("after", after)]);
            }
            let response = request.send().await?.error_for_status()?;
            let next = response
                .headers()
                .get(ledger::NEXT_PAGE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let page: Vec<serde_json::Value> = response.json().await?;
            entries.extend(page);
            match next {
                Some(next) => after = Some(next),
                None => return Ok(entries),
            }
        }
    }
}
