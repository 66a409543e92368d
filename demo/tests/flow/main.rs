//! A → B″ → Kafka → C″ → D: tenants on one shared baseline, every service in
//! process on the embedded broker, with real spans.

mod helpers;

use std::time::Duration;
use testkit::http::RequestExt;

use helpers::{DEADLINE, Stack, hops};
use opentelemetry::trace::TraceId;
use telemetry::SpanData;
use testkit::TestKafka;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn has_event(span: &SpanData, name: &str, reason: &str) -> bool {
    span.events.iter().any(|e| {
        e.name == name
            && e.attributes.iter().any(|kv| {
                kv.key.as_str() == "tenancy.skip_reason" && kv.value.to_string() == reason
            })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_request_flows_through_its_variants_and_a_baseline_request_does_not() {
    let telemetry = testkit::telemetry();
    let mut stack = Stack::start(true).await;
    stack.start_variant("sbx-123", true, true).await;
    let reached = stack
        .map("123", &[("dispatch", "sbx-123"), ("waiter", "sbx-123")])
        .await;
    eprintln!("tenant mapping reached every route table in {reached:?}");

    let tenant = stack.send(Some("123"), "tenant-request").await;
    assert_eq!(
        hops(&tenant),
        ["gateway=baseline", "dispatch=sbx-123", "waiter=sbx-123"]
    );
    assert_eq!(tenant.tenant.as_deref(), Some("123"));
    assert_eq!(
        tenant.reply.trace_id, tenant.trace_id,
        "one trace from A to C″"
    );

    let baseline = stack.send(None, "baseline-request").await;
    assert_eq!(
        hops(&baseline),
        ["gateway=baseline", "dispatch=baseline", "waiter=baseline"]
    );

    // The ledger (D) recorded each with the variants of every hop.
    let entries = stack.ledger("123").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["trace_id"], tenant.trace_id.as_str());
    assert_eq!(
        entries[0]["variants"],
        serde_json::json!({"dispatch": "sbx-123", "waiter": "sbx-123"}),
        "dispatch starts the hops it vouches for; a caller's are not believed"
    );
    assert_eq!(entries[0]["behaviour"], "wait_scale=0.5");
    let production = stack.ledger("").await;
    assert_eq!(production.len(), 1);
    assert_eq!(production[0]["variants"]["waiter"], "baseline");

    // One trace id spans A → B″ → Kafka → C″ → D, and the baseline waiter
    // saw the record but skipped it, saying why.
    let trace = TraceId::from_hex(&tenant.trace_id).unwrap();
    let spans = telemetry
        .spans()
        .wait_for_trace(trace, DEADLINE, |spans| {
            spans
                .iter()
                .any(|s| attribute(s, "service").as_deref() == Some("ledger"))
                && spans
                    .iter()
                    .any(|s| has_event(s, "skipped", "routed_to_variant"))
        })
        .await
        .expect("the tenant's trace is complete");
    let handled = |service: &str, variant: &str| {
        spans.iter().any(|s| {
            attribute(s, "service").as_deref() == Some(service)
                && attribute(s, "variant").as_deref() == Some(variant)
        })
    };
    assert!(handled("gateway", "baseline"));
    assert!(handled("dispatch", "sbx-123"));
    assert!(
        spans
            .iter()
            .any(|s| s.name == "wait" && attribute(s, "variant").as_deref() == Some("sbx-123"))
    );
    assert!(
        !spans
            .iter()
            .any(|s| s.name == "wait" && attribute(s, "variant").as_deref() == Some("baseline"))
    );
    assert!(
        spans
            .iter()
            .all(|s| attribute(s, "tenant").as_deref() == Some("123")),
        "the tenant is on every span"
    );
    let skipped_by_baseline = spans
        .iter()
        .find(|s| has_event(s, "skipped", "routed_to_variant"))
        .unwrap();
    assert_eq!(
        attribute(skipped_by_baseline, "variant").as_deref(),
        Some("baseline")
    );
    let metrics = telemetry::render_metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("waiter_records_skipped_total")
                && l.contains("variant=\"baseline\"")
                && l.contains("reason=\"routed_to_variant\"")),
        "the baseline's skip is counted"
    );

    // The baseline request never reached B″, and C″ only saw it to skip it.
    let trace = TraceId::from_hex(&baseline.trace_id).unwrap();
    let spans = telemetry
        .spans()
        .wait_for_trace(trace, DEADLINE, |spans| {
            spans
                .iter()
                .any(|s| has_event(s, "skipped", "production_record"))
        })
        .await
        .expect("the variant's skip of the baseline record");
    assert!(
        !spans
            .iter()
            .any(|s| attribute(s, "service").as_deref() == Some("dispatch")
                && attribute(s, "variant").as_deref() == Some("sbx-123"))
    );
    assert!(
        !spans
            .iter()
            .any(|s| s.name == "wait" && attribute(s, "variant").as_deref() == Some("sbx-123"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tenants_are_each_served_by_the_variants_their_mapping_names() {
    let mut stack = Stack::start(true).await;
    stack.start_variant("v-a", true, true).await;
    stack.start_variant("v-b", false, true).await;
    stack.start_variant("v-c", true, false).await;
    stack
        .map("a", &[("dispatch", "v-a"), ("waiter", "v-a")])
        .await;
    stack.map("b", &[("waiter", "v-b")]).await;
    stack.map("c", &[("dispatch", "v-c")]).await;

    let expected = [
        (
            Some("a"),
            ["gateway=baseline", "dispatch=v-a", "waiter=v-a"],
        ),
        (
            Some("b"),
            ["gateway=baseline", "dispatch=baseline", "waiter=v-b"],
        ),
        (
            Some("c"),
            ["gateway=baseline", "dispatch=v-c", "waiter=baseline"],
        ),
        (
            Some("unknown"),
            ["gateway=baseline", "dispatch=baseline", "waiter=baseline"],
        ),
        (
            None,
            ["gateway=baseline", "dispatch=baseline", "waiter=baseline"],
        ),
    ];
    let stack = std::sync::Arc::new(stack);
    let mut calls = Vec::new();
    for round in 0..8 {
        for (tenant, want) in expected {
            let stack = stack.clone();
            calls.push(tokio::spawn(async move {
                let response = stack.send(tenant, &format!("{tenant:?}-{round}")).await;
                assert_eq!(hops(&response), want, "tenant {tenant:?}");
            }));
        }
    }
    for call in calls {
        call.await.unwrap();
    }
    // Exactly one waiter processed each request: the ledger has each once.
    // The gateway drops a tenant the route table does not know (it would
    // be a label value of its own everywhere), so `unknown` is production.
    for (tenant, count) in [("a", 8), ("b", 8), ("c", 8), ("unknown", 0), ("", 16)] {
        assert_eq!(stack.ledger(tenant).await.len(), count, "tenant {tenant:?}");
    }
    std::sync::Arc::into_inner(stack)
        .expect("all calls finished")
        .stop()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tenant_sends_its_next_request_through_the_baseline() {
    let mut stack = Stack::start(true).await;
    stack.start_variant("sbx-9", true, true).await;
    stack
        .map("9", &[("dispatch", "sbx-9"), ("waiter", "sbx-9")])
        .await;
    assert_eq!(
        hops(&stack.send(Some("9"), "before").await)[1],
        "dispatch=sbx-9"
    );

    // The delete drains first (the variant commits past what it was sent),
    // then unmaps; it returns once every route table has the unmapping.
    let reached = stack.delete("9").await;
    eprintln!("tenant drained and unmapped everywhere in {reached:?}");
    let after = stack.send(Some("9"), "after").await;
    assert_eq!(
        hops(&after),
        ["gateway=baseline", "dispatch=baseline", "waiter=baseline"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_that_does_not_trust_baggage_routes_everyone_to_the_baseline() {
    let mut stack = Stack::start(false).await;
    stack.start_variant("sbx-5", true, true).await;
    stack
        .map("5", &[("dispatch", "sbx-5"), ("waiter", "sbx-5")])
        .await;
    let response = stack.send(Some("5"), "spoofed").await;
    assert_eq!(response.tenant, None);
    assert_eq!(
        hops(&response),
        ["gateway=baseline", "dispatch=baseline", "waiter=baseline"]
    );
    assert_eq!(
        stack.ledger("5").await.len(),
        0,
        "the tenant baggage did not travel on"
    );
    // A caller presenting the gateway's baggage token may name its tenant.
    let trusted: gateway::GatewayResponse = stack
        .http
        .post(format!("{}/wait", stack.gateway))
        .bearer_auth(helpers::TOKEN)
        .header("baggage", "tenant=5")
        .json(&serde_json::json!({"name": "trusted", "wait_ms": 1}))
        .fetch_json()
        .await;
    assert_eq!(trusted.tenant.as_deref(), Some("5"));
    assert_eq!(
        hops(&trusted),
        ["gateway=baseline", "dispatch=sbx-5", "waiter=sbx-5"]
    );
    stack.stop().await;
}

/// A broker of three is down (killed just before, not yet fenced) when
/// every service starts: a rolling restart meeting a pod restart. Each
/// service starts, the flow is answered for the baseline and for a tenant's
/// variants, and the broker's return disturbs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn every_service_starts_and_serves_with_one_broker_of_three_down() {
    let Some(kafka) = TestKafka::start_own_cluster().await.unwrap() else {
        return;
    };
    let names = Stack::create_topics(&kafka).await;
    // The first broker every client is told to bootstrap from.
    kafka.take_down_broker(1).await.unwrap();
    let mut stack = Stack::start_on(kafka, names, true).await;
    stack.start_variant("sbx-down", true, true).await;
    stack
        .map("down", &[("dispatch", "sbx-down"), ("waiter", "sbx-down")])
        .await;
    let baseline = stack.send(None, "with-a-broker-down").await;
    assert_eq!(
        hops(&baseline),
        ["gateway=baseline", "dispatch=baseline", "waiter=baseline"]
    );
    let tenant = stack.send(Some("down"), "tenant-with-a-broker-down").await;
    assert_eq!(
        hops(&tenant),
        ["gateway=baseline", "dispatch=sbx-down", "waiter=sbx-down"]
    );
    stack.kafka.bring_back_broker(1).await.unwrap();
    let after = stack.send(Some("down"), "after-the-broker-returned").await;
    assert_eq!(
        hops(&after),
        ["gateway=baseline", "dispatch=sbx-down", "waiter=sbx-down"]
    );
    stack.stop().await;
}

/// The registry, dispatch, the gateway and a waiter started while their
/// broker is away: none exits. Each answers `/readyz` from the start with
/// 503, naming the route table it waits for and why; the gateway's `/wait`
/// answers 503 saying the same instead of routing by an empty table. Once
/// the broker returns, every one is ready and a request flows end to end.
#[tokio::test(flavor = "multi_thread")]
async fn services_started_while_their_broker_is_away_say_what_they_wait_for() {
    use service_kit::{RunningService, ServiceApp};
    let kafka = TestKafka::start_own().await.unwrap();
    let names = Stack::create_topics(&kafka).await;
    kafka.take_down().await.unwrap();
    let broker = kafka.settings();

    let mut registry = tenants::Settings::defaults_with(&broker);
    registry.routes.topic = names.routes.clone();
    let registry = tenants::Application::build(registry).await.unwrap();
    let registry = RunningService::spawn(registry);
    let mut dispatch = dispatch::Settings::defaults_with(&broker);
    dispatch.dispatch.request_topic = names.requests.clone();
    dispatch.dispatch.response_topic = names.responses.clone();
    dispatch.routes.topic = names.routes.clone();
    let dispatch = RunningService::spawn(dispatch::Application::build(dispatch).await.unwrap());
    let mut gateway = gateway::Settings::defaults_with(&broker, &dispatch.url());
    gateway.routes.topic = names.routes.clone();
    let gateway = RunningService::spawn(gateway::Application::build(gateway).await.unwrap());
    let topics = protocol::topics::RequestTopics {
        requests: names.requests.clone(),
        replies: names.responses.clone(),
        dead_letters: names.dead_letter.clone(),
    };
    let mut waiter = waiter::Settings::in_process(broker.clone(), &topics, &names.waiter_group);
    waiter.routes.topic = names.routes.clone();
    let waiter = waiter::RunningWaiter::start(waiter).await.unwrap();

    let http = reqwest::Client::new();
    let readyz = |url: String| {
        let http = http.clone();
        async move {
            let response = http.get(format!("{url}/readyz")).send().await.ok()?;
            Some((response.status().as_u16(), response.text().await.ok()?))
        }
    };
    let services = [
        ("registry", registry.url()),
        ("dispatch", dispatch.url()),
        ("gateway", gateway.url()),
        ("waiter", format!("http://127.0.0.1:{}", waiter.port())),
    ];
    for (service, url) in &services {
        let reason = testkit::eventually(
            &format!("{service}'s /readyz says it waits for a broker"),
            DEADLINE,
            || async {
                let (status, body) = readyz(url.clone()).await?;
                (status == 503 && body.contains("no broker answers")).then_some(body)
            },
        )
        .await
        .unwrap();
        assert!(
            reason.contains("route table is not caught up"),
            "{service}: {reason}"
        );
    }
    let refused = http
        .post(format!("{}/wait", gateway.url()))
        .json(&serde_json::json!({"name": "too-early", "wait_ms": 1}))
        .sent()
        .await;
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("route table is not caught up"),
        "{body}"
    );

    kafka.bring_back().await.unwrap();
    for (service, url) in &services {
        testkit::eventually(
            &format!("{service} is ready once its broker is back"),
            DEADLINE,
            || async { (readyz(url.clone()).await?.0 == 200).then_some(()) },
        )
        .await
        .unwrap();
    }
    let answered = http
        .post(format!("{}/wait", gateway.url()))
        .json(&serde_json::json!({"name": "once-the-broker-returned", "wait_ms": 1}))
        .sent()
        .await;
    assert_eq!(answered.status(), 200);
    let answer: gateway::GatewayResponse = answered.json().await.unwrap();
    assert_eq!(
        hops(&answer),
        ["gateway=baseline", "dispatch=baseline", "waiter=baseline"]
    );
    for service in [gateway, dispatch, registry] {
        service.stop().await.unwrap();
    }
    waiter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_answers_bad_input_and_dead_downstreams_clearly() {
    let stack = Stack::start(true).await;
    let malformed = stack
        .http
        .post(format!("{}/wait", stack.gateway))
        .header("content-type", "application/json")
        .body("{\"name\":")
        .sent()
        .await;
    assert_eq!(malformed.status(), 400);
    let body: serde_json::Value = malformed.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");
    let oversized = stack
        .http
        .post(format!("{}/wait", stack.gateway))
        .header(
            "baggage",
            (0..100)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .json(&serde_json::json!({"name": "big-baggage", "wait_ms": 1}))
        .sent()
        .await;
    assert_eq!(
        oversized.status(),
        200,
        "oversized baggage is dropped, the request served"
    );

    // A gateway whose dispatch is gone answers 502, naming the dispatch but
    // not its address (that goes to the gateway's log).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let settings =
        gateway::Settings::defaults_with(&stack.kafka.settings(), &format!("http://{closed}"));
    let gateway = service_kit::RunningService::start::<gateway::Application>(settings)
        .await
        .unwrap();
    let url = format!("{}/wait", gateway.url());
    let response = testkit::eventually("gateway serving", DEADLINE, || {
        let http = stack.http.clone();
        let url = url.clone();
        async move {
            http.post(url)
                .json(&serde_json::json!({"name": "x"}))
                .send()
                .await
                .ok()
        }
    })
    .await
    .unwrap();
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("unreachable"), "{body}");
    assert!(
        !error.contains("127.0.0.1") && !error.contains("http://"),
        "the client is not told internal addresses: {body}"
    );
    gateway.stop().await.unwrap();
}

/// A variant that scales out (a second instance joins its group while its
/// tenant's requests flow) rebalances partitions that may have no committed
/// offset yet. None of the records produced after the variant registered
/// may be lost to `auto.offset.reset=latest`: every request is answered,
/// by the variant.
#[tokio::test(flavor = "multi_thread")]
async fn a_variant_scaling_out_mid_traffic_loses_no_tenant_request() {
    let mut stack = Stack::start(true).await;
    stack.start_variant("sbx-scale", false, true).await;
    stack.map("scale", &[("waiter", "sbx-scale")]).await;

    let gateway = stack.gateway.clone();
    let http = stack.http.clone();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    let traffic = tokio::spawn(async move {
        let mut calls = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for i in 0..40 {
            tick.tick().await;
            let (gateway, http) = (gateway.clone(), http.clone());
            calls.push(tokio::spawn(async move {
                let response = http
                    .post(format!("{gateway}/wait"))
                    .header("baggage", "tenant=scale")
                    .json(&serde_json::json!({"name": format!("scale-{i}"), "wait_ms": 10}))
                    .sent()
                    .await;
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                (i, status, body)
            }));
            let _ = sent_tx.send(i);
        }
        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(call.await.unwrap());
        }
        outcomes
    });
    // Scale out once traffic is flowing: the second instance's joining
    // rebalances the group while requests keep coming.
    while sent_rx.recv().await.is_some_and(|i| i < 5) {}
    stack.start_variant("sbx-scale", false, true).await;

    let outcomes = traffic.await.unwrap();
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|(_, status, body)| {
            !status.is_success()
                || body["hops"]
                    .as_array()
                    .and_then(|hops| hops.iter().find(|h| h["service"] == "waiter"))
                    .map(|h| h["variant"] != "sbx-scale")
                    .unwrap_or(true)
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 40 requests not answered by the variant: {failed:?}",
        failed.len()
    );
    // Every request reached the ledger through the variant. A rebalance may
    // hand a partition over before its finished offsets were committed, so
    // a record can be processed twice (at-least-once; the embedded broker
    // refuses commits while a rebalance is pending, so it shows there).
    let entries = stack.ledger("scale").await;
    let processed: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter(|e| e["variants"]["waiter"] == "sbx-scale")
        .filter_map(|e| e["request_id"].as_str())
        .collect();
    let answered: std::collections::BTreeSet<&str> = outcomes
        .iter()
        .filter_map(|(_, _, body)| body["reply"]["correlation"].as_str())
        .collect();
    assert_eq!(answered.len(), 40);
    assert!(
        answered.is_subset(&processed),
        "the ledger misses {:?}",
        answered.difference(&processed).collect::<Vec<_>>()
    );
    assert!(
        entries
            .iter()
            .all(|e| e["variants"]["waiter"] == "sbx-scale"),
        "only the variant processed the tenant's records: {entries:#?}"
    );
    eprintln!(
        "scale-out: 40 answered, {} ledger entries ({} processed twice after the rebalance)",
        entries.len(),
        entries.len() - processed.len()
    );
    stack.stop().await;
}

/// Tenancy under change: mappings re-written and deleted, the waiter
/// variant scaled out, stopped instance by instance and restarted, all under
/// steady tenant traffic. Every request is answered, each by the variants
/// the routes at its stamped version named (or the baseline standing in
/// for a variant that went down after it), and the ledger shows no request
/// processed by two consumer groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenancy_holds_while_mappings_churn_and_a_variant_scales_out_stops_and_returns() {
    let mut stack = Stack::start(true).await;
    let options = demo::churn::ChurnOptions {
        requests: 240,
        rate: 30.0,
        // Instances leave gracefully; `churn --kill` measures real crashes
        // (variant waiters as processes, SIGKILL).
        kill: false,
        ..Default::default()
    };
    let report = demo::churn::run(&mut stack.inner, &options).await.unwrap();
    eprintln!("churn: {report:#?}");
    // No request lost or answered by a variant its routes did not name,
    // none processed by two consumer groups.
    assert!(report.held(), "{report:#?}");
    assert_eq!(report.answered, report.sent, "{report:#?}");
    stack.stop().await;
}

/// `GET /tenants/{id}` tells what a tenant's variants did (live, instances,
/// group, lag, processed), and deleting the tenant drains its variants'
/// records before unmapping, saying so in its answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_status_shows_its_variants_work_and_deleting_it_drains_first() {
    let mut stack = Stack::start(true).await;
    stack.start_variant("sbx-status", false, true).await;
    stack.map("status", &[("waiter", "sbx-status")]).await;
    for i in 0..3 {
        let reply = stack.send(Some("status"), &format!("status-{i}")).await;
        assert_eq!(hops(&reply)[2], "waiter=sbx-status");
    }
    let http = &stack.inner.http;
    let url = format!("{}/tenants/status", stack.inner.registry);
    // Counts ride on the next lease renewal (every second by default).
    let status = testkit::eventually("the counts reach the registry", DEADLINE, || async {
        let status: serde_json::Value = http.get(&url).sent().await.json().await.ok()?;
        (status["variants"][0]["processed"] == 3).then_some(status)
    })
    .await
    .unwrap();
    let variant = &status["variants"][0];
    assert_eq!(variant["service"], "waiter", "{status}");
    assert_eq!(variant["live"], true, "{status}");
    assert_eq!(variant["instances"], 1, "{status}");
    assert!(variant["last_heartbeat_ms"].as_u64().is_some(), "{status}");
    assert!(
        variant["group"].as_str().unwrap().ends_with("-sbx-status"),
        "{status}"
    );
    assert!(
        variant["lag"].as_i64().is_some_and(|lag| lag >= 0),
        "{status}"
    );

    let deleted: serde_json::Value = http
        .delete(&url)
        .bearer_auth(helpers::TOKEN)
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["tenant"], "status", "{deleted}");
    assert_eq!(deleted["drain"], "drained", "{deleted}");
    assert_eq!(
        http.get(&url).sent().await.status(),
        404,
        "the tenant is gone once the delete answers"
    );
    stack.stop().await;
}

/// What a Prometheus user scrapes: every service's `/metrics` passes
/// `promtool check metrics` (HELP on every metric, valid names and types)
/// and serves that service's registry only, with its HTTP server durations
/// and the counters a dashboard queries at zero before their first event.
#[tokio::test(flavor = "multi_thread")]
async fn every_services_metrics_pass_promtool_with_http_durations_and_counters_at_zero() {
    if !testkit::tool_available("promtool", "prometheus") {
        return;
    }
    let mut stack = Stack::start(true).await;
    stack.start_variant("sbx-123", true, true).await;
    stack
        .map("123", &[("dispatch", "sbx-123"), ("waiter", "sbx-123")])
        .await;
    stack.send(Some("123"), "metrics-tenant").await;
    stack.send(None, "metrics-baseline").await;

    // One process, one registry per service: each port serves its own
    // service's metrics (and the shared libraries'), as deployed.
    let services = [
        (
            "gateway",
            &stack.gateway,
            "gateway_unregistered_variant_total 0",
        ),
        (
            "tenants",
            &stack.registry,
            "tenants_deleted_total{drain=\"timed_out\"} 0",
        ),
        ("ledger", &stack.ledger, "ledger_entries_dropped_total 0"),
    ];
    for (service, base, zero) in services {
        let exposition = stack
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap();
        let checked = promtool_check(&exposition);
        assert!(checked.is_empty(), "{base}/metrics: {checked}");
        let durations = |of: &str| {
            let series = format!("http_server_request_duration_seconds_count{{service=\"{of}\"");
            exposition.lines().any(|l| l.starts_with(&series))
        };
        assert!(durations(service), "{service}: no HTTP server durations");
        for other in ["gateway", "dispatch", "ledger", "tenants"] {
            assert!(
                other == service || !durations(other),
                "{service}'s /metrics serves {other}'s series"
            );
        }
        for expected in [zero, "route_table_version_waits_expired_total 0"] {
            assert!(
                exposition.lines().any(|l| l == expected),
                "{service}'s /metrics lacks `{expected}`"
            );
        }
        assert!(
            !exposition.contains("waiter_") && !exposition.contains("dispatch_"),
            "{service}'s /metrics serves another service's families"
        );
    }
    stack.stop().await;
}

/// `promtool check metrics` on `exposition`: what it complains about
/// (empty when it is clean).
fn promtool_check(exposition: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match output.status.success() && complaints.trim().is_empty() {
        true => String::new(),
        false => format!("promtool: {}\n{complaints}", output.status),
    }
}
