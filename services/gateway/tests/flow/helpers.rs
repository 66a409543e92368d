//! The whole flow in one process: registry, ledger, gateway, baseline
//! dispatch and waiter, and per-tenant variants, on one embedded broker.

use std::time::{Duration, Instant};

use gateway::GatewayResponse;
use kafka_kit::KafkaSettings;
use serde_json::json;
use tenancy::RouteTable;
use testkit::TestKafka;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub const DEADLINE: Duration = Duration::from_secs(30);
pub const TOKEN: &str = "flow-token";

pub struct Stack {
    // Declared first so that, even without `stop`, services are told to stop
    // before the broker they talk to goes away.
    guards: Vec<DropGuard>,
    running: Vec<JoinHandle<()>>,
    pub kafka: TestKafka,
    pub registry: String,
    pub ledger: String,
    pub gateway: String,
    /// Every route table in the stack, to know when a change is everywhere.
    pub tables: Vec<RouteTable>,
    pub http: reqwest::Client,
}

/// Runs a service until its guard is dropped.
fn spawn<F, E>(run: impl FnOnce(CancellationToken) -> F) -> (DropGuard, JoinHandle<()>)
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let stop = CancellationToken::new();
    let future = run(stop.clone());
    let handle = tokio::spawn(async move {
        if let Err(e) = future.await {
            panic!("service failed: {e:?}");
        }
    });
    (stop.drop_guard(), handle)
}

fn waiter_settings(
    kafka: &KafkaSettings,
    label: &str,
    registry: &str,
    ledger: &str,
) -> waiter::Settings {
    let mut s = waiter::Settings::defaults_with(kafka.clone());
    s.http.host = "127.0.0.1".into();
    s.http.port = 0;
    s.service.variant = label.into();
    s.waiter.consumers = 1;
    s.waiter.producers = 1;
    s.ledger.url = Some(ledger.into());
    s.registry.url = Some(registry.into());
    s.registry.token = Some(TOKEN.into());
    if label != "baseline" {
        // The change under test: variants wait half as long.
        s.waiter.wait_scale = 0.5;
    }
    s
}

fn dispatch_settings(kafka: &KafkaSettings, label: &str, registry: &str) -> dispatch::Settings {
    let mut s = dispatch::Settings::defaults_with(kafka);
    s.service.variant = label.into();
    s.registry.url = Some(registry.into());
    s.registry.token = Some(TOKEN.into());
    s
}

impl Stack {
    pub async fn start(trust_incoming_baggage: bool) -> Self {
        testkit::telemetry();
        let kafka = TestKafka::start().unwrap();
        let settings = kafka.settings();
        let mut guards = Vec::new();
        let mut running = Vec::new();
        let mut tables = Vec::new();
        let mut run = |(guard, handle): (DropGuard, JoinHandle<()>)| {
            guards.push(guard);
            running.push(handle);
        };

        let mut registry_settings = tenants::Settings::defaults_with(&settings);
        registry_settings.tenants.token = TOKEN.into();
        let registry_app = tenants::Application::build(registry_settings)
            .await
            .unwrap();
        let registry = format!("http://127.0.0.1:{}", registry_app.port());
        tables.push(registry_app.route_table());
        run(spawn(|stop| registry_app.run_until_stopped(stop)));

        let ledger_app = ledger::Application::build(ledger::Settings::for_tests())
            .await
            .unwrap();
        let ledger = format!("http://127.0.0.1:{}", ledger_app.port());
        run(spawn(|stop| ledger_app.run_until_stopped(stop)));

        let waiter_app =
            waiter::Application::build(waiter_settings(&settings, "baseline", &registry, &ledger))
                .await
                .unwrap();
        tables.push(waiter_app.route_table());
        let readiness = waiter_app.readiness();
        run(spawn(|stop| waiter_app.run_until_stopped(stop)));
        tokio::time::timeout(DEADLINE, readiness.assigned())
            .await
            .expect("baseline waiter assigned");

        let dispatch_app =
            dispatch::Application::build(dispatch_settings(&settings, "baseline", &registry))
                .await
                .unwrap();
        let dispatch = format!("http://127.0.0.1:{}", dispatch_app.port());
        run(spawn(|stop| dispatch_app.run_until_stopped(stop)));

        let mut gateway_settings = gateway::Settings::defaults_with(&settings, &dispatch);
        gateway_settings.gateway.trust_incoming_baggage = trust_incoming_baggage;
        let gateway_app = gateway::Application::build(gateway_settings).await.unwrap();
        let gateway = format!("http://127.0.0.1:{}", gateway_app.port());
        tables.push(gateway_app.route_table());
        run(spawn(|stop| gateway_app.run_until_stopped(stop)));

        Self {
            guards,
            running,
            kafka,
            registry,
            ledger,
            gateway,
            tables,
            http: reqwest::Client::new(),
        }
    }

    /// Starts B″ and/or C″ labelled `label` and waits until the registry
    /// lists them (C″ registers only once its partitions are assigned).
    pub async fn start_variant(&mut self, label: &str, with_dispatch: bool, with_waiter: bool) {
        let settings = self.kafka.settings();
        if with_waiter {
            let app = waiter::Application::build(waiter_settings(
                &settings,
                label,
                &self.registry,
                &self.ledger,
            ))
            .await
            .unwrap();
            self.tables.push(app.route_table());
            let (guard, handle) = spawn(|stop| app.run_until_stopped(stop));
            self.guards.push(guard);
            self.running.push(handle);
        }
        if with_dispatch {
            let app =
                dispatch::Application::build(dispatch_settings(&settings, label, &self.registry))
                    .await
                    .unwrap();
            let (guard, handle) = spawn(|stop| app.run_until_stopped(stop));
            self.guards.push(guard);
            self.running.push(handle);
        }
        let wanted: Vec<&str> = [("dispatch", with_dispatch), ("waiter", with_waiter)]
            .into_iter()
            .filter_map(|(s, on)| on.then_some(s))
            .collect();
        let label = label.to_string();
        testkit::eventually("variants registered", DEADLINE, || {
            let http = self.http.clone();
            let url = format!("{}/variants", self.registry);
            let wanted = wanted.clone();
            let label = label.clone();
            async move {
                let variants: Vec<serde_json::Value> =
                    http.get(url).send().await.ok()?.json().await.ok()?;
                wanted
                    .iter()
                    .all(|service| {
                        variants
                            .iter()
                            .any(|v| v["service"] == *service && v["label"] == label)
                    })
                    .then_some(())
            }
        })
        .await
        .unwrap();
    }

    /// Stops every service, newest first, and waits for each to drain
    /// while the broker is still up; then the broker goes.
    pub async fn stop(mut self) {
        while let Some(guard) = self.guards.pop() {
            drop(guard);
            let handle = self.running.pop().expect("one handle per guard");
            tokio::time::timeout(DEADLINE, handle)
                .await
                .expect("a service drains in time")
                .expect("a service stops without panicking");
        }
    }

    /// Maps `tenant`; returns how long until every route table had it.
    pub async fn map(&self, tenant: &str, services: &[(&str, &str)]) -> Duration {
        let services: serde_json::Map<String, serde_json::Value> = services
            .iter()
            .map(|(s, l)| (s.to_string(), json!(l)))
            .collect();
        let started = Instant::now();
        let response = self
            .http
            .put(format!("{}/tenants/{tenant}", self.registry))
            .bearer_auth(TOKEN)
            .json(&json!({ "services": services }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let expected: Vec<(String, String)> = services
            .iter()
            .map(|(s, l)| (s.clone(), l.as_str().unwrap().to_string()))
            .collect();
        self.until_every_table(started, |routes| {
            expected
                .iter()
                .all(|(s, l)| routes.variant_for(tenant, s) == Some(l.as_str()))
        })
        .await
    }

    /// Deletes `tenant`; returns how long until every route table forgot it.
    pub async fn delete(&self, tenant: &str) -> Duration {
        let started = Instant::now();
        let response = self
            .http
            .delete(format!("{}/tenants/{tenant}", self.registry))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        self.until_every_table(started, |routes| routes.tenant(tenant).is_none())
            .await
    }

    async fn until_every_table(
        &self,
        started: Instant,
        condition: impl Fn(&tenancy::Routes) -> bool,
    ) -> Duration {
        for table in &self.tables {
            table
                .wait_for(DEADLINE, &condition)
                .await
                .expect("the change reached every route table");
        }
        started.elapsed()
    }

    /// `POST /wait` on the gateway, with `tenant` in the baggage when given.
    pub async fn send(&self, tenant: Option<&str>, name: &str) -> GatewayResponse {
        let mut request = self
            .http
            .post(format!("{}/wait", self.gateway))
            .json(&json!({"name": name, "wait_ms": 40}));
        if let Some(tenant) = tenant {
            request = request.header("baggage", format!("tenant={tenant}"));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// Ledger entries of `tenant` (`""` for production traffic).
    pub async fn ledger(&self, tenant: &str) -> Vec<serde_json::Value> {
        self.http
            .get(format!("{}/records?tenant={tenant}", self.ledger))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
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
