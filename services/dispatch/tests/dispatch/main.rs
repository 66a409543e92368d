//! Dispatch against the embedded broker and a real waiter, both in process.

mod scale_out;

use std::time::Duration;
use testkit::http::RequestExt;

use dispatch::{Application, DispatchResponse, Settings};
use protocol::topics::RequestTopics;
use serde_json::json;
use service_kit::{RunningService, ServiceApp};
use testkit::TestKafka;
use waiter::RunningWaiter;

async fn topics(kafka: &TestKafka) -> RequestTopics {
    kafka.fresh_topics(2).await.unwrap()
}

async fn start_dispatch(
    kafka: &TestKafka,
    topics: &RequestTopics,
    reply_timeout: Duration,
) -> RunningService {
    RunningService::spawn_open(build_dispatch(kafka, topics, reply_timeout).await).await
}

/// A dispatch that waits 300 ms for a reply, with no waiter behind it.
async fn impatient_dispatch() -> (TestKafka, RunningService) {
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let dispatch = start_dispatch(&kafka, &topics, Duration::from_millis(300)).await;
    (kafka, dispatch)
}

async fn start_waiter(kafka: &TestKafka, topics: &RequestTopics) -> RunningWaiter {
    let settings =
        waiter::Settings::in_process(kafka.settings(), topics, &testkit::unique_name("waiter"));
    RunningWaiter::start(settings).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_answered_with_the_waiters_reply() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let waiter = start_waiter(&kafka, &topics).await;
    let dispatch = start_dispatch(&kafka, &topics, Duration::from_secs(20)).await;
    let base = dispatch.url();
    let response = reqwest::Client::new()
        .post(format!("{base}/wait"))
        .header("waiter-bus-hops", "gateway=evil")
        .json(&json!({"name": "Ada", "wait_ms": 20}))
        .sent()
        .await;
    assert_eq!(response.status(), 200);
    let body: DispatchResponse = response.json().await.unwrap();
    assert_eq!(body.reply.name, "Ada");
    assert_eq!(body.reply.correlation, body.correlation);
    assert_eq!(body.dispatch_variant, "baseline");
    assert!(body.reply.waited_ms >= 20);
    // The request on Kafka names only the hops dispatch vouches for.
    let reader = testkit::reader(&kafka, &[&topics.requests]).await;
    let mut requests = reader.stream();
    let request = futures_lite::StreamExt::next(&mut requests)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        protocol::headers::last_str(rdkafka::Message::headers(&request), "waiter-bus-hops"),
        Some("dispatch=baseline"),
        "a caller's hops are not believed"
    );
    dispatch.stop().await.unwrap();
    waiter.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_reply_in_time_is_a_504_that_says_so() {
    let (_kafka, dispatch) = impatient_dispatch().await;
    let base = dispatch.url();
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{base}/wait"))
        .json(&json!({"name": "Nobody"}))
        .sent()
        .await;
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no reply from the waiter within 300 ms"),
        "{body}"
    );
    dispatch.stop().await.unwrap();
}

/// A caller's own deadline, when earlier than dispatch's reply timeout,
/// is the one dispatch waits to and passes on; a malformed one is a 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_callers_earlier_deadline_shortens_the_wait_and_a_malformed_one_is_refused() {
    let (_kafka, dispatch) = impatient_dispatch().await;
    let url = format!("{}/wait", dispatch.url());
    let http = reqwest::Client::new();
    let deadline = protocol::Deadline::after(Duration::from_millis(100));
    let response = http
        .post(&url)
        .header(protocol::headers::DEADLINE, deadline.to_header())
        .json(&json!({"name": "Hurried"}))
        .sent()
        .await;
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    let waited: u64 = error
        .strip_prefix("no reply from the waiter within ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{error}"));
    assert!(
        waited <= 100,
        "the caller's 100 ms, not dispatch's 300: {error}"
    );

    let refused = http
        .post(&url)
        .header(protocol::headers::DEADLINE, "tomorrow")
        .json(&json!({"name": "Vague"}))
        .sent()
        .await;
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("waiter-bus-deadline"),
        "{body}"
    );
    dispatch.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_are_refused_with_a_message() {
    let (_kafka, dispatch) = impatient_dispatch().await;
    let base = dispatch.url();
    let client = reqwest::Client::new();
    let malformed = client
        .post(format!("{base}/wait"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .sent()
        .await;
    assert_eq!(malformed.status(), 400);
    let post = |body: serde_json::Value| client.post(format!("{base}/wait")).json(&body).sent();
    let refused = |status: u16, body: serde_json::Value, message: &'static str| {
        let response = post(body);
        async move {
            let response = response.await;
            assert_eq!(response.status(), status, "{message}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], message);
        }
    };
    refused(400, json!({"name": " "}), "`name` must not be empty").await;
    // Too large for the reply to carry: refused before anything is published.
    refused(
        413,
        json!({"name": "x".repeat(2000)}),
        "`name` is longer than 1024 bytes",
    )
    .await;
    // Just over the 64 KB limit: a body the loopback socket takes whole, so
    // the client has written it all before the server answers 413 and
    // closes. (At 200 KB the client could still be writing when the
    // connection closed, and saw a reset instead of the 413.) On a client
    // of its own: the server closes that connection, and a pooled client
    // could send the next request down it before noticing.
    let huge_body = reqwest::Client::new()
        .post(format!("{base}/wait"))
        .json(&json!({"name": "x", "padding": "p".repeat(70_000)}))
        .sent()
        .await;
    assert_eq!(huge_body.status(), 413, "over the body limit");
    // A routes version that is not a number is refused, not guessed at.
    let bad_version = client
        .post(format!("{base}/wait"))
        .header(protocol::headers::ROUTES_VERSION, "seven")
        .json(&json!({"name": "x"}))
        .sent()
        .await;
    assert_eq!(bad_version.status(), 400);
    let body: serde_json::Value = bad_version.json().await.unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("waiter-bus-routes-version"), "{error}");
    dispatch.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_dispatch_instance_completes_only_its_own_requests() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let waiter = start_waiter(&kafka, &topics).await;
    let dispatches = [
        start_dispatch(&kafka, &topics, Duration::from_secs(20)).await,
        start_dispatch(&kafka, &topics, Duration::from_secs(20)).await,
    ];
    let client = reqwest::Client::new();
    let mut calls = Vec::new();
    for i in 0..20 {
        let base = dispatches[i % 2].url();
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let name = format!("caller-{i}");
            let response: DispatchResponse = client
                .post(format!("{base}/wait"))
                .json(&json!({"name": name, "wait_ms": 5}))
                .fetch_json()
                .await;
            assert_eq!(response.reply.name, name, "each caller gets its own reply");
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    for dispatch in dispatches {
        dispatch.stop().await.unwrap();
    }
    waiter.stop().await.unwrap();
}

async fn build_dispatch(
    kafka: &TestKafka,
    topics: &RequestTopics,
    reply_timeout: Duration,
) -> Application {
    testkit::telemetry();
    let mut settings = Settings::defaults_with(&kafka.settings());
    settings.dispatch.request_topic = topics.requests.clone();
    settings.dispatch.response_topic = topics.replies.clone();
    settings.dispatch.reply_timeout = reply_timeout;
    Application::build(settings).await.unwrap()
}

/// A waiter and a dispatch whose calls in flight can be counted.
struct Tracked {
    _kafka: TestKafka,
    waiter: RunningWaiter,
    base: String,
    pending: dispatch::PendingRequests,
    dispatch: RunningService,
}

async fn tracked() -> Tracked {
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let waiter = start_waiter(&kafka, &topics).await;
    let app = build_dispatch(&kafka, &topics, Duration::from_secs(20)).await;
    let pending = app.pending_requests();
    let dispatch = RunningService::spawn_open(app).await;
    Tracked {
        base: dispatch.url(),
        pending,
        dispatch,
        waiter,
        _kafka: kafka,
    }
}

/// Waits until `count` calls are waiting for their replies.
async fn pending_becomes(pending: &dispatch::PendingRequests, count: usize, within: Duration) {
    testkit::eventually(&format!("{count} calls pending"), within, || {
        std::future::ready((pending.count() == count).then_some(()))
    })
    .await
    .unwrap();
}

impl Tracked {
    /// Stops dispatch (it must drain cleanly), then the waiter.
    async fn stop(self) {
        self.dispatch
            .stop()
            .await
            .expect("dispatch stops cleanly after draining");
        self.waiter.stop().await.unwrap();
    }
}

/// A graceful stop lets the calls in flight get their replies: the reply
/// reader stops after the HTTP server has finished them, not with it (when
/// it stopped with it, every call in flight ended in a 504).
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_answers_the_calls_in_flight() {
    let tracked = tracked().await;
    let (base, pending) = (tracked.base.clone(), tracked.pending.clone());
    let call = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{base}/wait"))
            .json(&json!({"name": "in-flight", "wait_ms": 500}))
            .send(),
    );
    pending_becomes(&pending, 1, Duration::from_secs(10)).await;
    tracked.dispatch.begin_stop();
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let body: DispatchResponse = response.json().await.unwrap();
    assert_eq!(body.reply.name, "in-flight");
    tracked.stop().await;
}

/// A client that gives up mid-wait leaves nothing behind: its pending entry
/// goes with the dropped call, not when (or if) the reply comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_leaves_no_pending_request() {
    let tracked = tracked().await;
    let (base, pending) = (tracked.base.clone(), tracked.pending.clone());
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{base}/wait"))
        .json(&json!({"name": "impatient", "wait_ms": 5_000}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out first");
    // The reply comes after 5 s; the entry must be gone long before.
    pending_becomes(&pending, 0, Duration::from_secs(2)).await;
    tracked.stop().await;
}

/// A reply that arrives after its call got a 504 is found where a user
/// looks: a CONSUMER span in the request's own trace, marked late, and a
/// count in `dispatch_replies_late_total`.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_reply_shows_up_in_its_requests_trace() {
    let telemetry = testkit::telemetry();
    let kafka = TestKafka::start().await.unwrap();
    let topics = topics(&kafka).await;
    let dispatch = start_dispatch(&kafka, &topics, Duration::from_millis(300)).await;
    let base = dispatch.url();
    let response = reqwest::Client::new()
        .post(format!("{base}/wait"))
        .json(&json!({"name": "Late"}))
        .sent()
        .await;
    assert_eq!(response.status(), 504);

    // The test is the slow waiter: it answers the request now, continuing
    // the request's trace as a waiter would.
    let reader = testkit::reader(&kafka, &[&topics.requests]).await;
    let mut requests = reader.stream();
    let request = futures_lite::StreamExt::next(&mut requests)
        .await
        .unwrap()
        .unwrap();
    let request_headers = rdkafka::Message::headers(&request);
    let correlation = protocol::headers::last_str(request_headers, "correlation")
        .unwrap()
        .to_string();
    let traceparent = protocol::headers::last_str(request_headers, "traceparent")
        .unwrap()
        .to_string();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_string();
    let reply_traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "correlation",
            value: Some(&correlation),
        })
        .insert(rdkafka::message::Header {
            key: "traceparent",
            value: Some(&reply_traceparent),
        });
    kafka
        .producer()
        .send(
            rdkafka::producer::FutureRecord::<str, str>::to(&topics.replies)
                .key(&correlation)
                .payload("{}")
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let trace = opentelemetry::trace::TraceId::from_hex(&trace_id).unwrap();
    let spans = telemetry
        .spans()
        .wait_for_trace(trace, Duration::from_secs(10), |spans| {
            spans
                .iter()
                .any(|s| s.span_kind == opentelemetry::trace::SpanKind::Consumer)
        })
        .await
        .unwrap();
    let reply = spans
        .iter()
        .find(|s| s.span_kind == opentelemetry::trace::SpanKind::Consumer)
        .unwrap();
    assert_eq!(reply.name, format!("process {}", topics.replies));
    assert!(
        reply
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "waiter_bus.reply.late" && kv.value.as_str() == "true"),
        "{:?}",
        reply.attributes
    );
    assert!(
        spans
            .iter()
            .any(|s| s.events.iter().any(|e| e.name == "reply.timed_out")),
        "the call's SERVER span says it timed out"
    );
    let metrics = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .sent()
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dispatch_replies_late_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    dispatch.stop().await.unwrap();
}
