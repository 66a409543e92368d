//! The admin API calls the project needs on a real broker.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::ApacheKafkaError;

/// Creates `topics` on the broker at `bootstrap` through the admin API,
/// `tenant-routes` compacted with one partition (its order is the order of
/// route changes); topics that exist already are fine. Each partition gets
/// three replicas, or one per broker in a smaller cluster (the brokers the
/// metadata names now: a cluster missing a broker creates with fewer). Returns once every
/// partition of every topic has a leader in the metadata clients get: a
/// topic the controller has created can still be unknown to the broker's
/// metadata for a moment, and a client asking then hears "does not exist".
pub fn create_topics(
    bootstrap: &str,
    topics: &[&str],
    partitions: i32,
) -> Result<(), ApacheKafkaError> {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap, topics)?;
    let brokers = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| ApacheKafkaError::Topic {
            topic: topics.join(", "),
            reason: format!("reading the cluster's brokers: {e}"),
        })?
        .brokers()
        .len();
    let replicas = brokers.clamp(1, 3) as i32;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|&name| {
            if name == protocol::topics::TENANT_ROUTES {
                NewTopic::new(name, 1, TopicReplication::Fixed(replicas))
                    .set("cleanup.policy", "compact")
            } else {
                NewTopic::new(name, partitions, TopicReplication::Fixed(replicas))
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_lite::future::block_on(admin.create_topics(&new_topics, &options))
        .map_err(|e| ApacheKafkaError::Topic {
            topic: topics.join(", "),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ApacheKafkaError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    wait_for_leaders(bootstrap, topics)
}

/// Waits until every partition of `topics` has a leader that answers for
/// it (a list-offsets request succeeds): after a restart the metadata may
/// name a leader that is still loading the partition's log.
fn wait_for_leaders(bootstrap: &str, topics: &[&str]) -> Result<(), ApacheKafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    const PATIENCE: Duration = Duration::from_secs(30);
    let client: BaseConsumer = client(bootstrap, topics)?;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let led = client
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|metadata| {
                topics.iter().all(|name| {
                    metadata.topics().iter().any(|t| {
                        t.name() == *name
                            && t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions().iter().all(|p| {
                                p.leader() >= 0
                                    && p.error().is_none()
                                    && client
                                        .fetch_watermarks(name, p.id(), Duration::from_secs(5))
                                        .is_ok()
                            })
                    })
                })
            })
            .unwrap_or(false);
        if led {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(ApacheKafkaError::Topic {
                topic: topics.join(", "),
                reason: format!(
                    "created, but without a leader for every partition after {PATIENCE:?}"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A quiet client of the broker at `bootstrap`, for work on `topics`.
fn client<C: rdkafka::config::FromClientConfig>(
    bootstrap: &str,
    topics: &[&str],
) -> Result<C, ApacheKafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "3")
        .create()
        .map_err(|e| ApacheKafkaError::Topic {
            topic: topics.join(", "),
            reason: e.to_string(),
        })
}

/// Waits until consumer groups can be served: a new broker creates its
/// offsets topic on the first group request and loads it before it answers
/// for any group, so the first groups after a start wait seconds for their
/// coordinator. Asking for a group's committed offsets once, here, moves
/// that wait into start-up, where "ready" belongs.
pub(super) fn wait_for_group_coordinator(bootstrap: &str) -> Result<(), ApacheKafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    const PATIENCE: Duration = Duration::from_secs(60);
    let topics = [protocol::topics::REQUESTS];
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-dev-readiness")
        .set("log_level", "3")
        .create()
        .map_err(|e| ApacheKafkaError::Topic {
            topic: "__consumer_offsets".into(),
            reason: e.to_string(),
        })?;
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition(topics[0], 0);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match consumer.committed_offsets(partitions.clone(), Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(ApacheKafkaError::Topic {
                    topic: "__consumer_offsets".into(),
                    reason: format!("no group coordinator after {PATIENCE:?}: {e}"),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The broker leading `topic`'s `partition` now, by the metadata the
/// cluster at `bootstrap` gives (the node a leader-loss fault kills).
pub fn leader_of(bootstrap: &str, topic: &str, partition: i32) -> Result<i32, ApacheKafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = client(bootstrap, &[topic])?;
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| ApacheKafkaError::Topic {
            topic: topic.into(),
            reason: format!("reading its metadata: {e}"),
        })?;
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .find(|p| p.id() == partition)
        .map(|p| p.leader())
        .filter(|&leader| leader >= 0)
        .ok_or_else(|| ApacheKafkaError::Topic {
            topic: topic.into(),
            reason: format!("partition {partition} has no leader"),
        })
}

/// The broker coordinating consumer group `group`: the leader of the
/// `__consumer_offsets` partition the group's id hashes to, as the broker
/// places groups (Java's `String.hashCode`, made non-negative, modulo the
/// partition count).
pub fn coordinator_of(bootstrap: &str, group: &str) -> Result<i32, ApacheKafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    const OFFSETS: &str = "__consumer_offsets";
    let client: BaseConsumer = client(bootstrap, &[OFFSETS])?;
    let metadata = client
        .fetch_metadata(Some(OFFSETS), Duration::from_secs(10))
        .map_err(|e| ApacheKafkaError::Topic {
            topic: OFFSETS.into(),
            reason: format!("reading its metadata: {e}"),
        })?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .filter(|&n| n > 0)
        .ok_or_else(|| ApacheKafkaError::Topic {
            topic: OFFSETS.into(),
            reason: "it does not exist yet (no group has been served)".into(),
        })?;
    let partition = group_partition(group, partitions as i32);
    leader_of(bootstrap, OFFSETS, partition)
}

/// The `__consumer_offsets` partition of `group`, as Kafka computes it.
fn group_partition(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    // Kafka's Utils.abs: i32::MIN has no absolute value and counts as 0.
    let non_negative = if hash == i32::MIN { 0 } else { hash.abs() };
    non_negative % partitions
}

#[cfg(test)]
mod tests {
    use super::group_partition;

    #[test]
    fn groups_hash_to_the_partition_kafka_places_them_in() {
        // From Java: "waiter".hashCode() == -795274014, "héllo" 103094734.
        assert_eq!(group_partition("waiter", 50), 795274014 % 50);
        assert_eq!(group_partition("", 10), 0);
        assert_eq!(group_partition("héllo", 7), 103094734 % 7);
    }
}
