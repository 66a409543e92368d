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

use rdkafka::consumer::{CommitMode, Consumer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::{self, ConsumerConfig, WaiterConsumer, WaiterContext};
use crate::lifecycle::{CONSUMER_CLOSE_BOUND, close_consumers};
use crate::pipeline::{Outgoing, Work};
use crate::settings::Settings;

struct StandIn {
    consumer: Arc<WaiterConsumer>,
    stop: CancellationToken,
    running: JoinHandle<()>,
}

impl StandIn {
    /// Stops reading, lets what it handed on finish, commits, leaves.
    async fn retire(self) {
        self.stop.cancel();
        let _ = self.running.await;
        // A synchronous commit blocks; keep it off the async threads, where
        // it would hold up lease renewals and everything else.
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await;
        if let Ok(Err(e)) = committed {
            tracing::debug!(error = %e, "stand-in's final commit");
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
                stand_in.retire().await;
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
    for (_, stand_in) in running {
        stand_in.retire().await;
    }
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
