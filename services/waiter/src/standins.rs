//! The baseline standing in for variants that are not live.
//!
//! Records are stamped with the routes version they were produced under
//! (see `tenancy`), so a record stamped while variant `x` was live belongs
//! to `x`'s consumer group, whoever in that group reads it. When `x` stops
//! or crashes, the records stamped for it before the registry marked it not
//! live would wait for it to return. So while a variant of this service is
//! registered, not live and still mapped by some tenant, the baseline runs
//! a consumer in *that variant's group*: the group's committed offsets
//! carry on where `x` stopped, and group membership keeps one reader per
//! partition, so nothing is read twice beyond at-least-once's redelivery.
//! The consumer decides exactly as `x` would (same label), and the
//! baseline's waiters serve what it takes, replying as the baseline. When
//! `x` is live again, or no longer mapped, the stand-in leaves the group
//! and `x`'s instances get every partition back. Until it has left, it
//! takes only records stamped before `x` went down: one stamped since `x`
//! is live again is `x`'s, so the stand-in leaves it uncommitted and reads
//! nothing more from its partition (the consumer's `Verdict::HoldBack`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::{self, ConsumerConfig, WaiterConsumer, WaiterContext};
use crate::lifecycle::{CONSUMER_CLOSE_BOUND, FINAL_COMMIT_BOUND, close_consumers, on_own_thread};
use crate::pipeline::{Outgoing, Work};
use crate::settings::Settings;

struct StandIn {
    consumer: Arc<WaiterConsumer>,
    stop: CancellationToken,
    running: JoinHandle<()>,
}

impl StandIn {
    /// Stops reading, lets what it handed on finish (at most `drain`),
    /// commits, leaves. Each step is bounded like the waiter's own final
    /// ones: a retirement runs in the loop that starts and retires every
    /// stand-in, and at shutdown, so one waiting on a reply path that
    /// stalls, or on a group coordinator that is gone, must neither hold up
    /// the others nor keep the process from exiting. What is left
    /// uncommitted is re-read by the variant's instances, as at-least-once
    /// delivery allows.
    async fn retire(self, drain: Duration) {
        self.stop.cancel();
        let mut running = self.running;
        if tokio::time::timeout(drain, &mut running).await.is_err() {
            running.abort();
            tracing::warn!(
                ?drain,
                "a stand-in's records did not finish in time; they stay uncommitted for the variant"
            );
        }
        // A synchronous commit blocks, and waits for a coordinator while the
        // broker is away: on a thread of its own, bounded.
        let consumer = self.consumer.clone();
        let committed = on_own_thread(
            "stand-in-commit",
            FINAL_COMMIT_BOUND,
            move || match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::debug!(error = %e, "stand-in's final commit"),
            },
        )
        .await;
        if !committed {
            tracing::warn!(
                bound = ?FINAL_COMMIT_BOUND,
                "a stand-in's final commit did not finish in time (is the broker reachable?); \
                 the variant re-reads its records since the last commit"
            );
        }
        close_consumers(vec![self.consumer], CONSUMER_CLOSE_BOUND).await;
    }
}

/// The variants of this service the baseline should stand in for now.
fn wanted(routes: &tenancy::Routes, service: &str) -> BTreeSet<String> {
    routes
        .variants()
        .into_iter()
        .filter(|v| v.service == service && !v.live)
        .filter(|v| !routes.tenants_mapping(service, &v.label).is_empty())
        .map(|v| v.label.clone())
        .collect()
}

/// Starts and retires stand-ins as the routes change, until `stop`; then
/// retires them all.
pub(crate) async fn run(
    settings: Arc<Settings>,
    baseline: Arc<ConsumerConfig>,
    work: mpsc::Sender<Work>,
    dead_letters: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
) {
    let service = protocol::Service::Waiter.as_str();
    let mut running: HashMap<String, StandIn> = HashMap::new();
    loop {
        let routes = baseline.routes.snapshot();
        let wanted = wanted(&routes, service);
        let leaving: Vec<String> = running
            .keys()
            .filter(|label| !wanted.contains(*label))
            .cloned()
            .collect();
        for label in leaving {
            if let Some(stand_in) = running.remove(&label) {
                tracing::info!(%label, "variant live again or unmapped: the baseline stops standing in for it");
                stand_in.retire(settings.waiter.drain_timeout).await;
            }
        }
        for label in wanted {
            if running.contains_key(&label) {
                continue;
            }
            match start(&settings, &baseline, &label, &work, &dead_letters, &stop) {
                Ok(stand_in) => {
                    tracing::warn!(%label, group = %settings.variant_group_of(&label), "variant mapped but not live: the baseline stands in for it");
                    metrics::counter!("waiter_stand_ins_started_total").increment(1);
                    running.insert(label, stand_in);
                }
                Err(e) => tracing::warn!(%label, error = %e, "cannot stand in for the variant"),
            }
        }
        let version = routes.version();
        tokio::select! {
            () = stop.cancelled() => break,
            _ = baseline.routes.wait_for(std::time::Duration::from_secs(3600), |r| r.version() > version) => {}
        }
    }
    // At shutdown, all at once: the drain bounds them together.
    let mut retiring = tokio::task::JoinSet::new();
    for stand_in in running.into_values() {
        retiring.spawn(stand_in.retire(settings.waiter.drain_timeout));
    }
    retiring.join_all().await;
}

fn start(
    settings: &Settings,
    baseline: &ConsumerConfig,
    label: &str,
    work: &mpsc::Sender<Work>,
    dead_letters: &mpsc::Sender<Outgoing>,
    stop: &CancellationToken,
) -> Result<StandIn, crate::WaiterError> {
    let mut config = baseline.clone();
    config.group = settings.variant_group_of(label);
    // Decide as the variant would: the same label, the same rules.
    config.tenancy.label = label.to_string();
    config.tenancy.environment = tenancy::Environment::Sandbox;
    config.standing_in = true;
    let config = Arc::new(config);
    // Not part of this waiter's readiness.
    let assigned = Arc::new(tokio::sync::watch::channel(0).0);
    let consumer = Arc::new(crate::new_consumer(
        settings,
        &config.group,
        format!("waiter-baseline-for-{label}"),
        // The variant pinned its group's positions when it registered.
        "earliest",
        WaiterContext::new(&config, assigned),
    )?);
    let stand_in_stop = stop.child_token();
    let running = tokio::spawn(consumer::run(
        consumer.clone(),
        config,
        work.clone(),
        dead_letters.clone(),
        stand_in_stop.clone(),
    ));
    Ok(StandIn {
        consumer,
        stop: stand_in_stop,
        running,
    })
}
