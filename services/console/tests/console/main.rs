//! The console's API on a real HTTP server on port 0: what a page or a
//! collector sends it, good and bad. The page itself is tested in a real
//! browser with the whole stack (`demo/tests/console`).

use std::time::Duration;

use console::Application;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;
use service_kit::{RunningService, ServiceApp};

const DEADLINE: Duration = Duration::from_secs(10);

/// A console whose gateway and registry are a port nothing listens on.
async fn console() -> RunningService {
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let settings = console::Settings::in_process(&nowhere, &nowhere, vec![]);
    RunningService::spawn(Application::build(settings).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_a_dead_gateway_is_reported() {
    testkit::telemetry();
    let console = console().await;
    let base = console.url();
    let http = reqwest::Client::new();
    let send = |body: serde_json::Value| http.post(format!("{base}/api/send")).json(&body).send();
    for (body, expected) in [
        (
            json!({"wait_ms": 1, "count": 0}),
            "`count` must be 1 to 500",
        ),
        (json!({"wait_ms": 1, "rate": 0}), "`rate` must be above 0"),
        (json!({"wait_ms": 1, "tenant": "a b"}), "`tenant` may hold"),
        (
            json!({"wait_ms": 1, "count": 100, "rate": 1}),
            "take longer than 30 s",
        ),
        (json!({"wait": 1}), "unknown field"),
    ] {
        let response = send(body.clone()).await.unwrap();
        assert!(
            response.status().is_client_error(),
            "{body}: {}",
            response.status()
        );
        let text = response.text().await.unwrap();
        assert!(text.contains(expected), "{body}: {text}");
    }
    let summary: serde_json::Value = send(json!({"wait_ms": 1, "tenant": "123"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(summary["sent"], 1);
    assert_eq!(summary["failed"], 1, "{summary}");
    assert!(
        summary["first_error"]
            .as_str()
            .unwrap()
            .contains("gateway unreachable"),
        "{summary}"
    );

    let other = http
        .get(format!("{base}/api/registry/admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "only tenants and variants pass through"
    );
    let down = http
        .get(format!("{base}/api/registry/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 502);
    assert!(
        down.text()
            .await
            .unwrap()
            .contains("registry is unreachable")
    );
    let garbage = http
        .post(format!("{base}/v1/traces"))
        .body(b"not protobuf".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    console.stop().await.unwrap();
}

/// What a collector exports to the console reaches an open page as a
/// `span` event, typed as the page reads it.
#[tokio::test(flavor = "multi_thread")]
async fn spans_posted_over_otlp_reach_an_open_page() {
    let (console, base, http, mut events) = console_with_an_open_page().await;

    let request = one_span_export(0xcd);
    let posted = http
        .post(format!("{base}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);

    let event = span_events(&mut events, 1).await.remove(0);
    assert_eq!(event["trace_id"], "ab".repeat(16));
    assert_eq!(event["service"], "waiter", "the exporter's service.name");
    assert_eq!(event["kind"], "internal");
    assert_eq!(event["skip_reason"], "routed_to_variant");
    assert_eq!(event["duration_us"], 2000);
    assert_eq!(event["tenant"], "123");
    console.stop().await.unwrap();
}

/// An export of one span, `span_id` repeated, as the waiter would send it.
fn one_span_export(span_id: u8) -> ExportTraceServiceRequest {
    let string = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    };
    let span = Span {
        trace_id: vec![0xab; 16],
        span_id: vec![span_id; 8],
        name: "skip Waiter-Requests".into(),
        kind: 1,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_002_000_000,
        attributes: vec![
            string("variant", "baseline"),
            string("tenant", "123"),
            string("waiter_bus.skip_reason", "routed_to_variant"),
        ],
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "waiter")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// What real OTLP/HTTP exporters send (the Collector's `otlphttp`
/// compresses with gzip by default; some send JSON): every form reaches the
/// page, each answered in its own encoding; what is not OTLP gets the
/// specification's 400 or 415. Before, a gzip body was a 400 and the
/// compose stack's live flow stayed empty.
#[tokio::test(flavor = "multi_thread")]
async fn gzip_protobuf_and_json_exports_all_reach_the_page() {
    let (console, base, http, mut events) = console_with_an_open_page().await;
    let protobuf = |id| one_span_export(id).encode_to_vec();
    let json = |id| serde_json::to_vec(&one_span_export(id)).unwrap();
    let forms: [(&str, Option<&str>, Vec<u8>, u8); 4] = [
        (
            "application/x-protobuf",
            Some("gzip"),
            gzip(&protobuf(1)),
            1,
        ),
        ("application/json", None, json(2), 2),
        ("application/json", Some("gzip"), gzip(&json(3)), 3),
        ("application/x-protobuf", None, protobuf(4), 4),
    ];
    for (content_type, encoding, body, id) in forms {
        let mut post = http
            .post(format!("{base}/v1/traces"))
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = encoding {
            post = post.header("content-encoding", encoding);
        }
        let answer = post.send().await.unwrap();
        assert_eq!(
            answer.status(),
            200,
            "{content_type} {encoding:?} (span {id})"
        );
        assert_eq!(
            answer.headers()["content-type"],
            content_type,
            "answered in the request's encoding"
        );
    }
    let seen: std::collections::BTreeSet<String> = span_events(&mut events, 4)
        .await
        .iter()
        .map(|event| event["span_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen.len(), 4, "each export's span, once: {seen:?}");

    let malformed = http
        .post(format!("{base}/v1/traces"))
        .header("content-type", "application/json")
        .body(r#"{"resourceSpans": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let status: serde_json::Value = malformed.json().await.unwrap();
    assert_eq!(status["code"], 3, "INVALID_ARGUMENT: {status}");
    assert!(
        status["message"].as_str().unwrap().starts_with("JSON:"),
        "{status}"
    );
    let other_type = http
        .post(format!("{base}/v1/traces"))
        .header("content-type", "text/plain")
        .body("spans")
        .send()
        .await
        .unwrap();
    assert_eq!(other_type.status(), 415);
    let other_encoding = http
        .post(format!("{base}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(protobuf(5))
        .send()
        .await
        .unwrap();
    assert_eq!(other_encoding.status(), 415);
    console.stop().await.unwrap();
}

/// A console, its URL, a client, and its `/events` stream opened as a page
/// opens it.
async fn console_with_an_open_page() -> (RunningService, String, reqwest::Client, reqwest::Response)
{
    testkit::telemetry();
    let console = console().await;
    let base = console.url();
    let http = reqwest::Client::new();
    let events = http.get(format!("{base}/events")).send().await.unwrap();
    (console, base, http, events)
}

/// The first `count` span events the page receives of the exports these
/// tests post (service `waiter`; a span of the console's own is not one).
async fn span_events(events: &mut reqwest::Response, count: usize) -> Vec<serde_json::Value> {
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            let received: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .filter(|data| data.starts_with('{'))
                .map(|data| serde_json::from_str::<serde_json::Value>(data).unwrap())
                .filter(|event| event["service"] == "waiter")
                .collect();
            if received.len() >= count {
                return received;
            }
            let chunk = events
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} span events reach the page in time"))
}
