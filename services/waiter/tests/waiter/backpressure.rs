//! Saturation, stalled replies, deadlines and stamped routes versions: nothing buffered without bound, nothing waited for that cannot come.

use super::*;

/// While the reply topic refuses writes, the waiter stops taking records
/// instead of parking replies: a wait that ends with no reply slot free
/// keeps its pool slot, the full pool stops the dispatcher, and the
/// consumer stops reading. What it has read stays within the pipeline's
/// bounds (channels, pool, reply slots, deliveries in flight) while the
/// rest waits in Kafka, and every request is answered once writes resume.
/// (Before, the pool slot was given back at the end of the wait, and
/// every record in the topic was read and parked as a reply.)
#[tokio::test(flavor = "multi_thread")]
async fn while_replies_cannot_be_written_the_waiter_stops_reading_and_answers_all_after() {
    const REQUESTS: usize = 1000;
    // The embedded broker is this test's own; a real one cannot refuse.
    let kafka = TestKafka::start().await.unwrap();
    if TestKafka::is_real_broker() {
        // Says SKIPPED and why.
        kafka.refuse_produce(true).await.unwrap();
        return;
    }
    let topics = Topics::create(&kafka, 1).await;
    let mut settings = settings(&kafka, &topics);
    settings.waiter.waiters = count(4);
    settings.waiter.producers = count(1);
    settings.waiter.producer_max_in_flight = count(4);
    settings.waiter.request_channel_capacity = count(10);
    settings.waiter.reply_channel_capacity = count(10);
    settings.waiter.undelivered_replies = count(4);
    // Channels (10 + 10), pool (4), reply slots (4, deliveries among them),
    // and one record in each stage's hands.
    const PIPELINE: f64 = 40.0;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    // Written before writes are refused (every topic's are), read once they are.
    for i in 0..REQUESTS {
        client.send_json(&format!("held-{i}"), 0).await;
    }
    kafka.refuse_produce(true).await.unwrap().unwrap();
    let waiter = spawn_waiter(settings).await;
    let consumed = || waiter.metric("waiter_records_consumed_total", &[]);
    testkit::eventually("the pipeline fills", DEADLINE, || {
        std::future::ready((consumed() >= 20.0).then_some(()))
    })
    .await
    .unwrap();
    // The outage itself: long enough for an unbounded waiter to read all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read_while_refused = consumed();
    assert!(
        read_while_refused <= PIPELINE + 1.0,
        "{read_while_refused} records read while replies could not be written: \
         they were parked, not left in Kafka"
    );
    kafka.refuse_produce(false).await.unwrap().unwrap();
    let replies = client.collect_answers_to("held-", REQUESTS).await;
    assert_eq!(
        count_by_correlation(&replies)
            .keys()
            .filter(|c| c.starts_with("held-"))
            .count(),
        REQUESTS
    );
    waiter.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_pool_blocks_the_consumer_instead_of_buffering() {
    let (kafka, topics, waiter) = started_with(|s| {
        s.waiter.waiters = count(1);
        s.waiter.request_channel_capacity = count(1);
        s.waiter.reply_channel_capacity = count(1);
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    const REQUESTS: usize = 25;
    for i in 0..REQUESTS {
        client.send_json(&format!("slow-{i}"), 40).await;
    }

    // While the backlog drains, the waiter never holds more than its
    // stages can: one wait, one record in each channel, one blocked
    // consumer hand-off, and the replies being delivered.
    let bound = 1.0 + 1.0 + 1.0 + 1.0 + 2.0;
    let mut samples = 0;
    testkit::eventually("all slow requests replied", DEADLINE, || {
        let consumed = waiter.metric("waiter_records_consumed_total", &[]);
        let replied = waiter.metric("waiter_replies_total", &[]);
        let in_flight = waiter.metric("waiter_waits_in_flight", &[]);
        assert!(
            consumed - replied <= bound,
            "held {} records",
            consumed - replied
        );
        assert!(in_flight <= 1.0, "{in_flight} waits with one waiter");
        samples += 1;
        std::future::ready((replied as usize >= REQUESTS).then_some(()))
    })
    .await
    .unwrap();
    assert!(samples > 3, "the backlog was observed while it drained");
    let blocked_count = waiter.metric(
        "waiter_handoff_blocked_seconds_count",
        &[("channel", "requests")],
    );
    let blocked_sum = waiter.metric(
        "waiter_handoff_blocked_seconds_sum",
        &[("channel", "requests")],
    );
    assert!(blocked_count >= REQUESTS as f64 - 1.0, "{blocked_count}");
    assert!(
        blocked_sum > 0.3,
        "the consumer spent time blocked: {blocked_sum}s"
    );
    waiter.stop().await;
}

/// A caller's deadline (`waiter-bus-deadline`): a request that cannot be
/// answered before it is dropped unanswered, its offset committed, counted
/// by where it was dropped: at the consumer when it is already too late,
/// at the waiter pool when it waited too long for a slot. One that can is
/// served, and one without a deadline is served however long it waits.
#[tokio::test(flavor = "multi_thread")]
async fn requests_that_cannot_meet_their_deadline_are_dropped_and_the_rest_served() {
    let (kafka, topics, waiter) = started_with(|settings| {
        settings.waiter.waiters = count(1);
        settings.waiter.deadline_margin = Duration::from_millis(50);
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let send = |correlation: &'static str, wait_ms: u64, deadline: Option<protocol::Deadline>| {
        let client = &client;
        async move {
            let deadline = deadline.map(|d| d.to_header());
            let mut headers: Vec<(&str, &[u8])> = vec![("correlation", correlation.as_bytes())];
            if let Some(deadline) = &deadline {
                headers.push((protocol::headers::DEADLINE, deadline.as_bytes()));
            }
            let body = format!(r#"{{"name":"{correlation}","wait_ms":{wait_ms}}}"#);
            client.send_with_headers(&headers, body.as_bytes()).await;
        }
    };
    // In one partition, so read in this order.
    send("too-late", 10, Some(protocol::Deadline::at_unix_ms(1))).await;
    send("holds-the-only-slot", 3000, None).await;
    send(
        "waits-too-long-for-it",
        10,
        Some(protocol::Deadline::after(Duration::from_millis(1500))),
    )
    .await;
    send(
        "in-time",
        10,
        Some(protocol::Deadline::after(Duration::from_secs(60))),
    )
    .await;

    let replies = client
        .collect(|replies| {
            let seen = count_by_correlation(replies);
            seen.contains_key("holds-the-only-slot") && seen.contains_key("in-time")
        })
        .await;
    let seen = count_by_correlation(&replies);
    assert!(!seen.contains_key("too-late"), "{seen:?}");
    assert!(!seen.contains_key("waits-too-long-for-it"), "{seen:?}");
    let expired = "waiter_requests_expired_total";
    waiter
        .expect_metric(expired, &[("stage", "consumer")], 1.0)
        .await;
    waiter
        .expect_metric(expired, &[("stage", "waiter")], 1.0)
        .await;
    waiter.stop().await;
}

/// A routes version no record can bring (beyond the end of the routes
/// topic) is decided at once, not waited for: five forged stamps do not
/// hold the requests behind them for five `routes.version_wait`s.
#[tokio::test(flavor = "multi_thread")]
async fn a_routes_version_beyond_the_topics_end_is_not_waited_for() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let mut settings = settings(&kafka, &topics);
    settings.routes.version_wait = Duration::from_secs(120);
    let waiter = spawn_waiter(settings).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let producer = kafka.producer();
    for i in 0..5 {
        let correlation = format!("forged-{i}");
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topics.requests)
                    .key(&correlation)
                    .payload(r#"{"name":"forged","wait_ms":1}"#)
                    .headers(
                        rdkafka::message::OwnedHeaders::new()
                            .insert(rdkafka::message::Header {
                                key: "correlation",
                                value: Some(&correlation),
                            })
                            .insert(rdkafka::message::Header {
                                key: protocol::headers::ROUTES_VERSION,
                                value: Some("99999999"),
                            }),
                    ),
                Duration::from_secs(10),
            )
            .await
            .expect("the request is produced");
    }
    send_to_partition(&kafka, &topics.requests, 0, "behind", 5).await;
    // Waiting would take 120 s per forged record, past the 60 s deadline.
    let replies = client.collect(|r| r.len() >= 10).await;
    assert_eq!(
        replies
            .iter()
            .filter(|r| header(r, "correlation").unwrap().starts_with("behind-"))
            .count(),
        5
    );
    waiter.begin_stop();
}
