//! The ledger (service D): every wait recorded, and a ledger that hangs or fails costs no reply.

use super::*;

/// A stand-in ledger on port 0 that reports what it was sent.
async fn recording_ledger() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, serde_json::Value)>,
) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let router = axum::Router::new().route(
        "/records",
        post(
            move |headers: axum::http::HeaderMap,
                  axum::Json(body): axum::Json<serde_json::Value>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body));
                    axum::http::StatusCode::CREATED
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_completed_wait_is_posted_to_the_ledger_in_the_requests_trace() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let (ledger_url, mut posted) = recording_ledger().await;
    let mut s = settings(&kafka, &topics);
    s.ledger.url = Some(ledger_url);
    let waiter = spawn_waiter(s).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;

    let trace_id = client.send_json("ledgered", 5).await;
    let replies = client.collect(|r| !r.is_empty()).await;
    assert_eq!(reply_body(&replies[0]).ledger_recorded, Some(true));
    let (headers, entry) = tokio::time::timeout(DEADLINE, posted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry["request_id"], "ledgered");
    assert_eq!(entry["trace_id"], trace_id.as_str());
    assert_eq!(entry["variants"]["waiter"], waiter.variant.as_str());
    assert!(entry["waited_ms"].as_u64().unwrap() >= 5);
    let traceparent = headers["traceparent"].to_str().unwrap();
    assert_eq!(
        &traceparent[3..35],
        trace_id,
        "the ledger call continues the trace"
    );
    waiter.stop().await;
}

/// A ledger that accepts every request and never answers; its base URL.
async fn hanging_ledger() -> String {
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", hanging.local_addr().unwrap());
    let hang = axum::Router::new().route(
        "/records",
        axum::routing::post(std::future::pending::<&'static str>),
    );
    tokio::spawn(async move { axum::serve(hanging, hang).await.unwrap() });
    url
}

/// The ledger call never holds a wait permit: with two permits and a ledger
/// that hangs for 20 s per call, a hundred 5 ms waits are all answered long
/// before one permit could have been given back (held through the call,
/// they would take 100 / 2 × 20 s). Calls beyond the ledger's slots are not
/// made at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_ledger_does_not_stall_the_waiter() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let mut s = settings(&kafka, &topics);
    s.waiter.waiters = count(2);
    s.ledger.url = Some(hanging_ledger().await);
    s.ledger.timeout = Duration::from_secs(20);
    s.ledger.max_concurrent_calls = count(4);
    let waiter = spawn_waiter(s).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    for i in 0..100 {
        client.send_json(&format!("r-{i}"), 5).await;
    }
    let replies = client.collect(|r| r.len() >= 96).await;
    assert!(replies.len() >= 96, "{} replies", replies.len());
    assert!(
        replies
            .iter()
            .map(reply_body)
            .all(|b| b.ledger_recorded == Some(false)),
        "every early reply says the wait was not recorded"
    );
    assert!(
        waiter.metric("waiter_records_failed_total", &[("reason", "ledger_busy")]) >= 96.0,
        "calls beyond the slots are not made"
    );
    waiter.begin_stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_that_is_down_or_too_slow_costs_no_reply() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    // A port with nothing listening: bind, read the port, close.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let hanging_url = hanging_ledger().await;

    for url in [format!("http://127.0.0.1:{closed_port}"), hanging_url] {
        let mut s = settings(&kafka, &topics);
        s.ledger.url = Some(url.clone());
        s.ledger.timeout = Duration::from_millis(200);
        let waiter = spawn_waiter(s).await;
        let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
        let correlation = testkit::unique_name("unrecorded");
        client.send_json(&correlation, 1).await;
        let replies = client
            .collect(|r| {
                r.iter()
                    .any(|m| header(m, "correlation").as_deref() == Some(&correlation))
            })
            .await;
        let reply = replies
            .iter()
            .map(reply_body)
            .find(|b| b.correlation == correlation)
            .unwrap();
        assert_eq!(reply.status, ReplyStatus::Ok, "ledger at {url}");
        assert_eq!(reply.ledger_recorded, Some(false), "ledger at {url}");
        waiter
            .expect_metric("waiter_records_failed_total", &[("reason", "ledger")], 1.0)
            .await;
        waiter.stop().await;
    }
}
