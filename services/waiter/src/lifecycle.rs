//! Joining and leaving: start positions pinned for a variant before it
//! registers, the consumers' bounded close, and the channel depth
//! sampler.

use std::sync::Arc;
use std::time::Duration;

use kafka_kit::handoff::depth;
use rdkafka::consumer::Consumer;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumer::WaiterConsumer;
use crate::metrics::{REPLIES_CHANNEL, REQUESTS_CHANNEL, WaiterMetrics};

/// How long shutdown waits for the consumers to leave their group.
pub(crate) const CONSUMER_CLOSE_BOUND: Duration = Duration::from_secs(10);

/// Closes every consumer at once, each on a thread of its own, waiting at
/// most `bound`. Closing a consumer leaves the group, which rebalances the
/// others; closed one after another while such a rebalance was in flight,
/// one could wait forever inside librdkafka (`rd_kafka_assign` during
/// close, librdkafka#4884) and a SIGTERM'd waiter never exited. Offsets are
/// committed before this, so a close left unfinished loses nothing: the
/// broker drops the member after its session timeout.
pub(crate) async fn close_consumers(consumers: Vec<Arc<WaiterConsumer>>, bound: Duration) {
    let mut closes = JoinSet::new();
    for consumer in consumers {
        closes.spawn(on_own_thread("consumer-close", bound, move || {
            drop(consumer)
        }));
    }
    let mut all_closed = true;
    while let Some(closed) = closes.join_next().await {
        all_closed &= closed.unwrap_or(false);
    }
    if !all_closed {
        tracing::warn!(
            ?bound,
            "consumers did not leave the group in time; offsets are committed, the broker will expire them"
        );
    }
}

/// How long shutdown waits for the final offset commit and producer flush.
/// A commit with no broker to take it waits for a group coordinator that
/// never comes; past this the offsets stay uncommitted and the records are
/// redelivered, which at-least-once delivery allows.
pub(crate) const FINAL_COMMIT_BOUND: Duration = Duration::from_secs(10);

/// Runs blocking client work (a commit, a flush, a close) on a plain thread
/// and waits for it at most `bound`; whether it finished in time. A plain
/// thread, not `spawn_blocking`: the runtime waits for its blocking tasks
/// when it shuts down, so work stuck inside librdkafka would hold the
/// process open after SIGTERM. A thread that overruns is left behind and
/// ends with the process.
pub(crate) async fn on_own_thread(
    name: &'static str,
    bound: Duration,
    work: impl FnOnce() + Send + 'static,
) -> bool {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            work();
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, thread = name, "could not start a thread");
        return false;
    }
    matches!(tokio::time::timeout(bound, finished).await, Ok(Ok(())))
}

/// Fixes where each assigned partition without a committed offset starts.
///
/// `auto.offset.reset=latest` is resolved lazily, at the first fetch, so a
/// record produced between registration and that fetch would be skipped.
/// Seeking to the high watermark read now closes the gap for the partitions
/// this instance holds. Partitions it does not hold, or that move in a
/// later rebalance (another consumer of this instance joining late, a
/// second instance scaling the variant out), would still start wherever
/// `latest` points when they are next assigned, past the records produced
/// meanwhile. So the pinned positions are also committed for the group,
/// for every partition of the topic that has no committed offset: any
/// later owner starts from them.
pub(crate) fn pin_start_positions(
    consumers: &[Arc<WaiterConsumer>],
    topic: &str,
) -> rdkafka::error::KafkaResult<()> {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    use rdkafka::{Offset, TopicPartitionList};
    const TIMEOUT: Duration = Duration::from_secs(5);
    let Some(member) = consumers
        .iter()
        .find(|c| c.assignment().is_ok_and(|a| a.count() > 0))
    else {
        return Ok(());
    };
    let metadata = member.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut every_partition = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions().iter()) {
        every_partition.add_partition(topic, partition.id());
    }
    let committed = member.committed_offsets(every_partition, TIMEOUT)?;
    let mut pins = TopicPartitionList::new();
    for element in committed.elements() {
        if element.offset() != Offset::Invalid {
            continue;
        }
        let (_, high) = member.fetch_watermarks(topic, element.partition(), TIMEOUT)?;
        pins.add_partition_offset(topic, element.partition(), Offset::Offset(high))?;
    }
    if pins.count() == 0 {
        return Ok(());
    }
    // A rebalance still settling refuses commits for a moment; the group
    // has just formed, so it settles within a few heartbeats.
    let mut attempts = 0;
    loop {
        match member.commit(&pins, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => break,
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::RebalanceInProgress | RDKafkaErrorCode::IllegalGeneration,
            )) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    for consumer in consumers {
        let assignment = consumer.assignment()?;
        for pin in pins.elements() {
            if assignment.find_partition(topic, pin.partition()).is_some() {
                consumer.seek(topic, pin.partition(), pin.offset(), TIMEOUT)?;
            }
        }
    }
    for pin in pins.elements() {
        tracing::debug!(topic, partition = pin.partition(), offset = ?pin.offset(), "start position pinned and committed");
    }
    Ok(())
}

pub(crate) async fn sample_channels<A, B>(
    metrics: WaiterMetrics,
    requests: mpsc::Sender<A>,
    replies: mpsc::Sender<B>,
    stop: CancellationToken,
) {
    // Holding senders would keep the channels open; sample through weak ones.
    let (requests, replies) = (requests.downgrade(), replies.downgrade());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (Some(requests), Some(replies)) = (requests.upgrade(), replies.upgrade()) else {
            return;
        };
        metrics.channel(REQUESTS_CHANNEL, depth(&requests), requests.max_capacity());
        metrics.channel(REPLIES_CHANNEL, depth(&replies), replies.max_capacity());
    }
}
