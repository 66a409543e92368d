//! The load generator against the embedded broker: a real waiter, no
//! waiter at all, and a responder that answers twice.

use std::process::Command;
use std::time::Duration;

use futures_lite::StreamExt;
use load::{Config, LoadModel, WaitSpec};
use protocol::topics::RequestTopics;
use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use testkit::TestKafka;
use tokio_util::sync::CancellationToken;
use waiter::RunningWaiter;

async fn topics(kafka: &TestKafka) -> RequestTopics {
    kafka.fresh_topics(2).await.unwrap()
}

fn config(kafka: &TestKafka, topics: &RequestTopics) -> Config {
    let mut config = Config::new(kafka.bootstrap_servers());
    config.request_topic = topics.requests.clone();
    config.response_topic = topics.replies.clone();
    config.model = LoadModel::Open { rate: 200.0 };
    config.duration = Duration::from_secs(1);
    config.wait = WaitSpec::Uniform(1, 5);
    config.timeout = Duration::from_secs(10);
    config
}

async fn start_waiter(kafka: &TestKafka, topics: &RequestTopics) -> RunningWaiter {
    testkit::telemetry();
    let settings =
        waiter::Settings::in_process(kafka.settings(), topics, &testkit::unique_name("waiter"));
    RunningWaiter::start_assigned(settings, Duration::from_secs(30))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_add_up_for_a_short_run_against_the_waiter() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let waiter = start_waiter(&kafka, &topics).await;
    let report = load::run(config(&kafka, &topics)).await.unwrap();
    let c = &report.counts;
    assert!(c.add_up(), "{c:?}");
    assert_eq!(c.attempted, 200, "one second at 200/s");
    assert_eq!(c.received, c.sent);
    assert_eq!((c.timed_out, c.duplicates, c.unexpected), (0, 0, 0));
    assert_eq!(report.latency.count, 200);
    assert!(report.latency.p50_ms >= 1.0, "latency includes the wait");
    assert_eq!(
        report.hops.queue.count, 200,
        "the waiter's timing headers were read"
    );
    assert!(report.violations(&["errors=0".parse().unwrap()]).is_empty());
    waiter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_waiter_shows_up_as_timeouts() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let mut config = config(&kafka, &topics);
    config.model = LoadModel::Open { rate: 50.0 };
    config.timeout = Duration::from_millis(300);
    let report = load::run(config).await.unwrap();
    let c = &report.counts;
    assert!(c.add_up(), "{c:?}");
    assert_eq!(c.received, 0);
    assert_eq!(c.timed_out, c.sent);
    assert!(c.sent > 0);
    let missed = report.violations(&["errors=0".parse().unwrap(), "p99=1s".parse().unwrap()]);
    assert_eq!(missed.len(), 2, "{missed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_responder_that_replies_twice_shows_up_as_duplicates() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    // The test double: echo every request's correlation to the reply topic, twice.
    let requests = testkit::reader(&kafka, &[&topics.requests]).await;
    let producer = kafka.producer();
    let replies = topics.replies.clone();
    let stop = CancellationToken::new();
    let double = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut stream = requests.stream();
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => return,
                    next = stream.next() => next.unwrap().unwrap(),
                };
                let correlation = propagation::kafka_header(message.headers(), "correlation")
                    .unwrap()
                    .to_string();
                for _ in 0..2 {
                    let headers = OwnedHeaders::new().insert(Header {
                        key: "correlation",
                        value: Some(&correlation),
                    });
                    producer
                        .send(
                            FutureRecord::<str, str>::to(&replies)
                                .payload("{}")
                                .headers(headers),
                            Duration::from_secs(5),
                        )
                        .await
                        .unwrap();
                }
            }
        }
    });
    let mut config = config(&kafka, &topics);
    config.model = LoadModel::Closed { users: 4 };
    let report = load::run(config).await.unwrap();
    let c = &report.counts;
    assert!(c.add_up(), "{c:?}");
    assert!(c.received > 0);
    // Every answered request's second reply arrives before or after the run
    // ends; the ones that arrived are all counted as duplicates.
    assert!(c.duplicates > 0 && c.duplicates <= c.received, "{c:?}");
    assert_eq!(c.unexpected, 0);
    stop.cancel();
    double.await.unwrap();
}

#[test]
fn the_binary_writes_json_and_exits_2_on_a_missed_objective() {
    let dir = std::env::temp_dir().join(testkit::unique_name("load-json"));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    let output = Command::new(env!("CARGO_BIN_EXE_load"))
        .args([
            "--embedded",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--wait-ms",
            "1",
            "--quiet",
        ])
        .args(["--slo", "p50=1us", "--slo", "errors=0"])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SLO missed: p50 latency"), "{stdout}");
    assert!(!stdout.contains("SLO missed: errors"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["counts"]["attempted"], 100);
    assert_eq!(report["counts"]["received"], 100);
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(page.matches("<svg").count(), 4, "four plots");
    assert!(
        !page.contains("<script") && !page.contains("http"),
        "self-contained, no network"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--slo", "p98=1ms"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "clap's usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown objective"));
    let output = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--wait-ms", "50..10"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("lower bound"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_target_counts_answers_refusals_and_timeouts() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // A stand-in gateway: every fifth request is refused, every seventh hangs.
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let router = axum::Router::new().route(
        "/wait",
        axum::routing::post(move || {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 7 == 6 {
                    std::future::pending::<()>().await;
                }
                if n % 5 == 4 {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no")
                } else {
                    (axum::http::StatusCode::OK, "{}")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mut config = Config::new("unused:9092");
    config.target = load::Target::Http { url };
    config.model = LoadModel::Closed { users: 5 };
    config.duration = Duration::from_millis(500);
    config.timeout = Duration::from_millis(200);
    let report = load::run(config).await.unwrap();
    let c = &report.counts;
    assert!(c.add_up(), "{c:?}");
    assert!(
        c.received > 0 && c.timed_out > 0 && c.error_replies > 0,
        "{c:?}"
    );
    assert_eq!(c.send_failed, 0);
    assert!(report.target.starts_with("http "));
}

#[tokio::test(flavor = "multi_thread")]
async fn traced_requests_are_root_spans_the_application_continues() {
    let telemetry = testkit::telemetry();
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let waiter = start_waiter(&kafka, &topics).await;
    let mut config = config(&kafka, &topics);
    config.model = LoadModel::Closed { users: 1 };
    config.duration = Duration::from_millis(100);
    config.trace = true;
    let report = load::run(config).await.unwrap();
    assert!(report.counts.received > 0);
    let root = telemetry
        .spans()
        .snapshot()
        .into_iter()
        .find(|s| s.name == "load.request")
        .expect("a request span");
    assert_eq!(
        root.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "a root span"
    );
    assert_eq!(root.span_kind, opentelemetry::trace::SpanKind::Internal);
    let events: Vec<&str> = root.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(events, ["reply.received"]);
    let trace = telemetry
        .spans()
        .wait_for_trace(
            root.span_context.trace_id(),
            Duration::from_secs(10),
            |spans| spans.iter().any(|s| s.name.starts_with("process ")),
        )
        .await
        .unwrap();
    // The record is produced in a PRODUCER `send` child of the round trip,
    // acknowledged with its partition and offset.
    let send = trace
        .iter()
        .find(|s| s.parent_span_id == root.span_context.span_id())
        .expect("a send span under the request");
    assert_eq!(send.name, format!("send {}", topics.requests));
    assert_eq!(send.span_kind, opentelemetry::trace::SpanKind::Producer);
    let attribute = |key: &str| {
        send.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(
        attribute("messaging.operation.name"),
        Some(opentelemetry::Value::from("send"))
    );
    assert!(
        matches!(
            attribute("messaging.destination.partition.id"),
            Some(opentelemetry::Value::String(_))
        ),
        "{:?}",
        send.attributes
    );
    assert!(matches!(
        attribute("messaging.kafka.offset"),
        Some(opentelemetry::Value::I64(_))
    ));
    let process = trace
        .iter()
        .find(|s| s.name.starts_with("process "))
        .unwrap();
    assert_eq!(
        process.parent_span_id,
        send.span_context.span_id(),
        "the waiter continues the generator's trace from its send"
    );
    waiter.stop().await.unwrap();
}
