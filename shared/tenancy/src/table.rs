//! A local, always-current copy of `tenant-routes`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_kit::KafkaSettings;
use kafka_kit::assign::{Start, assign_topic_off_thread};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::routes::{RouteRecord, Routes, RoutesVersion};

/// The `routes` section of every service that reads the route table.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTableSettings {
    /// The compacted topic of mappings.
    pub topic: String,
    /// How long start-up may wait for the table to read up to the topic's
    /// end as it was at start.
    #[serde(with = "settings::duration")]
    pub catch_up_timeout: Duration,
    /// How long a record, or a request, stamped with a routes version this
    /// table has not reached yet waits for it before the current routes
    /// decide instead (counted as `route_table_version_waits_expired_total`).
    #[serde(with = "settings::duration")]
    pub version_wait: Duration,
}

/// Why the route table could not start or catch up.
#[derive(Debug, thiserror::Error)]
pub enum RouteTableError {
    /// The consumer could not be created or assigned.
    #[error("route table: Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The topic does not exist.
    #[error("route table: topic `{0}` does not exist")]
    NoTopic(String),
    /// The topic has more than one partition, so its offsets are not one
    /// order of changes.
    #[error(
        "route table: topic `{topic}` has {partitions} partitions; it must have exactly one (its offsets are the routes' versions)"
    )]
    NotOnePartition {
        /// The topic.
        topic: String,
        /// Its partition count.
        partitions: usize,
    },
    /// The table did not read up to the start-time end of the topic in time.
    #[error("route table: not caught up with `{topic}` within {timeout:?}")]
    NotCaughtUp {
        /// The topic.
        topic: String,
        /// How long it was given.
        timeout: Duration,
    },
}

/// Every tenant mapping and variant registration, kept current by tailing
/// `tenant-routes`. Cheap to clone; the tail stops when the last clone drops.
#[derive(Clone)]
pub struct RouteTable {
    inner: Arc<Inner>,
}

struct Inner {
    topic: String,
    // The tail's consumer, shared to ask the topic's end (see `beyond_end`).
    consumer: Arc<StreamConsumer>,
    // Readers take the current snapshot (an `Arc` clone) and never block the
    // tail, which swaps in a new snapshot per record.
    routes: RwLock<Arc<Routes>>,
    caught_up: watch::Sender<bool>,
    // Records applied so far; waiters for a change subscribe to it.
    applied: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

static TABLES: AtomicU64 = AtomicU64::new(0);

impl RouteTable {
    /// Starts tailing `topic` from its beginning.
    pub async fn start(kafka: &KafkaSettings, topic: &str) -> Result<Self, RouteTableError> {
        describe_metrics();
        let group = format!(
            "route-table-{}-{}",
            std::process::id(),
            TABLES.fetch_add(1, Ordering::Relaxed)
        );
        let consumer: StreamConsumer = kafka
            .consumer_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let (consumer, assigned) =
            assign_topic_off_thread(consumer, topic, Start::Beginning, Duration::from_secs(10))
                .await?;
        if assigned.is_empty() {
            return Err(RouteTableError::NoTopic(topic.to_string()));
        }
        if assigned.len() != 1 {
            return Err(RouteTableError::NotOnePartition {
                topic: topic.to_string(),
                partitions: assigned.len(),
            });
        }
        let targets: HashMap<i32, i64> = assigned.iter().map(|a| (a.partition, a.high)).collect();
        let consumer = Arc::new(consumer);
        let inner = Arc::new(Inner {
            topic: topic.to_string(),
            consumer: consumer.clone(),
            routes: RwLock::new(Arc::new(Routes::default())),
            caught_up: watch::channel(false).0,
            applied: watch::channel(0).0,
            stop: CancellationToken::new(),
        });
        tokio::spawn(tail(
            consumer,
            targets,
            Arc::downgrade(&inner),
            inner.stop.clone(),
        ));
        Ok(Self { inner })
    }

    /// The current routes.
    pub fn snapshot(&self) -> Arc<Routes> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether everything in the topic at start has been read.
    pub fn is_caught_up(&self) -> bool {
        *self.inner.caught_up.borrow()
    }

    /// Waits until [`Self::is_caught_up`].
    pub async fn caught_up(&self, timeout: Duration) -> Result<(), RouteTableError> {
        let mut caught_up = self.inner.caught_up.subscribe();
        tokio::time::timeout(timeout, caught_up.wait_for(|&done| done))
            .await
            .map(|_| ())
            .map_err(|_| RouteTableError::NotCaughtUp {
                topic: self.inner.topic.clone(),
                timeout,
            })
    }

    /// The version applied so far.
    pub fn version(&self) -> RoutesVersion {
        self.snapshot().version()
    }

    /// Waits, at most `timeout`, until the table has reached `version`;
    /// `Err` carries the routes as they are when time ran out.
    pub async fn reach(
        &self,
        version: RoutesVersion,
        timeout: Duration,
    ) -> Result<Arc<Routes>, Arc<Routes>> {
        let routes = self.snapshot();
        if routes.version() >= version {
            return Ok(routes);
        }
        self.wait_for(timeout, |routes| routes.version() >= version)
            .await
            .ok_or_else(|| self.snapshot())
    }

    /// The routes for something stamped with `version`: [`Self::reach`],
    /// and when the table does not get there within `timeout`, the current
    /// routes, with a warning naming `what` and a count in
    /// `route_table_version_waits_expired_total`. A version no record can
    /// ever bring (beyond the topic's end, once the table has read to it)
    /// is not waited for: the current routes decide at once, counted in
    /// `route_table_versions_beyond_end_total`, so one forged header cannot
    /// hold a consumer for `timeout`.
    pub async fn routes_for(
        &self,
        what: &str,
        version: RoutesVersion,
        timeout: Duration,
    ) -> Arc<Routes> {
        let routes = self.snapshot();
        if routes.version() >= version {
            return routes;
        }
        if self.is_caught_up() && self.beyond_end(version).await {
            tracing::debug!(
                stamped = version,
                reached = routes.version(),
                "{what}'s routes version is beyond the end of the routes topic; deciding by the current routes"
            );
            metrics::counter!("route_table_versions_beyond_end_total").increment(1);
            return self.snapshot();
        }
        self.reach(version, timeout).await.unwrap_or_else(|routes| {
            tracing::warn!(
                stamped = version,
                reached = routes.version(),
                "{what}'s routes version was not reached in time; deciding by the current routes"
            );
            metrics::counter!("route_table_version_waits_expired_total").increment(1);
            routes
        })
    }

    /// Whether `version` lies beyond the routes topic's end as the broker
    /// says now: a version is the offset after the last record applied, so
    /// one above the high watermark names a record not yet written. `false`
    /// when the broker does not answer (then waiting is the safe choice).
    async fn beyond_end(&self, version: RoutesVersion) -> bool {
        let (consumer, topic) = (self.inner.consumer.clone(), self.inner.topic.clone());
        let end = tokio::task::spawn_blocking(move || {
            consumer.fetch_watermarks(&topic, 0, Duration::from_secs(1))
        })
        .await;
        match end {
            Ok(Ok((_, high))) => u64::try_from(high).is_ok_and(|high| version > high),
            _ => false,
        }
    }

    /// Waits until the routes satisfy `condition` (a change has arrived).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&Routes) -> bool,
    ) -> Option<Arc<Routes>> {
        let mut applied = self.inner.applied.subscribe();
        let wait = async {
            loop {
                let routes = self.snapshot();
                if condition(&routes) {
                    return routes;
                }
                if applied.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }
}

async fn tail(
    consumer: Arc<StreamConsumer>,
    mut remaining: HashMap<i32, i64>,
    table: std::sync::Weak<Inner>,
    stop: CancellationToken,
) {
    remaining.retain(|_, high| *high > 0);
    let mark_caught_up = |table: &Inner| {
        table.caught_up.send_replace(true);
    };
    if remaining.is_empty() {
        match table.upgrade() {
            Some(t) => mark_caught_up(&t),
            None => return,
        }
    }
    let mut stream = consumer.stream();
    while let Some(message) =
        kafka_kit::stream::next_message(&mut stream, &stop, "route table").await
    {
        let Some(table) = table.upgrade() else { return };
        let key = message
            .key()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let offset = u64::try_from(message.offset()).unwrap_or_default();
        let record = RouteRecord::decode(&key, message.payload());
        if let Err(reason) = &record {
            tracing::warn!(%reason, offset, "route table: skipping an unusable record");
            metrics::counter!("route_table_records_rejected_total").increment(1);
        }
        {
            let mut routes = table.routes.write().unwrap_or_else(|e| e.into_inner());
            let mut next = Routes::clone(&routes);
            match record {
                Ok(record) => next.apply(offset, record),
                // An unusable record still moves the version on.
                Err(_) => next.pass(offset),
            }
            *routes = Arc::new(next);
        }
        table.applied.send_modify(|n| *n += 1);
        if let Some(&high) = remaining.get(&message.partition())
            && message.offset() + 1 >= high
        {
            remaining.remove(&message.partition());
            if remaining.is_empty() {
                mark_caught_up(&table);
            }
        }
    }
}

/// HELP for the route table's counters, each registered at zero.
fn describe_metrics() {
    telemetry::counter_at_zero(
        "route_table_version_waits_expired_total",
        "Records or calls stamped with a routes version this table did not reach in time.",
        &[&[]],
    );
    telemetry::counter_at_zero(
        "route_table_versions_beyond_end_total",
        "Records or calls stamped with a routes version beyond the end of the routes topic, decided at once by the current routes.",
        &[&[]],
    );
    telemetry::counter_at_zero(
        "route_table_records_rejected_total",
        "Records on the routes topic that could not be read as a route, variant or tombstone.",
        &[&[]],
    );
}
