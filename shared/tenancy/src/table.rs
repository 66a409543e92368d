//! A local, always-current copy of `tenant-routes`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_kit::KafkaSettings;
use kafka_kit::assign::{Start, assign_whole_topics};
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
    /// The consumer could not be created.
    #[error("route table: Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The table did not read up to the start-time end of the topic in time.
    #[error("route table: not caught up with `{topic}` within {timeout:?}: {reason}")]
    NotCaughtUp {
        /// The topic.
        topic: String,
        /// How long it was given.
        timeout: Duration,
        /// What it was still waiting for.
        reason: String,
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
    // The tail's consumer, shared to ask the topic's end (see `beyond_end`);
    // none for a fixed table.
    consumer: Option<Arc<StreamConsumer>>,
    // Readers take the current snapshot (an `Arc` clone) and never block the
    // tail, which swaps in a new snapshot per record.
    routes: RwLock<Arc<Routes>>,
    // Until the topic is assigned: why not yet (no broker answers, the
    // topic does not exist, it has more than one partition).
    waiting: watch::Sender<Option<String>>,
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
    /// Starts tailing `topic` from its beginning. Returns at once: the
    /// topic is assigned in the background, retried for as long as no
    /// broker answers (a cluster missing a broker, or all of them), the
    /// topic does not exist or has more than one partition, each reason
    /// logged once and named by [`Self::waiting_for`] for readiness, until
    /// [`Self::caught_up`]'s patience runs out.
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
        let consumer = Arc::new(consumer);
        let inner = Arc::new(Inner {
            topic: topic.to_string(),
            consumer: Some(consumer.clone()),
            routes: RwLock::new(Arc::new(Routes::default())),
            waiting: watch::channel(Some(format!("`{topic}` is not assigned yet"))).0,
            caught_up: watch::channel(false).0,
            applied: watch::channel(0).0,
            stop: CancellationToken::new(),
        });
        tokio::spawn(follow(
            consumer,
            topic.to_string(),
            Arc::downgrade(&inner),
            inner.stop.clone(),
        ));
        Ok(Self { inner })
    }

    /// A table that holds `routes` for good, caught up, tailing nothing:
    /// for deciding records without a broker (the stages' unit tests,
    /// tools). A version past its own is one no record will ever bring.
    pub fn fixed(routes: Routes) -> Self {
        let applied = routes.version();
        Self {
            inner: Arc::new(Inner {
                topic: String::new(),
                consumer: None,
                routes: RwLock::new(Arc::new(routes)),
                waiting: watch::channel(None).0,
                caught_up: watch::channel(true).0,
                applied: watch::channel(applied).0,
                stop: CancellationToken::new(),
            }),
        }
    }

    /// What the table waits for before it is caught up (`None` once it is):
    /// for a readiness check to say.
    pub fn waiting_for(&self) -> Option<String> {
        if self.is_caught_up() {
            return None;
        }
        Some(match self.inner.waiting.borrow().clone() {
            Some(reason) => reason,
            None => format!(
                "reading `{}` up to its end as it was at start",
                self.inner.topic
            ),
        })
    }

    /// `Ok` once caught up; otherwise what it waits for, worded for a
    /// readiness check (`/readyz`) or a 503.
    pub fn ready(&self) -> Result<(), String> {
        match self.waiting_for() {
            None => Ok(()),
            Some(waiting) => Err(format!("the route table is not caught up: {waiting}")),
        }
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
                reason: self.waiting_for().unwrap_or_default(),
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
        let Some(consumer) = self.inner.consumer.clone() else {
            return version > self.version();
        };
        let topic = self.inner.topic.clone();
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

/// How long one attempt to assign the topic may take, and the longest
/// pause between attempts.
const ASSIGN_ATTEMPT: Duration = Duration::from_secs(3);
const ASSIGN_RETRY_MAX: Duration = Duration::from_secs(2);

/// Assigns `topic` (retrying until it can be, or the table is dropped),
/// then tails it.
async fn follow(
    consumer: Arc<StreamConsumer>,
    topic: String,
    table: std::sync::Weak<Inner>,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(100);
    let targets = loop {
        let attempt = {
            let (consumer, topic) = (consumer.clone(), topic.clone());
            tokio::task::spawn_blocking(move || {
                assign_whole_topics(
                    consumer.as_ref(),
                    &[&topic],
                    Start::Beginning,
                    ASSIGN_ATTEMPT,
                )
            })
            .await
        };
        let problem = match attempt {
            Ok(Ok(assigned)) if assigned.len() == 1 => {
                break assigned
                    .iter()
                    .map(|a| (a.partition, a.high))
                    .collect::<HashMap<_, _>>();
            }
            Ok(Ok(assigned)) if assigned.is_empty() => format!("topic `{topic}` does not exist"),
            Ok(Ok(assigned)) => format!(
                "topic `{topic}` has {} partitions; it must have exactly one (its offsets are the routes' versions)",
                assigned.len()
            ),
            Ok(Err(error)) => format!("no broker answers for `{topic}`: {error}"),
            Err(_) => return,
        };
        let Some(inner) = table.upgrade() else { return };
        let changed = inner.waiting.borrow().as_deref() != Some(problem.as_str());
        if changed {
            tracing::warn!(%problem, "route table: waiting to read the routes; retrying");
            inner.waiting.send_replace(Some(problem));
        }
        drop(inner);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(ASSIGN_RETRY_MAX);
    };
    match table.upgrade() {
        Some(inner) => {
            inner.waiting.send_replace(None);
        }
        None => return,
    }
    tail(consumer, targets, table, stop).await;
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
        publish(&table.routes, offset, record.ok());
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

/// Publishes the routes with the record at `offset` applied (`None`: an
/// unusable record, which still moves the version on) as a new snapshot.
/// Readers keep the one they hold. The tail is the only writer, so the
/// next snapshot is built outside the lock (a clone of the persistent
/// routes shares everything the record does not change) and the lock is
/// held only to swap it in.
fn publish(routes: &RwLock<Arc<Routes>>, offset: u64, record: Option<RouteRecord>) {
    let current = routes.read().unwrap_or_else(|e| e.into_inner()).clone();
    let mut next = Routes::clone(&current);
    match record {
        Some(record) => next.apply(offset, record),
        None => next.pass(offset),
    }
    *routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::TenantRoutes;

    fn tenant(id: &str) -> RouteRecord {
        let mut services = std::collections::BTreeMap::new();
        services.insert("waiter".to_string(), format!("sbx-{id}"));
        RouteRecord::Tenant(
            id.to_string(),
            Some(TenantRoutes {
                id: id.to_string(),
                services,
                ..TenantRoutes::default()
            }),
        )
    }

    /// Each record's snapshot shares every tenant it does not change with
    /// the snapshot before: publishing costs the same with 100,000 tenants
    /// as with ten, so catching up on the topic is linear in its records
    /// (a copied table made it quadratic).
    #[test]
    fn a_snapshot_shares_what_its_record_does_not_change() {
        let routes = RwLock::new(Arc::new(Routes::default()));
        for offset in 0..100_000u64 {
            publish(&routes, offset, Some(tenant(&format!("t{offset}"))));
        }
        let before = routes.read().unwrap().clone();
        publish(&routes, 100_000, Some(tenant("t-new")));
        publish(&routes, 100_001, None);
        let after = routes.read().unwrap().clone();
        assert_eq!(after.version(), 100_002);
        assert_eq!(after.tenants().len(), 100_001);
        for id in ["t0", "t54321", "t99999"] {
            assert!(
                std::ptr::eq(before.tenant(id).unwrap(), after.tenant(id).unwrap()),
                "tenant {id} was copied into the next snapshot"
            );
        }
    }
}
