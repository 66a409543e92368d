//! The waiter on a 3-broker Apache Kafka cluster (replication factor 3,
//! `min.insync.replicas=2`) that loses a broker under load: the leader of
//! its request partitions, or the coordinator of its consumer group. Every
//! request sent before, during and after the loss is answered. On the
//! embedded broker these say SKIPPED (it moves no leaders). And the cluster
//! losing two brokers at once, which leaves it unable to take a write.

use std::sync::Arc;
use std::time::Duration;

use testkit::TestKafka;

use crate::helpers::{Client, Topics, count_by_correlation, settings, spawn_waiter};

/// One cluster at a time: each is three JVMs, and two tests' clusters
/// starting at once on a small machine would stretch each other's failover.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests per second the tests send, and for how long around the loss.
const RATE: u64 = 50;
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
enum Victim {
    RequestLeader,
    GroupCoordinator,
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_request_partitions_leader_under_load_loses_no_request() {
    broker_lost_under_load(Victim::RequestLeader).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_groups_coordinator_under_load_loses_no_request() {
    broker_lost_under_load(Victim::GroupCoordinator).await;
}

async fn broker_lost_under_load(victim: Victim) {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(kafka) = TestKafka::start_own_cluster().await.unwrap() else {
        return;
    };
    let topics = Topics::create(&kafka, 4).await;
    let settings = settings(&kafka, &topics);
    let group = settings.group_id();
    let waiter = spawn_waiter(settings).await;
    let client = Arc::new(Client::new(&kafka, &topics.requests, &[&topics.replies]).await);
    client.send_json("first", 1).await;
    client.collect(|r| !r.is_empty()).await;

    // Requests at a steady rate, each sent on its own so that one waiting
    // out a dead leader holds up no other.
    let total = RATE * (BEFORE + AFTER).as_secs();
    let sender = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
            let mut sends = tokio::task::JoinSet::new();
            for i in 0..total {
                tick.tick().await;
                let client = client.clone();
                sends.spawn(async move { client.send_json(&format!("r-{i}"), 5).await });
            }
            sends.join_all().await;
        })
    };
    tokio::time::sleep(BEFORE).await; // traffic flowing before the loss, not a synchronisation
    let broker = match victim {
        Victim::RequestLeader => kafka.leader_of(&topics.requests, 0).await.unwrap(),
        Victim::GroupCoordinator => kafka.coordinator_of(&group).await.unwrap(),
    };
    kafka.take_down_broker(broker).await.unwrap();
    eprintln!("{victim:?}: killed broker {broker}");
    sender.await.unwrap();
    let replies = client
        .collect(|r| {
            count_by_correlation(r)
                .keys()
                .filter(|c| c.starts_with("r-"))
                .count()
                == total as usize
        })
        .await;
    let answered = count_by_correlation(&replies);
    let duplicates: usize = answered.values().map(|n| n - 1).sum();
    eprintln!(
        "{victim:?}: {total} of {total} answered after broker {broker} was killed, {duplicates} duplicates"
    );
    waiter.stop().await;
}

/// Two of the three brokers lost at once while the waiter holds requests
/// it has read: `min.insync.replicas` is unmet and the controllers have no
/// quorum, so no reply can be written and no offset committed. The waiter
/// keeps running and keeps its records (retrying the replies, committing
/// nothing past them), loses none, and answers every one once the brokers
/// return.
#[tokio::test(flavor = "multi_thread")]
async fn with_two_brokers_of_three_down_the_waiter_holds_its_records_and_answers_them_after() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(kafka) = TestKafka::start_own_cluster().await.unwrap() else {
        return;
    };
    let topics = Topics::create(&kafka, 4).await;
    let waiter = spawn_waiter(settings(&kafka, &topics)).await;
    let client = Client::new(&kafka, &topics.requests, &[&topics.replies]).await;
    client.send_json("first", 1).await;
    client.collect(|r| !r.is_empty()).await;

    // Read at once, answered only after the brokers are gone.
    const HELD: usize = 20;
    for i in 0..HELD {
        client.send_json(&format!("held-{i}"), 2000).await;
    }
    let lost: Vec<i32> = kafka.broker_ids().into_iter().skip(1).collect();
    for &broker in &lost {
        kafka.take_down_broker(broker).await.unwrap();
    }
    eprintln!("killed brokers {lost:?}");
    // The outage itself, longer than Kafka's own failover (9 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter exited while the brokers were down"
    );
    for &broker in &lost {
        kafka.bring_back_broker(broker).await.unwrap();
    }
    let replies = client.collect_answers_to("held-", HELD).await;
    let answered = count_by_correlation(&replies);
    let duplicates: usize = answered.values().map(|n| n - 1).sum();
    eprintln!(
        "{HELD} of {HELD} held requests answered once the brokers returned, {duplicates} duplicates"
    );
    waiter.stop().await;
}
