//! Records that cannot be served or replies that cannot be delivered: moved to the dead-letter topic, the partition moving on.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_are_dead_lettered_and_later_records_are_still_served() {
    let (kafka, topics, waiter) = started().await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]).await;

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

/// A reply topic deleted after the waiter has replied there stops counting
/// as existing: the next reply to it is dead-lettered as going to a topic
/// that does not exist, and the topic is not brought back (the test broker
/// creates topics on first use, so a waiter still believing in it would
/// recreate it). Real broker only: the mock cannot delete a topic.
#[tokio::test(flavor = "multi_thread")]
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
        let client = Client::new(&kafka, &topics.requests, &[&own]).await;
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
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]).await;
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
#[tokio::test(flavor = "multi_thread")]
async fn an_undeliverable_reply_is_dead_lettered_and_the_partition_moves_on() {
    let (kafka, topics, waiter) = started_with(|s| {
        s.kafka
            .producer
            .insert("message.max.bytes".into(), "1500".into());
    })
    .await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_record_set_is_skipped_with_a_dead_letter_naming_its_offsets() {
    let kafka = TestKafka::start_own().await.unwrap();
    let topics = Topics::create(&kafka, 1).await;
    send_to_partition(&kafka, &topics.requests, 0, "before", 3).await;
    let (first, last) = testkit::corrupt::undecodable_batch(&kafka, &topics.requests, 0, 20).await;
    send_to_partition(&kafka, &topics.requests, 0, "after", 3).await;
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    let dead_letters = Client::new(&kafka, &topics.requests, &[&topics.dead_letters]).await;

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

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_stopped_at_an_undecodable_record_set_says_so_and_the_others_flow() {
    let kafka = TestKafka::start_own().await.unwrap();
    let topics = Topics::create(&kafka, 2).await;
    let (first, _) = testkit::corrupt::undecodable_batch(&kafka, &topics.requests, 0, 5).await;
    send_to_partition(&kafka, &topics.requests, 0, "behind", 2).await;
    let mut settings = settings(&kafka, &topics);
    settings.waiter.undecodable_batches = waiter::consumer::UndecodablePolicy::Stop;
    let variant = settings.service.variant.clone();
    let waiter = spawn_waiter(settings).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
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
    assert_eq!(records_in(&kafka, &topics.dead_letters).await, 0);
    waiter.begin_stop();
}
