//! Trace context and tenant baggage across HTTP → Kafka → HTTP, against the
//! embedded broker, real HTTP servers on port 0 and real spans.

mod helpers;

use std::time::Duration;
use testkit::http::RequestExt;

use helpers::{Arrival, start_relay};
use opentelemetry::KeyValue;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanKind, TraceContextExt};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use telemetry::SpanData;
use testkit::TestKafka;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const DEADLINE: Duration = Duration::from_secs(20);

async fn next_arrival(relay: &mut helpers::Relay) -> Arrival {
    tokio::time::timeout(DEADLINE, relay.arrivals.recv())
        .await
        .expect("the far end was reached in time")
        .expect("the relay is running")
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_id_and_the_tenant_cross_http_kafka_http() {
    let telemetry = testkit::telemetry();
    let kafka = TestKafka::start().await.unwrap();
    let mut relay = start_relay(&kafka).await;

    let root = tracing::info_span!("client", otel.kind = "client", service = "test-client");
    let _ = root
        .set_parent(opentelemetry::Context::new().with_baggage([KeyValue::new("tenant", "123")]));
    let trace_id = root.context().span().span_context().trace_id();
    let mut headers = axum::http::HeaderMap::new();
    propagation::inject_http(&root.context(), &mut headers);
    let status = reqwest::Client::new()
        .post(format!("http://{}/send", relay.edge))
        .headers(headers)
        .body("hello")
        .sent()
        .await
        .status();
    assert_eq!(status, 202);

    let arrival = next_arrival(&mut relay).await;
    assert_eq!(
        arrival.trace_id, trace_id,
        "the far end continues the client's trace"
    );
    assert_eq!(
        arrival.tenant.as_deref(),
        Some("123"),
        "baggage crossed Kafka"
    );
    assert_eq!(arrival.body, "hello");
    drop(root);

    // Every hop made its span in the one trace, each carrying the tenant, and
    // the consumer's span is a child of the producer's.
    let spans = telemetry
        .spans()
        .wait_for_trace(trace_id, DEADLINE, |spans| {
            spans
                .iter()
                .filter(|s| s.span_kind == SpanKind::Server)
                .count()
                == 2
                && spans.iter().any(|s| s.span_kind == SpanKind::Consumer)
                && spans.iter().any(|s| s.name == "client")
        })
        .await
        .expect("all spans of the trace finished");
    for span in &spans {
        assert_eq!(
            attribute(span, "tenant").as_deref(),
            Some("123"),
            "span {} carries the tenant",
            span.name
        );
    }
    let publish = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Producer)
        .unwrap();
    let process = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer)
        .unwrap();
    assert_eq!(process.parent_span_id, publish.span_context.span_id());
    assert!(
        process.parent_span_is_remote,
        "the consumer's parent came over Kafka"
    );
    let services: Vec<String> = spans
        .iter()
        .filter_map(|s| attribute(s, "service"))
        .collect();
    for expected in ["test-client", "edge", "middle", "far-end"] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} in {services:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_http_headers_are_dropped_and_counted_not_fatal() {
    testkit::telemetry();
    let kafka = TestKafka::start().await.unwrap();
    let mut relay = start_relay(&kafka).await;
    let too_many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
    let status = reqwest::Client::new()
        .post(format!("http://{}/send", relay.edge))
        .header("traceparent", "00-not-a-trace-01")
        .header("baggage", too_many.join(",") + ",tenant=123")
        .body("still served")
        .sent()
        .await
        .status();
    assert_eq!(status, 202);
    let arrival = next_arrival(&mut relay).await;
    assert_eq!(arrival.body, "still served");
    assert_eq!(arrival.tenant, None, "oversized baggage is dropped whole");
    assert!(
        arrival.trace_id != opentelemetry::trace::TraceId::INVALID,
        "a new trace was started"
    );

    let metrics = reqwest::get(format!("http://{}/metrics", relay.edge))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["too_many_members", "malformed"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("propagation_headers_rejected_total")
                    && l.contains("carrier=\"http\"")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason} counted in:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_kafka_headers_are_dropped_and_the_record_still_flows() {
    testkit::telemetry();
    let kafka = TestKafka::start().await.unwrap();
    let topic = testkit::unique_name("raw");
    kafka.create_topic(&topic, 1).await.unwrap();
    let producer = kafka.producer();
    let consumer = kafka.consumer(&testkit::unique_name("raw-group"));
    rdkafka::consumer::Consumer::subscribe(&consumer, &[&topic]).unwrap();

    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: Some(&b"\xff\xfe"[..]),
        })
        .insert(Header {
            key: "baggage",
            value: Some(&b"tenant=\xff"[..]),
        });
    producer
        .send(
            FutureRecord::to(&topic)
                .payload("x")
                .key("k")
                .headers(headers),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let message = tokio::time::timeout(DEADLINE, consumer.recv())
        .await
        .expect("record consumed in time")
        .unwrap();
    let cx = propagation::extract_kafka(rdkafka::Message::headers(&message));
    assert!(!cx.span().span_context().is_valid());
    assert_eq!(propagation::tenant(&cx), None);
    let metrics = telemetry::render_metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("propagation_headers_rejected_total")
                && l.contains("carrier=\"kafka\"")
                && l.contains("reason=\"not_utf8\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_renders_prometheus_text() {
    testkit::telemetry();
    metrics::counter!("testkit_probe_total", "kind" => "probe").increment(3);
    let router =
        axum::Router::new().route("/metrics", axum::routing::get(telemetry::metrics_handler));
    let addr = helpers::serve(router).await;
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = response.text().await.unwrap();
    assert!(
        body.contains("testkit_probe_total{kind=\"probe\"} 3"),
        "{body}"
    );
}
