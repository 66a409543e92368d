//! The tenants registry against the embedded broker.

use std::time::{Duration, Instant};
use testkit::http::RequestExt;

use serde_json::json;
use service_kit::RunningService;
use tenancy::RouteTable;
use tenants::{Application, Deleted, DeletionOutcome, Settings};
use testkit::TestKafka;

const TOKEN: &str = "test-token";

struct Registry {
    base: String,
    topic: String,
    http: reqwest::Client,
    // Stopped when the test ends.
    _service: RunningService,
}

async fn start(kafka: &TestKafka) -> Registry {
    start_with(kafka, |_| {}).await
}

async fn start_with(kafka: &TestKafka, adjust: impl FnOnce(&mut Settings)) -> Registry {
    testkit::telemetry();
    let topic = testkit::unique_name("routes");
    kafka.create_topic(&topic, 1).await.unwrap();
    let mut settings = Settings::defaults_with(&kafka.settings());
    adjust(&mut settings);
    settings.routes.topic = topic.clone();
    settings.tenants.token = settings::Secret::new(TOKEN);
    let service = RunningService::start::<Application>(settings)
        .await
        .unwrap();
    Registry {
        base: service.url(),
        topic,
        http: reqwest::Client::new(),
        _service: service,
    }
}

impl Registry {
    /// `method path` without a token.
    fn anonymous(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `GET path` (reads need no token).
    async fn get(&self, path: &str) -> reqwest::Response {
        self.anonymous(reqwest::Method::GET, path).sent().await
    }

    /// `DELETE path` with the token.
    async fn delete(&self, path: &str) -> reqwest::Response {
        self.anonymous(reqwest::Method::DELETE, path)
            .bearer_auth(TOKEN)
            .sent()
            .await
    }

    async fn put(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .put(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .sent()
            .await
    }

    async fn register(&self, service: &str, label: &str) {
        let response = self
            .put(
                &format!("/variants/{service}/{label}"),
                json!({"endpoint": "http://127.0.0.1:9"}),
            )
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutations_need_the_token_and_reads_do_not() {
    let kafka = TestKafka::start().await.unwrap();
    let registry = start(&kafka).await;
    let url = format!("{}/tenants/123", registry.base);
    let body = json!({"services": {}});
    let anonymous = registry.http.put(&url).json(&body).sent().await;
    assert_eq!(anonymous.status(), 401);
    let wrong = registry
        .http
        .put(&url)
        .bearer_auth("guess")
        .json(&body)
        .sent()
        .await;
    assert_eq!(wrong.status(), 403);
    let delete = registry.http.delete(&url).sent().await;
    assert_eq!(delete.status(), 401);
    let variant = registry
        .anonymous(reqwest::Method::PUT, "/variants/waiter/sbx-1")
        .json(&json!({"endpoint": "http://x"}))
        .sent()
        .await;
    assert_eq!(variant.status(), 401);
    let read = registry.get("/tenants").await;
    assert_eq!(read.status(), 200);
    let tenants: Vec<serde_json::Value> = read.json().await.unwrap();
    assert!(tenants.is_empty(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_4xx_with_a_message() {
    let kafka = TestKafka::start().await.unwrap();
    let registry = start(&kafka).await;
    let cases = [
        (
            "/tenants/bad%20id",
            json!({"services": {}}),
            400,
            "invalid tenant id",
        ),
        (
            "/tenants/123",
            json!({"services": {"nonsense": "sbx-1"}}),
            400,
            "unknown service",
        ),
        (
            "/tenants/123",
            json!({"services": {"waiter": "baseline"}}),
            400,
            "baseline",
        ),
        (
            "/tenants/123",
            json!({"services": {"waiter": "sbx-1"}}),
            409,
            "not registered",
        ),
        ("/tenants/123", json!({"servces": {}}), 422, "servces"),
        (
            "/variants/waiter/sbx-1",
            json!({"endpoint": "ftp://x"}),
            400,
            "http://",
        ),
    ];
    for (path, body, status, message) in cases {
        let response = registry.put(path, body).await;
        assert_eq!(response.status(), status, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains(message), "{path}: {text}");
    }
    let malformed = registry
        .anonymous(reqwest::Method::PUT, "/tenants/123")
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .sent()
        .await;
    assert_eq!(malformed.status(), 400);
    let unknown = registry.get("/tenants/nobody").await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_is_created_read_replaced_and_deleted() {
    let kafka = TestKafka::start().await.unwrap();
    let registry = start(&kafka).await;
    registry.register("dispatch", "sbx-123").await;
    registry.register("waiter", "sbx-123").await;

    let created = registry
        .put("/tenants/123", json!({"services": {"dispatch": "sbx-123"}}))
        .await;
    assert_eq!(created.status(), 200);
    let read: serde_json::Value = registry.get("/tenants/123").await.json().await.unwrap();
    assert_eq!(
        read["services"],
        json!({"dispatch": "sbx-123"}),
        "reads see the write at once"
    );

    let replaced = registry
        .put(
            "/tenants/123",
            json!({"services": {"dispatch": "sbx-123", "waiter": "sbx-123"}}),
        )
        .await;
    assert_eq!(replaced.status(), 200);

    let deleted = registry.delete("/tenants/123").await;
    assert_eq!(deleted.status(), 200);
    let report: Deleted = deleted.json().await.unwrap();
    assert_eq!(report.tenant, "123");
    assert_eq!(report.consumer_groups.len(), 1, "{report:?}");
    let group = &report.consumer_groups[0];
    assert_eq!(group.group, "waiter-sbx-123");
    // The embedded broker may not support group deletion; it must be said.
    assert!(group.deleted || group.reason.is_some(), "{report:?}");
    let gone = registry.get("/tenants/123").await;
    assert_eq!(gone.status(), 404);
    let variants: Vec<serde_json::Value> = registry.get("/variants").await.json().await.unwrap();
    assert_eq!(variants.len(), 2, "variants outlive the tenant");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_change_reaches_every_route_table_quickly() {
    let kafka = TestKafka::start().await.unwrap();
    let registry = start(&kafka).await;
    registry.register("waiter", "sbx-7").await;
    let mut tables = Vec::new();
    for _ in 0..5 {
        let table = RouteTable::start(&kafka.settings(), &registry.topic)
            .await
            .unwrap();
        table.caught_up(Duration::from_secs(10)).await.unwrap();
        tables.push(table);
    }
    let started = Instant::now();
    let response = registry
        .put("/tenants/7", json!({"services": {"waiter": "sbx-7"}}))
        .await;
    assert_eq!(response.status(), 200);
    let mut slowest = Duration::ZERO;
    for table in &tables {
        table
            .wait_for(Duration::from_secs(10), |r| {
                r.variant_for("7", "waiter") == Some("sbx-7")
            })
            .await
            .expect("the change reached the table");
        slowest = slowest.max(started.elapsed());
    }
    eprintln!(
        "route change reached all {} route tables in {slowest:?}",
        tables.len()
    );
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
}

/// Whether `group` exists on the broker, and how many members it has.
fn group_members(kafka: &TestKafka, group: &str) -> Option<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = kafka.settings().client_config().create().unwrap();
    let list = client
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .unwrap();
    list.groups()
        .iter()
        .find(|g| g.name() == group && g.state() != "Dead")
        .map(|g| g.members().len())
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tenant_deletes_its_variants_consumer_groups_once_they_are_empty() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let kafka = TestKafka::start().await.unwrap();
    let prefix = testkit::unique_name("group");
    let topic = testkit::unique_name("requests");
    kafka.create_topic(&topic, 1).await.unwrap();
    let registry = start_with(&kafka, |settings| {
        settings.tenants.variant_consumers.insert(
            "waiter".into(),
            tenants::VariantConsumers {
                group: format!("{prefix}-{{label}}"),
                topic: topic.clone(),
            },
        );
        settings.tenants.group_deletion.wait = Duration::from_secs(1);
        settings.tenants.group_deletion.retry_for = Duration::from_secs(60);
    })
    .await;
    for (tenant, label) in [("idle", "sbx-idle"), ("busy", "sbx-busy")] {
        registry.register("waiter", label).await;
        let mapped = registry
            .put(
                &format!("/tenants/{tenant}"),
                json!({"services": {"waiter": label}}),
            )
            .await;
        assert_eq!(mapped.status(), 200);
    }
    let (idle_group, busy_group) = (format!("{prefix}-sbx-idle"), format!("{prefix}-sbx-busy"));
    // The idle variant ran and stopped: its group holds a committed offset
    // and no members.
    let idle: BaseConsumer = kafka
        .settings()
        .client_config()
        .set("group.id", &idle_group)
        .create()
        .unwrap();
    let mut position = TopicPartitionList::new();
    position
        .add_partition_offset(&topic, 0, Offset::Offset(0))
        .unwrap();
    let _ = idle.commit(&position, CommitMode::Sync);
    drop(idle);
    // The busy variant is still running: a member of its group.
    let busy = std::sync::Arc::new(
        kafka
            .settings()
            .client_config()
            .set("group.id", &busy_group)
            .set("session.timeout.ms", "6000")
            .create::<BaseConsumer>()
            .unwrap(),
    );
    busy.subscribe(&[&topic]).unwrap();
    let polling = {
        let busy = busy.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                busy.poll(Duration::from_millis(50));
            }
        });
        (stop, handle)
    };
    let real = TestKafka::is_real_broker();
    if real {
        testkit::eventually(
            "the busy variant joined its group",
            Duration::from_secs(30),
            || std::future::ready((group_members(&kafka, &busy_group) == Some(1)).then_some(())),
        )
        .await
        .unwrap();
    }

    let delete = |tenant: &'static str| {
        let registry = &registry;
        async move {
            let response = registry.delete(&format!("/tenants/{tenant}")).await;
            assert_eq!(response.status(), 200);
            let report: Deleted = response.json().await.unwrap();
            assert_eq!(report.consumer_groups.len(), 1, "{report:?}");
            report.consumer_groups[0].clone()
        }
    };
    let idle_report = delete("idle").await;
    let busy_report = delete("busy").await;
    if !real {
        // The embedded broker cannot describe or delete groups: it is said,
        // never asked in a way that breaks the client.
        for report in [&idle_report, &busy_report] {
            assert_eq!(report.outcome, DeletionOutcome::Unsupported, "{report:?}");
            assert!(
                report.reason.as_deref().unwrap().contains("cannot"),
                "{report:?}"
            );
        }
        polling.0.store(true, std::sync::atomic::Ordering::Relaxed);
        polling.1.join().unwrap();
        return;
    }
    assert_eq!(
        idle_report.outcome,
        DeletionOutcome::Deleted,
        "{idle_report:?}"
    );
    assert!(idle_report.deleted);
    assert_eq!(
        group_members(&kafka, &idle_group),
        None,
        "the idle group is gone"
    );

    assert_eq!(
        busy_report.outcome,
        DeletionOutcome::Pending,
        "{busy_report:?}"
    );
    assert!(!busy_report.deleted);
    assert!(
        busy_report.reason.as_deref().unwrap().contains("member"),
        "{busy_report:?}"
    );
    assert_eq!(group_members(&kafka, &busy_group), Some(1));
    // The variant stops; the registry deletes its group in the background.
    polling.0.store(true, std::sync::atomic::Ordering::Relaxed);
    polling.1.join().unwrap();
    drop(busy);
    testkit::eventually(
        "the busy group is deleted once empty",
        Duration::from_secs(30),
        || std::future::ready(group_members(&kafka, &busy_group).is_none().then_some(())),
    )
    .await
    .unwrap();
}

/// A variant's registration is a lease: once its only instance stops
/// renewing it is marked not live, tenants can no longer be mapped to it,
/// and while a tenant still maps it, it cannot be removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_variant_is_marked_not_live_and_a_mapped_one_cannot_be_removed() {
    let kafka = TestKafka::start().await.unwrap();
    let registry = start_with(&kafka, |settings| {
        settings.tenants.lease.ttl = Duration::from_millis(500);
        settings.tenants.lease.check_every = Duration::from_millis(50);
    })
    .await;
    registry.register("waiter", "sbx-lease").await;
    let mapped = registry
        .put(
            "/tenants/lease",
            json!({"services": {"waiter": "sbx-lease"}}),
        )
        .await;
    assert_eq!(mapped.status(), 200);
    let removed = registry.delete("/variants/waiter/sbx-lease").await;
    assert_eq!(removed.status(), 409);
    let refusal = removed.text().await.unwrap();
    assert!(refusal.contains("mapped by tenant(s) lease"), "{refusal}");

    // No renewal follows the registration: the lease lapses.
    testkit::eventually(
        "the variant is marked not live",
        Duration::from_secs(10),
        || async {
            let status: serde_json::Value =
                registry.get("/tenants/lease").await.json().await.ok()?;
            (status["variants"][0]["live"] == false).then_some(())
        },
    )
    .await
    .unwrap();
    let again = registry
        .put(
            "/tenants/lease",
            json!({"services": {"waiter": "sbx-lease"}}),
        )
        .await;
    assert_eq!(
        again.status(),
        409,
        "a tenant cannot be mapped to a variant that is down"
    );

    // A renewal brings it back.
    registry.register("waiter", "sbx-lease").await;
    let status: serde_json::Value = registry.get("/tenants/lease").await.json().await.unwrap();
    assert_eq!(status["variants"][0]["live"], true, "{status}");
    assert_eq!(status["variants"][0]["instances"], 1, "{status}");
}

/// A tenant with a TTL is drained and deleted when it expires.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_with_a_ttl_expires() {
    let kafka = TestKafka::start().await.unwrap();
    let registry = start_with(&kafka, |settings| {
        settings.tenants.lease.check_every = Duration::from_millis(50);
    })
    .await;
    let mapped = registry
        .put("/tenants/brief", json!({"services": {}, "ttl": "300ms"}))
        .await;
    assert_eq!(mapped.status(), 200);
    let body: serde_json::Value = mapped.json().await.unwrap();
    assert!(body["expires_at_ms"].as_u64().is_some(), "{body}");
    testkit::eventually("the tenant expired", Duration::from_secs(10), || async {
        (registry.get("/tenants/brief").await.status() == 404).then_some(())
    })
    .await
    .unwrap();
    let bad = registry
        .put("/tenants/brief", json!({"services": {}, "ttl": "300"}))
        .await;
    assert_eq!(bad.status(), 422, "a TTL without its unit is refused");
}

/// Two instances of one variant in one process (the demo scaling a waiter
/// out) hold two leases: the first one leaving does not take the variant
/// down while the second still serves.
#[tokio::test(flavor = "multi_thread")]
async fn one_of_two_instances_in_a_process_leaving_keeps_the_variant_live() {
    let kafka = TestKafka::start().await.unwrap();
    let registry = start(&kafka).await;
    let settings = tenancy::RegistrySettings {
        url: Some(registry.base.clone()),
        token: Some(settings::Secret::new(TOKEN)),
        ..tenancy::RegistrySettings::default()
    };
    let instance = |port| {
        tenancy::Registration::for_variant(
            &settings,
            protocol::Service::Waiter,
            "sbx-pair",
            port,
            "one-process",
            tenancy::TenantTally::default(),
        )
        .unwrap()
    };
    let (first, second) = (instance(40001), instance(40002));
    first.register().await.unwrap();
    second.register().await.unwrap();
    let mapped = registry
        .put("/tenants/pair", json!({"services": {"waiter": "sbx-pair"}}))
        .await;
    assert_eq!(mapped.status(), 200);
    let status: serde_json::Value = registry.get("/tenants/pair").await.json().await.unwrap();
    assert_eq!(status["variants"][0]["instances"], 2, "{status}");

    first.deregister().await;
    let status: serde_json::Value = registry.get("/tenants/pair").await.json().await.unwrap();
    assert_eq!(status["variants"][0]["live"], true, "{status}");
    assert_eq!(status["variants"][0]["instances"], 1, "{status}");
    second.deregister().await;
    let status: serde_json::Value = registry.get("/tenants/pair").await.json().await.unwrap();
    assert_eq!(status["variants"][0]["live"], false, "{status}");
}

/// Lease renewals (one a second per instance) record no spans at either
/// end: as traces they would bury the requests in Jaeger. The registration
/// itself is traced, as a CLIENT span with the registry's SERVER span under it.
#[tokio::test(flavor = "multi_thread")]
async fn lease_renewals_leave_no_traces_but_the_registration_does() {
    let telemetry = testkit::telemetry();
    let kafka = TestKafka::start().await.unwrap();
    let registry = start(&kafka).await;
    let label = testkit::unique_name("sbx-quiet");
    let settings = tenancy::RegistrySettings {
        url: Some(registry.base.clone()),
        token: Some(settings::Secret::new(TOKEN)),
        renew_every: Duration::from_millis(20),
        ..tenancy::RegistrySettings::default()
    };
    let registration = tenancy::Registration::for_variant(
        &settings,
        protocol::Service::Waiter,
        &label,
        40003,
        "quiet",
        tenancy::TenantTally::default(),
    )
    .unwrap();
    registration.register().await.unwrap();
    let renewing = registration.clone();
    let renewals = tokio::spawn(async move { renewing.keep_alive().await });
    let tenant = testkit::unique_name("quiet");
    let mapped = registry
        .put(
            &format!("/tenants/{tenant}"),
            json!({"services": {"waiter": label}}),
        )
        .await;
    assert_eq!(mapped.status(), 200);
    // Three heartbeats the registry saw after the registration.
    let heartbeats = std::sync::Mutex::new(std::collections::BTreeSet::new());
    testkit::eventually("three lease renewals", Duration::from_secs(10), || {
        let registry = &registry;
        let tenant = &tenant;
        let heartbeats = &heartbeats;
        async move {
            let status: serde_json::Value = registry
                .get(&format!("/tenants/{tenant}"))
                .await
                .json()
                .await
                .ok()?;
            let heartbeat = status["variants"][0]["last_heartbeat_ms"].as_u64()?;
            let mut seen = heartbeats.lock().unwrap();
            seen.insert(heartbeat);
            (seen.len() >= 4).then_some(())
        }
    })
    .await
    .unwrap();
    renewals.abort();
    let path = format!("/variants/waiter/{label}");
    let spans = telemetry.spans().snapshot();
    let servers = spans
        .iter()
        .filter(|s| {
            s.span_kind == opentelemetry::trace::SpanKind::Server
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "url.path" && kv.value.as_str() == path)
        })
        .count();
    let clients = spans
        .iter()
        .filter(|s| {
            s.span_kind == opentelemetry::trace::SpanKind::Client
                && s.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "url.full" && kv.value.as_str().ends_with(&path))
        })
        .count();
    assert_eq!((clients, servers), (1, 1), "the registration only");
}
