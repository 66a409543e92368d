//! Which partitions of the response topic this instance takes its replies
//! on, so N dispatch instances each read about 1/N of the replies.
//!
//! Three parts:
//!
//! - **Membership**: a consumer in the group `dispatch.reply_group` that
//!   subscribes to the response topic only to be given partitions
//!   (cooperative-sticky, so a rebalance moves as few as it can). It never
//!   reads them: each is paused the moment it is assigned.
//! - **The reader** (see `replies.rs`): a consumer by assignment, not
//!   group, so this instance decides what it reads and when it stops.
//! - **[`manage`]**, between the two: a partition the group gives this
//!   instance is added to the reader at its high watermark read *then*,
//!   and only afterwards advertised, so every reply to a request that
//!   names it is read. A partition the group takes away is withdrawn at
//!   once (no new request names it) but read on until no call here is
//!   waiting on it: an instance joining or leaving loses no waiting call.
//!
//! Each request names one advertised partition (round robin) in
//! [`protocol::headers::REPLY_PARTITION`], which the waiter honours; the
//! waiter needs nothing dispatch-specific.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long a watermark request may take before it is tried again.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions calls may name right now, and how many calls wait on
/// each partition this instance still reads. Shared by the handlers (who
/// [`claim`](Self::claim)) and [`manage`].
#[derive(Clone)]
pub(crate) struct ReplyPartitions {
    state: Arc<Mutex<Partitions>>,
    /// A withdrawn partition's last call ended: [`manage`] may stop reading it.
    released: Arc<Notify>,
    /// How many partitions are advertised; for start-up and readiness.
    advertised: watch::Sender<usize>,
}

#[derive(Default)]
struct Partitions {
    /// Sorted; calls name these.
    advertised: Vec<i32>,
    /// Calls waiting, by the partition they named.
    waiting: HashMap<i32, usize>,
    /// Round-robin position.
    next: usize,
}

impl Default for ReplyPartitions {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            released: Arc::default(),
            advertised: watch::Sender::new(0),
        }
    }
}

/// A call's hold on the reply partition it named; released when the call
/// ends, however it ends.
pub(crate) struct Claim {
    partitions: ReplyPartitions,
    partition: i32,
}

impl Claim {
    /// The partition the call's request names.
    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = self.partitions.lock();
        let left = state.waiting.get_mut(&self.partition).map(|waiting| {
            *waiting -= 1;
            *waiting
        });
        if left == Some(0) {
            state.waiting.remove(&self.partition);
            if !state.advertised.contains(&self.partition) {
                self.partitions.released.notify_one();
            }
        }
    }
}

impl ReplyPartitions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Partitions> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next advertised partition for a call to name, or `None` while
    /// this instance owns none.
    pub(crate) fn claim(&self) -> Option<Claim> {
        let mut state = self.lock();
        if state.advertised.is_empty() {
            return None;
        }
        let partition = state.advertised[state.next % state.advertised.len()];
        state.next = state.next.wrapping_add(1);
        *state.waiting.entry(partition).or_default() += 1;
        Some(Claim {
            partitions: self.clone(),
            partition,
        })
    }

    /// The partitions calls may name now.
    pub(crate) fn advertised(&self) -> Vec<i32> {
        self.lock().advertised.clone()
    }

    /// Waits until at least one partition is advertised, up to `timeout`;
    /// whether one is.
    pub(crate) async fn wait_for_one(&self, timeout: Duration) -> bool {
        let mut advertised = self.advertised.subscribe();
        tokio::time::timeout(timeout, advertised.wait_for(|count| *count > 0))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    fn set(&self, update: impl FnOnce(&mut Vec<i32>)) {
        let count = {
            let mut state = self.lock();
            update(&mut state.advertised);
            state.advertised.sort_unstable();
            state.advertised.dedup();
            state.advertised.len()
        };
        metrics::gauge!(crate::instruments::REPLY_PARTITIONS_OWNED).set(count as f64);
        self.advertised.send_replace(count);
    }

    fn advertise(&self, partitions: &[i32]) {
        self.set(|advertised| advertised.extend_from_slice(partitions));
    }

    fn withdraw(&self, partitions: &[i32]) {
        self.set(|advertised| advertised.retain(|p| !partitions.contains(p)));
    }

    /// Of `reading`, the partitions neither advertised nor waited on.
    fn idle(&self, reading: &BTreeSet<i32>) -> Vec<i32> {
        let state = self.lock();
        reading
            .iter()
            .copied()
            .filter(|p| !state.advertised.contains(p) && !state.waiting.contains_key(p))
            .collect()
    }
}

/// What the group did to this instance's share of the response topic.
#[derive(Debug)]
pub(crate) enum Ownership {
    /// These partitions are this instance's now.
    Assigned(Vec<i32>),
    /// These are no longer.
    Revoked(Vec<i32>),
}

/// Tells [`manage`] what the group decided; pauses what it assigns, so
/// the membership consumer fetches nothing.
pub(crate) struct MembershipContext {
    events: mpsc::UnboundedSender<Ownership>,
}

impl ClientContext for MembershipContext {}

fn partitions_of(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ConsumerContext for MembershipContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let _ = self.events.send(Ownership::Revoked(partitions_of(revoked)));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                if let Err(e) = consumer.pause(assigned) {
                    tracing::warn!(error = %e, "could not pause the reply group's partitions; it reads them needlessly");
                }
                let _ = self
                    .events
                    .send(Ownership::Assigned(partitions_of(assigned)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "reply group rebalance failed"),
        }
    }
}

/// The membership consumer: created and subscribed at build, polled on a
/// thread of its own from [`Membership::run`].
pub(crate) struct Membership {
    consumer: BaseConsumer<MembershipContext>,
    events: mpsc::UnboundedReceiver<Ownership>,
}

impl Membership {
    /// Joins `group` for `topic` (on the first poll).
    pub(crate) fn subscribe(
        kafka: &kafka_kit::KafkaSettings,
        group: &str,
        topic: &str,
    ) -> rdkafka::error::KafkaResult<Self> {
        let (sender, events) = mpsc::unbounded_channel();
        let consumer: BaseConsumer<MembershipContext> = kafka
            .consumer_config()
            .set("group.id", group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .create_with_context(MembershipContext { events: sender })?;
        consumer.subscribe(&[topic])?;
        Ok(Self { consumer, events })
    }

    /// Polls on its own thread until `stop`, then leaves the group (so its
    /// partitions move at once, not after a session timeout). Returns the
    /// group's decisions, and the thread to join.
    pub(crate) fn run(
        self,
        stop: Arc<AtomicBool>,
    ) -> (
        mpsc::UnboundedReceiver<Ownership>,
        std::thread::JoinHandle<()>,
    ) {
        let consumer = self.consumer;
        let thread = std::thread::Builder::new()
            .name("reply-group".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Paused: nothing to read, but the group's heartbeats,
                    // rebalances and poll interval are served here.
                    if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                        tracing::warn!(error = %e, "reply group: poll failed; retrying");
                    }
                }
                consumer.unsubscribe();
                // Closing runs the revocation and sends LeaveGroup.
                drop(consumer);
            })
            .expect("a thread can be spawned");
        (self.events, thread)
    }
}

/// Keeps the reader on the partitions the group gives this instance, plus
/// those it gave up while a call still waits on them, until `stop`.
pub(crate) async fn manage(
    reader: Arc<StreamConsumer>,
    topic: Arc<str>,
    partitions: ReplyPartitions,
    mut events: mpsc::UnboundedReceiver<Ownership>,
    stop: CancellationToken,
) {
    let mut reading = BTreeSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => match event {
                None => return,
                Some(Ownership::Assigned(assigned)) => {
                    let new: Vec<i32> =
                        assigned.iter().copied().filter(|p| !reading.contains(p)).collect();
                    if !new.is_empty() {
                        if !read_from_now(&reader, &topic, &new, &stop).await {
                            return;
                        }
                        reading.extend(new.iter().copied());
                    }
                    tracing::info!(partitions = ?assigned, topic = %topic, "taking replies on these partitions");
                    partitions.advertise(&assigned);
                }
                Some(Ownership::Revoked(revoked)) => {
                    tracing::info!(partitions = ?revoked, topic = %topic, "no longer taking replies on these partitions once their calls end");
                    partitions.withdraw(&revoked);
                }
            },
            () = partitions.released.notified() => {}
        }
        let idle = partitions.idle(&reading);
        if idle.is_empty() {
            continue;
        }
        match kafka_kit::assign::remove(reader.as_ref(), &topic, &idle) {
            Ok(()) => {
                for partition in &idle {
                    reading.remove(partition);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not stop reading given-up reply partitions")
            }
        }
    }
}

/// Adds `new` to the reader at their high watermarks, retrying while the
/// broker does not answer; `false` if stopped first.
async fn read_from_now(
    reader: &Arc<StreamConsumer>,
    topic: &Arc<str>,
    new: &[i32],
    stop: &CancellationToken,
) -> bool {
    loop {
        let (reader, topic, new) = (reader.clone(), topic.clone(), new.to_vec());
        let added = tokio::task::spawn_blocking(move || {
            kafka_kit::assign::add_at_end(reader.as_ref(), &topic, &new, WATERMARK_TIMEOUT)
        })
        .await
        .expect("adding partitions does not panic");
        match added {
            Ok(_) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "could not start reading new reply partitions; retrying");
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    }
}
