//! The waiter against the embedded broker: real Kafka protocol, real HTTP,
//! real spans. Each test has its own broker, topics, group and variant label.

mod cluster;
mod helpers;
mod interop;

use std::time::Duration;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};

use helpers::{
    Client, DEADLINE, Request, Topics, count, count_by_correlation, header, records_in, reply_body,
    settings, spawn_waiter, started, started_with,
};
use opentelemetry::trace::{SpanKind, TraceId};
use protocol::wire::ReplyStatus;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use testkit::TestKafka;

#[tokio::test]
async fn a_thousand_requests_get_exactly_a_thousand_replies_each_in_its_trace() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 4).await;
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);

    let mut traces = std::collections::HashMap::new();
    for i in 0..1000 {
        let correlation = format!("req-{i}");
        let trace_id = client.send_json(&correlation, i % 7).await;
        traces.insert(correlation, trace_id);
    }
    let replies = client.collect(|replies| replies.len() >= 1000).await;

    let counts = count_by_correlation(&replies);
    assert_eq!(counts.len(), 1000, "every correlation answered");
    assert!(
        counts.values().all(|&n| n == 1),
        "no correlation answered twice"
    );
    for reply in &replies {
        let correlation = header(reply, "correlation").unwrap();
        let expected = &traces[&correlation];
        let traceparent = header(reply, "traceparent").expect("reply carries traceparent");
        assert_eq!(
            &traceparent[3..35],
            expected,
            "reply header continues the request's trace"
        );
        let body = reply_body(reply);
        assert_eq!(&body.trace_id, expected);
        assert_eq!(body.status, ReplyStatus::Ok);
        assert_eq!(body.correlation, correlation);
        assert_eq!(body.variant, waiter.variant);
        assert_eq!(
            body.instance,
            telemetry::instance_id(),
            "a reply names the instance its spans name as service.instance.id"
        );
        for timing in [
            "waiter.queue.us",
            "waiter.service.us",
            "waiter.handoff.us",
            "waiter.consumed.us",
        ] {
            let value = header(reply, timing).unwrap_or_else(|| panic!("{timing} header"));
            value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{timing} is a number: {value}"));
        }
    }
    assert_eq!(
        records_in(&kafka, &topics.replies),
        1000,
        "nothing extra was produced"
    );
    waiter
        .expect_metric("waiter_replies_total", &[("status", "ok")], 1000.0)
        .await;
    waiter.stop().await;
}

#[tokio::test]
async fn replies_go_to_the_topic_named_in_response_topic() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let elsewhere = testkit::unique_name("elsewhere");
    kafka.create_topic(&elsewhere, 1).await.unwrap();
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&elsewhere]);

    client
        .send(Request {
            correlation: Some("c-1"),
            response_topic: Some(&elsewhere),
            traceparent: None,
            body: b"Ada",
        })
        .await;
    let replies = client.collect(|r| !r.is_empty()).await;
    assert_eq!(replies[0].topic(), elsewhere);
    let body = reply_body(&replies[0]);
    assert_eq!(body.name, "Ada", "a plain-text body is the caller's name");
    assert_eq!(
        body.requested_wait_ms, 10,
        "plain text waits the default time"
    );
    assert_eq!(
        header(&replies[0], "responseTopic").as_deref(),
        Some(elsewhere.as_str()),
        "request headers are carried on"
    );
    assert_eq!(
        records_in(&kafka, &topics.replies),
        0,
        "nothing went to the default topic"
    );
    waiter.stop().await;
}

#[tokio::test]
async fn poison_records_are_dead_lettered_and_later_records_are_still_served() {
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]);

    let poison: [(&str, Option<&str>, &[u8]); 4] = [
        ("bad-json", None, br#"{"name": "x", "wait_ms": }"#),
        ("not-utf8", None, b"\xff\xfe\xfd"),
        ("empty", None, b""),
        ("bad-topic", Some("no such/topic"), b"Ada"),
    ];
    for (correlation, response_topic, body) in poison {
        client
            .send(Request {
                correlation: Some(correlation),
                response_topic,
                traceparent: None,
                body,
            })
            .await;
    }
    for i in 0..3 {
        client.send_json(&format!("good-{i}"), 1).await;
    }

    let replies = client.collect(|r| r.len() >= 3).await;
    let served: HashSet<String> = replies
        .iter()
        .filter_map(|r| header(r, "correlation"))
        .collect();
    assert_eq!(
        served,
        HashSet::from(["good-0".into(), "good-1".into(), "good-2".into()])
    );

    let letters = dead_letters.collect(|r| r.len() >= 4).await;
    let reasons: std::collections::HashMap<String, String> = letters
        .iter()
        .map(|l| {
            (
                header(l, "correlation").unwrap(),
                header(l, "dlt.reason").unwrap(),
            )
        })
        .collect();
    assert!(
        reasons["bad-json"].starts_with("malformed JSON body"),
        "{reasons:?}"
    );
    assert_eq!(reasons["not-utf8"], "body is not UTF-8");
    assert_eq!(reasons["empty"], "empty body");
    assert!(
        reasons["bad-topic"].contains("responseTopic"),
        "{reasons:?}"
    );
    let bad_json = letters
        .iter()
        .find(|l| header(l, "correlation").as_deref() == Some("bad-json"))
        .unwrap();
    assert_eq!(
        bad_json.payload(),
        Some(&br#"{"name": "x", "wait_ms": }"#[..]),
        "the original body is kept"
    );
    assert!(
        header(bad_json, "dlt.origin")
            .unwrap()
            .starts_with(&topics.requests)
    );
    waiter
        .expect_metric("waiter_records_dead_lettered_total", &[], 4.0)
        .await;
    waiter.stop().await;
}

/// A request whose `responseTopic` is the request topic, once, must not
/// become an endless loop of replies served as requests: it is dead-lettered,
/// and a reply that reaches the request topic anyway is never served.
#[tokio::test]
async fn a_reply_can_never_loop_back_as_a_request() {
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]);
    client
        .send(Request {
            correlation: Some("loop"),
            response_topic: Some(&topics.requests),
            traceparent: None,
            body: br#"{"name":"Ada","wait_ms":1}"#,
        })
        .await;
    client.send_json("served", 1).await;
    let reply = client
        .collect(|r| !r.is_empty())
        .await
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(
        header(&reply, "waiter-bus-reply").as_deref(),
        Some(waiter.variant.as_str()),
        "replies are marked"
    );
    // A marked reply produced to the request topic (a misrouted reply).
    client
        .send_with_headers(
            &[("correlation", b"misrouted"), ("waiter-bus-reply", b"x")],
            reply.payload().unwrap(),
        )
        .await;
    let letters = dead_letters.collect(|r| r.len() >= 2).await;
    let reasons: HashSet<String> = letters
        .iter()
        .map(|l| header(l, "dlt.reason").unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("would loop")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("is a reply")),
        "{reasons:?}"
    );
    waiter
        .expect_metric("waiter_records_dead_lettered_total", &[], 2.0)
        .await;
    assert_eq!(
        records_in(&kafka, &topics.requests),
        3,
        "nothing was produced back to the request topic"
    );
    waiter.stop().await;
}

/// While the reply topic refuses writes, the waiter stops taking records
/// instead of parking replies: a wait that ends with no reply slot free
/// keeps its pool slot, the full pool stops the dispatcher, and the
/// consumer stops reading. What it has read stays within the pipeline's
/// bounds (channels, pool, reply slots, deliveries in flight) while the
/// rest waits in Kafka, and every request is answered once writes resume.
/// (Before, the pool slot was given back at the end of the wait, and
/// every record in the topic was read and parked as a reply.)
#[tokio::test]
async fn while_replies_cannot_be_written_the_waiter_stops_reading_and_answers_all_after() {
    const REQUESTS: usize = 1000;
    // The embedded broker is this test's own; a real one cannot refuse.
    let kafka = TestKafka::start().unwrap();
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
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
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
    let replies = client
        .collect(|r| {
            count_by_correlation(r)
                .keys()
                .filter(|c| c.starts_with("held-"))
                .count()
                == REQUESTS
        })
        .await;
    assert_eq!(
        count_by_correlation(&replies)
            .keys()
            .filter(|c| c.starts_with("held-"))
            .count(),
        REQUESTS
    );
    waiter.stop().await;
}

/// A reply topic deleted after the waiter has replied there stops counting
/// as existing: the next reply to it is dead-lettered as going to a topic
/// that does not exist, and the topic is not brought back (the test broker
/// creates topics on first use, so a waiter still believing in it would
/// recreate it). Real broker only: the mock cannot delete a topic.
#[tokio::test]
async fn a_deleted_reply_topic_stops_counting_as_existing() {
    if !TestKafka::is_real_broker() {
        eprintln!("SKIPPED: deleting a topic needs Apache Kafka; the embedded broker cannot");
        return;
    }
    let (kafka, topics, waiter) = started_with(|s| {
        // Every reply lists the topics again: the test need not wait out
        // the refresh.
        s.waiter.reply_topics_refresh = Duration::ZERO;
    })
    .await;
    let own = testkit::unique_name("own-replies");
    kafka.create_topic(&own, 1).await.unwrap();
    let request = |correlation| Request {
        correlation: Some(correlation),
        response_topic: Some(own.as_str()),
        traceparent: None,
        body: br#"{"name":"Ada","wait_ms":1}"#,
    };
    {
        let client = Client::new(&kafka, &topics.requests, &[&own]);
        client.send(request("before")).await;
        let replies = client.collect(|r| !r.is_empty()).await;
        assert_eq!(
            header(&replies[0], "correlation").as_deref(),
            Some("before")
        );
    }
    kafka.delete_topic(&own).await.unwrap();
    let lists_it = || {
        let metadata = kafka
            .consumer(&testkit::unique_name("metadata"))
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        metadata.topics().iter().any(|t| t.name() == own)
    };
    testkit::eventually(
        "the broker no longer lists the deleted topic",
        DEADLINE,
        || async { (!lists_it()).then_some(()) },
    )
    .await
    .unwrap();
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]);
    dead_letters.send(request("after")).await;
    let letters = dead_letters.collect(|r| !r.is_empty()).await;
    assert_eq!(header(&letters[0], "correlation").as_deref(), Some("after"));
    let reason = header(&letters[0], "dlt.reason").unwrap();
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(!lists_it(), "the waiter recreated the deleted reply topic");
    waiter.stop().await;
}

/// A reply the broker refuses for good (here: larger than the producer may
/// send) goes to the dead-letter topic with the reason and the start of its
/// payload, and the records behind it are served: nothing blocks the
/// partition. A reply to a topic that does not exist goes there too, and
/// the topic is not created.
#[tokio::test]
async fn an_undeliverable_reply_is_dead_lettered_and_the_partition_moves_on() {
    let (kafka, topics, waiter) = started_with(|s| {
        s.kafka
            .producer
            .insert("message.max.bytes".into(), "1500".into());
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]);
    let big_name = "x".repeat(1000);
    let body = format!(r#"{{"name":"{big_name}","wait_ms":1}}"#);
    let nowhere = testkit::unique_name("nowhere");
    for (correlation, response_topic) in [("too-big", None), ("nowhere", Some(nowhere.as_str()))] {
        let body = match correlation {
            "too-big" => body.as_bytes(),
            _ => br#"{"name":"Ada","wait_ms":1}"#.as_slice(),
        };
        client
            .send(Request {
                correlation: Some(correlation),
                response_topic,
                traceparent: None,
                body,
            })
            .await;
    }
    client.send_json("after", 1).await;
    let replies = client.collect(|r| !r.is_empty()).await;
    assert_eq!(header(&replies[0], "correlation").as_deref(), Some("after"));
    let letters = dead_letters.collect(|r| r.len() >= 2).await;
    let letter = |correlation: &str| {
        letters
            .iter()
            .find(|l| header(l, "correlation").as_deref() == Some(correlation))
            .unwrap_or_else(|| panic!("no dead letter for {correlation}"))
    };
    let too_big = letter("too-big");
    assert!(
        header(too_big, "dlt.reason")
            .unwrap()
            .contains("not deliverable"),
        "{:?}",
        header(too_big, "dlt.reason")
    );
    assert!(header(too_big, "dlt.truncated").is_some());
    assert!(too_big.payload().unwrap().len() <= 512);
    assert!(
        header(letter("nowhere"), "dlt.reason")
            .unwrap()
            .contains("does not exist")
    );
    let metadata = kafka
        .consumer(&testkit::unique_name("metadata"))
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert!(
        !metadata.topics().iter().any(|t| t.name() == nowhere),
        "the waiter created the topic a request named"
    );
    waiter
        .expect_metric(
            "waiter_records_dead_lettered_total",
            &[("reason", "undeliverable_reply")],
            1.0,
        )
        .await;
    waiter.stop().await;
}

#[tokio::test]
async fn a_wait_over_the_maximum_gets_an_error_reply_and_a_missing_correlation_is_generated() {
    let (kafka, topics, waiter) = started_with(|s| {
        s.waiter.max_wait = Duration::from_secs(1);
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);

    client.send_json("too-long", 5000).await;
    client
        .send(Request {
            correlation: None,
            response_topic: None,
            traceparent: None,
            body: b"Anonymous",
        })
        .await;
    let replies = client.collect(|r| r.len() >= 2).await;
    let refused = replies
        .iter()
        .map(reply_body)
        .find(|b| b.correlation == "too-long")
        .unwrap();
    assert_eq!(refused.status, ReplyStatus::Error);
    assert_eq!(refused.waited_ms, 0);
    assert!(
        refused
            .error
            .unwrap()
            .contains("exceeds the maximum of 1000 ms")
    );
    let generated = replies
        .iter()
        .map(reply_body)
        .find(|b| b.name == "Anonymous")
        .unwrap();
    assert!(
        uuid::Uuid::parse_str(&generated.correlation).is_ok(),
        "{}",
        generated.correlation
    );
    let anonymous = replies
        .iter()
        .find(|r| reply_body(r).name == "Anonymous")
        .unwrap();
    assert_eq!(
        header(anonymous, "correlation").as_deref(),
        Some(generated.correlation.as_str()),
        "the reply carries the generated id under the Go app's header"
    );
    waiter
        .expect_metric("waiter_replies_total", &[("status", "error")], 1.0)
        .await;
    // Counted, not logged once per record.
    waiter
        .expect_metric("waiter_requests_without_correlation_total", &[], 1.0)
        .await;
    waiter.stop().await;
}

#[tokio::test]
async fn spans_follow_the_messaging_conventions() {
    let telemetry = testkit::telemetry();
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);

    let trace_id = client.send_json("traced", 5).await;
    client.collect(|r| !r.is_empty()).await;
    let trace_id = TraceId::from_hex(&trace_id).unwrap();
    let spans = telemetry
        .spans()
        .wait_for_trace(trace_id, DEADLINE, |spans| {
            spans.iter().any(|s| s.span_kind == SpanKind::Consumer)
                && spans.iter().any(|s| s.span_kind == SpanKind::Producer)
                && spans.iter().any(|s| s.name == "wait")
        })
        .await
        .unwrap();
    let process = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer)
        .unwrap();
    let wait = spans.iter().find(|s| s.name == "wait").unwrap();
    let send = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Producer)
        .unwrap();
    assert_eq!(process.name, format!("process {}", topics.requests));
    assert!(
        process.parent_span_is_remote,
        "process continues the producer's context"
    );
    assert_eq!(wait.parent_span_id, process.span_context.span_id());
    assert_eq!(send.parent_span_id, process.span_context.span_id());
    let attribute = |span: &telemetry::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(
        attribute(process, "messaging.system").as_deref(),
        Some("kafka")
    );
    assert_eq!(
        attribute(process, "messaging.destination.name"),
        Some(topics.requests.clone())
    );
    assert_eq!(
        attribute(process, "messaging.consumer.group.name"),
        Some(topics.group.clone())
    );
    assert_eq!(
        attribute(process, "messaging.kafka.offset").as_deref(),
        Some("0")
    );
    assert_eq!(attribute(process, "variant"), Some(waiter.variant.clone()));
    assert_eq!(
        attribute(send, "messaging.destination.name"),
        Some(topics.replies.clone())
    );
    let events: Vec<&str> = process.events.iter().map(|e| e.name.as_ref()).collect();
    for expected in ["message.timestamp", "queued", "dequeued"] {
        assert!(events.contains(&expected), "{expected} in {events:?}");
    }
    let timestamp = process
        .events
        .iter()
        .find(|e| e.name == "message.timestamp")
        .unwrap();
    let kind = timestamp
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "messaging.kafka.timestamp.type")
        .map(|kv| kv.value.to_string());
    assert!(
        matches!(kind.as_deref(), Some("CreateTime" | "LogAppendTime")),
        "the timestamp says which kind it is: {kind:?}"
    );
    assert!(send.events.iter().any(|e| e.name == "delivery.ack"));
    waiter.stop().await;
}

/// `waiter.trace_mode: link`: the record's `process` span starts a trace of
/// its own, linked to the span that produced the record, and the tenant in
/// the baggage still reaches it; the reply continues the waiter's trace.
#[tokio::test]
async fn in_link_mode_the_process_span_is_a_linked_root_that_keeps_the_baggage() {
    let telemetry = testkit::telemetry();
    let (kafka, topics, waiter) = started_with(|s| {
        s.waiter.trace_mode = waiter::settings::TraceMode::Link;
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let producer_trace = uuid::Uuid::new_v4().simple().to_string();
    let producer_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{producer_trace}-{producer_span}-01");
    client
        .send_with_headers(
            &[
                ("correlation", b"linked"),
                ("traceparent", traceparent.as_bytes()),
                ("baggage", b"tenant=42"),
            ],
            br#"{"name":"linked","wait_ms":1}"#,
        )
        .await;
    let replies = client.collect(|r| !r.is_empty()).await;
    let reply = reply_body(&replies[0]);
    assert_ne!(reply.trace_id, producer_trace, "a trace of its own");
    let spans = telemetry
        .spans()
        .wait_for_trace(
            TraceId::from_hex(&reply.trace_id).unwrap(),
            DEADLINE,
            |spans| spans.iter().any(|s| s.span_kind == SpanKind::Consumer),
        )
        .await
        .unwrap();
    let process = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer)
        .unwrap();
    assert_eq!(
        process.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    let link = process.links.links.first().expect("a link to the producer");
    assert_eq!(link.span_context.trace_id().to_string(), producer_trace);
    assert_eq!(link.span_context.span_id().to_string(), producer_span);
    assert!(
        process
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "tenant" && kv.value.as_str() == "42"),
        "the tenant's baggage goes on: {:?}",
        process.attributes
    );
    waiter.stop().await;
}

#[tokio::test]
async fn a_saturated_pool_blocks_the_consumer_instead_of_buffering() {
    let (kafka, topics, waiter) = started_with(|s| {
        s.waiter.waiters = count(1);
        s.waiter.request_channel_capacity = count(1);
        s.waiter.reply_channel_capacity = count(1);
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
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

#[tokio::test]
async fn graceful_stop_finishes_in_flight_waits_and_commits() {
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    for i in 0..20 {
        client.send_json(&format!("inflight-{i}"), 300).await;
    }
    testkit::eventually("waits in flight", DEADLINE, || {
        std::future::ready((waiter.metric("waiter_waits_in_flight", &[]) >= 20.0).then_some(()))
    })
    .await
    .unwrap();
    waiter.stop().await;
    assert_eq!(
        records_in(&kafka, &topics.replies),
        20,
        "every started wait was answered"
    );

    // A new waiter in the same group finds nothing left to do: the offsets were committed.
    let again = spawn_waiter(settings(&kafka, &topics)).await;
    testkit::eventually("partitions assigned", DEADLINE, || {
        std::future::ready((again.readiness().assigned_partitions() > 0).then_some(()))
    })
    .await
    .unwrap();
    client.send_json("after-restart", 1).await;
    client
        .collect(|r| {
            r.iter()
                .any(|m| header(m, "correlation").as_deref() == Some("after-restart"))
        })
        .await;
    // One partition: a redelivered request would have been answered before
    // this one, so the reply topic would hold more than 21 records. (The
    // topic is the witness, not the client, whose own group may re-read.)
    assert_eq!(
        records_in(&kafka, &topics.replies),
        21,
        "nothing was redelivered"
    );
    again.stop().await;
}

/// A `waiter` process, killed with SIGKILL on drop if still running.
struct WaiterProcess(Child);

impl WaiterProcess {
    fn start(kafka: &TestKafka, topics: &Topics) -> Self {
        Self::start_logging(kafka, topics, "warn")
    }

    fn start_logging(kafka: &TestKafka, topics: &Topics, rust_log: &str) -> Self {
        Self::start_with(kafka, topics, &[("RUST_LOG", rust_log)])
    }

    /// Started with `env` over the defaults below.
    fn start_with(kafka: &TestKafka, topics: &Topics, env: &[(&str, &str)]) -> Self {
        Self::command(kafka, topics, env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map(Self)
            .expect("the waiter binary starts")
    }

    /// Started with its log lines (stdout, a pipe: not a terminal) sent to
    /// the receiver as they come.
    fn start_reading_logs(
        kafka: &TestKafka,
        topics: &Topics,
    ) -> (Self, std::sync::mpsc::Receiver<String>) {
        let mut child = Self::command(kafka, topics, &[("RUST_LOG", "info")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the waiter binary starts");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        (Self(child), received)
    }

    fn command(kafka: &TestKafka, topics: &Topics, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_waiter"));
        command
            .env("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers())
            .env("WAITER_BUS__HTTP__HOST", "127.0.0.1")
            .env("WAITER_BUS__HTTP__PORT", "0")
            .env("WAITER_BUS__WAITER__REQUEST_TOPIC", &topics.requests)
            .env(
                "WAITER_BUS__WAITER__DEFAULT_RESPONSE_TOPIC",
                &topics.replies,
            )
            .env(
                "WAITER_BUS__WAITER__DEAD_LETTER_TOPIC",
                &topics.dead_letters,
            )
            .env("WAITER_BUS__WAITER__GROUP_ID", &topics.group)
            .env("WAITER_BUS__WAITER__CONSUMERS", "1")
            .env("WAITER_BUS__WAITER__WAITERS", "20")
            .env("WAITER_BUS__WAITER__COMMIT_INTERVAL", "100ms")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        command
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then the broker gone as a crashed broker process is
    /// (listener closed as well): the waiter must still exit. Drain (2 s in
    /// these tests), the final commits (10 s) and consumer closes (10 s)
    /// are bounded; a stop that outlives them all by far hangs.
    async fn stops_as_its_broker_goes(&mut self, kafka: TestKafka) {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap();
        // SAFETY: signalling a child this test started and has not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        drop(kafka);
        let exited = testkit::eventually("the waiter exits", Duration::from_secs(40), || {
            std::future::ready(self.0.try_wait().ok().flatten())
        })
        .await;
        if exited.is_err() {
            self.kill();
            panic!("the waiter did not exit within 40 s of SIGTERM with its broker gone");
        }
    }
}

impl Drop for WaiterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn killing_the_waiter_mid_run_loses_no_request() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 2).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    const REQUESTS: usize = 200;
    for i in 0..REQUESTS {
        client.send_json(&format!("k-{i}"), 50).await;
    }

    let mut first = WaiterProcess::start(&kafka, &topics);
    // Kill it once it has answered some requests but not all.
    let before_kill = client.collect(|r| r.len() >= 40).await;
    first.kill();
    assert!(before_kill.len() < REQUESTS, "killed mid-run");

    let _second = WaiterProcess::start(&kafka, &topics);
    let mut replies = before_kill;
    let rest = client
        .collect(|r| {
            let seen: HashSet<_> = replies
                .iter()
                .chain(r)
                .filter_map(|m| header(m, "correlation"))
                .collect();
            seen.len() >= REQUESTS
        })
        .await;
    replies.extend(rest);
    let counts = count_by_correlation(&replies);
    assert_eq!(
        counts.len(),
        REQUESTS,
        "every request answered at least once"
    );
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    // At-least-once: the killed instance's uncommitted work is redone, and
    // the duplicates are countable through `correlation`.
    eprintln!(
        "kill-and-restart: {} replies, {duplicates} duplicates",
        replies.len()
    );
}

/// A log line written while handling a record leads to its trace: it
/// starts with the record's `trace_id=… span_id=…`, and stdout being a
/// pipe, it has no colour codes.
#[tokio::test]
async fn a_log_line_names_its_trace_and_has_no_colour_off_a_terminal() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let (_waiter, lines) = WaiterProcess::start_reading_logs(&kafka, &topics);
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    // A wait over the maximum: the waiter refuses it and says so (a log
    // line inside the record's span).
    client
        .send(Request {
            correlation: Some("too-long"),
            response_topic: None,
            traceparent: Some(&traceparent),
            body: br#"{"name":"Patient","wait_ms":86400000}"#,
        })
        .await;
    client.collect(|r| !r.is_empty()).await;
    let line = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("refusing request") => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no log line about the refusal in {seen:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert!(
        line.starts_with(&format!("trace_id={trace_id} span_id=")),
        "{line}"
    );
    assert!(!line.contains('\u{1b}'), "no ANSI codes: {line:?}");
}

#[tokio::test]
async fn the_log_level_does_not_decide_whether_the_trace_continues() {
    // RUST_LOG=error silences the info-level log lines, and must not
    // silence the info-level spans whose context the reply carries.
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let _waiter = WaiterProcess::start_logging(&kafka, &topics, "error");
    let trace_id = client.send_json("quiet", 1).await;
    let replies = client.collect(|r| !r.is_empty()).await;
    let traceparent = header(&replies[0], "traceparent").expect("the reply carries a trace");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], trace_id, "the request's trace continues");
    assert_ne!(parts[2], "0000000000000000", "{traceparent}");
    assert_eq!(parts[3], "01", "sampled: {traceparent}");
}

#[tokio::test]
async fn sigterm_stops_the_embedded_waiter_with_all_its_consumers() {
    // Ten consumers leave one group on shutdown; closed one after another
    // while the group rebalanced, one could wait forever inside librdkafka,
    // and the process never exited (about one run in three).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_waiter"))
        .arg("--embedded")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env("WAITER_BUS__HTTP__HOST", "127.0.0.1")
        .env("WAITER_BUS__HTTP__PORT", port.to_string())
        .env("WAITER_BUS__WAITER__CONSUMERS", "10")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the waiter binary starts");
    let http = reqwest::Client::new();
    let ready = testkit::eventually("the waiter is ready", DEADLINE, || {
        let request = http.get(format!("http://127.0.0.1:{port}/readyz")).send();
        async move { request.await.ok()?.status().is_success().then_some(()) }
    })
    .await;
    if ready.is_err() {
        let _ = child.kill();
        panic!("the embedded waiter never became ready");
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: signalling a child this test started and has not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let exit = child.wait();
            (exit, child)
        }),
    )
    .await;
    match exit {
        Ok(joined) => {
            let (exit, _) = joined.unwrap();
            assert!(
                exit.unwrap().success(),
                "the waiter exits cleanly on SIGTERM"
            );
        }
        Err(_) => {
            // SAFETY: as above; the waiting thread reaps it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the waiter did not exit within 30 s of SIGTERM");
        }
    }
}

/// SIGTERM with records streaming in, and the broker gone a moment later
/// (a stack stopped all at once): the final offset commit has no
/// coordinator to go to and waited for one forever, so the process never
/// exited (two runs in three). It now gives the commit a bounded time and
/// stops, leaving the records since its last commit to be redelivered.
#[tokio::test]
async fn a_waiter_stopping_as_its_broker_goes_away_still_exits() {
    let kafka = TestKafka::start_own().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let client = std::sync::Arc::new(Client::new(&kafka, &topics.requests, &[&topics.replies]));
    // Replies in flight cannot be delivered with the broker gone: a short
    // drain keeps the test short.
    let drain = ("WAITER_BUS__WAITER__DRAIN_TIMEOUT", "2s");
    let mut waiter = WaiterProcess::start_with(&kafka, &topics, &[drain]);
    let sender = client.clone();
    let _stream = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        for i in 0.. {
            sender.send_json(&format!("stream-{i}"), 0).await;
        }
    }));
    client.collect(|r| r.len() >= 100).await;

    waiter.stops_as_its_broker_goes(kafka).await;
}

/// SIGTERM while the baseline stands in for a variant that went down and
/// works through the records stamped for it, the broker gone a moment later:
/// the stand-in's last commit has no coordinator to go to. Its retirement
/// is bounded like the waiter's own final steps (drain, commit on a thread
/// of its own, close), so the process exits. (librdkafka answers this
/// commit at once when the coordinator refuses connections, so the test
/// guards the path rather than reproducing a hang.)
#[tokio::test]
async fn a_baseline_standing_in_for_a_variant_as_its_broker_goes_away_still_exits() {
    use rdkafka::producer::FutureRecord;
    let kafka = TestKafka::start_own().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let routes = testkit::unique_name("routes");
    kafka.create_topic(&routes, 1).await.unwrap();
    let producer = kafka.producer();
    let write_route = |key: String, value: serde_json::Value| {
        let (producer, routes) = (producer.clone(), routes.clone());
        async move {
            let value = value.to_string();
            producer
                .send(
                    FutureRecord::to(&routes).key(&key).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    let label = "sbx-gone";
    let variant = |live: bool| serde_json::json!({"service": "waiter", "label": label, "endpoint": "http://127.0.0.1:9", "live": live});
    // Version 2: tenant `gone` maps the waiter to a live `sbx-gone`.
    write_route(
        tenancy::tenant_key("gone"),
        serde_json::json!({"id": "gone", "services": {"waiter": label}}),
    )
    .await;
    write_route(tenancy::variant_key("waiter", label), variant(true)).await;
    // Then the variant goes down: the baseline stands in for it.
    write_route(tenancy::variant_key("waiter", label), variant(false)).await;

    let client = std::sync::Arc::new(Client::new(&kafka, &topics.requests, &[&topics.replies]));
    let mut waiter = WaiterProcess::start_with(
        &kafka,
        &topics,
        &[
            ("WAITER_BUS__WAITER__DRAIN_TIMEOUT", "2s"),
            ("WAITER_BUS__ROUTES__TOPIC", &routes),
            (
                "WAITER_BUS__TENANCY__VARIANT_GROUP",
                &format!("{}-{{label}}", topics.group),
            ),
        ],
    );
    // Records stamped while the variant was live: the stand-in's to serve.
    let sender = client.clone();
    let _stream = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        for i in 0.. {
            let correlation = format!("stood-in-{i}");
            sender
                .send_with_headers(
                    &[
                        ("correlation", correlation.as_bytes()),
                        (protocol::headers::BAGGAGE, b"tenant=gone"),
                        (protocol::headers::ROUTES_VERSION, b"2"),
                    ],
                    br#"{"name":"Ada","wait_ms":0}"#,
                )
                .await;
        }
    }));
    // The baseline's own consumer skips them (routed to the variant): each
    // reply is the stand-in's.
    client.collect(|r| r.len() >= 100).await;

    waiter.stops_as_its_broker_goes(kafka).await;
}

#[test]
fn an_unknown_setting_stops_the_binary_with_the_key_named() {
    for (var, value, expected) in [
        ("WAITER_BUS__WAITER__WAITERZ", "3", "waiter.waiterz"),
        ("WAITER_BUS__WAITER__WAITERS", "many", "waiter.waiters"),
        ("WAITER_BUS__WAITER__CONSUMERS", "0", "waiter.consumers"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_waiter"))
            .env(var, value)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{var}={value}: {stderr}");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_on_the_http_port() {
    let (_kafka, _topics, waiter) = started().await;
    let base = format!("http://127.0.0.1:{}", waiter.port);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    testkit::eventually("ready", DEADLINE, || async {
        (reqwest::get(format!("{base}/readyz")).await.ok()?.status() == 200).then_some(())
    })
    .await
    .unwrap();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("waiter_channel_capacity"), "{metrics}");
    waiter.stop().await;
}

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

#[tokio::test]
async fn each_completed_wait_is_posted_to_the_ledger_in_the_requests_trace() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let (ledger_url, mut posted) = recording_ledger().await;
    let mut s = settings(&kafka, &topics);
    s.ledger.url = Some(ledger_url);
    let waiter = spawn_waiter(s).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);

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
#[tokio::test]
async fn a_hung_ledger_does_not_stall_the_waiter() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let mut s = settings(&kafka, &topics);
    s.waiter.waiters = count(2);
    s.ledger.url = Some(hanging_ledger().await);
    s.ledger.timeout = Duration::from_secs(20);
    s.ledger.max_concurrent_calls = count(4);
    let waiter = spawn_waiter(s).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
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

#[tokio::test]
async fn a_ledger_that_is_down_or_too_slow_costs_no_reply() {
    let kafka = TestKafka::start().unwrap();
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
        let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
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

#[tokio::test]
async fn requests_sent_while_the_broker_is_away_are_answered_when_it_returns() {
    // A broker of this test's own: on the real-broker tier an Apache Kafka
    // that is killed with SIGKILL and restarted on the same data directory.
    let kafka = TestKafka::start_own().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = std::sync::Arc::new(Client::new(&kafka, &topics.requests, &[&topics.replies]));
    client.send_json("before", 1).await;
    client.collect(|r| !r.is_empty()).await;

    kafka.take_down().await.unwrap();
    // Requests queue in the client while the broker is away.
    let sends: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.send_json(&format!("during-{i}"), 1).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await; // the outage itself, not a synchronisation
    kafka.bring_back().await.unwrap();
    for send in sends {
        send.await.unwrap();
    }
    let replies = client
        .collect(|r| {
            count_by_correlation(r)
                .keys()
                .filter(|c| c.starts_with("during-"))
                .count()
                == 10
        })
        .await;
    assert!(count_by_correlation(&replies).contains_key("during-9"));
    assert!(waiter.metric("waiter_records_consumed_total", &[]) >= 11.0);
    waiter.stop().await;
}

/// A waiter started while its broker is away does not exit: it serves
/// `/readyz` from the start, saying that its route table waits for a
/// broker, and once the broker returns it becomes ready and answers what
/// was sent before it could start.
#[tokio::test]
async fn a_waiter_started_while_its_broker_is_away_waits_for_it_and_says_so() {
    let kafka = TestKafka::start_own().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    client.send_json("sent-before-the-waiter-started", 1).await;
    kafka.take_down().await.unwrap();
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", waiter.port);
    let reason = testkit::eventually(
        "readyz says what the waiter waits for",
        DEADLINE,
        || async {
            let response = reqwest::get(&readyz).await.ok()?;
            let status = response.status();
            let body = response.text().await.ok()?;
            (status == 503 && body.contains("no broker answers")).then_some(body)
        },
    )
    .await
    .unwrap();
    assert!(reason.contains("route table"), "{reason}");
    kafka.bring_back().await.unwrap();
    testkit::eventually(
        "the waiter is ready once its broker is back",
        DEADLINE,
        || async {
            let response = reqwest::get(&readyz).await.ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await
    .unwrap();
    let replies = client.collect(|r| !r.is_empty()).await;
    assert!(count_by_correlation(&replies).contains_key("sent-before-the-waiter-started"));
    waiter.stop().await;
}

/// A caller's deadline (`waiter-bus-deadline`): a request that cannot be
/// answered before it is dropped unanswered, its offset committed, counted
/// by where it was dropped: at the consumer when it is already too late,
/// at the waiter pool when it waited too long for a slot. One that can is
/// served, and one without a deadline is served however long it waits.
#[tokio::test]
async fn requests_that_cannot_meet_their_deadline_are_dropped_and_the_rest_served() {
    let (kafka, topics, waiter) = started_with(|settings| {
        settings.waiter.waiters = count(1);
        settings.waiter.deadline_margin = Duration::from_millis(50);
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
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

/// Head sampling: a request whose `traceparent` says "not sampled" gets no
/// spans here (not even a new root) and its reply carries the request's
/// trace context on, unsampled; a sampled request sent alongside is traced.
#[tokio::test]
async fn an_unsampled_request_is_served_without_spans_and_its_reply_continues_its_trace() {
    let telemetry = testkit::telemetry();
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let unsampled_trace = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!(
        "00-{unsampled_trace}-{}-00",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    client
        .send(Request {
            correlation: Some("unsampled"),
            response_topic: None,
            traceparent: Some(&traceparent),
            body: br#"{"name":"unsampled","wait_ms":5}"#,
        })
        .await;
    let sampled_trace = client.send_json("sampled", 5).await;
    let replies = client.collect(|r| r.len() >= 2).await;

    // The sampled one's spans arrive; by then the unsampled one's would have.
    telemetry
        .spans()
        .wait_for_trace(
            TraceId::from_hex(&sampled_trace).unwrap(),
            DEADLINE,
            |spans| spans.iter().any(|s| s.span_kind == SpanKind::Producer),
        )
        .await
        .unwrap();
    let unsampled_id = TraceId::from_hex(&unsampled_trace).unwrap();
    assert!(telemetry.spans().trace(unsampled_id).is_empty());
    let reply = replies
        .iter()
        .find(|r| header(r, "correlation").as_deref() == Some("unsampled"))
        .unwrap();
    let carried = header(reply, "traceparent").unwrap();
    assert!(
        carried.starts_with(&format!("00-{unsampled_trace}-")) && carried.ends_with("-00"),
        "{carried}"
    );
    assert_eq!(reply_body(reply).trace_id, unsampled_trace);
    waiter.stop().await;
}

#[tokio::test]
async fn a_spring_style_request_is_answered_on_its_reply_topic_and_partition_as_it_came() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 2).await;
    let spring_replies = testkit::unique_name("spring-replies");
    kafka.create_topic(&spring_replies, 4).await.unwrap();
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&spring_replies]);
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]);

    // Spring's defaults: a 16-byte binary correlation id, the reply topic
    // as text, the reply partition as a 4-byte big-endian int; plus a key,
    // a header with a null value and a header that repeats.
    let correlation: [u8; 16] = [0x9f, 0, 0xff, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0xfe];
    let producer = kafka.producer();
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "kafka_replyTopic",
            value: Some(spring_replies.as_bytes()),
        })
        .insert(rdkafka::message::Header {
            key: "kafka_replyPartition",
            value: Some(&3i32.to_be_bytes()),
        })
        .insert(rdkafka::message::Header {
            key: "kafka_correlationId",
            value: Some(&correlation),
        })
        .insert(rdkafka::message::Header::<&[u8]> {
            key: "nothing",
            value: None,
        })
        .insert(rdkafka::message::Header {
            key: "twice",
            value: Some("first"),
        })
        .insert(rdkafka::message::Header {
            key: "twice",
            value: Some("second"),
        });
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&topics.requests)
                .key("order-42")
                .payload(r#"{"name":"Spring","wait_ms":1}"#)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("the request is produced");
    // One asking for a partition the reply topic does not have.
    dead_letters
        .send_with_headers(
            &[
                ("kafka_replyTopic", spring_replies.as_bytes()),
                ("kafka_replyPartition", &9i32.to_be_bytes()),
                ("correlation", b"nowhere"),
            ],
            b"Nobody",
        )
        .await;

    let replies = client.collect(|r| !r.is_empty()).await;
    let reply = &replies[0];
    assert_eq!(reply.topic(), spring_replies);
    assert_eq!(reply.partition(), 3, "the requested reply partition");
    assert_eq!(reply.key(), Some(&b"order-42"[..]), "the key is echoed");
    assert_eq!(
        protocol::headers::last(reply.headers(), "kafka_correlationId"),
        Some(&correlation[..]),
        "the correlation comes back byte for byte under Spring's name"
    );
    assert_eq!(
        header(reply, "correlation"),
        None,
        "no Go-style correlation is added"
    );
    let nothing = rdkafka::message::Headers::iter(reply.headers().unwrap())
        .find(|h| h.key == "nothing")
        .expect("the null header is carried");
    assert_eq!(nothing.value, None, "a null header stays null");
    let twice: Vec<_> = rdkafka::message::Headers::iter(reply.headers().unwrap())
        .filter(|h| h.key == "twice")
        .map(|h| h.value.unwrap().to_vec())
        .collect();
    assert_eq!(twice, [b"first".to_vec(), b"second".to_vec()]);
    let body = reply_body(reply);
    assert_eq!(body.correlation, "9f00ff100102030405060708090a0bfe");
    assert_eq!(body.name, "Spring");

    let dead = dead_letters.collect(|r| !r.is_empty()).await;
    let reason = header(&dead[0], "dlt.reason").unwrap();
    assert!(
        reason.contains("reply partition 9 does not exist"),
        "{reason}"
    );
    waiter
        .expect_metric(
            "waiter_records_dead_lettered_total",
            &[("reason", "unknown_reply_partition")],
            1.0,
        )
        .await;
    assert_eq!(
        waiter.metric("waiter_requests_without_correlation_total", &[]),
        0.0
    );
    waiter.stop().await;
}

/// Sends `count` JSON requests named `{prefix}-{i}` to `partition`.
async fn send_to_partition(
    kafka: &TestKafka,
    topic: &str,
    partition: i32,
    prefix: &str,
    count: usize,
) {
    let producer = kafka.producer();
    for i in 0..count {
        let correlation = format!("{prefix}-{i}");
        let body = format!(r#"{{"name":"{correlation}","wait_ms":1}}"#);
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .partition(partition)
                    .key(&correlation)
                    .payload(&body)
                    .headers(rdkafka::message::OwnedHeaders::new().insert(
                        rdkafka::message::Header {
                            key: "correlation",
                            value: Some(&correlation),
                        },
                    )),
                Duration::from_secs(10),
            )
            .await
            .expect("the request is produced");
    }
}

#[tokio::test]
async fn an_undecodable_record_set_is_skipped_with_a_dead_letter_naming_its_offsets() {
    let kafka = TestKafka::start_own().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    send_to_partition(&kafka, &topics.requests, 0, "before", 3).await;
    let (first, last) = testkit::corrupt::undecodable_batch(&kafka, &topics.requests, 0, 20).await;
    send_to_partition(&kafka, &topics.requests, 0, "after", 3).await;
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]);

    let replies = client.collect(|r| r.len() >= 6).await;
    let answered: HashSet<String> = replies
        .iter()
        .filter_map(|r| header(r, "correlation"))
        .collect();
    for name in ["before-0", "before-2", "after-0", "after-2"] {
        assert!(answered.contains(name), "{name} answered: {answered:?}");
    }
    let marker = &dead_letters.collect(|r| !r.is_empty()).await[0];
    assert_eq!(
        header(marker, "dlt.origin").unwrap(),
        format!("{}/0@{first}-{last}", topics.requests),
        "the marker names the set's offsets"
    );
    assert!(
        header(marker, "dlt.reason")
            .unwrap()
            .contains("could not be decoded"),
        "{:?}",
        header(marker, "dlt.reason")
    );
    assert_eq!(marker.payload().unwrap_or_default(), b"");
    waiter
        .expect_metric(
            "waiter_undecodable_batches_total",
            &[("action", "skipped")],
            1.0,
        )
        .await;
    waiter.stop().await;
    // The group committed past the set: nothing of it is read again.
    let consumer = kafka.consumer(&topics.group);
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition(&topics.requests, 0);
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.elements()[0].offset(),
        rdkafka::Offset::Offset(last + 4),
        "committed past the set and the three after it"
    );
}

#[tokio::test]
async fn a_partition_stopped_at_an_undecodable_record_set_says_so_and_the_others_flow() {
    let kafka = TestKafka::start_own().unwrap();
    let topics = Topics::create(&kafka, 2).await;
    let (first, _) = testkit::corrupt::undecodable_batch(&kafka, &topics.requests, 0, 5).await;
    send_to_partition(&kafka, &topics.requests, 0, "behind", 2).await;
    let mut settings = settings(&kafka, &topics);
    settings.waiter.undecodable_batches = waiter::consumer::UndecodablePolicy::Stop;
    let variant = settings.service.variant.clone();
    let waiter = spawn_waiter(settings).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
    send_to_partition(&kafka, &topics.requests, 1, "other", 5).await;

    let replies = client.collect(|r| r.len() >= 5).await;
    assert!(
        replies
            .iter()
            .all(|r| header(r, "correlation").unwrap().starts_with("other-")),
        "only the other partition is served"
    );
    let base = format!("http://127.0.0.1:{}", waiter.port);
    let reason = testkit::eventually("readyz names the stopped partition", DEADLINE, || async {
        let response = reqwest::get(format!("{base}/readyz")).await.ok()?;
        let status = response.status();
        let body = response.text().await.ok()?;
        (status == 503 && body.contains("stopped")).then_some(body)
    })
    .await
    .unwrap();
    assert!(
        reason.contains(&format!(
            "partition 0 of `{}` is stopped at offset {first}",
            topics.requests
        )),
        "{reason}"
    );
    waiter
        .expect_metric(
            "waiter_undecodable_batches_total",
            &[("action", "stopped")],
            1.0,
        )
        .await;
    waiter
        .expect_metric("waiter_partition_stopped", &[("partition", "0")], 1.0)
        .await;
    // The console's pipeline view, reading this waiter's /metrics, names it.
    let nowhere = "http://127.0.0.1:9";
    let console_settings =
        console::Settings::in_process(nowhere, nowhere, vec![format!("{base}/metrics")]);
    let console = service_kit::RunningService::spawn(
        <console::Application as service_kit::ServiceApp>::build(console_settings)
            .await
            .unwrap(),
    );
    let pipeline: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/pipeline", console.url()))
        .timeout(DEADLINE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Tests share the process's metrics registry: this test's waiter is its variant.
    assert_eq!(
        pipeline[0]["variants"][&variant]["stopped_partitions"],
        serde_json::json!([format!("{}/0", topics.requests)]),
        "{pipeline}"
    );
    console.stop_within(DEADLINE).await.unwrap();
    assert_eq!(records_in(&kafka, &topics.dead_letters), 0);
    waiter.begin_stop();
}

/// A routes version no record can bring (beyond the end of the routes
/// topic) is decided at once, not waited for: five forged stamps do not
/// hold the requests behind them for five `routes.version_wait`s.
#[tokio::test]
async fn a_routes_version_beyond_the_topics_end_is_not_waited_for() {
    let kafka = TestKafka::start().unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let mut settings = settings(&kafka, &topics);
    settings.routes.version_wait = Duration::from_secs(120);
    let waiter = spawn_waiter(settings).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]);
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
