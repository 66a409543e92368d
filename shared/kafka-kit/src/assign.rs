//! Reading whole topics without a consumer group.

use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// Where an assignment starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record.
    Beginning,
    /// The high watermark read at assignment: only what is produced after.
    /// An explicit offset, not `Offset::End`, which librdkafka resolves
    /// lazily and so could skip a record produced in between.
    End,
}

/// One assigned partition and its high watermark at assignment time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its high watermark when assigned.
    pub high: i64,
}

/// Assigns every partition of `topics` to `consumer` by assignment, not
/// group membership: it never rebalances, every instance reads everything.
/// Blocking (metadata and watermark requests); a topic that does not exist
/// contributes no partitions.
pub fn assign_whole_topics<X, C>(
    consumer: &C,
    topics: &[&str],
    start: Start,
    timeout: Duration,
) -> KafkaResult<Vec<Assigned>>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let mut assigned = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = until_led(timeout, || consumer.fetch_metadata(Some(topic), timeout))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        assigned.extend(positions(
            consumer,
            topic,
            &partitions,
            start,
            timeout,
            &mut assignment,
        )?);
    }
    consumer.assign(&assignment)?;
    Ok(assigned)
}

/// [`assign_whole_topics`] for one topic from async code: the blocking
/// requests run on tokio's blocking pool. Returns the consumer with what
/// was assigned (nothing when the topic does not exist).
pub async fn assign_topic_off_thread<X, C>(
    consumer: C,
    topic: &str,
    start: Start,
    timeout: Duration,
) -> KafkaResult<(C, Vec<Assigned>)>
where
    X: ConsumerContext,
    C: Consumer<X> + Send + 'static,
{
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        assign_whole_topics(&consumer, &[&topic], start, timeout)
            .map(|assigned| (consumer, assigned))
    })
    .await
    .expect("the assignment task does not panic")
}

/// Adds `partitions` of `topic` to `consumer`'s assignment, each at its
/// high watermark read now, keeping what it already reads where it is: a
/// record produced after this returns is read, whoever else reads the
/// partition. Blocking (watermark requests).
pub fn add_at_end<X, C>(
    consumer: &C,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> KafkaResult<Vec<Assigned>>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let mut assignment = TopicPartitionList::new();
    let assigned = positions(
        consumer,
        topic,
        partitions,
        Start::End,
        timeout,
        &mut assignment,
    )?;
    consumer.incremental_assign(&assignment)?;
    Ok(assigned)
}

/// Adds `partitions` of `topic` to `assignment` where `start` says, each
/// high watermark read now (waiting out a partition still without a leader).
fn positions<X, C>(
    consumer: &C,
    topic: &str,
    partitions: &[i32],
    start: Start,
    timeout: Duration,
    assignment: &mut TopicPartitionList,
) -> KafkaResult<Vec<Assigned>>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let mut assigned = Vec::new();
    for &partition in partitions {
        let (_, high) = until_led(timeout, || {
            consumer.fetch_watermarks(topic, partition, timeout)
        })?;
        let offset = match start {
            Start::Beginning => Offset::Beginning,
            Start::End => Offset::Offset(high),
        };
        assignment.add_partition_offset(topic, partition, offset)?;
        assigned.push(Assigned {
            topic: topic.to_string(),
            partition,
            high,
        });
    }
    Ok(assigned)
}

/// Stops `consumer` reading `partitions` of `topic`, keeping the rest.
pub fn remove<X, C>(consumer: &C, topic: &str, partitions: &[i32]) -> KafkaResult<()>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let mut removed = TopicPartitionList::new();
    for &partition in partitions {
        removed.add_partition(topic, partition);
    }
    consumer.incremental_unassign(&removed)
}

/// Records `topic` holds (high − low watermark, over its partitions), as
/// the broker says now. Blocking.
pub fn records_in<X, C>(consumer: &C, topic: &str, timeout: Duration) -> KafkaResult<i64>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut records = 0;
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
        records += high - low;
    }
    Ok(records)
}

/// Runs `ask` until it does not fail for want of a partition leader or of
/// a broker that answers, or `timeout` passes. A topic just created on a
/// real broker is listed before its partitions have leaders; a cluster
/// that has lost a broker answers "not leader" until the controller has
/// moved its partitions; a request sent to a broker that is down, or to a
/// bootstrap address librdkafka retires once it has learnt the cluster's
/// brokers, fails with a local transport error. Each is a moment to wait
/// out, not a reason to fail.
pub fn until_led<T>(timeout: Duration, mut ask: impl FnMut() -> KafkaResult<T>) -> KafkaResult<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        match ask() {
            Err(error) if is_transient(&error) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Whether `error` is a cluster's passing state (leaderless partitions, an
/// unreachable broker) rather than an answer.
pub fn is_transient(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(is_transient_code)
}

fn is_transient_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::DestroyBroker
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::BrokerNotAvailable
            | RDKafkaErrorCode::ReplicaNotAvailable
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
    )
}
