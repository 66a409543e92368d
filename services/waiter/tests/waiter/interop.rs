//! The waiter against request/reply clients it did not write: the
//! reference Java client (every codec, transactions) and Spring Kafka's
//! `ReplyingKafkaTemplate` (its own reply topic, a fixed reply partition),
//! driven through `testkit::java`. Skipped, saying so, where Java is absent.

use testkit::TestKafka;
use testkit::java::InteropClient;

use crate::helpers::{Topics, settings, spawn_waiter};

#[tokio::test(flavor = "multi_thread")]
async fn a_java_producer_gets_every_reply_with_every_codec_and_aborted_requests_none() {
    let Some(java) = InteropClient::find() else {
        return;
    };
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 2).await;
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let bootstrap = kafka.bootstrap_servers().to_string();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let result = java
            .run(&[
                "plain",
                &bootstrap,
                &topics.requests,
                &topics.replies,
                "100",
                codec,
            ])
            .await;
        assert_eq!(result["sent"], 100, "{result}");
        assert_eq!(
            result["answered"], 100,
            "every {codec} request answered: {result}"
        );
        assert_eq!(result["duplicates"], 0, "{result}");
        assert_eq!(result["unexpected"], 0, "{result}");
    }
    // A transactional zstd producer: the aborted batch is never served.
    let result = java
        .run(&[
            "plain",
            &bootstrap,
            &topics.requests,
            &topics.replies,
            "50",
            "zstd",
            "transactional",
        ])
        .await;
    assert_eq!(result["answered"], 50, "{result}");
    assert_eq!(result["aborted"], 50, "{result}");
    assert_eq!(
        result["unexpected"], 0,
        "no aborted request answered: {result}"
    );
    waiter
        .expect_metric("waiter_replies_total", &[("status", "ok")], 550.0)
        .await;
    waiter.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn springs_replying_template_gets_every_reply_on_its_own_topic_and_partition() {
    let Some(java) = InteropClient::find() else {
        return;
    };
    let kafka = TestKafka::start().await.unwrap();
    let topics = Topics::create(&kafka, 2).await;
    let spring_replies = testkit::unique_name("spring-replies");
    kafka.create_topic(&spring_replies, 3).await.unwrap();
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let bootstrap = kafka.bootstrap_servers().to_string();

    // Its own reply topic, partitions by key.
    let result = java
        .run(&[
            "spring",
            &bootstrap,
            &topics.requests,
            &spring_replies,
            "10",
        ])
        .await;
    assert_eq!(result["answered"], 10, "{result}");
    assert_eq!(result["wrong_key"], 0, "the key is echoed: {result}");

    // One reply partition, named in `kafka_replyPartition`.
    let result = java
        .run(&[
            "spring",
            &bootstrap,
            &topics.requests,
            &spring_replies,
            "20",
            "2",
        ])
        .await;
    assert_eq!(result["answered"], 20, "{result}");
    assert_eq!(result["wrong_partition"], 0, "{result}");
    assert_eq!(
        waiter.metric("waiter_requests_without_correlation_total", &[]),
        0.0,
        "Spring's `kafka_correlationId` is read as the correlation"
    );
    waiter.stop().await;
}
