//! Requests answered: one reply each, on the topic and partition asked for, matched by correlation in every dialect.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_requests_get_exactly_a_thousand_replies_each_in_its_trace() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 4).await;
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;

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
        records_in(&kafka, &topics.replies).await,
        1000,
        "nothing extra was produced"
    );
    waiter
        .expect_metric("waiter_replies_total", &[("status", "ok")], 1000.0)
        .await;
    waiter.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_go_to_the_topic_named_in_response_topic() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    let elsewhere = testkit::unique_name("elsewhere");
    kafka.create_topic(&elsewhere, 1).await.unwrap();
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&elsewhere]).await;

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
        records_in(&kafka, &topics.replies).await,
        0,
        "nothing went to the default topic"
    );
    waiter.stop().await;
}

/// A request whose `responseTopic` is the request topic, once, must not
/// become an endless loop of replies served as requests: it is dead-lettered,
/// and a reply that reaches the request topic anyway is never served.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_can_never_loop_back_as_a_request() {
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]).await;
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
        records_in(&kafka, &topics.requests).await,
        3,
        "nothing was produced back to the request topic"
    );
    waiter.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_over_the_maximum_gets_an_error_reply_and_a_missing_correlation_is_generated() {
    let (kafka, topics, waiter) = started_with(|s| {
        s.waiter.max_wait = Duration::from_secs(1);
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;

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

#[tokio::test(flavor = "multi_thread")]
async fn a_spring_style_request_is_answered_on_its_reply_topic_and_partition_as_it_came() {
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 2).await;
    let spring_replies = testkit::unique_name("spring-replies");
    kafka.create_topic(&spring_replies, 4).await.unwrap();
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&spring_replies]).await;
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]).await;

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
