//! Record sets the client cannot decode (a corrupt compressed batch, a
//! codec it lacks). librdkafka reports one as a consumer error without its
//! partition or offset and fetches it again, for ever: the partition stops
//! while everything else looks healthy. Here such an error is turned into a
//! located, reported event:
//!
//! 1. [`locate`] finds the partition: a probe consumer (no group) reads each
//!    of this consumer's partitions from the consumer's own position, and
//!    the one whose first record set fails to decode is stuck there.
//! 2. By `waiter.undecodable_batches`:
//!    - `skip` (the default): the probe finds where the record set ends
//!      (bisecting, since a set holds many offsets), the consumer moves past
//!      it, and a dead-letter marker with an empty body names the offsets
//!      (`dlt.origin: topic/partition@first-last`) and the error, so the
//!      records can be read again by a client that can decode them. Its
//!      acknowledgement commits past the set.
//!    - `stop`: the partition is paused and named by `/readyz` (503) until
//!      the waiter restarts or the partition moves to another consumer.
//!
//! Either way it is logged once, counted
//! (`waiter_undecodable_batches_total{action}`) and shown per partition
//! (`waiter_partition_stopped`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_kit::acks::AckSender;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{ConsumerConfig, WaiterConsumer};
use crate::pipeline::{DeadLetterOf, Outgoing};
use crate::reasons::{DeadLetter, UndecodableAction};
pub use crate::settings::UndecodablePolicy;

/// How long one probe read may take before the answer counts as unknown.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a consumer error means the next record set of some partition
/// cannot be decoded.
pub(crate) fn is_undecodable(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::BadCompression
                | RDKafkaErrorCode::NotImplemented
                | RDKafkaErrorCode::BadMessage
        )
    )
}

/// Partitions stopped at a record set they cannot decode, shared by this
/// instance's consumers and its readiness check.
#[derive(Debug, Clone, Default)]
pub struct StoppedPartitions {
    inner: Arc<Mutex<BTreeMap<(String, i32), Stopped>>>,
}

#[derive(Debug, Clone)]
struct Stopped {
    offset: i64,
    error: String,
}

impl StoppedPartitions {
    /// `Err` naming every stopped partition, for `/readyz`.
    pub fn check(&self) -> Result<(), String> {
        let stopped = self.lock();
        if stopped.is_empty() {
            return Ok(());
        }
        Err(stopped
            .iter()
            .map(|((topic, partition), s)| {
                format!(
                    "partition {partition} of `{topic}` is stopped at offset {}: its record set cannot be decoded ({}); restart after fixing it, or set waiter.undecodable_batches: skip",
                    s.offset, s.error
                )
            })
            .collect::<Vec<_>>()
            .join("; "))
    }

    fn contains(&self, topic: &str, partition: i32) -> bool {
        self.lock().contains_key(&(topic.to_string(), partition))
    }

    fn insert(&self, topic: &str, partition: i32, stopped: Stopped) {
        self.lock().insert((topic.to_string(), partition), stopped);
    }

    /// Forgets a partition this consumer no longer owns (revoked): its
    /// next owner finds the record set for itself. Whether it was stopped.
    pub(crate) fn forget(&self, topic: &str, partition: i32) -> bool {
        self.lock()
            .remove(&(topic.to_string(), partition))
            .is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), Stopped>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A partition whose next record set cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stuck {
    pub topic: String,
    pub partition: i32,
    /// The consumer's position: the first offset it could not read.
    pub offset: i64,
    pub error: String,
}

/// Handles one undecodable-record-set error on `consumer`: locates the
/// partition and skips or stops it. Returns `false` when the dead-letter
/// channel has closed (shutdown).
pub(crate) async fn handle(
    consumer: &Arc<WaiterConsumer>,
    config: &Arc<ConsumerConfig>,
    acks: &AckSender,
    dead_letters: &mpsc::Sender<Outgoing>,
    error: &KafkaError,
) -> bool {
    let located = {
        let consumer = consumer.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || locate(&consumer, &config))
            .await
            .unwrap_or_else(|e| Err(format!("the probe panicked: {e}")))
    };
    let stuck = match located {
        Ok(stuck) => stuck,
        Err(reason) => {
            tracing::warn!(%error, %reason, "a record set could not be decoded and its partition could not be located; trying again at the next error");
            return true;
        }
    };
    if stuck.is_empty() {
        tracing::debug!(%error, "an undecodable record set was reported but no partition is stuck now");
    }
    for stuck in stuck {
        match config.undecodable {
            UndecodablePolicy::Stop => stop(consumer, config, stuck),
            UndecodablePolicy::Skip => {
                if !skip(consumer, config, acks, dead_letters, stuck).await {
                    return false;
                }
            }
        }
    }
    true
}

fn stop(consumer: &WaiterConsumer, config: &ConsumerConfig, stuck: Stuck) {
    if config.stopped.contains(&stuck.topic, stuck.partition) {
        return;
    }
    let mut paused = TopicPartitionList::new();
    paused.add_partition(&stuck.topic, stuck.partition);
    if let Err(e) = consumer.pause(&paused) {
        tracing::warn!(error = %e, partition = stuck.partition, "pausing a stuck partition");
    }
    tracing::error!(
        topic = %stuck.topic,
        partition = stuck.partition,
        offset = stuck.offset,
        error = %stuck.error,
        "a record set cannot be decoded: the partition is stopped (waiter.undecodable_batches: stop)"
    );
    config.metrics.undecodable(UndecodableAction::Stopped);
    config
        .metrics
        .partition_stopped(&stuck.topic, stuck.partition, true);
    config.stopped.insert(
        &stuck.topic,
        stuck.partition,
        Stopped {
            offset: stuck.offset,
            error: stuck.error,
        },
    );
}

async fn skip(
    consumer: &Arc<WaiterConsumer>,
    config: &Arc<ConsumerConfig>,
    acks: &AckSender,
    dead_letters: &mpsc::Sender<Outgoing>,
    stuck: Stuck,
) -> bool {
    let (probe_config, probe_stuck) = (config.probe.clone(), stuck.clone());
    let consumer_for_seek = consumer.clone();
    let moved = tokio::task::spawn_blocking(move || {
        let probe = Probe::new(&probe_config)?;
        let (_, high) = consumer_for_seek
            .fetch_watermarks(&probe_stuck.topic, probe_stuck.partition, PROBE_TIMEOUT)
            .map_err(|e| format!("reading the watermarks: {e}"))?;
        let last = probe.last_offset_of_set(&probe_stuck, high)?;
        consumer_for_seek
            .seek(
                &probe_stuck.topic,
                probe_stuck.partition,
                Offset::Offset(last + 1),
                PROBE_TIMEOUT,
            )
            .map_err(|e| format!("moving past offset {last}: {e}"))?;
        Ok::<_, String>(last)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the probe panicked: {e}")));
    let last = match moved {
        Ok(last) => last,
        Err(reason) => {
            tracing::warn!(partition = stuck.partition, offset = stuck.offset, %reason, "could not move past an undecodable record set; trying again at the next error");
            return true;
        }
    };
    let origin = format!(
        "{}/{}@{}-{last}",
        stuck.topic, stuck.partition, stuck.offset
    );
    tracing::error!(
        topic = %stuck.topic,
        partition = stuck.partition,
        first_offset = stuck.offset,
        last_offset = last,
        error = %stuck.error,
        "a record set cannot be decoded: skipped, with a dead-letter marker naming its offsets"
    );
    config.metrics.undecodable(UndecodableAction::Skipped);
    // Finishing the marker's acknowledgement at the set's last offset
    // commits past the whole set once it is in the dead-letter topic.
    let ack = consumer
        .context()
        .offsets
        .begin(acks, &stuck.topic, stuck.partition, last);
    let marker = Outgoing::dead_letter(
        &config.dead_letter_topic,
        DeadLetterOf {
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
            reason: DeadLetter::UndecodableBatch,
            detail: format!(
                "the record set at offsets {}..={last} could not be decoded: {}",
                stuck.offset, stuck.error
            ),
            origin,
        },
        tracing::Span::none(),
        ack,
        Instant::now(),
    );
    dead_letters.send(marker).await.is_ok()
}

/// Which of `consumer`'s partitions of the request topic cannot decode the
/// record set at its position (blocking: runs on the blocking pool).
pub(crate) fn locate(
    consumer: &WaiterConsumer,
    config: &ConsumerConfig,
) -> Result<Vec<Stuck>, String> {
    let assignment = consumer
        .assignment()
        .map_err(|e| format!("reading the assignment: {e}"))?;
    let positions = consumer
        .position()
        .map_err(|e| format!("reading the positions: {e}"))?;
    let committed = consumer
        .committed_offsets(assignment.clone(), PROBE_TIMEOUT)
        .map_err(|e| format!("reading the committed offsets: {e}"))?;
    let probe = Probe::new(&config.probe)?;
    let mut stuck = Vec::new();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        if config.stopped.contains(topic, partition) {
            continue;
        }
        let offset_of = |list: &TopicPartitionList| match list
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) => Some(offset),
            _ => None,
        };
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, PROBE_TIMEOUT)
            .map_err(|e| format!("reading the watermarks of partition {partition}: {e}"))?;
        // Where this consumer reads next: after what it consumed, else
        // where the group left off, else where a new group starts.
        let Some(offset) = offset_of(&positions)
            .or_else(|| offset_of(&committed))
            .or(config.starts_at_earliest.then_some(low))
        else {
            continue;
        };
        if offset >= high {
            continue;
        }
        if let ProbeRead::Undecodable(error) = probe.read(topic, partition, offset.max(low)) {
            stuck.push(Stuck {
                topic: topic.to_string(),
                partition,
                offset: offset.max(low),
                error,
            });
        }
    }
    Ok(stuck)
}

/// What reading a partition from an offset gave first.
#[derive(Debug)]
enum ProbeRead {
    Record,
    End,
    Undecodable(String),
    /// No answer in time: nothing can be concluded.
    Unknown,
}

/// A consumer outside any group that reads one partition from one offset
/// at a time.
struct Probe {
    consumer: BaseConsumer,
}

impl Probe {
    fn new(config: &ClientConfig) -> Result<Self, String> {
        let consumer = config
            .clone()
            .set(
                "group.id",
                format!("waiter-probe-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("statistics.interval.ms", "0")
            .create()
            .map_err(|e| format!("creating the probe consumer: {e}"))?;
        Ok(Self { consumer })
    }

    fn read(&self, topic: &str, partition: i32, offset: i64) -> ProbeRead {
        let mut list = TopicPartitionList::new();
        if list
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .is_err()
            || self.consumer.assign(&list).is_err()
        {
            return ProbeRead::Unknown;
        }
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ProbeRead::Unknown;
            }
            match self.consumer.poll(left) {
                None => return ProbeRead::Unknown,
                Some(Ok(message)) if message.partition() == partition => return ProbeRead::Record,
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => return ProbeRead::End,
                Some(Err(e)) if is_undecodable(&e) => return ProbeRead::Undecodable(e.to_string()),
                Some(Err(_)) => {}
            }
        }
    }

    /// Whether the record set covering `offset` cannot be decoded.
    fn is_stuck(&self, topic: &str, partition: i32, offset: i64) -> Result<bool, String> {
        match self.read(topic, partition, offset) {
            ProbeRead::Undecodable(_) => Ok(true),
            ProbeRead::Record | ProbeRead::End => Ok(false),
            ProbeRead::Unknown => Err(format!("no answer reading offset {offset}")),
        }
    }

    /// The last offset of the undecodable record set that starts at
    /// `stuck.offset`: every offset it holds reads as undecodable and the
    /// first one after it does not, so double the step until one reads,
    /// then bisect (about 2·log₂ of the set's size reads).
    fn last_offset_of_set(&self, stuck: &Stuck, high: i64) -> Result<i64, String> {
        let (topic, partition) = (stuck.topic.as_str(), stuck.partition);
        let mut last_stuck = stuck.offset;
        let mut first_clear = high;
        let mut step = 1;
        while last_stuck + step < high {
            let probe = last_stuck + step;
            if !self.is_stuck(topic, partition, probe)? {
                first_clear = probe;
                break;
            }
            last_stuck = probe;
            step *= 2;
        }
        while first_clear - last_stuck > 1 {
            let middle = last_stuck + (first_clear - last_stuck) / 2;
            match self.is_stuck(topic, partition, middle)? {
                true => last_stuck = middle,
                false => first_clear = middle,
            }
        }
        Ok(last_stuck)
    }
}
